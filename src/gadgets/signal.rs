//! signal: signals generated, with sender, target and result.

use serde_json::{Map, Value, json};

use super::decode::{At, HEADER, Layout, signal_name};
use super::{Field, Gadget, Output};
use crate::ebpf::gadget::Hook;

const PROGRAMS: &[(&str, Hook)] = &[(
    "signal_trace",
    Hook::tracepoint("signal", "signal_generate"),
)];

pub static GADGET: Gadget = Gadget {
    name: "signal",
    summary: "signals sent: sender (the event's process), target, signal, result",
    object: aya::include_bytes_aligned!("../../bpf/obj/signal.bpf.o"),
    programs: PROGRAMS,
    fields: &[
        Field {
            name: "signal",
            ty: "string",
            unit: None,
            description: "signal name (SIGTERM...)",
        },
        Field {
            name: "sig",
            ty: "s32",
            unit: None,
            description: "signal number",
        },
        Field {
            name: "target_pid",
            ty: "u32",
            unit: None,
            description: "the thread the signal was sent to",
        },
        Field {
            name: "target_comm",
            ty: "string",
            unit: None,
            description: "its process name",
        },
        Field {
            name: "group",
            ty: "bool",
            unit: None,
            description: "sent to the whole process, not one thread",
        },
        Field {
            name: "result",
            ty: "string",
            unit: None,
            description: "delivered, ignored, already_pending, overflow_fail or loss_info",
        },
    ],
    output: Output::Events,
    default_group_by: &["comm", "signal"],
    detail_fields: &[],
    kernel_count: Some(super::count::KernelCount {
        programs: PROGRAMS,
        value_fields: &["sig", "signal"],
        decode_value: |v, out| {
            let sig = v as i32;
            out.insert("signal".into(), json!(signal_name(sig)));
            out.insert("sig".into(), json!(sig));
        },
    }),
    decode,
    event_size: HEADER + 40,
    layout: Layout {
        btf_struct: "signal_event",
        skip: HEADER,
        fields: &[
            ("sig", SIG),
            ("target_pid", TARGET_PID),
            ("result", RESULT),
            ("group", GROUP),
            ("target_comm", TARGET_COMM),
        ],
    },
    fixed_record: None,
};

const SIG: At = At::new(0, 4);
const TARGET_PID: At = At::new(8, 4);
const RESULT: At = At::new(12, 4);
const GROUP: At = At::new(16, 4);
const TARGET_COMM: At = At::new(24, 16);

fn decode(b: &[u8], out: &mut Map<String, Value>) {
    let sig = SIG.i32(b);
    out.insert("signal".into(), json!(signal_name(sig)));
    out.insert("sig".into(), json!(sig));
    out.insert("target_pid".into(), json!(TARGET_PID.u32(b)));
    out.insert("target_comm".into(), json!(TARGET_COMM.str(b)));
    out.insert("group".into(), json!(GROUP.u32(b) != 0));
    let result = match RESULT.i32(b) {
        0 => "delivered",
        1 => "ignored",
        2 => "already_pending",
        3 => "overflow_fail",
        4 => "loss_info",
        _ => "unknown",
    };
    out.insert("result".into(), json!(result));
}
