// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * TCP gadgets, one object: each gadget attaches only its own programs.
 *   tcp_connect     active opens as they finish (SYN_SENT -> ESTABLISHED or CLOSE), with the
 *                   connecting process, the handshake latency and the error of a failure
 *   tcp_accept      connections returned by accept(2)/accept4(2), with the accepting process
 *   tcp_state       every TCP state change, with the time spent in the previous state
 *   tcp_retransmit  retransmitted segments
 */
#define GADGET_EVENT struct tcp_event
#include "../gadget.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7

struct trace_event_raw_inet_sock_set_state {
	u64 common;
	const void *skaddr;
	int oldstate;
	int newstate;
	u16 sport;
	u16 dport;
	u16 family;
	u16 protocol;
	u8 saddr[4];
	u8 daddr[4];
	u8 saddr_v6[16];
	u8 daddr_v6[16];
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_retransmit_skb {
	u64 common;
	const void *skbaddr;
	const void *skaddr;
	int state;
	u16 sport;
	u16 dport;
	u16 family;
	u8 saddr[4];
	u8 daddr[4];
	u8 saddr_v6[16];
	u8 daddr_v6[16];
	int err;
} __attribute__((preserve_access_index));

/*
 * The same record where the kernel's BTF has no type for it (Debian's 6.1 and 6.12 are
 * built so): its fixed layout since 5.8 (`family` came then), read by plain offsets. The
 * server checks these offsets against the tracepoint's tracefs format before it loads the
 * gadget (gadgets/tcp.rs RETRANSMIT_LAYOUT), so a kernel laid out otherwise is refused,
 * never misread.
 */
struct tcp_retransmit_skb_fixed {
	u64 common;
	const void *skbaddr;
	const void *skaddr;
	int state;
	u16 sport;
	u16 dport;
	u16 family;
	u8 saddr[4];
	u8 daddr[4];
	u8 saddr_v6[16];
	u8 daddr_v6[16];
};

struct syscall_exit {
	u64 common;
	int nr;
	long ret;
};

/* CO-RE views for reading an accepted socket through the file table. */
struct in6_addr {
	u8 in6_u[16];
} __attribute__((preserve_access_index));

struct sock_common {
	u32 skc_daddr;
	u32 skc_rcv_saddr;
	u16 skc_dport;
	u16 skc_num;
	u16 skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	int sk_err;
	u16 sk_protocol;
} __attribute__((preserve_access_index));

struct socket {
	struct sock *sk;
} __attribute__((preserve_access_index));

struct file {
	void *private_data;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct task_struct___files {
	struct files_struct *files;
} __attribute__((preserve_access_index));

struct tcp_event {
	struct event_header h;
	u8 saddr[16];
	u8 daddr[16];
	u16 sport;
	u16 dport;
	u16 family;
	u16 pad0;
	s32 oldstate;
	s32 newstate;
	u64 duration_ns;
	s32 err;
	u32 pad1;
};

/* A connect in flight: who started it and when. */
struct connect_start {
	struct event_header h;
	u64 ts;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct connect_start);
} connecting SEC(".maps");

/* When each socket entered its current state. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, u64);
} state_since SEC(".maps");

static __always_inline void copy_addrs(struct tcp_event *e, u16 family, const u8 *s4,
				       const u8 *d4, const u8 *s6, const u8 *d6)
{
	if (family == AF_INET) {
		bpf_probe_read_kernel(e->saddr, 4, s4);
		bpf_probe_read_kernel(e->daddr, 4, d4);
	} else {
		bpf_probe_read_kernel(e->saddr, 16, s6);
		bpf_probe_read_kernel(e->daddr, 16, d6);
	}
}

static __always_inline struct tcp_event *new_event(void)
{
	struct tcp_event *e = reserve(sizeof(struct tcp_event));

	if (e)
		__builtin_memset(e, 0, sizeof(*e));
	return e;
}

static __always_inline void fill_from_state(struct tcp_event *e,
					    struct trace_event_raw_inet_sock_set_state *ctx)
{
	u16 family = BPF_CORE_READ(ctx, family);

	e->family = family;
	e->sport = BPF_CORE_READ(ctx, sport);
	e->dport = BPF_CORE_READ(ctx, dport);
	e->oldstate = BPF_CORE_READ(ctx, oldstate);
	e->newstate = BPF_CORE_READ(ctx, newstate);
	copy_addrs(e, family, ctx->saddr, ctx->daddr, ctx->saddr_v6, ctx->daddr_v6);
}

SEC("tracepoint/sock/inet_sock_set_state")
int tcp_connect_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	u64 sk = (u64)BPF_CORE_READ(ctx, skaddr);
	int oldstate = BPF_CORE_READ(ctx, oldstate);
	int newstate = BPF_CORE_READ(ctx, newstate);
	struct connect_start *start;
	struct tcp_event *e;

	if (BPF_CORE_READ(ctx, protocol) != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_SYN_SENT) {
		/* connect(2), in the caller's context: filter and remember the caller. */
		struct connect_start s = {};

