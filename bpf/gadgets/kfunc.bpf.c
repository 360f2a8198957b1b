// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * kfunc: calls of kernel functions, by fentry/fexit where the kernel has BTF and BPF
 * trampolines, else by kprobe/kretprobe. The same entry and return code behind both:
 *   count mode     each call counted in the kernel (counted(), the value is the function)
 *   histogram      entry-to-return latency per function (and per process with arg2)
 *   events         one event per call with its first six arguments, at entry, or at the
 *                  return (KF_AT_RETURN) with the return value and the duration
 * The function is the address bpf_get_func_ip() gives (5.15+); the server names it.
 * One kprobe program attaches to every function a glob names; an fentry program is
 * verified against one function, so the object has KF_SLOTS copies of each.
 */
#define GADGET_EVENT struct kfunc_event
#include "../hist.h"
#include "../regs.h"

#define KF_AT_ENTRY (1u << 0)  /* events at entry */
#define KF_AT_RETURN (1u << 1) /* events at return */
#define KF_HIST (1u << 2)      /* latency histograms */
#define KF_STACK (1u << 3)     /* record the kernel stack of each event */
#define KF_STR_LEN 64
#define KF_DEPTH 4 /* nested traced calls followed per thread */

struct kfunc_event {
	struct event_header h;
	u64 ip;
	u64 args[6];
	s64 ret;
	u64 duration_ns;
	s32 stack_id; /* in kf_stacks; negative: none */
	u32 returned;
	char str[2][KF_STR_LEN]; /* the string arguments arg1 names (below) */
};

/* Kernel stacks of events (KF_STACK); sized by the server, one entry when unused. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1024);
	__uint(key_size, sizeof(u32));
	__uint(value_size, 127 * sizeof(u64));
} kf_stacks SEC(".maps");

/* Calls in progress per thread, innermost last: returns come in the reverse order. */
struct kf_frame {
	u64 ip;
	u64 ts;
	u64 args[6];
};

struct kf_calls {
	u32 depth;
	u32 pad;
	struct kf_frame f[KF_DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, u64);
	__type(value, struct kf_calls);
} kf_inflight SEC(".maps");

/* Whose calls these are: the thread, or for the idle tasks (thread 0 on every CPU, where
 * interrupts and softirqs run) the CPU. */
static __always_inline u64 caller_key(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();

	return tid ? tid : (1ULL << 32) | bpf_get_smp_processor_id();
}

/* Scratch for a thread's first call (too large for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct kf_calls);
} kf_scratch SEC(".maps");


/* arg1: which arguments are strings, (index + 1) in each of its low two bytes. */
static __always_inline void read_strings(struct gadget_cfg *cfg, struct kfunc_event *e)
{
#pragma unroll
	for (int s = 0; s < 2; s++) {
		u32 which = (cfg->arg1 >> (8 * s)) & 0xff;
		const void *p;

		if (!which || which > 6)
			continue;
		p = (const void *)e->args[(which - 1) & 7];
		if (!p)
			continue;
		/* x86-64: user addresses have the top bit clear, kernel ones set. */
		if ((s64)p >= 0)
			bpf_probe_read_user_str(e->str[s], KF_STR_LEN, p);
		else
			bpf_probe_read_kernel_str(e->str[s], KF_STR_LEN, p);
	}
}

/* One event for a call: at entry (`ret` unknown) or at its return. */
static __always_inline void emit(void *ctx, struct gadget_cfg *cfg, struct event_header *h,
				 u64 ip, const u64 *args, s64 ret, u64 duration, u32 returned)
{
	struct kfunc_event *e = reserve_event(sizeof(*e), h);

	if (!e)
		return;
	e->ip = ip;
	__builtin_memcpy(e->args, args, sizeof(e->args));
	e->ret = ret;
	e->duration_ns = duration;
	e->returned = returned;
	e->stack_id = -1;
	__builtin_memset(e->str, 0, sizeof(e->str));
	read_strings(cfg, e);
	if (cfg->arg0 & KF_STACK) {
		e->stack_id = bpf_get_stackid(ctx, &kf_stacks, 0);
		if (e->stack_id < 0)
			count_drop(); /* the table is full, or two stacks collided */
	}
	submit(e);
}

