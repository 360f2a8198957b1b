//! exec: process executions with their arguments and result.

use serde_json::{Map, Value, json};

use super::decode::{HEADER, i32_at, result, str_at, u32_at};
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
    event_size: HEADER + 12 + 256 + MAX_ARGS * ARG_LEN,
};

fn decode(b: &[u8], out: &mut Map<String, Value>) {
    let argc = (u32_at(b, 4) as usize).min(MAX_ARGS);
    let argv: Vec<String> = (0..argc)
        .map(|i| str_at(b, 12 + 256 + i * ARG_LEN, ARG_LEN))
        .collect();
    out.insert("filename".into(), json!(str_at(b, 12, 256)));
    out.insert("argv".into(), json!(argv));
    out.insert("argv_truncated".into(), json!(u32_at(b, 8) != 0));
    result(i64::from(i32_at(b, 0)), out);
}
