// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* profile: CPU samples from a cpu-clock perf event on every CPU, counted in the kernel per
 * process and (user stack, kernel stack). Idle CPUs (pid 0) are not sampled. */
#include "../gadget.h"

#define MAX_DEPTH 127

struct sample_key {
	u32 pid;
	s32 user_stack;   /* stack id in `stacks`, negative when it could not be taken */
	s32 kernel_stack;
	u32 pad;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(u32));
	__uint(value_size, MAX_DEPTH * sizeof(u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, struct sample_key);
	__type(value, u64);
} samples SEC(".maps");

struct bpf_perf_event_data;

SEC("perf_event")
int profile_sample(struct bpf_perf_event_data *ctx)
{
	struct event_header h = {};
	struct sample_key key = {};
	u64 one = 1, *n;

	if (!want(config(), &h) || h.pid == 0)
		return 0;
	key.pid = h.pid;
	__builtin_memcpy(key.comm, h.comm, sizeof(key.comm));
	key.user_stack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	key.kernel_stack = bpf_get_stackid(ctx, &stacks, 0);
	n = bpf_map_lookup_elem(&samples, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	if (!bpf_map_update_elem(&samples, &key, &one, BPF_NOEXIST))
		return 0;
	n = bpf_map_lookup_elem(&samples, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		count_drop();
	return 0;
}
