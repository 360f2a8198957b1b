// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* syscalls: counts per process and syscall, aggregated in the kernel (no event per call);
 * or, with syscalls_enter/syscalls_exit attached instead, the duration of each call from
 * entry to return as log2 histograms per syscall and name (and process when arg0 is set). */
#include "../hist.h"

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

	if (ctx->id < 0 || !want(config(), &h))
		return 0;
	key.pid = h.pid;
	key.nr = (u32)ctx->id;
	__builtin_memcpy(key.comm, h.comm, sizeof(key.comm));
	table_add(&syscall_counts, &key);
	return 0;
}

/* When the current call of each thread started, and which call it is. LRU: a thread that
 * never returns (exit) leaves an entry that newer ones push out. */
struct syscall_start {
	u64 ts;
	u32 nr;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct syscall_start);
} syscall_starts SEC(".maps");

struct raw_syscall_exit {
	u64 common;
	s64 id;
	s64 ret;
};

SEC("tracepoint/raw_syscalls/sys_enter")
int syscalls_enter(struct raw_syscall_enter *ctx)
{
	struct event_header h = {};
	struct syscall_start s = {};

	if (ctx->id < 0 || !want(config(), &h))
		return 0;
	s.ts = bpf_ktime_get_ns();
	s.nr = (u32)ctx->id;
	bpf_map_update_elem(&syscall_starts, &h.tid, &s, BPF_ANY);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int syscalls_exit(struct raw_syscall_exit *ctx)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	struct syscall_start *s = bpf_map_lookup_elem(&syscall_starts, &tid);
	struct gadget_cfg *cfg = config();
	struct hist_key key = {};
	u64 ns;

	if (!s)
		return 0;
	ns = bpf_ktime_get_ns() - s->ts;
	key.id = cfg && cfg->arg0 ? (u32)(pid_tgid >> 32) : 0;
	key.kind = s->nr;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	bpf_map_delete_elem(&syscall_starts, &tid);
	hist_add(&key, ns);
	return 0;
}
