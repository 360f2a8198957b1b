// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* tracepoint: any tracepoint. The raw record is copied as is and decoded in user space from
 * the tracepoint's tracefs format; up to two `const char *` fields (syscall file names) are
 * read as strings here, while the caller's memory is still there.
 *
 * gadget_cfg: arg0 = bytes of the record to copy, arg1 = bytes to copy when that read
 * fails (the fixed part only: records with variable-length data are shorter than arg0),
 * arg2 = offsets of two pointer fields to read as strings, low and high 16 bits (0: none).
 * With COUNT_HIST in count_keys, the integer field value_field names goes into a histogram
 * instead (per process with COUNT_PID). */
#define GADGET_EVENT struct tp_event
#include "../hist.h"

#define RECORD_MAX 512
#define STR_MAX 128

struct tp_event {
	struct event_header h;
	u32 size;
	u32 strings;
	u8 record[RECORD_MAX];
	char str[2][STR_MAX];
};

static __always_inline void read_string(void *ctx, u32 off, char *dst)
{
	const char *ptr = 0;

	if (!off || off > RECORD_MAX - 8)
		return;
	if (bpf_probe_read_kernel(&ptr, sizeof(ptr), ctx + off) || !ptr)
		return;
	if (bpf_probe_read_user_str(dst, STR_MAX, ptr) < 0)
		bpf_probe_read_kernel_str(dst, STR_MAX, ptr);
}

/* The numeric field gadget_cfg.value_field names (see gadget.h), sign-extended; 0 if none. */
static __always_inline s64 value(void *ctx, u32 field)
{
	u32 off = field & 0xffff, size = (field >> 16) & 0xff, sign = field >> 24;
	u64 v = 0;

	if (!size || size > 8 || off > RECORD_MAX - 8)
		return 0;
	if (bpf_probe_read_kernel(&v, size & 0xf, ctx + off))
		return 0;
	if (sign && size < 8) {
		u32 shift = 64 - 8 * size;

		return ((s64)(v << shift)) >> shift;
	}
	return (s64)v;
}

SEC("tracepoint/any/any")
int tracepoint_record(void *ctx)
{
	struct gadget_cfg *cfg = config();
	struct event_header h = {};
	struct tp_event *e;
	u32 size;

	if (!cfg || !want(cfg, &h))
		return 0;
	if (cfg->count_keys & COUNT_HIST) {
		struct hist_key key = {};

		if (cfg->count_keys & COUNT_PID) {
			/* kind 1: per process, so pid 0 (idle, interrupts) is a process too. */
			key.kind = 1;
			key.id = h.pid;
			__builtin_memcpy(key.comm, h.comm, sizeof(key.comm));
		}
		s64 v = value(ctx, cfg->value_field);

		/* Signed fields below 0 count as 0; unsigned ones keep all 64 bits. */
		hist_add_value(&key, (cfg->value_field >> 24) && v < 0 ? 0 : (u64)v);
		return 0;
	}
	if (counted(cfg, &h, value(ctx, cfg->value_field)))
		return 0;
	e = reserve_event(sizeof(*e), &h);
	if (!e)
		return 0;
	size = cfg->arg0;
	if (size > RECORD_MAX)
		size = RECORD_MAX;
	if (bpf_probe_read_kernel(e->record, size, ctx)) {
		size = cfg->arg1;
		if (size > RECORD_MAX)
			size = RECORD_MAX;
		if (bpf_probe_read_kernel(e->record, size, ctx))
			size = 0;
	}
	e->size = size;
	e->strings = 0;
	e->str[0][0] = 0;
	e->str[1][0] = 0;
	read_string(ctx, cfg->arg2 & 0xffff, e->str[0]);
	read_string(ctx, cfg->arg2 >> 16, e->str[1]);
	submit(e);
	return 0;
}
