// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Test fixtures: maps with every shape map_dump must decode (structs, enums, nested arrays,
 * char arrays, bitfields, per-CPU values), and one program the tests trigger to count runs.
 * examples/fixture.rs loads and fills them; nothing in the server uses this object.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

enum flow_state { FLOW_NEW = 0, FLOW_ESTABLISHED = 1, FLOW_CLOSED = 7 };

struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct port_range {
	__u16 lo;
	__u16 hi;
};

struct flow_stats {
	__u64 packets;
	__u64 bytes;
	enum flow_state state;
	char ifname[16];
	__u32 hist[4];
	struct port_range range;
	unsigned int sampled : 1;
	unsigned int level : 3;
	_Bool active;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
} fixture_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct flow_stats);
} fixture_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct counter);
} fixture_percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 128);
	__type(key, char[16]);
	__type(value, __u64);
} fixture_by_comm SEC(".maps");

/* Sized by the loader (tests: thousands; benchmark: a million). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counter);
} fixture_big SEC(".maps");

/* A trie, keyed by prefix length and address bytes. */
struct lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, __u32);
} fixture_lpm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} fixture_events SEC(".maps");

/* Counts getppid() calls of every process into fixture_percpu[0]. */
SEC("tracepoint/syscalls/sys_enter_getppid")
int fixture_count_getppid(void *ctx)
{
	__u32 key = 0;
	struct counter *c = bpf_map_lookup_elem(&fixture_percpu, &key);

	if (c)
		c->packets++;
	return 0;
}
