//! Kernel enum values to the names bpftool and libbpf use, so that output reads the same.

/// `enum bpf_prog_type`.
const PROG_TYPES: &[&str] = &[
    "unspec",
    "socket_filter",
    "kprobe",
    "sched_cls",
    "sched_act",
    "tracepoint",
    "xdp",
    "perf_event",
    "cgroup_skb",
    "cgroup_sock",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "sock_ops",
    "sk_skb",
    "cgroup_device",
    "sk_msg",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "lwt_seg6local",
    "lirc_mode2",
    "sk_reuseport",
    "flow_dissector",
    "cgroup_sysctl",
    "raw_tracepoint_writable",
    "cgroup_sockopt",
    "tracing",
    "struct_ops",
    "ext",
    "lsm",
    "sk_lookup",
    "syscall",
    "netfilter",
];

/// `enum bpf_map_type`.
const MAP_TYPES: &[&str] = &[
    "unspec",
    "hash",
    "array",
    "prog_array",
    "perf_event_array",
    "percpu_hash",
    "percpu_array",
    "stack_trace",
    "cgroup_array",
    "lru_hash",
    "lru_percpu_hash",
    "lpm_trie",
    "array_of_maps",
    "hash_of_maps",
    "devmap",
    "sockmap",
    "cpumap",
    "xskmap",
    "sockhash",
    "cgroup_storage",
    "reuseport_sockarray",
    "percpu_cgroup_storage",
    "queue",
    "stack",
    "sk_storage",
    "devmap_hash",
    "struct_ops",
    "ringbuf",
    "inode_storage",
    "task_storage",
    "bloom_filter",
    "user_ringbuf",
    "cgrp_storage",
    "arena",
];

/// `enum bpf_link_type`.
const LINK_TYPES: &[&str] = &[
    "unspec",
    "raw_tracepoint",
    "tracing",
    "cgroup",
    "iter",
    "netns",
    "xdp",
    "perf_event",
    "kprobe_multi",
    "struct_ops",
    "netfilter",
    "tcx",
    "uprobe_multi",
    "netkit",
    "sockmap",
];

/// `enum bpf_attach_type`.
const ATTACH_TYPES: &[&str] = &[
    "cgroup_inet_ingress",
    "cgroup_inet_egress",
    "cgroup_inet_sock_create",
    "cgroup_sock_ops",
    "sk_skb_stream_parser",
    "sk_skb_stream_verdict",
    "cgroup_device",
    "sk_msg_verdict",
    "cgroup_inet4_bind",
    "cgroup_inet6_bind",
    "cgroup_inet4_connect",
    "cgroup_inet6_connect",
    "cgroup_inet4_post_bind",
    "cgroup_inet6_post_bind",
    "cgroup_udp4_sendmsg",
    "cgroup_udp6_sendmsg",
    "lirc_mode2",
    "flow_dissector",
    "cgroup_sysctl",
    "cgroup_udp4_recvmsg",
    "cgroup_udp6_recvmsg",
    "cgroup_getsockopt",
    "cgroup_setsockopt",
    "trace_raw_tp",
    "trace_fentry",
    "trace_fexit",
    "modify_return",
    "lsm_mac",
    "trace_iter",
    "cgroup_inet4_getpeername",
    "cgroup_inet6_getpeername",
    "cgroup_inet4_getsockname",
    "cgroup_inet6_getsockname",
    "xdp_devmap",
    "cgroup_inet_sock_release",
    "xdp_cpumap",
    "sk_lookup",
    "xdp",
    "sk_skb_verdict",
    "sk_reuseport_select",
    "sk_reuseport_select_or_migrate",
    "perf_event",
    "trace_kprobe_multi",
    "lsm_cgroup",
    "struct_ops",
    "netfilter",
    "tcx_ingress",
    "tcx_egress",
    "trace_uprobe_multi",
    "cgroup_unix_connect",
    "cgroup_unix_sendmsg",
    "cgroup_unix_recvmsg",
    "cgroup_unix_getpeername",
    "cgroup_unix_getsockname",
    "netkit_primary",
    "netkit_peer",
    "trace_kprobe_session",
    "trace_uprobe_session",
];

