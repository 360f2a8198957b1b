// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* syscalls: counts per process and syscall, aggregated in the kernel (no event per call). */
#include "../gadget.h"

struct syscall_key {
	u32 pid;
	u32 nr;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct syscall_key);
	__type(value, u64);
} syscall_counts SEC(".maps");

struct raw_syscall_enter {
	u64 common;
	s64 id;
	u64 args[6];
};

SEC("tracepoint/raw_syscalls/sys_enter")
int syscalls_count(struct raw_syscall_enter *ctx)
{
	struct event_header h = {};
	struct syscall_key key = {};
	u64 one = 1, *n;

	if (ctx->id < 0 || !want(config(), &h))
		return 0;
	key.pid = h.pid;
	key.nr = (u32)ctx->id;
	__builtin_memcpy(key.comm, h.comm, sizeof(key.comm));
	n = bpf_map_lookup_elem(&syscall_counts, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	if (!bpf_map_update_elem(&syscall_counts, &key, &one, BPF_NOEXIST))
		return 0;
	/* Another CPU inserted the key first (count it there), or the table is full. */
	n = bpf_map_lookup_elem(&syscall_counts, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		count_drop();
	return 0;
}
