// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Feature probes: one do-nothing program per attach kind. `info` loads each
 * and attaches it for an instant to learn what this kernel really allows
 * (program type known, attach permitted, hook present), then releases it.
 * Every program returns the value that leaves its hook's behaviour unchanged.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tracepoint/syscalls/sys_enter_getpid")
int probe_tracepoint(void *ctx) { return 0; }

SEC("raw_tp/sched_process_exec")
int probe_raw_tp(void *ctx) { return 0; }

SEC("tp_btf/sched_process_exec")
int probe_tp_btf(void *ctx) { return 0; }

SEC("kprobe/do_nanosleep")
int probe_kprobe(void *ctx) { return 0; }

SEC("fentry/do_nanosleep")
int probe_fentry(void *ctx) { return 0; }

SEC("fexit/do_nanosleep")
int probe_fexit(void *ctx) { return 0; }

/* An LSM program's return value is its verdict: 0 allows. */
SEC("lsm/bpf")
int probe_lsm(void *ctx) { return 0; }

SEC("uprobe")
int probe_uprobe(void *ctx) { return 0; }

SEC("perf_event")
int probe_perf_event(void *ctx) { return 0; }

SEC("xdp")
int probe_xdp(struct xdp_md *ctx) { return XDP_PASS; }

/* TCX_NEXT (-1): hand the packet on as if no program were attached. */
SEC("classifier")
int probe_tc(struct __sk_buff *skb) { return -1; }

/* 1 lets the packet through. */
SEC("cgroup_skb/ingress")
int probe_cgroup_skb(struct __sk_buff *skb) { return 1; }
