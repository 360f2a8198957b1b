// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* uprobe: calls of one user-space function, counted in the kernel per process; with arg1
 * set, also the time from entry to return as log2 histograms (per process when arg0 is
 * set). */
#include "../hist.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct hist_key);
	__type(value, u64);
} call_counts SEC(".maps");

/* Entry time per thread, for latency. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, u32);
	__type(value, u64);
} entered SEC(".maps");

struct pt_regs;

SEC("uprobe")
int uprobe_entry(struct pt_regs *ctx)
{
	struct gadget_cfg *cfg = config();
	struct event_header h = {};
	struct hist_key key = {};
	u64 one = 1, *n, now;

	if (!want(cfg, &h))
		return 0;
	if (cfg->arg1) {
		now = bpf_ktime_get_ns();
		if (bpf_map_update_elem(&entered, &h.tid, &now, BPF_ANY))
			count_drop();
		return 0;
	}
	key.id = h.pid;
	__builtin_memcpy(key.comm, h.comm, sizeof(key.comm));
	n = bpf_map_lookup_elem(&call_counts, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	if (!bpf_map_update_elem(&call_counts, &key, &one, BPF_NOEXIST))
		return 0;
	n = bpf_map_lookup_elem(&call_counts, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		count_drop();
	return 0;
}

SEC("uretprobe")
int uprobe_return(struct pt_regs *ctx)
{
	struct gadget_cfg *cfg = config();
	struct hist_key key = {};
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	u64 *start;

	start = bpf_map_lookup_elem(&entered, &tid);
	if (!start)
		return 0;
	if (cfg && cfg->arg0) {
		key.id = pid_tgid >> 32;
		bpf_get_current_comm(key.comm, sizeof(key.comm));
	}
	hist_add(&key, bpf_ktime_get_ns() - *start);
	bpf_map_delete_elem(&entered, &tid);
	return 0;
}
