// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused: a map that asks to be pinned by name (it would open whatever is pinned there),
 * and a map whose name leaves the pin directory. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shared_by_name SEC(".maps");

/* The legacy map definition aya still reads, named by an assembler label. */
struct legacy_map {
	u32 type, key_size, value_size, max_entries, map_flags;
};

struct legacy_map escape __asm__("../../escape") SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = 4,
	.value_size = 8,
	.max_entries = 1,
};

SEC("tracepoint/syscalls/sys_enter_getpid")
int use_maps(void *ctx)
{
	bump(&shared_by_name);
	bump(&escape);
	return 0;
}
