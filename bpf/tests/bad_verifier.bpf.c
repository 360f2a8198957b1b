// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Passes validation, fails the kernel verifier: dereferences a map value without the null
 * check. */
#include "common.h"

COUNTER(counts);

SEC("tracepoint/syscalls/sys_enter_getpid")
int unchecked(void *ctx)
{
	u32 zero = 0;
	u64 *n = bpf_map_lookup_elem(&counts, &zero);

	*n += 1;
	return 0;
}
