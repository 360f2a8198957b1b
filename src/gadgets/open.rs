//! open: file opens with path, flags and result.

use serde_json::{Map, Value, json};

use super::decode::{At, HEADER, Layout, open_flags, result};
use super::{Field, Gadget, Output};
use crate::ebpf::gadget::Hook;

/// Entry programs first: counting in the kernel attaches only those.
const PROGRAMS: &[(&str, Hook)] = &[
    (
        "openat_enter",
        Hook::tracepoint("syscalls", "sys_enter_openat"),
    ),
    (
        "openat2_enter",
        Hook::tracepoint("syscalls", "sys_enter_openat2"),
    ),
    (
        "openat_exit",
        Hook::tracepoint("syscalls", "sys_exit_openat"),
    ),
    (
        "openat2_exit",
        Hook::tracepoint("syscalls", "sys_exit_openat2"),
    ),
];

pub static GADGET: Gadget = Gadget {
    name: "open",
    summary: "file opens (openat, openat2): path, flags, fd or error",
    object: aya::include_bytes_aligned!("../../bpf/obj/open.bpf.o"),
    programs: PROGRAMS,
    fields: &[
        Field {
            name: "path",
            ty: "string",
            unit: None,
            description: "the path as passed (255 bytes at most; relative paths are relative to the caller)",
        },
        Field {
            name: "flags",
            ty: "string",
            unit: None,
            description: "open flags, e.g. O_WRONLY|O_CREAT",
        },
        Field {
            name: "mode",
            ty: "u32",
            unit: None,
            description: "permission bits for a created file",
        },
        Field {
            name: "ret",
            ty: "s32",
            unit: None,
            description: "the new fd, or -errno",
        },
        Field {
            name: "error",
            ty: "string",
            unit: None,
            description: "errno name when ret < 0",
        },
    ],
    output: Output::Events,
    default_group_by: &["comm", "path"],
    detail_fields: &[],
    // Counted at entry: no exit program, no path read.
    kernel_count: Some(super::count::KernelCount {
        programs: PROGRAMS.split_at(2).0,
        value_fields: &[],
        decode_value: super::count::NO_VALUE,
    }),
    decode,
    event_size: HEADER + 16 + 256,
    layout: Layout {
        btf_struct: "open_event",
        skip: HEADER,
        fields: &[
            ("ret", RET),
            ("flags", FLAGS),
            ("mode", MODE),
            ("path", PATH),
        ],
    },
    fixed_record: None,
};

const RET: At = At::new(0, 4);
const FLAGS: At = At::new(4, 4);
const MODE: At = At::new(8, 4);
const PATH: At = At::new(16, 256);

fn decode(b: &[u8], out: &mut Map<String, Value>) {
    out.insert("path".into(), json!(PATH.str(b)));
    out.insert("flags".into(), json!(open_flags(FLAGS.u32(b))));
    out.insert("mode".into(), json!(MODE.u32(b)));
    result(i64::from(RET.i32(b)), out);
}
