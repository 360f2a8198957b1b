//! exec: process executions with their arguments and result.

use serde_json::{Map, Value, json};

use super::decode::{At, HEADER, Layout, result};
use super::{Field, Gadget, Output};
use crate::ebpf::gadget::Hook;

const ARG_LEN: usize = 64;
const MAX_ARGS: usize = 8;

pub static GADGET: Gadget = Gadget {
    name: "exec",
    summary: "process executions (execve, execveat): file, arguments, result",
    object: aya::include_bytes_aligned!("../../bpf/obj/exec.bpf.o"),
    programs: &[
        (
            "exec_enter",
            Hook::tracepoint("syscalls", "sys_enter_execve"),
        ),
        ("exec_exit", Hook::tracepoint("syscalls", "sys_exit_execve")),
        (
            "execat_enter",
            Hook::tracepoint("syscalls", "sys_enter_execveat"),
        ),
        (
            "execat_exit",
            Hook::tracepoint("syscalls", "sys_exit_execveat"),
        ),
    ],
    fields: &[
        Field {
            name: "filename",
            ty: "string",
            unit: None,
            description: "path passed to exec (255 bytes at most)",
        },
        Field {
            name: "argv",
            ty: "string[]",
            unit: None,
            description: "the first 8 arguments, 63 bytes each at most",
        },
        Field {
            name: "argv_truncated",
            ty: "bool",
            unit: None,
            description: "there were more than 8 arguments",
        },
        Field {
            name: "ret",
            ty: "s32",
            unit: None,
            description: "0 on success, -errno on failure",
        },
        Field {
            name: "error",
            ty: "string",
            unit: None,
            description: "errno name when ret < 0",
        },
    ],
    output: Output::Events,
    default_group_by: &["comm"],
    detail_fields: &[],
    decode,
    // The struct is 8-byte aligned (its header holds u64s): padded after argv.
    event_size: (HEADER + 12 + 256 + MAX_ARGS * ARG_LEN).next_multiple_of(8),
    layout: Layout {
        btf_struct: "exec_event",
        skip: HEADER,
        fields: &[
            ("retval", RETVAL),
            ("argc", ARGC),
            ("more", MORE),
            ("filename", FILENAME),
            ("argv", ARGV),
            ("argv.0", ARGV.index(0, ARG_LEN)),
            ("argv.7", ARGV.index(MAX_ARGS - 1, ARG_LEN)),
        ],
    },
};

const RETVAL: At = At::new(0, 4);
const ARGC: At = At::new(4, 4);
const MORE: At = At::new(8, 4);
const FILENAME: At = At::new(12, 256);
const ARGV: At = At::new(12 + 256, MAX_ARGS * ARG_LEN);

fn decode(b: &[u8], out: &mut Map<String, Value>) {
    let argc = (ARGC.u32(b) as usize).min(MAX_ARGS);
    let argv: Vec<String> = (0..argc).map(|i| ARGV.index(i, ARG_LEN).str(b)).collect();
    out.insert("filename".into(), json!(FILENAME.str(b)));
    out.insert("argv".into(), json!(argv));
    out.insert("argv_truncated".into(), json!(MORE.u32(b) != 0));
    result(i64::from(RETVAL.i32(b)), out);
}
