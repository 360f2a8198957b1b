//! oom_kill: processes the OOM killer chose, with their memory at the time.

use serde_json::{Map, Value, json};

use super::decode::{At, HEADER, Layout};
use super::{Field, Gadget, Output};
use crate::ebpf::gadget::Hook;

static FIELDS: [Field; 9] = [
    Field::new("victim_pid", "u32", "the process killed"),
    Field::new("victim_comm", "string", "its name"),
    Field::new("victim_uid", "u32", "its user id"),
    Field::with_unit("total_vm_kb", "u64", "kB", "its virtual memory"),
    Field::with_unit("anon_rss_kb", "u64", "kB", "its anonymous resident memory"),
    Field::with_unit(
        "file_rss_kb",
        "u64",
        "kB",
        "its file-backed resident memory",
    ),
    Field::with_unit(
        "shmem_rss_kb",
        "u64",
        "kB",
        "its shared-memory resident memory",
    ),
    Field::with_unit("pgtables_kb", "u64", "kB", "its page tables"),
    Field::new("oom_score_adj", "s32", "its oom_score_adj (-1000 to 1000)"),
];

pub static GADGET: Gadget = Gadget {
    name: "oom_kill",
    summary: "processes the OOM killer chose, with their memory; pid/comm are the task whose \
        allocation triggered it (often the victim)",
    object: aya::include_bytes_aligned!("../../bpf/obj/oom.bpf.o"),
    programs: &[("oom_victim", Hook::tracepoint("oom", "mark_victim"))],
    fields: &FIELDS,
    output: Output::Events,
    default_group_by: &["victim_comm"],
    detail_fields: &[],
    kernel_count: None,
    decode,
    event_size: HEADER + 72,
    layout: Layout {
        btf_struct: "oom_event",
        skip: HEADER,
        fields: &[
            ("victim_pid", VICTIM_PID),
            ("victim_uid", VICTIM_UID),
            ("victim_comm", VICTIM_COMM),
            ("total_vm", TOTAL_VM),
            ("anon_rss", ANON_RSS),
            ("file_rss", FILE_RSS),
            ("shmem_rss", SHMEM_RSS),
            ("pgtables", PGTABLES),
            ("oom_score_adj", OOM_SCORE_ADJ),
            ("detail", DETAIL),
        ],
    },
    fixed_record: None,
};

const VICTIM_PID: At = At::new(0, 4);
const VICTIM_UID: At = At::new(4, 4);
const VICTIM_COMM: At = At::new(8, 16);
const TOTAL_VM: At = At::new(24, 8);
const ANON_RSS: At = At::new(32, 8);
const FILE_RSS: At = At::new(40, 8);
const SHMEM_RSS: At = At::new(48, 8);
const PGTABLES: At = At::new(56, 8);
const OOM_SCORE_ADJ: At = At::new(64, 4);
const DETAIL: At = At::new(68, 4);

fn decode(b: &[u8], out: &mut Map<String, Value>) {
    out.insert("victim_pid".into(), json!(VICTIM_PID.u32(b)));
    out.insert("victim_comm".into(), json!(VICTIM_COMM.str(b)));
    // Kernels before 6.6 report only the pid: leave out what is unknown rather than say 0.
    if DETAIL.u32(b) == 0 {
        return;
    }
    out.insert("victim_uid".into(), json!(VICTIM_UID.u32(b)));
    for (name, at) in [
        ("total_vm_kb", TOTAL_VM),
        ("anon_rss_kb", ANON_RSS),
        ("file_rss_kb", FILE_RSS),
        ("shmem_rss_kb", SHMEM_RSS),
        ("pgtables_kb", PGTABLES),
    ] {
        out.insert(name.into(), json!(at.u64(b)));
    }
    out.insert("oom_score_adj".into(), json!(OOM_SCORE_ADJ.i32(b)));
}
