//! TCP gadgets (bpf/gadgets/tcp.bpf.c, one object): connects as they complete, accepted
//! connections, state changes and retransmits, all from tracepoints.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value, json};

use super::decode::{At, HEADER, Layout, errno_name};
use super::{Field, Gadget, Output};
use crate::ebpf::gadget::Hook;

const OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/obj/tcp.bpf.o");
/// Size of struct tcp_event after the header.
const BODY: usize = 64;

const SADDR: At = At::new(0, 16);
const DADDR: At = At::new(16, 16);
const SPORT: At = At::new(32, 2);
const DPORT: At = At::new(34, 2);
const FAMILY: At = At::new(36, 2);
const OLDSTATE: At = At::new(40, 4);
const NEWSTATE: At = At::new(44, 4);
const DURATION_NS: At = At::new(48, 8);
const ERR: At = At::new(56, 4);

/// struct tcp_event, which all four gadgets decode.
const LAYOUT: Layout = Layout {
    btf_struct: "tcp_event",
    skip: HEADER,
    fields: &[
        ("saddr", SADDR),
        ("daddr", DADDR),
        ("sport", SPORT),
        ("dport", DPORT),
        ("family", FAMILY),
        ("oldstate", OLDSTATE),
        ("newstate", NEWSTATE),
        ("duration_ns", DURATION_NS),
        ("err", ERR),
    ],
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

const ADDRESS_FIELDS: [Field; 5] = [
    Field::new("family", "string", "ipv4 or ipv6"),
    Field::new("saddr", "string", "local address"),
    Field::new("sport", "u16", "local port"),
    Field::new("daddr", "string", "remote address"),
    Field::new("dport", "u16", "remote port"),
];

/// The address fields followed by `extra` (`M` must be 5 + `N`; checked at compile time).
const fn fields<const N: usize, const M: usize>(extra: [Field; N]) -> [Field; M] {
    assert!(M == 5 + N, "M must be 5 + N");
    let mut out = [ADDRESS_FIELDS[0]; M];
    let mut i = 0;
    while i < 5 {
        out[i] = ADDRESS_FIELDS[i];
        i += 1;
    }
    let mut j = 0;
    while j < N {
        out[5 + j] = extra[j];
        j += 1;
    }
    out
}

static CONNECT_FIELDS: [Field; 7] = fields([
    Field::new(
        "result",
        "string",
        "connected, or why it failed (ECONNREFUSED, ETIMEDOUT, ...)",
    ),
    Field::with_unit(
        "latency_ns",
        "u64",
        "ns",
        "from connect() to the handshake's end",
    ),
]);

static ACCEPT_FIELDS: [Field; 6] = fields([Field::new(
    "fd",
    "s32",
    "the accepted connection's file descriptor",
)]);

static STATE_FIELDS: [Field; 8] = fields([
    Field::new(
        "oldstate",
        "string",
        "state before (ESTABLISHED, SYN_SENT, ...)",
    ),
    Field::new("newstate", "string", "state after"),
    Field::with_unit(
        "duration_ns",
        "u64",
        "ns",
        "time spent in oldstate; 0 when it began before the trace",
    ),
]);

static RETRANSMIT_FIELDS: [Field; 7] = fields([
    Field::new("state", "string", "the socket's state (ESTABLISHED, ...)"),
    Field::new(
        "result",
        "string",
        "sent, or the error of the attempt (kernels from 6.12 report it; before, always sent)",
    ),
]);

pub static CONNECT: Gadget = Gadget {
    name: "tcp_connect",
    summary: "outgoing TCP connections as they complete or fail: addresses, ports, \
        handshake latency, error; pid/comm are the connecting process",
    object: OBJECT,
    programs: &[(
        "tcp_connect_state",
        Hook::tracepoint("sock", "inet_sock_set_state"),
    )],
    fields: &CONNECT_FIELDS,
    output: Output::Events,
    default_group_by: &["comm", "daddr", "dport"],
    detail_fields: &[],
    kernel_count: None,
    decode: decode_connect,
    event_size: HEADER + BODY,
    layout: LAYOUT,
    fixed_record: None,
};

pub static ACCEPT: Gadget = Gadget {
    name: "tcp_accept",
    summary: "incoming TCP connections as accept(2) returns them: addresses, ports; \
        pid/comm are the accepting process",
    object: OBJECT,
    programs: &[
        (
            "tcp_accept4_exit",
            Hook::tracepoint("syscalls", "sys_exit_accept4"),
        ),
        (
            "tcp_accept_exit",
            Hook::tracepoint("syscalls", "sys_exit_accept"),
        ),
    ],
    fields: &ACCEPT_FIELDS,
    output: Output::Events,
    default_group_by: &["comm", "sport"],
    detail_fields: &[],
    kernel_count: None,
    decode: decode_accept,
    event_size: HEADER + BODY,
    layout: LAYOUT,
    fixed_record: None,
};

pub static STATE: Gadget = Gadget {
    name: "tcp_state",
    summary: "every TCP state change with the time spent in the previous state; pid/comm \
        are the task running at the change: the socket's own for connect and close, often \
        an unrelated one for changes driven by packets or timers",
    object: OBJECT,
    programs: &[(
        "tcp_state_change",
        Hook::tracepoint("sock", "inet_sock_set_state"),
    )],
    fields: &STATE_FIELDS,
    output: Output::Events,
    default_group_by: &["newstate"],
    detail_fields: &[],
    kernel_count: None,
    decode: decode_state,
    event_size: HEADER + BODY,
    layout: LAYOUT,
    fixed_record: None,
};

pub static RETRANSMIT: Gadget = Gadget {
    name: "tcp_retransmit",
    summary: "TCP segments retransmitted: addresses, ports, socket state; pid/comm are \
        the task running at the time (usually unrelated: retransmits run from timers)",
    object: OBJECT,
    programs: &[(
        "tcp_retransmit",
        Hook::tracepoint("tcp", "tcp_retransmit_skb"),
    )],
    fields: &RETRANSMIT_FIELDS,
    output: Output::Events,
    default_group_by: &["daddr", "dport"],
    detail_fields: &[],
    kernel_count: None,
    decode: decode_retransmit,
    event_size: HEADER + BODY,
    layout: LAYOUT,
    fixed_record: Some(&RETRANSMIT_RECORD),
};

/// `struct tcp_retransmit_skb_fixed` of bpf/gadgets/tcp.bpf.c: the record as it has been
/// laid out since 5.8, read so where BTF lacks `trace_event_raw_tcp_retransmit_skb`.
static RETRANSMIT_RECORD: super::FixedRecord = super::FixedRecord {
    category: "tcp",
    name: "tcp_retransmit_skb",
    btf_type: "trace_event_raw_tcp_retransmit_skb",
    offsets: &[
        ("skbaddr", 8),
        ("skaddr", 16),
        ("state", 24),
        ("sport", 28),
        ("dport", 30),
        ("family", 32),
        ("saddr", 34),
        ("daddr", 38),
        ("saddr_v6", 42),
        ("daddr_v6", 58),
    ],
    optional: Some("err"),
};

/// `ESTABLISHED` for 1 (include/net/tcp_states.h).
pub fn state_name(state: i32) -> String {
    const NAMES: [&str; 13] = [
        "",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ];
    usize::try_from(state)
        .ok()
        .and_then(|i| NAMES.get(i).filter(|n| !n.is_empty()))
        .map_or_else(|| format!("state {state}"), |n| (*n).to_owned())
}

/// The address fields every TCP event has.
fn addresses(b: &[u8], out: &mut Map<String, Value>) {
    let family = FAMILY.u16(b);
    let addr = |at: At| -> String {
        let bytes = at.bytes(b);
        if bytes.len() != 16 {
            return String::new();
        }
        match family {
            AF_INET => Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
            AF_INET6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(bytes);
                let v6 = Ipv6Addr::from(a);
                // A v4 peer of a dual-stack socket: show it as v4.
                v6.to_ipv4_mapped()
                    .map_or_else(|| v6.to_string(), |v4| v4.to_string())
            }
            _ => String::new(),
        }
    };
    let family_name = match family {
        AF_INET => "ipv4".to_owned(),
        AF_INET6 => "ipv6".to_owned(),
        other => format!("family {other}"),
    };
    out.insert("family".into(), json!(family_name));
    out.insert("saddr".into(), json!(addr(SADDR)));
    out.insert("sport".into(), json!(SPORT.u16(b)));
    out.insert("daddr".into(), json!(addr(DADDR)));
    out.insert("dport".into(), json!(DPORT.u16(b)));
}

