// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* runqlat: run-queue latency, from a task becoming runnable (woken, or preempted while
 * runnable) to it running on a CPU, as a log2 histogram; per process when arg0 is set.
 * Filters apply to the task that waits, not to the CPU's current task. */
#include "../hist.h"

#define TASK_RUNNING 0

struct kuid {
	u32 val;
};

struct cred {
	struct kuid uid;
} __attribute__((preserve_access_index));

struct task_struct___rq {
	int pid;
	int tgid;
	struct task_struct___rq *group_leader;
	char comm[TASK_COMM_LEN];
	unsigned int __state;
	const struct cred *cred;
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

/* Before 5.14 the state field was `long state`. */
struct task_struct___old {
	long state;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, u32);
	__type(value, u64);
} runnable_since SEC(".maps");

/* The filters, applied to `t` rather than to the current task. */
static __always_inline int want_task(struct gadget_cfg *cfg, struct task_struct___rq *t)
{
	u32 tgid = BPF_CORE_READ(t, tgid);
	char comm[TASK_COMM_LEN];

	if (!cfg || !tgid || cfg->self_tgid == tgid)
		return 0;
	if (cfg->tgid && cfg->tgid != tgid)
		return 0;
	if (cfg->uid_set && cfg->uid != BPF_CORE_READ(t, cred, uid.val))
		return 0;
	if (cfg->cgroup_id && cfg->cgroup_id != BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id))
		return 0;
	if (cfg->comm_set) {
		BPF_CORE_READ_STR_INTO(&comm, t, comm);
		if (!comm_equal(comm, cfg->comm))
			return 0;
	}
	return 1;
}

static __always_inline void mark_runnable(struct task_struct___rq *t)
{
	u32 tid;
	u64 now;

	if (!want_task(config(), t))
		return;
	tid = BPF_CORE_READ(t, pid);
	now = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&runnable_since, &tid, &now, BPF_ANY))
		count_drop();
}

SEC("raw_tracepoint/sched_wakeup")
int runq_wakeup(struct bpf_raw_tracepoint_args *ctx)
{
	mark_runnable((struct task_struct___rq *)ctx->args[0]);
	return 0;
}

SEC("raw_tracepoint/sched_wakeup_new")
int runq_wakeup_new(struct bpf_raw_tracepoint_args *ctx)
{
	mark_runnable((struct task_struct___rq *)ctx->args[0]);
	return 0;
}

SEC("raw_tracepoint/sched_switch")
int runq_switch(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct___rq *prev = (struct task_struct___rq *)ctx->args[1];
	struct task_struct___rq *next = (struct task_struct___rq *)ctx->args[2];
	struct gadget_cfg *cfg = config();
	struct hist_key key = {};
	long state;
	u64 *since;
	u32 tid;

	/* A task preempted while runnable waits in the run queue again. */
	if (bpf_core_field_exists(prev->__state))
		state = BPF_CORE_READ(prev, __state);
	else
		state = BPF_CORE_READ((struct task_struct___old *)prev, state);
	if (state == TASK_RUNNING)
		mark_runnable(prev);

	tid = BPF_CORE_READ(next, pid);
	since = bpf_map_lookup_elem(&runnable_since, &tid);
	if (!since)
		return 0;
	if (cfg && cfg->arg0) {
		key.id = BPF_CORE_READ(next, tgid);
		/* The process's name: its main thread's. */
		BPF_CORE_READ_STR_INTO(&key.comm, next, group_leader, comm);
	}
	hist_add(&key, bpf_ktime_get_ns() - *since);
	bpf_map_delete_elem(&runnable_since, &tid);
	return 0;
}
