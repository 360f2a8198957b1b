//! biolatency: block I/O latency histograms per device and operation.

use serde_json::{Map, Value, json};

use super::hist::{KEY_SIZE, Key};
use super::{Field, Gadget, Output};
use crate::ebpf::gadget::Hook;

static FIELDS: [Field; 2] = [
    Field::new(
        "device",
        "string",
        "the disk (vda, nvme0n1, ...; major:minor if unnamed)",
    ),
    Field::new(
        "op",
        "string",
        "read, write, discard, flush, erase or other",
    ),
];

pub static GADGET: Gadget = Gadget {
    name: "biolatency",
    summary: "block I/O latency from issue to completion, log2 µs histograms per device (and \
        op); filters apply to the issuing task (a kernel worker for buffered writeback)",
    object: aya::include_bytes_aligned!("../../bpf/obj/biolatency.bpf.o"),
    programs: &[
        ("bio_issue", Hook::tracepoint("block", "block_rq_issue")),
        (
            "bio_complete",
            Hook::tracepoint("block", "block_rq_complete"),
        ),
    ],
    fields: &FIELDS,
    output: Output::KernelHistograms,
    default_group_by: &["device"],
    detail_fields: &[],
    kernel_count: None,
    decode,
    event_size: KEY_SIZE,
    layout: super::hist::KEY_LAYOUT,
    fixed_record: None,
};

fn decode(b: &[u8], out: &mut Map<String, Value>) {
    let key = Key::parse(b);
    out.insert("device".into(), json!(device_name(key.id)));
    let op = match u8::try_from(key.kind).unwrap_or(0) {
        b'R' => "read",
        b'W' => "write",
        b'D' => "discard",
        b'F' => "flush",
        b'E' => "erase",
        _ => "other",
    };
    out.insert("op".into(), json!(op));
}

/// The kernel's device number (major << 20 | minor) as the device's name.
pub fn device_name(dev: u32) -> String {
    let (major, minor) = (dev >> 20, dev & 0xf_ffff);
    crate::ebpf::host::block_device_name(major, minor).unwrap_or_else(|| format!("{major}:{minor}"))
}
