// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* exec: every execve/execveat with its arguments and result. The file name and the first
 * arguments are captured on entry (they live in the caller's memory) and emitted on exit,
 * when the result is known. */
#define GADGET_EVENT struct exec_event
#include "../gadget.h"

#define ARG_MAX 256     /* bytes of one argument, its NUL included */
#define ARGS_SIZE 1024  /* bytes of all of them (a power of two: offsets are masked) */
#define MAX_ARGS 16
#define NAME_LEN 256

struct exec_event {
	struct event_header h;
	s32 retval;
	u32 argc;     /* arguments captured */
	u32 more;     /* 1: arguments left out (count or room); 2: one cut at ARG_MAX */
	u32 args_len; /* bytes of args used */
	char filename[NAME_LEN];
	/* The arguments one after the other, each ending in NUL; the tail past ARGS_SIZE is
	 * room for the last one read. */
	char args[ARGS_SIZE + ARG_MAX];
};

/* Execs in flight (entered, not yet returned) across the host. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, struct exec_event);
} exec_pending SEC(".maps");

/* Too big for the stack: built in a per-CPU scratch slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct exec_event);
} exec_scratch SEC(".maps");

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

static __always_inline int enter(const char *filename, const char *const *argv)
{
	u32 zero = 0;
	struct exec_event *e = bpf_map_lookup_elem(&exec_scratch, &zero);

	if (!e)
		return 0;
	/* The name and uid the filters compare are the ones after the exec (leave()). */
	if (!want_before_exec(config(), &e->h))
		return 0;
	bpf_probe_read_user_str(e->filename, sizeof(e->filename), filename);
	e->argc = 0;
	e->more = 0;
	u32 off = 0;
#pragma unroll
	for (int i = 0; i < MAX_ARGS; i++) {
		const char *arg = 0;
		long n;

		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			goto done;
		if (off >= ARGS_SIZE) {
			e->more |= 1;
			goto done;
		}
		n = bpf_probe_read_user_str(&e->args[off & (ARGS_SIZE - 1)], ARG_MAX, arg);
		if (n <= 0)
			goto done;
		if (n == ARG_MAX)
			e->more |= 2;
		off += n;
		e->argc = i + 1;
	}
	{
		const char *arg = 0;

		if (!bpf_probe_read_user(&arg, sizeof(arg), &argv[MAX_ARGS]) && arg)
			e->more |= 1;
	}
done:
	e->args_len = off;
	bpf_map_update_elem(&exec_pending, &e->h.tid, e, BPF_ANY);
	return 0;
}

static __always_inline int leave(s64 ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct exec_event *pending = bpf_map_lookup_elem(&exec_pending, &tid);
	struct event_header now = {};
	struct exec_event *e;

	if (!pending)
		return 0;
	/* After a successful exec the task has the new program's name (and maybe uid): the
	 * event carries them, and the filters compare them. */
	if (want(config(), &now) && !counted(config(), &now, 0)) {
		e = reserve(sizeof(*e));
		if (e) {
			bpf_probe_read_kernel(e, sizeof(*e), pending);
			e->h = now;
			stamp(&e->h);
			e->retval = ret;
			submit(e);
		}
	}
	bpf_map_delete_elem(&exec_pending, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int exec_enter(struct syscall_enter *ctx)
{
	return enter((const char *)ctx->args[0], (const char *const *)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_execve")
int exec_exit(struct syscall_exit *ctx)
{
	return leave(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int execat_enter(struct syscall_enter *ctx)
{
	return enter((const char *)ctx->args[1], (const char *const *)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int execat_exit(struct syscall_exit *ctx)
{
	return leave(ctx->ret);
}
