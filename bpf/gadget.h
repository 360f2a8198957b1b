/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * What every gadget shares: the filter configuration the server writes before attaching,
 * the ring buffer events travel in, the per-CPU count of events the ring buffer had no room
 * for, and the common event header. Keep in sync with src/gadgets/mod.rs.
 */
#ifndef EBPF_MCP_GADGET_H
#define EBPF_MCP_GADGET_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;
typedef __s64 s64;

#define TASK_COMM_LEN 16

/* Minimal CO-RE views of kernel types: field offsets are relocated against the running
 * kernel's BTF at load time, so only the fields used need declaring. */
struct kernfs_node {
	const char *name;
	u64 id;
} __attribute__((preserve_access_index));

/* The parent link was renamed in 6.15. */
struct kernfs_node___old {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

struct kernfs_node___new {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	struct task_struct *real_parent;
	int exit_code;
	u64 start_time;
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

/* Filters, written by the server into gadget_cfg[0] before any program is attached.
 * Zero means "no filter" for every field. */
struct gadget_cfg {
	u32 tgid;
	u32 uid_set;
	u32 uid;
	u32 comm_set;
	u64 cgroup_id;
	char comm[TASK_COMM_LEN];
	/* The server itself: its own activity is never traced. */
	u32 self_tgid;
	/* Gadget-specific knobs (generic tracepoint: record size and string fields). */
	u32 arg0;
	u32 arg1;
	u32 arg2;
	/* Count mode in the kernel (COUNT_*, 0: send every event): see counted(). */
	u32 count_keys;
	/* A numeric field of the hook's record (generic tracepoint): its offset in the low 16
	 * bits, its size (1, 2, 4 or 8) in the next 8, bit 24 set when it is signed; 0: none. */
	u32 value_field;
	/* CFG_*: record cgroup names for container ids; only tasks under cgroup_scope[0]. */
	u32 flags;
	u32 pad;
};

#define CFG_NAME_CGROUPS (1u << 0)
#define CFG_UNDER_SCOPE (1u << 1)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct gadget_cfg);
} gadget_cfg SEC(".maps");

/* Sized by the server at load time. A gadget that defines GADGET_EVENT (its event struct)
 * before including this file gets a `layout` member here, which loaders ignore: it puts
 * the struct in the object's BTF, where the server's tests check the decoder's offsets. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
#ifdef GADGET_EVENT
	GADGET_EVENT *layout;
#endif
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} drops SEC(".maps");

/* The names of the cgroup v2 directories events come from and of their parents, recorded
 * the first time each is seen: the server reads container ids and pod UIDs out of them,
 * also for a container that is already gone when its event is read. */
#define CGROUP_NAME 96

struct cgroup_name {
	char leaf[CGROUP_NAME];
	char parent[CGROUP_NAME];
};

/* Sized by the server; full, it records no more (a preallocated table: safe in any hook). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, u64);
	__type(value, struct cgroup_name);
} cgroup_names SEC(".maps");

/* A container's cgroup (put here by the server): events of tasks in it or below it. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} cgroup_scope SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct cgroup_name);
} cgroup_scratch SEC(".maps");

/* Records the names of the current task's cgroup `id` unless known (or the root). */
static __always_inline void note_cgroup(u64 id)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct kernfs_node *kn, *parent;
	struct cgroup_name *n;
	u32 zero = 0;

	if (id <= 1 || bpf_map_lookup_elem(&cgroup_names, &id))
		return;
	n = bpf_map_lookup_elem(&cgroup_scratch, &zero);
	if (!n)
		return;
	kn = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn);
	if (!kn)
		return;
	if (bpf_core_field_exists(((struct kernfs_node___new *)0)->__parent))
		parent = BPF_CORE_READ((struct kernfs_node___new *)kn, __parent);
	else
		parent = BPF_CORE_READ((struct kernfs_node___old *)kn, parent);
	n->leaf[0] = 0;
	n->parent[0] = 0;
	bpf_probe_read_kernel_str(n->leaf, sizeof(n->leaf), BPF_CORE_READ(kn, name));
	if (parent)
		bpf_probe_read_kernel_str(n->parent, sizeof(n->parent), BPF_CORE_READ(parent, name));
	bpf_map_update_elem(&cgroup_names, &id, n, BPF_NOEXIST);
}

/* Which fields key the counts of count mode in the kernel (gadget_cfg.count_keys). */
#define COUNT_ON (1u << 0)
#define COUNT_PID (1u << 1)
#define COUNT_TID (1u << 2)
#define COUNT_PPID (1u << 3)
#define COUNT_UID (1u << 4)
#define COUNT_COMM (1u << 5)
#define COUNT_CGROUP (1u << 6)
#define COUNT_VALUE (1u << 7) /* the gadget's value (a tracepoint field) */
/* Not a count: the value goes into a histogram (bpf/hist.h), per process when COUNT_PID. */
#define COUNT_HIST (1u << 8)

struct count_key {
	u32 pid;
	u32 tid;
	u32 ppid;
	u32 uid;
	u64 cgroup_id;
	s64 value;
	char comm[TASK_COMM_LEN];
};

/* Preallocated (kernels before 6.1 warn about tables allocated in tracing programs): the
 * server sizes it to one entry unless the gadget counts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct count_key);
	__type(value, u64);
} counts SEC(".maps");

/* Every event starts with this. */
struct event_header {
	u64 ts_ns;
	u32 pid;  /* thread group id: what users call the pid */
	u32 tid;
	u32 ppid;
	u32 uid;
	u64 cgroup_id;
	char comm[TASK_COMM_LEN];
};

static __always_inline struct gadget_cfg *config(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&gadget_cfg, &zero);
}

