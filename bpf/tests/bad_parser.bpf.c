// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused as malformed: a legacy map definition whose `pinning` is no pinning type. The
 * loader's parser reads that word straight into an enum, so it must never see it. */
#include "common.h"

struct legacy_map_pinned {
	u32 type, key_size, value_size, max_entries, map_flags, id, pinning;
};

struct legacy_map_pinned odd SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = 4,
	.value_size = 8,
	.max_entries = 1,
	.pinning = 5,
};

SEC("tracepoint/syscalls/sys_enter_getpid")
int use_odd(void *ctx)
{
	bump(&odd);
	return 0;
}
