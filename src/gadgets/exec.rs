//! exec: process executions with their arguments and result.

use serde_json::{Map, Value, json};

use super::decode::{At, HEADER, Layout, result};
use super::{Field, Gadget, Output};
use crate::ebpf::gadget::Hook;

/// Bytes of one argument (its NUL included), of all of them, and arguments kept: as in
/// bpf/gadgets/exec.bpf.c.
const ARG_MAX: usize = 256;
const ARGS_SIZE: usize = 1024;
const MAX_ARGS: usize = 16;

const PROGRAMS: &[(&str, Hook)] = &[
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
];

pub static GADGET: Gadget = Gadget {
    name: "exec",
    summary: "process executions (execve, execveat): file, arguments, result",
    object: aya::include_bytes_aligned!("../../bpf/obj/exec.bpf.o"),
    programs: PROGRAMS,
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
            description: "the arguments: the first 16, 255 bytes each, about 1 KiB in all",
        },
        Field {
            name: "argv_truncated",
            ty: "bool",
            unit: None,
            description: "arguments were left out, or one was cut at 255 bytes",
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
    kernel_count: Some(super::count::KernelCount {
        programs: PROGRAMS,
        value_fields: &[],
        decode_value: super::count::NO_VALUE,
    }),
    decode,
    // The struct is 8-byte aligned (its header holds u64s): padded after args.
    event_size: (HEADER + 16 + 256 + ARGS_SIZE + ARG_MAX).next_multiple_of(8),
    layout: Layout {
        btf_struct: "exec_event",
        skip: HEADER,
        fields: &[
            ("retval", RETVAL),
            ("argc", ARGC),
            ("more", MORE),
            ("args_len", ARGS_LEN),
            ("filename", FILENAME),
            ("args", ARGS),
        ],
    },
    fixed_record: None,
};

const RETVAL: At = At::new(0, 4);
const ARGC: At = At::new(4, 4);
const MORE: At = At::new(8, 4);
const ARGS_LEN: At = At::new(12, 4);
const FILENAME: At = At::new(16, 256);
const ARGS: At = At::new(16 + 256, ARGS_SIZE + ARG_MAX);

/// The arguments in `args` (each ending in NUL), `argc` of them at most.
fn split_args(args: &[u8], argc: usize) -> Vec<String> {
    args.split(|&c| c == 0)
        .take(argc.min(MAX_ARGS))
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn decode(b: &[u8], out: &mut Map<String, Value>) {
    let args = ARGS.bytes(b);
    let used = (ARGS_LEN.u32(b) as usize).min(args.len());
    let argv = split_args(&args[..used], ARGC.u32(b) as usize);
    out.insert("filename".into(), json!(FILENAME.str(b)));
    out.insert("argv".into(), json!(argv));
    out.insert("argv_truncated".into(), json!(MORE.u32(b) != 0));
    result(i64::from(RETVAL.i32(b)), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_at_their_nuls_up_to_argc() {
        assert_eq!(split_args(b"ls\0-l\0/tmp\0", 3), ["ls", "-l", "/tmp"]);
        assert_eq!(split_args(b"ls\0-l\0/tmp\0", 2), ["ls", "-l"]);
        assert_eq!(
            split_args(b"a\0\0b\0", 3),
            ["a", "", "b"],
            "empty arguments stay"
        );
        assert!(split_args(b"", 0).is_empty());
    }
}