static __always_inline int comm_equal(const char *a, const char *b)
{
#pragma unroll
	for (int i = 0; i < TASK_COMM_LEN; i++) {
		if (a[i] != b[i])
			return 0;
		if (!a[i])
			return 1;
	}
	return 1;
}

/* True when the current task passes the filters; fills the header's identity fields.
 * `incidental`: the hook runs in whatever task the CPU was running (packets, timers), so
 * that task being the server says nothing about the event: it is not dropped for it.
 * `before_exec`: the task is about to exec, which may change its name and uid, so only the
 * filters an exec keeps (pid, cgroup) apply; the rest are checked after it (want()). */
static __always_inline int filter_task(struct gadget_cfg *cfg, struct event_header *h,
				       int incidental, int before_exec)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u64 uid_gid = bpf_get_current_uid_gid();

	h->pid = pid_tgid >> 32;
	h->tid = (u32)pid_tgid;
	h->uid = (u32)uid_gid;
	if (!cfg)
		return 0;
	if (!incidental && cfg->self_tgid == h->pid)
		return 0;
	if (cfg->tgid && cfg->tgid != h->pid)
		return 0;
	if (!before_exec && cfg->uid_set && cfg->uid != h->uid)
		return 0;
	h->cgroup_id = bpf_get_current_cgroup_id();
	if (cfg->cgroup_id && cfg->cgroup_id != h->cgroup_id)
		return 0;
	if ((cfg->flags & CFG_UNDER_SCOPE) && bpf_current_task_under_cgroup(&cgroup_scope, 0) != 1)
		return 0;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
	if (!before_exec && cfg->comm_set && !comm_equal(h->comm, cfg->comm))
		return 0;
	if (cfg->flags & CFG_NAME_CGROUPS)
		note_cgroup(h->cgroup_id);
	return 1;
}

/* Filters for an event the current task causes (a syscall, an exec, a signal it sends). */
static __always_inline int want(struct gadget_cfg *cfg, struct event_header *h)
{
	return filter_task(cfg, h, 0, 0);
}

/* Filters for an exec about to happen: want() again once it has (see filter_task). */
static __always_inline int want_before_exec(struct gadget_cfg *cfg, struct event_header *h)
{
	return filter_task(cfg, h, 0, 1);
}

/* Filters for an event the current task may merely be running into (see filter_task). */
static __always_inline int want_incidental(struct gadget_cfg *cfg, struct event_header *h)
{
	return filter_task(cfg, h, 1, 0);
}

/* Fills the rest of the header: time and parent. */
static __always_inline void stamp(struct event_header *h)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	h->ts_ns = bpf_ktime_get_boot_ns();
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
}

static __always_inline void count_drop(void)
{
	u32 zero = 0;
	u64 *n = bpf_map_lookup_elem(&drops, &zero);

	if (n)
		(*n)++;
}

/* Adds one to the u64 that `key` maps to in hash `table`; a full table counts a drop. */
static __always_inline void table_add(void *table, const void *key)
{
	u64 one = 1, *n = bpf_map_lookup_elem(table, key);

	if (n) {
		__sync_fetch_and_add(n, 1);
		return;
	}
	if (!bpf_map_update_elem(table, key, &one, BPF_NOEXIST))
		return;
	/* Another CPU inserted the key first (count it there), or the table is full. */
	n = bpf_map_lookup_elem(table, key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		count_drop();
}

/* Count mode in the kernel: when the server set count_keys (every group key is a field
 * known here and the call's filter is wholly the filters above), the event `h` (from
 * want()) is counted in `counts` under those fields and nothing is sent: returns 1. */
static __always_inline int counted(const struct gadget_cfg *cfg, const struct event_header *h,
				   s64 value)
{
	struct count_key key = {};
	u32 keys;

	if (!cfg || !(cfg->count_keys & COUNT_ON))
		return 0;
	keys = cfg->count_keys;
	if (keys & COUNT_PID)
		key.pid = h->pid;
	if (keys & COUNT_TID)
		key.tid = h->tid;
	if (keys & COUNT_PPID) {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();

		key.ppid = BPF_CORE_READ(task, real_parent, tgid);
	}
	if (keys & COUNT_UID)
		key.uid = h->uid;
	if (keys & COUNT_CGROUP)
		key.cgroup_id = h->cgroup_id;
	if (keys & COUNT_VALUE)
		key.value = value;
	if (keys & COUNT_COMM)
		__builtin_memcpy(key.comm, h->comm, sizeof(key.comm));
	table_add(&counts, &key);
	return 1;
}

/* Reserves an event of `size` bytes, counting a drop when the ring buffer is full. */
static __always_inline void *reserve(u64 size)
{
	void *e = bpf_ringbuf_reserve(&events, size, 0);

	if (!e)
		count_drop();
	return e;
}

/* Reserves an event of `size` bytes starting with header `h` (from want()), stamped;
 * NULL, with a drop counted, when the ring buffer is full. */
static __always_inline void *reserve_event(u64 size, const struct event_header *h)
{
	struct event_header *e = reserve(size);

	if (e) {
		*e = *h;
		stamp(e);
	}
	return e;
}

/* Pending bytes in the ring buffer past which a submit wakes the reader at once. Below it,
 * submits do not wake anyone: the reader polls every few milliseconds instead. A wakeup per
 * event would cost the traced task more than the event itself. */
#define WAKEUP_BYTES (128 * 1024)

static __always_inline void submit(void *e)
{
	u64 flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES
			    ? BPF_RB_FORCE_WAKEUP
			    : BPF_RB_NO_WAKEUP;

	bpf_ringbuf_submit(e, flags);
}

char LICENSE[] SEC("license") = "GPL";

#endif
