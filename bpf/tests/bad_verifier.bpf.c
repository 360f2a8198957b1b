// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Passes validation, fails the kernel verifier: dereferences a hash map value without the
 * null check. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u32);
	__type(value, u64);
} counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int unchecked(void *ctx)
{
	u32 zero = 0;
	u64 *n = bpf_map_lookup_elem(&counts, &zero);

	*n += 1;
	return 0;
}