fn oldstate(b: &[u8]) -> i32 {
    OLDSTATE.i32(b)
}

fn newstate(b: &[u8]) -> i32 {
    NEWSTATE.i32(b)
}

fn duration(b: &[u8]) -> u64 {
    DURATION_NS.u64(b)
}

fn err(b: &[u8]) -> i32 {
    ERR.i32(b)
}

fn decode_connect(b: &[u8], out: &mut Map<String, Value>) {
    addresses(b, out);
    let result = if newstate(b) == 1 {
        "connected".to_owned()
    } else if err(b) > 0 {
        errno_name(err(b))
    } else {
        // Closed before the handshake finished without an error: the caller gave up.
        "aborted".to_owned()
    };
    out.insert("result".into(), json!(result));
    out.insert("latency_ns".into(), json!(duration(b)));
}

fn decode_accept(b: &[u8], out: &mut Map<String, Value>) {
    addresses(b, out);
    out.insert("fd".into(), json!(err(b)));
}

fn decode_state(b: &[u8], out: &mut Map<String, Value>) {
    addresses(b, out);
    out.insert("oldstate".into(), json!(state_name(oldstate(b))));
    out.insert("newstate".into(), json!(state_name(newstate(b))));
    out.insert("duration_ns".into(), json!(duration(b)));
}

