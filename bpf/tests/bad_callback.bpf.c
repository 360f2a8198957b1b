// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused: blocked helpers that no program calls directly, only callbacks the programs hand
 * to other helpers (bpf_loop, bpf_for_each_map_elem, a timer), through function references
 * rather than calls, some nested, one in a code section of its own. */
#include "common.h"

COUNTER(slots);

struct timer_slot {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct timer_slot);
} timers SEC(".maps");

static long signal_cb(u32 index, void *ctx)
{
	bpf_send_signal(9);
	return 1;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int via_loop(void *ctx)
{
	bpf_loop(1, signal_cb, NULL, 0);
	return 0;
}

static long write_cb(void *map, u32 *key, u64 *value, void *ctx)
{
	char byte = 0;

	bpf_probe_write_user((void *)*value, &byte, 1);
	return 1;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int via_for_each(void *ctx)
{
	bpf_for_each_map_elem(&slots, write_cb, NULL, 0);
	return 0;
}

static int timer_cb(void *map, u32 *key, struct timer_slot *slot)
{
	bpf_send_signal_thread(9);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_gettid")
int via_timer(void *ctx)
{
	u32 zero = 0;
	struct timer_slot *slot = bpf_map_lookup_elem(&timers, &zero);

	if (!slot)
		return 0;
	bpf_timer_init(&slot->timer, &timers, 1 /* CLOCK_MONOTONIC */);
	bpf_timer_set_callback(&slot->timer, timer_cb);
	bpf_timer_start(&slot->timer, 1000, 0);
	return 0;
}

/* Two levels down and in a section of its own: still part of the program that reaches it. */
__attribute__((noinline, section(".text.hidden"))) static int deep(int sig)
{
	return bpf_send_signal(sig);
}

static long inner_cb(u32 index, void *ctx)
{
	deep(9);
	return 1;
}

static long outer_cb(u32 index, void *ctx)
{
	bpf_loop(1, inner_cb, NULL, 0);
	return 1;
}

SEC("tracepoint/syscalls/sys_enter_getuid")
int nested(void *ctx)
{
	bpf_loop(1, outer_cb, NULL, 0);
	return 0;
}
