//! exit: process exits with exit code, fatal signal and lifetime.

use serde_json::{Map, Value, json};

use super::decode::{At, HEADER, Layout, signal_name};
use super::{Field, Gadget, Output};
use crate::ebpf::gadget::Hook;

const PROGRAMS: &[(&str, Hook)] = &[(
    "exit_trace",
    Hook::tracepoint("sched", "sched_process_exit"),
)];

pub static GADGET: Gadget = Gadget {
    name: "exit",
    summary: "process exits: exit code, the signal that killed it, lifetime",
    object: aya::include_bytes_aligned!("../../bpf/obj/exit.bpf.o"),
    programs: PROGRAMS,
    fields: &[
        Field {
            name: "exit_code",
            ty: "s32",
            unit: None,
            description: "the code passed to exit() (0 when killed)",
        },
        Field {
            name: "signal",
            ty: "string",
            unit: None,
            description: "the signal that killed it, empty when it exited",
        },
        Field {
            name: "core_dumped",
            ty: "bool",
            unit: None,
            description: "it dumped core",
        },
        Field {
            name: "lifetime_ns",
            ty: "u64",
            unit: Some("ns"),
            description: "time from start to exit",
        },
    ],
    output: Output::Events,
    default_group_by: &["comm", "exit_code"],
    detail_fields: &[],
    kernel_count: Some(super::count::KernelCount {
        programs: PROGRAMS,
        value_fields: &["exit_code"],
        decode_value: |v, out| drop(out.insert("exit_code".into(), json!(v as i32))),
    }),
    decode,
    event_size: HEADER + 24,
    layout: Layout {
        btf_struct: "exit_event",
        skip: HEADER,
        fields: &[
            ("exit_code", EXIT_CODE),
            ("signal", SIGNAL),
            ("core_dump", CORE_DUMP),
            ("lifetime_ns", LIFETIME_NS),
        ],
    },
    fixed_record: None,
};

const EXIT_CODE: At = At::new(0, 4);
const SIGNAL: At = At::new(4, 4);
const CORE_DUMP: At = At::new(8, 4);
const LIFETIME_NS: At = At::new(16, 8);

fn decode(b: &[u8], out: &mut Map<String, Value>) {
    out.insert("exit_code".into(), json!(EXIT_CODE.i32(b)));
    out.insert("signal".into(), json!(signal_name(SIGNAL.i32(b))));
    out.insert("core_dumped".into(), json!(CORE_DUMP.u32(b) != 0));
    out.insert("lifetime_ns".into(), json!(LIFETIME_NS.u64(b)));
}
