// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* oom_kill: every process the OOM killer chose, with its memory at the time. The event's
 * process is the task whose allocation triggered the kill (often the victim itself). */
#define GADGET_EVENT struct oom_event
#include "../gadget.h"

struct trace_event_raw_mark_victim {
	u64 common;
	int pid;
	u32 __data_loc_comm;
	unsigned long total_vm;
	unsigned long anon_rss;
	unsigned long file_rss;
	unsigned long shmem_rss;
	u32 uid;
	unsigned long pgtables;
	short oom_score_adj;
} __attribute__((preserve_access_index));

struct oom_event {
	struct event_header h;
	u32 victim_pid;
	u32 victim_uid;
	char victim_comm[TASK_COMM_LEN];
	/* kB; 0 on kernels whose tracepoint lacks them (before 6.6) */
	u64 total_vm;
	u64 anon_rss;
	u64 file_rss;
	u64 shmem_rss;
	u64 pgtables;
	s32 oom_score_adj;
	u32 detail; /* 1 when the memory fields are known */
};

SEC("tracepoint/oom/mark_victim")
int oom_victim(struct trace_event_raw_mark_victim *ctx)
{
	struct event_header h = {};
	struct oom_event *e;

	/* The allocating task, maybe the server; the victim is another matter. */
	if (!want_incidental(config(), &h))
		return 0;
	e = reserve(sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->h = h;
	stamp(&e->h);
	e->victim_pid = BPF_CORE_READ(ctx, pid);
	if (bpf_core_field_exists(ctx->__data_loc_comm)) {
		u32 loc = BPF_CORE_READ(ctx, __data_loc_comm);

		bpf_probe_read_kernel_str(e->victim_comm, sizeof(e->victim_comm),
					  (void *)ctx + (loc & 0xffff));
	}
	if (bpf_core_field_exists(ctx->total_vm)) {
		e->detail = 1;
		e->total_vm = BPF_CORE_READ(ctx, total_vm);
		e->anon_rss = BPF_CORE_READ(ctx, anon_rss);
		e->file_rss = BPF_CORE_READ(ctx, file_rss);
		e->shmem_rss = BPF_CORE_READ(ctx, shmem_rss);
		e->pgtables = BPF_CORE_READ(ctx, pgtables);
		e->victim_uid = BPF_CORE_READ(ctx, uid);
		e->oom_score_adj = BPF_CORE_READ(ctx, oom_score_adj);
	}
	submit(e);
	return 0;
}
