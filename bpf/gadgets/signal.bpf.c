// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* signal: every signal generated, with sender (the current task), target and result. */
#define GADGET_EVENT struct signal_event
#include "../gadget.h"

struct trace_event_raw_signal_generate {
	u64 common;
	int sig;
	int errno;
	int code;
	char comm[16];
	int pid;
	int group;
	int result;
} __attribute__((preserve_access_index));

struct signal_event {
	struct event_header h;
	s32 sig;
	s32 code;
	u32 target_pid;
	s32 result;  /* TRACE_SIGNAL_*: 0 delivered, 1 ignored, 2 already pending, ... */
	u32 group;   /* sent to the whole thread group */
	u32 pad;
	char target_comm[16];
};

SEC("tracepoint/signal/signal_generate")
int signal_trace(struct trace_event_raw_signal_generate *ctx)
{
	struct gadget_cfg *cfg = config();
	struct event_header h = {};
	struct signal_event *e;

	if (!want(cfg, &h))
		return 0;
	if (counted(cfg, &h, BPF_CORE_READ(ctx, sig)))
		return 0;
	e = reserve_event(sizeof(*e), &h);
	if (!e)
		return 0;
	e->sig = BPF_CORE_READ(ctx, sig);
	e->code = BPF_CORE_READ(ctx, code);
	e->target_pid = BPF_CORE_READ(ctx, pid);
	e->result = BPF_CORE_READ(ctx, result);
	e->group = BPF_CORE_READ(ctx, group);
	e->pad = 0;
	BPF_CORE_READ_STR_INTO(&e->target_comm, ctx, comm);
	submit(e);
	return 0;
}
