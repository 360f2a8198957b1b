/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Objects the deploy tests load (or must see refused): an agent's view, plain libbpf C. */
#ifndef EBPF_MCP_TEST_COMMON_H
#define EBPF_MCP_TEST_COMMON_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

typedef __u32 u32;
typedef __u64 u64;

/* One counter, key 0. */
#define COUNTER(name)                                   \
	struct {                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY);       \
		__uint(max_entries, 1);                 \
		__type(key, u32);                       \
		__type(value, u64);                     \
	} name SEC(".maps")

static __always_inline void bump(void *map)
{
	u32 zero = 0;
	u64 *n = bpf_map_lookup_elem(map, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
}

char LICENSE[] SEC("license") = "GPL";

#endif