fn lookup(table: &[&str], value: u32) -> String {
    table
        .get(value as usize)
        .map_or_else(|| format!("unknown({value})"), |s| (*s).to_owned())
}

pub fn prog_type(value: u32) -> String {
    lookup(PROG_TYPES, value)
}

pub fn map_type(value: u32) -> String {
    lookup(MAP_TYPES, value)
}

pub fn link_type(value: u32) -> String {
    lookup(LINK_TYPES, value)
}

pub fn attach_type(value: u32) -> String {
    lookup(ATTACH_TYPES, value)
}

/// The numeric program type for a name (`type` filters accept names).
pub fn prog_type_value(name: &str) -> Option<u32> {
    PROG_TYPES.iter().position(|n| *n == name).map(|i| i as u32)
}

pub fn map_type_value(name: &str) -> Option<u32> {
    MAP_TYPES.iter().position(|n| *n == name).map(|i| i as u32)
}

pub fn link_type_value(name: &str) -> Option<u32> {
    LINK_TYPES.iter().position(|n| *n == name).map(|i| i as u32)
}

pub fn prog_type_names() -> &'static [&'static str] {
    &PROG_TYPES[1..]
}

pub fn map_type_names() -> &'static [&'static str] {
    &MAP_TYPES[1..]
}

pub fn link_type_names() -> &'static [&'static str] {
    &LINK_TYPES[1..]
}

/// The name of BPF helper `id` without its `BPF_FUNC_` prefix (`map_lookup_elem`).
pub fn helper(id: i32) -> Option<String> {
    use aya_obj::generated::bpf_func_id;
    let id = u32::try_from(id).ok()?;
    if id == 0 || id >= bpf_func_id::__BPF_FUNC_MAX_ID as u32 {
        return None;
    }
    // SAFETY: bpf_func_id is #[repr(u32)] with every value from 0 to __BPF_FUNC_MAX_ID - 1
    // defined (the kernel numbers helpers densely), and `id` is in that range.
    let func: bpf_func_id = unsafe { std::mem::transmute::<u32, bpf_func_id>(id) };
    Some(
        format!("{func:?}")
            .trim_start_matches("BPF_FUNC_")
            .to_owned(),
    )
}

/// BPF instruction classes by the names the configuration uses (`code & 0x07`).
pub const OPCODE_CLASSES: [&str; 8] = [
    "BPF_LD",
    "BPF_LDX",
    "BPF_ST",
    "BPF_STX",
    "BPF_ALU",
    "BPF_JMP",
    "BPF_JMP32",
    "BPF_ALU64",
];

/// `bpf_probe_write_user` and `probe_write_user` name the same helper.
pub fn helper_key(name: &str) -> String {
    name.trim_start_matches("bpf_").to_owned()
}

/// The helper id of a name, if the kernel headers this build knows define it.
pub fn helper_id(name: &str) -> Option<i32> {
    let key = helper_key(name);
    (1..512).find(|id| helper(*id).is_some_and(|n| n == key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_kernel_enums() {
        use aya_obj::generated::{bpf_attach_type, bpf_link_type, bpf_map_type, bpf_prog_type};
        assert_eq!(
            prog_type(bpf_prog_type::BPF_PROG_TYPE_TRACEPOINT as u32),
            "tracepoint"
        );
        assert_eq!(
            prog_type(bpf_prog_type::BPF_PROG_TYPE_NETFILTER as u32),
            "netfilter"
        );
        assert_eq!(
            map_type(bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32),
            "ringbuf"
        );
        assert_eq!(map_type(bpf_map_type::BPF_MAP_TYPE_ARENA as u32), "arena");
        assert_eq!(link_type(bpf_link_type::BPF_LINK_TYPE_TCX as u32), "tcx");
        assert_eq!(
            attach_type(bpf_attach_type::BPF_TCX_EGRESS as u32),
            "tcx_egress"
        );
        assert_eq!(
            attach_type(bpf_attach_type::BPF_TRACE_FENTRY as u32),
            "trace_fentry"
        );
        assert_eq!(prog_type_value("xdp"), Some(6));
        assert_eq!(prog_type(999), "unknown(999)");
    }
}