		if (!want(config(), &s.h))
			return 0;
		stamp(&s.h);
		s.ts = s.h.ts_ns;
		bpf_map_update_elem(&connecting, &sk, &s, BPF_ANY);
		return 0;
	}
	if (oldstate != TCP_SYN_SENT)
		return 0;
	start = bpf_map_lookup_elem(&connecting, &sk);
	if (!start)
		return 0;
	e = new_event();
	if (e) {
		e->h = start->h;
		e->h.ts_ns = bpf_ktime_get_boot_ns();
		fill_from_state(e, ctx);
		e->duration_ns = e->h.ts_ns - start->ts;
		if (newstate != TCP_ESTABLISHED)
			e->err = BPF_CORE_READ((struct sock *)sk, sk_err);
		submit(e);
	}
	bpf_map_delete_elem(&connecting, &sk);
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int tcp_state_change(struct trace_event_raw_inet_sock_set_state *ctx)
{
	u64 sk = (u64)BPF_CORE_READ(ctx, skaddr);
	u64 now = bpf_ktime_get_boot_ns();
	struct event_header h = {};
	struct tcp_event *e;
	u64 *since;

	if (BPF_CORE_READ(ctx, protocol) != IPPROTO_TCP)
		return 0;
	since = bpf_map_lookup_elem(&state_since, &sk);
	/* Packet- and timer-driven changes run in whichever task was on the CPU. */
	if (want_incidental(config(), &h)) {
		e = new_event();
		if (e) {
			e->h = h;
			stamp(&e->h);
			fill_from_state(e, ctx);
			e->duration_ns = since ? now - *since : 0;
			submit(e);
		}
	}
	if (BPF_CORE_READ(ctx, newstate) == TCP_CLOSE)
		bpf_map_delete_elem(&state_since, &sk);
	else
		bpf_map_update_elem(&state_since, &sk, &now, BPF_ANY);
	return 0;
}

/* The socket behind file descriptor `fd` of the current task, or NULL. */
static __always_inline struct sock *socket_of_fd(long fd)
{
	struct task_struct___files *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;
	struct socket *sock;

	if (!fdt || fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return NULL;
	return BPF_CORE_READ(sock, sk);
}

static __always_inline int accepted(struct syscall_exit *ctx)
{
	struct event_header h = {};
	struct tcp_event *e;
	struct sock *sk;
	u16 family;

	if (ctx->ret < 0 || !want(config(), &h))
		return 0;
	sk = socket_of_fd(ctx->ret);
	if (!sk)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if ((family != AF_INET && family != AF_INET6) ||
	    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	e = new_event();
	if (!e)
		return 0;
	e->h = h;
	stamp(&e->h);
	e->family = family;
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->newstate = TCP_ESTABLISHED;
	e->err = (s32)ctx->ret; /* the new descriptor */
	if (family == AF_INET) {
		BPF_CORE_READ_INTO((u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((u32 *)e->daddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)e->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)e->daddr, sk, __sk_common.skc_v6_daddr);
	}
	submit(e);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tcp_accept4_exit(struct syscall_exit *ctx)
{
	return accepted(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tcp_accept_exit(struct syscall_exit *ctx)
{
	return accepted(ctx);
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tcp_retransmit(void *raw)
{
	struct gadget_cfg *cfg = config();
	struct event_header h = {};
	struct tcp_event *e;
	u16 family;

	/* Retransmits run from timers, in whichever task was on the CPU. */
	if (!want_incidental(cfg, &h))
		return 0;
	e = new_event();
	if (!e)
		return 0;
	e->h = h;
	stamp(&e->h);
	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb)) {
		struct trace_event_raw_tcp_retransmit_skb *ctx = raw;

		family = BPF_CORE_READ(ctx, family);
		e->family = family;
		e->sport = BPF_CORE_READ(ctx, sport);
		e->dport = BPF_CORE_READ(ctx, dport);
		e->newstate = BPF_CORE_READ(ctx, state);
		if (bpf_core_field_exists(ctx->err))
			e->err = BPF_CORE_READ(ctx, err);
		copy_addrs(e, family, ctx->saddr, ctx->daddr, ctx->saddr_v6, ctx->daddr_v6);
	} else {
		struct tcp_retransmit_skb_fixed *ctx = raw;

		family = ctx->family;
		e->family = family;
		e->sport = ctx->sport;
		e->dport = ctx->dport;
		e->newstate = ctx->state;
		copy_addrs(e, family, ctx->saddr, ctx->daddr, ctx->saddr_v6, ctx->daddr_v6);
		/* arg0: where the record's `err` is (its tracefs format), 0: it has none. */
		if (cfg && cfg->arg0) {
			int err = 0;

			bpf_probe_read_kernel(&err, sizeof(err), (const char *)raw + (cfg->arg0 & 0xfff));
			e->err = err;
		}
	}
	submit(e);
	return 0;
}
