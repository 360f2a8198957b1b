// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* open: every openat/openat2 with its path, flags and result (fd or -errno). The path is
 * read from the caller's memory on entry and emitted with the result on exit. */
#define GADGET_EVENT struct open_event
#include "../gadget.h"

#define PATH_LEN 256

struct open_event {
	struct event_header h;
	s32 ret;
	u32 flags;
	u32 mode;
	u32 pad;
	char path[PATH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, struct open_event);
} open_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct open_event);
} open_scratch SEC(".maps");

struct syscall_enter {
	u64 common;
	s64 nr;
	u64 args[6];
};

struct syscall_exit {
	u64 common;
	s64 nr;
	s64 ret;
};

/* struct open_how of openat2 starts with its flags and mode. */
struct open_how_head {
	u64 flags;
	u64 mode;
};

static __always_inline int enter(const char *path, u32 flags, u32 mode)
{
	struct gadget_cfg *cfg = config();
	u32 zero = 0;
	struct open_event *e = bpf_map_lookup_elem(&open_scratch, &zero);

	if (!e || !want(cfg, &e->h))
		return 0;
	/* Counted at entry: the server then attaches no exit programs. */
	if (counted(cfg, &e->h, 0))
		return 0;
	e->flags = flags;
	e->mode = mode;
	e->pad = 0;
	bpf_probe_read_user_str(e->path, sizeof(e->path), path);
	bpf_map_update_elem(&open_pending, &e->h.tid, e, BPF_ANY);
	return 0;
}

static __always_inline int leave(s64 ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct open_event *pending = bpf_map_lookup_elem(&open_pending, &tid);
	struct open_event *e;

	if (!pending)
		return 0;
	e = reserve(sizeof(*e));
	if (e) {
		bpf_probe_read_kernel(e, sizeof(*e), pending);
		stamp(&e->h);
		e->ret = ret;
		submit(e);
	}
	bpf_map_delete_elem(&open_pending, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int openat_enter(struct syscall_enter *ctx)
{
	return enter((const char *)ctx->args[1], (u32)ctx->args[2], (u32)ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int openat_exit(struct syscall_exit *ctx)
{
	return leave(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int openat2_enter(struct syscall_enter *ctx)
{
	struct open_how_head how = {};

	bpf_probe_read_user(&how, sizeof(how), (void *)ctx->args[2]);
	return enter((const char *)ctx->args[1], (u32)how.flags, (u32)how.mode);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int openat2_exit(struct syscall_exit *ctx)
{
	return leave(ctx->ret);
}
