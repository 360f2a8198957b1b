// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* uprobe: calls of one user-space function, counted in the kernel per process; with arg1
 * set, also the time from entry to return as log2 histograms (per process when arg0 is
 * set); or (uprobe_call) one event per call with its first six arguments. */
#define GADGET_EVENT struct uprobe_event
#include "../hist.h"
#include "../regs.h"

struct uprobe_event {
	struct event_header h;
	u64 args[6];
	u64 ret;         /* uprobe_call_return: the return value register */
	u64 duration_ns; /* uprobe_call_return: from entry to return */
};

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

static __always_inline void read_args(struct pt_regs *ctx, u64 *args)
{
	args[0] = ctx->di;
	args[1] = ctx->si;
	args[2] = ctx->dx;
	args[3] = ctx->cx;
	args[4] = ctx->r8;
	args[5] = ctx->r9;
}

SEC("uprobe")
int uprobe_call(struct pt_regs *ctx)
{
	struct event_header h = {};
	struct uprobe_event *e;

	if (!want(config(), &h))
		return 0;
	e = reserve_event(sizeof(*e), &h);
	if (!e)
		return 0;
	read_args(ctx, e->args);
	e->ret = 0;
	e->duration_ns = 0;
	submit(e);
	return 0;
}

/* A call's arguments and start, per thread, until it returns. LRU: calls that never return
 * (longjmp, exit) are pushed out by newer ones. A recursive call replaces its caller's. */
struct call_start {
	u64 ts;
	u64 args[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct call_start);
} call_starts SEC(".maps");

SEC("uprobe")
int uprobe_call_enter(struct pt_regs *ctx)
{
	struct event_header h = {};
	struct call_start c = {};

	if (!want(config(), &h))
		return 0;
	c.ts = bpf_ktime_get_ns();
	read_args(ctx, c.args);
	bpf_map_update_elem(&call_starts, &h.tid, &c, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int uprobe_call_return(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct call_start *c = bpf_map_lookup_elem(&call_starts, &tid);
	struct event_header h = {};
	struct uprobe_event *e;

	if (!c)
		return 0;
	if (want(config(), &h)) {
		e = reserve_event(sizeof(*e), &h);
		if (e) {
			__builtin_memcpy(e->args, c->args, sizeof(e->args));
			e->ret = ctx->ax;
			e->duration_ns = bpf_ktime_get_ns() - c->ts;
			submit(e);
		}
	}
	bpf_map_delete_elem(&call_starts, &tid);
	return 0;
}

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
