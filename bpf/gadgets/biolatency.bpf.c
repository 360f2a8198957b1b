// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* biolatency: block I/O latency, from a request's issue to the device to its completion,
 * as log2 histograms per device and operation. Filters apply to the task issuing the
 * request (the writer for direct and synchronous I/O, often a kernel worker otherwise). */
#include "../hist.h"

struct trace_event_raw_block_rq {
	u64 common;
	u32 dev;
	u64 sector;
	unsigned int nr_sector;
	unsigned int bytes;
	char rwbs[10];
} __attribute__((preserve_access_index));

struct trace_event_raw_block_rq_completion {
	u64 common;
	u32 dev;
	u64 sector;
	unsigned int nr_sector;
	int error;
	char rwbs[10];
} __attribute__((preserve_access_index));

struct rq_key {
	u32 dev;
	u32 pad;
	u64 sector;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct rq_key);
	__type(value, u64);
} issued SEC(".maps");

SEC("tracepoint/block/block_rq_issue")
int bio_issue(struct trace_event_raw_block_rq *ctx)
{
	struct event_header h = {};
	struct rq_key key = {};
	u64 now;

	if (!want(config(), &h))
		return 0;
	key.dev = BPF_CORE_READ(ctx, dev);
	key.sector = BPF_CORE_READ(ctx, sector);
	now = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&issued, &key, &now, BPF_ANY))
		count_drop();
	return 0;
}

SEC("tracepoint/block/block_rq_complete")
int bio_complete(struct trace_event_raw_block_rq_completion *ctx)
{
	struct rq_key key = {};
	struct hist_key hk = {};
	char rwbs[2] = {};
	u64 *start;

	key.dev = BPF_CORE_READ(ctx, dev);
	key.sector = BPF_CORE_READ(ctx, sector);
	start = bpf_map_lookup_elem(&issued, &key);
	if (!start)
		return 0;
	hk.id = key.dev;
	/* rwbs: an optional F (flush) then the operation: R, W, D (discard), E, N (none). */
	bpf_probe_read_kernel(rwbs, sizeof(rwbs), ctx->rwbs);
	hk.kind = rwbs[0] == 'F' && rwbs[1] ? rwbs[1] : rwbs[0];
	hist_add(&hk, bpf_ktime_get_ns() - *start);
	bpf_map_delete_elem(&issued, &key);
	return 0;
}
