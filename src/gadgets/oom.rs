//! oom_kill: processes the OOM killer chose, with their memory at the time.

use serde_json::{Map, Value, json};

use super::decode::{HEADER, i32_at, str_at, u32_at, u64_at};
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
    decode,
    event_size: HEADER + 72,
};

fn decode(b: &[u8], out: &mut Map<String, Value>) {
    out.insert("victim_pid".into(), json!(u32_at(b, 0)));
    out.insert("victim_comm".into(), json!(str_at(b, 8, 16)));
    // Kernels before 6.6 report only the pid: leave out what is unknown rather than say 0.
    if u32_at(b, 68) == 0 {
        return;
    }
    out.insert("victim_uid".into(), json!(u32_at(b, 4)));
    for (name, off) in [
        ("total_vm_kb", 24),
        ("anon_rss_kb", 32),
        ("file_rss_kb", 40),
        ("shmem_rss_kb", 48),
        ("pgtables_kb", 56),
    ] {
        out.insert(name.into(), json!(u64_at(b, off)));
    }
    out.insert("oom_score_adj".into(), json!(i32_at(b, 64)));
}
