//! kfunc: calls of kernel functions named by `target` (a name or a glob), by fentry/fexit
//! where the kernel has BTF and BPF trampolines, else by kprobe/kretprobe: counts per
//! function in the kernel, entry-to-return latency histograms, or one event per call with
//! its arguments decoded through the function's BTF prototype.

use super::decode::{At, HEADER, Layout};
use super::{Field, Gadget, Output};
use crate::ebpf::probe::GadgetCheck;

/// fentry/fexit programs in the object (KF_SLOT in bpf/gadgets/kfunc.bpf.c): at most this
/// many functions are traced through trampolines; more take kprobes.
pub const FENTRY: [&str; 8] = [
    "kf_fentry0",
    "kf_fentry1",
    "kf_fentry2",
    "kf_fentry3",
    "kf_fentry4",
    "kf_fentry5",
    "kf_fentry6",
    "kf_fentry7",
];
pub const FEXIT: [&str; 8] = [
    "kf_fexit0",
    "kf_fexit1",
    "kf_fexit2",
    "kf_fexit3",
    "kf_fexit4",
    "kf_fexit5",
    "kf_fexit6",
    "kf_fexit7",
];
pub const KPROBE: &str = "kf_kprobe";
pub const KRETPROBE: &str = "kf_kretprobe";
/// The kernel stacks of events (`fields` or `group_by` naming `stack`).
pub const STACKS: &str = "kf_stacks";
/// The function the gadget's programs are verified against by `info`.
pub const CHECK_TARGET: &str = "do_nanosleep";

/// `info`'s names for its checks of each way the gadget hooks functions.
pub const FENTRY_CHECK: &str = "kfunc (fentry)";
pub const KPROBE_CHECK: &str = "kfunc (kprobe)";

/// The loads that show each way works: an fentry and fexit slot verified against
/// [`CHECK_TARGET`], and the kprobe programs.
pub fn checks() -> [GadgetCheck; 2] {
    [
        GadgetCheck {
            name: FENTRY_CHECK,
            object: GADGET.object,
            programs: Some(vec![FENTRY[0], FEXIT[0]]),
            target: Some(CHECK_TARGET),
            record: None,
        },
        GadgetCheck {
            name: KPROBE_CHECK,
            object: GADGET.object,
            programs: Some(vec![KPROBE, KRETPROBE]),
            target: None,
            record: None,
        },
    ]
}

/// gadget_cfg.arg0 bits (KF_* of the C side).
pub const AT_ENTRY: u32 = 1;
pub const AT_RETURN: u32 = 2;
pub const HIST: u32 = 4;
pub const STACK: u32 = 8;
/// Bytes kept of each string argument (two at most per call).
pub const STR_LEN: usize = 64;
pub const STRINGS: usize = 2;

const IP: At = At::new(0, 8);
pub const fn arg(i: usize) -> At {
    At::new(8 + 8 * i, 8)
}
pub const RET: At = At::new(56, 8);
pub const DURATION: At = At::new(64, 8);
pub const STACK_ID: At = At::new(72, 4);
pub const RETURNED: At = At::new(76, 4);
pub const fn string(i: usize) -> At {
    At::new(80 + STR_LEN * i, STR_LEN)
}
/// The whole event, header included.
pub const EVENT_SIZE: usize = HEADER + 80 + STR_LEN * STRINGS;

/// The function's address in an event.
pub fn ip(rest: &[u8]) -> u64 {
    IP.u64(rest)
}

pub static FIELDS: [Field; 5] = [
    Field::new(
        "function",
        "string",
        "the kernel function (count keys, histograms and events)",
    ),
    Field::new(
        "args",
        "object",
        "events: the arguments by name, decoded through the function's BTF prototype \
         (integers, enum names, `char *` as strings, other pointers as hex); arg0..arg5 \
         as hex without BTF",
    ),
    Field::new(
        "ret",
        "s64",
        "events with `return: true`: the return value, decoded as the prototype says",
    ),
    Field::with_unit(
        "duration_ns",
        "u64",
        "ns",
        "events with `return: true`: from entry to return",
    ),
    Field::new(
        "stack",
        "array",
        "events: the kernel stack, leaf first, symbolized through /proc/kallsyms; \
         recorded only when `fields` or `group_by` names it",
    ),
];

pub static GADGET: Gadget = Gadget {
    name: "kfunc",
    summary: "calls of kernel functions, `target: \"vfs_read\"` or a glob (`tcp_*`): counts per \
        function (mode count), entry-to-return latency histograms (mode histogram), or one \
        event per call with its arguments decoded through BTF (mode events; `return: true` \
        adds `ret` and `duration_ns`); fentry/fexit where the kernel allows, else kprobes",
    object: aya::include_bytes_aligned!("../../bpf/obj/kfunc.bpf.o"),
    programs: &[],
    fields: &FIELDS,
    output: Output::KernelCounts(super::count::TABLE),
    default_group_by: &["function"],
    detail_fields: &["pid", "comm"],
    kernel_count: None,
    decode: |_, _| {},
    event_size: EVENT_SIZE,
    layout: Layout {
        btf_struct: "kfunc_event",
        skip: HEADER,
        fields: &[
            ("ip", IP),
            ("args", At::new(8, 48)),
            ("ret", RET),
            ("duration_ns", DURATION),
            ("stack_id", STACK_ID),
            ("returned", RETURNED),
            ("str", At::new(80, STR_LEN * STRINGS)),
        ],
    },
    fixed_record: None,
};