static __always_inline int kf_enter(void *ctx, u64 ip, const u64 *args)
{
	struct gadget_cfg *cfg = config();
	struct event_header h = {};
	struct kf_calls *calls;
	struct kf_frame *f;
	u64 who;
	u32 zero = 0, d;

	if (!want(cfg, &h))
		return 0;
	if (counted(cfg, &h, (s64)ip))
		return 0;
	if (cfg->arg0 & KF_AT_ENTRY) {
		emit(ctx, cfg, &h, ip, args, 0, 0, 0);
		return 0;
	}
	if (!(cfg->arg0 & (KF_AT_RETURN | KF_HIST)))
		return 0;
	who = caller_key();
	calls = bpf_map_lookup_elem(&kf_inflight, &who);
	if (!calls) {
		struct kf_calls *fresh = bpf_map_lookup_elem(&kf_scratch, &zero);

		if (!fresh)
			return 0;
		fresh->depth = 0;
		bpf_map_update_elem(&kf_inflight, &who, fresh, BPF_NOEXIST);
		calls = bpf_map_lookup_elem(&kf_inflight, &who);
		if (!calls) {
			count_drop();
			return 0;
		}
	}
	d = calls->depth;
	calls->depth = d + 1;
	if (d >= KF_DEPTH) {
		count_drop();
		return 0;
	}
	f = &calls->f[d & (KF_DEPTH - 1)];
	f->ip = ip;
	__builtin_memcpy(f->args, args, sizeof(f->args));
	f->ts = bpf_ktime_get_ns();
	return 0;
}

/* `ip`: the function returning, where the hook can tell (0: it cannot). */
static __always_inline int kf_return(void *ctx, u64 ip, s64 ret)
{
	struct gadget_cfg *cfg = config();
	u64 who = caller_key();
	struct event_header h = {};
	struct kf_calls *calls;
	struct kf_frame *f;
	struct hist_key key = {};
	u64 args[6], now = bpf_ktime_get_ns(), start, fip;
	u32 d;

	if (!cfg)
		return 0;
	calls = bpf_map_lookup_elem(&kf_inflight, &who);
	if (!calls || !calls->depth)
		return 0;
	d = --calls->depth;
	if (d >= KF_DEPTH)
		return 0;
	f = &calls->f[d & (KF_DEPTH - 1)];
	fip = f->ip;
	start = f->ts;
	__builtin_memcpy(args, f->args, sizeof(args));
	if (ip && fip != ip) {
		/* A return was missed (a kretprobe out of instances, a recursion guard): this
		 * frame is not this call's. Start over. */
		calls->depth = 0;
		count_drop();
		return 0;
	}
	if (cfg->arg0 & KF_HIST) {
		key.kind = (u32)fip;
		if (cfg->arg2) {
			u64 pid_tgid = bpf_get_current_pid_tgid();

			key.id = pid_tgid >> 32;
			bpf_get_current_comm(key.comm, sizeof(key.comm));
		}
		hist_add(&key, now - start);
		return 0;
	}
	if (!want(cfg, &h))
		return 0;
	emit(ctx, cfg, &h, fip, args, ret, now - start, 1);
	return 0;
}

SEC("kprobe")
int kf_kprobe(struct pt_regs *ctx)
{
	u64 args[6] = {ctx->di, ctx->si, ctx->dx, ctx->cx, ctx->r8, ctx->r9};

	return kf_enter(ctx, bpf_get_func_ip(ctx), args);
}

SEC("kretprobe")
int kf_kretprobe(struct pt_regs *ctx)
{
	return kf_return(ctx, bpf_get_func_ip(ctx), (s64)ctx->ax);
}

static __always_inline void fentry_args(void *ctx, u64 *args)
{
#pragma unroll
	for (int i = 0; i < 6; i++) {
		args[i] = 0;
		bpf_get_func_arg(ctx, i, &args[i]);
	}
}

#define KF_SLOT(n)                                                        \
	SEC("fentry")                                                     \
	int kf_fentry##n(void *ctx)                                       \
	{                                                                 \
		u64 args[6];                                              \
                                                                          \
		fentry_args(ctx, args);                                   \
		return kf_enter(ctx, bpf_get_func_ip(ctx), args);         \
	}                                                                 \
	SEC("fexit")                                                      \
	int kf_fexit##n(void *ctx)                                        \
	{                                                                 \
		u64 ret = 0;                                              \
                                                                          \
		bpf_get_func_ret(ctx, &ret);                              \
		return kf_return(ctx, bpf_get_func_ip(ctx), (s64)ret);    \
	}

/* KF_SLOTS in src/gadgets/kfunc.rs. */
KF_SLOT(0)
KF_SLOT(1)
KF_SLOT(2)
KF_SLOT(3)
KF_SLOT(4)
KF_SLOT(5)
KF_SLOT(6)
KF_SLOT(7)
