/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Latency histograms kept in the kernel: log2 buckets of microseconds, with an exact count
 * and sum, per key. Slot 0 holds 0 µs (under one), slot k holds [2^(k-1), 2^k - 1] µs.
 * Keep in sync with src/gadgets/hist.rs.
 */
#ifndef EBPF_MCP_HIST_H
#define EBPF_MCP_HIST_H

#include "gadget.h"

#define HIST_SLOTS 32

struct hist_key {
	u32 id;    /* gadget-defined: device, process, ... */
	u32 kind;  /* gadget-defined: operation, ... */
	char comm[TASK_COMM_LEN];
};

struct hist {
	u64 count;
	u64 sum_ns;
	u64 slots[HIST_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct hist_key);
	__type(value, struct hist);
} hists SEC(".maps");

/* floor(log2(v)) for v > 0, by halving the search range (no loops for the verifier). */
static __always_inline u32 log2_floor(u64 v)
{
	u32 r = 0, shift;

	shift = (v > 0xffffffffULL) << 5;
	v >>= shift;
	r = shift;
	shift = (v > 0xffff) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xff) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xf) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (u32)(v >> 1);
	return r;
}

static __always_inline u32 hist_slot(u64 ns)
{
	u64 us = ns / 1000;
	u32 slot = us ? log2_floor(us) + 1 : 0;

	return slot < HIST_SLOTS ? slot : HIST_SLOTS - 1;
}

/* Adds one observation to slot `slot` and `sum` to the sum of the histogram of `key`; a
 * full table counts a drop. */
static __always_inline void hist_add_slot(struct hist_key *key, u32 slot, u64 sum)
{
	struct hist *h = bpf_map_lookup_elem(&hists, key);

	if (!h) {
		struct hist zero = {};

		bpf_map_update_elem(&hists, key, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&hists, key);
		if (!h) {
			count_drop();
			return;
		}
	}
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum_ns, sum);
	/* The mask is a no-op on the value, but the compiler must keep it (barrier) so the
	 * verifier sees the index bounded. */
	barrier_var(slot);
	slot &= HIST_SLOTS - 1;
	__sync_fetch_and_add(&h->slots[slot], 1);
}

/* Adds one observation of `ns` to the latency histogram of `key`. */
static __always_inline void hist_add(struct hist_key *key, u64 ns)
{
	hist_add_slot(key, hist_slot(ns), ns);
}

/* Adds one observation of the value `v` (a size, a count: not a time) to the histogram of
 * `key`, in log2 buckets of the value itself (the last holds everything from 2^30). */
static __always_inline void hist_add_value(struct hist_key *key, u64 v)
{
	u32 slot = v ? log2_floor(v) + 1 : 0;

	hist_add_slot(key, slot < HIST_SLOTS ? slot : HIST_SLOTS - 1, v);
}

#endif
