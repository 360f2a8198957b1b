//! syscalls: system call counts per process and syscall, aggregated in the kernel.

use serde_json::{Map, Value, json};

use super::decode::{str_at, syscall_name, u32_at};
use super::{Field, Gadget, Output};
use crate::ebpf::gadget::Hook;

/// Key of the kernel's count table (struct syscall_key).
pub const KEY_SIZE: usize = 24;

pub static GADGET: Gadget = Gadget {
    name: "syscalls",
    summary: "system call counts per process and syscall, counted in the kernel",
    object: aya::include_bytes_aligned!("../../bpf/obj/syscalls.bpf.o"),
    programs: &[(
        "syscalls_count",
        Hook::tracepoint("raw_syscalls", "sys_enter"),
    )],
    fields: &[
        Field {
            name: "pid",
            ty: "u32",
            unit: None,
            description: "process id",
        },
        Field {
            name: "comm",
            ty: "string",
            unit: None,
            description: "process name",
        },
        Field {
            name: "syscall",
            ty: "string",
            unit: None,
            description: "system call name",
        },
    ],
    output: Output::KernelCounts("syscall_counts"),
    default_group_by: &["comm", "syscall"],
    detail_fields: &[],
    decode,
    event_size: KEY_SIZE,
};

/// Decodes one key of the count table.
fn decode(b: &[u8], out: &mut Map<String, Value>) {
    out.insert("pid".into(), json!(u32_at(b, 0)));
    out.insert("comm".into(), json!(str_at(b, 8, 16)));
    out.insert("syscall".into(), json!(syscall_name(u32_at(b, 4))));
}
