//! runqlat: how long runnable tasks wait for a CPU, as log2 histograms.

use super::hist::{KEY_SIZE, decode_process_key};
use super::{Field, Gadget, Output};
use crate::ebpf::gadget::Hook;

static FIELDS: [Field; 2] = [
    Field::new(
        "pid",
        "u32",
        "the waiting process (group_by it for one histogram each)",
    ),
    Field::new("comm", "string", "its name"),
];

pub static GADGET: Gadget = Gadget {
    name: "runqlat",
    summary: "run-queue latency: time from runnable (woken or preempted) to running, log2 µs \
        histogram (group_by pid or comm for one per process); filters apply to the waiting task",
    object: aya::include_bytes_aligned!("../../bpf/obj/runqlat.bpf.o"),
    programs: &[
        ("runq_wakeup", Hook::raw_tracepoint("sched_wakeup")),
        ("runq_wakeup_new", Hook::raw_tracepoint("sched_wakeup_new")),
        ("runq_switch", Hook::raw_tracepoint("sched_switch")),
    ],
    fields: &FIELDS,
    output: Output::KernelHistograms,
    default_group_by: &[],
    detail_fields: &["pid", "comm"],
    kernel_count: None,
    decode: decode_process_key,
    event_size: KEY_SIZE,
    layout: super::hist::KEY_LAYOUT,
    fixed_record: None,
};