fn decode_retransmit(b: &[u8], out: &mut Map<String, Value>) {
    addresses(b, out);
    out.insert("state".into(), json!(state_name(newstate(b))));
    let e = err(b);
    let result = if e == 0 {
        "sent".to_owned()
    } else {
        errno_name(e.saturating_abs())
    };
    out.insert("result".into(), json!(result));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(family: u16, saddr: &[u8], daddr: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; BODY];
        b[..saddr.len()].copy_from_slice(saddr);
        b[16..16 + daddr.len()].copy_from_slice(daddr);
        b[32..34].copy_from_slice(&8080u16.to_le_bytes());
        b[34..36].copy_from_slice(&443u16.to_le_bytes());
        b[36..38].copy_from_slice(&family.to_le_bytes());
        b
    }

    #[test]
    fn decodes_addresses_of_both_families() {
        let mut out = Map::new();
        addresses(&event(AF_INET, &[127, 0, 0, 1], &[10, 1, 2, 3]), &mut out);
        assert_eq!(out["saddr"], "127.0.0.1");
        assert_eq!(out["daddr"], "10.1.2.3");
        assert_eq!(out["sport"], 8080);
        assert_eq!(out["dport"], 443);
        assert_eq!(out["family"], "ipv4");
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[192, 168, 0, 9]);
        let loopback6 = Ipv6Addr::LOCALHOST.octets();
        let mut out = Map::new();
        addresses(&event(AF_INET6, &loopback6, &mapped), &mut out);
        assert_eq!(out["saddr"], "::1");
        assert_eq!(out["daddr"], "192.168.0.9");
    }

    #[test]
    fn names_states_and_failures() {
        assert_eq!(state_name(1), "ESTABLISHED");
        assert_eq!(state_name(12), "NEW_SYN_RECV");
        assert_eq!(state_name(42), "state 42");
        let mut b = event(AF_INET, &[1, 1, 1, 1], &[2, 2, 2, 2]);
        b[44..48].copy_from_slice(&7i32.to_le_bytes());
        b[56..60].copy_from_slice(&111i32.to_le_bytes());
        let mut out = Map::new();
        decode_connect(&b, &mut out);
        assert_eq!(out["result"], "ECONNREFUSED");
    }
}
