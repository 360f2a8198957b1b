//! syscalls: system call counts per process and syscall, aggregated in the kernel; or
//! (mode histogram) how long the calls take, from entry to return, as log2 histograms.

use serde_json::{Map, Value, json};

use super::decode::{At, Layout, syscall_name};
use super::{Field, Gadget, Output};
use crate::ebpf::gadget::Hook;

/// Key of the kernel's count table (struct syscall_key).
pub const KEY_SIZE: usize = 24;
/// The programs of histogram mode: entry stamps the time, return adds the duration.
pub const ENTER: &str = "syscalls_enter";
pub const EXIT: &str = "syscalls_exit";

pub static GADGET: Gadget = Gadget {
    name: "syscalls",
    summary: "system call counts per process and syscall, counted in the kernel (mode \
        count), or how long each call takes from entry to return, as latency histograms \
        (mode histogram)",
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
    kernel_count: None,
    decode,
    event_size: KEY_SIZE,
    layout: Layout {
        btf_struct: "syscall_key",
        skip: 0,
        fields: &[("pid", PID), ("nr", NR), ("comm", COMM)],
    },
    fixed_record: None,
};

const PID: At = At::new(0, 4);
const NR: At = At::new(4, 4);
const COMM: At = At::new(8, 16);

/// Decodes one key of the count table.
fn decode(b: &[u8], out: &mut Map<String, Value>) {
    out.insert("pid".into(), json!(PID.u32(b)));
    out.insert("comm".into(), json!(COMM.str(b)));
    out.insert("syscall".into(), json!(syscall_name(NR.u32(b))));
}

/// Decodes one key of the histogram table (struct hist_key: pid when grouped by it, the
/// syscall number, the name).
pub fn decode_hist_key(b: &[u8], out: &mut Map<String, Value>) {
    let key = super::hist::Key::parse(b);
    if key.id != 0 {
        out.insert("pid".into(), json!(key.id));
    }
    out.insert("comm".into(), json!(key.comm()));
    out.insert("syscall".into(), json!(syscall_name(key.kind)));
}
