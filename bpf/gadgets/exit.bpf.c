// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* exit: every process exit (the last thread of a thread group) with its exit code, the
 * signal that ended it if any, and how long it lived. */
#define GADGET_EVENT struct exit_event
#include "../gadget.h"

struct trace_event_raw_sched_process_template {
	u64 common;
	char comm[16];
	int pid;
} __attribute__((preserve_access_index));

struct exit_event {
	struct event_header h;
	s32 exit_code;  /* what the process passed to exit() */
	s32 signal;     /* the signal that killed it, 0 when it exited */
	u32 core_dump;
	u32 pad;
	u64 lifetime_ns;
};

SEC("tracepoint/sched/sched_process_exit")
int exit_trace(void *ctx)
{
	struct gadget_cfg *cfg = config();
	struct event_header h = {};
	struct task_struct *task;
	struct exit_event *e;
	int code;

	if (!want(cfg, &h))
		return 0;
	/* Only the thread group's end is a process exit. */
	if (h.pid != h.tid)
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	code = BPF_CORE_READ(task, exit_code);
	if (counted(cfg, &h, (code >> 8) & 0xff))
		return 0;
	e = reserve_event(sizeof(*e), &h);
	if (!e)
		return 0;
	e->exit_code = (code >> 8) & 0xff;
	e->signal = code & 0x7f;
	e->core_dump = (code & 0x80) ? 1 : 0;
	e->pad = 0;
	e->lifetime_ns = e->h.ts_ns - BPF_CORE_READ(task, start_time);
	submit(e);
	return 0;
}
