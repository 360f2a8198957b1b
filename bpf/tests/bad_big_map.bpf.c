// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused: asks for a 4 GiB map. */
#include "common.h"

struct blob {
	char bytes[4096];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1048576);
	__type(key, u32);
	__type(value, struct blob);
} huge SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int touch(void *ctx)
{
	u32 zero = 0;

	bpf_map_lookup_elem(&huge, &zero);
	return 0;
}
