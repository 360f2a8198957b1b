//! Feature probes done for real: tiny programs are loaded and attached for an instant, tiny
//! maps created, helpers checked by the verifier. Results are cached for the process; each
//! "unavailable" carries the kernel's own answer (syscall, errno) and what it means.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aya::maps::MapType;
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, FEntry, FExit, KProbe,
    LinkOrder, Lsm, LsmAttachType, PerfEvent, ProgramError, ProgramType, RawTracePoint,
    SchedClassifier, TcAttachType, TracePoint, UProbe, Xdp, XdpMode,
    perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    tc::TcAttachOptions,
    uprobe::{UProbeAttachLocation, UProbeScope},
};
use aya::sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported};
use aya::{Ebpf, EbpfLoader};
use schemars::JsonSchema;
use serde::Serialize;

use super::host::{self, KernelFacts};
use super::{btf, sys};

/// The probe programs (bpf/probes.bpf.c), compiled and committed by scripts/build-bpf.
static PROBES_OBJ: &[u8] = aya::include_bytes_aligned!("../../bpf/obj/probes.bpf.o");

/// Outcome of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Loaded (and attached, for attach kinds) successfully.
    Available,
    /// The kernel refused; `reason` says why.
    Unavailable,
    /// The probe itself could not run (a prerequisite is missing); `reason` says which.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Support {
    pub status: Status,
    /// Why it is unavailable or unknown: the kernel's answer and what it means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Support {
    fn available() -> Self {
        Self {
            status: Status::Available,
            reason: None,
        }
    }
    fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            status: Status::Unavailable,
            reason: Some(reason.into()),
        }
    }
    fn unknown(reason: impl Into<String>) -> Self {
        Self {
            status: Status::Unknown,
            reason: Some(reason.into()),
        }
    }
}

/// What this kernel lets eBPF do, probed for real.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Features {
    /// Attach kinds (tracepoint, raw_tp, tp_btf, kprobe, fentry, fexit, lsm, uprobe,
    /// perf_event, xdp, tc, cgroup): a program was loaded and attached.
    pub attach: BTreeMap<String, Support>,
    /// BPF program types the kernel accepts.
    pub program_types: BTreeMap<String, Support>,
    /// BPF map types the kernel can create.
    pub map_types: BTreeMap<String, Support>,
    /// Notable helpers, checked by the verifier from a tracing program (override_return
    /// from a kprobe program).
    pub helpers: BTreeMap<String, Support>,
    /// When the probes ran (RFC 3339); results are cached until `refresh`.
    pub probed_at: String,
    /// How long probing took.
    pub probe_ms: u64,
}

static CACHE: Mutex<Option<Arc<Features>>> = Mutex::new(None);

/// Whether the features were probed already in this process.
pub fn is_cached() -> bool {
    CACHE.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

/// The probed features, from the cache unless `refresh` (or never probed). Needs CAP_BPF and
/// CAP_PERFMON; callers check first. Blocking: run it off the async runtime.
pub fn features(facts: &KernelFacts, refresh: bool) -> Arc<Features> {
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if !refresh && let Some(f) = cache.as_ref() {
        return Arc::clone(f);
    }
    let started = Instant::now();
    let probed_at = crate::error::now_rfc3339();
    let features = Arc::new(Features {
        attach: probe_attach_kinds(facts),
        program_types: probe_program_types(facts),
        map_types: probe_map_types(facts),
        helpers: probe_helpers(facts),
        probed_at,
        probe_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    tracing::info!(
        elapsed_ms = features.probe_ms,
        "probed kernel eBPF features"
    );
    *cache = Some(Arc::clone(&features));
    features
}

const PROGRAM_TYPES: &[(&str, ProgramType)] = &[
    ("socket_filter", ProgramType::SocketFilter),
    ("kprobe", ProgramType::KProbe),
    ("sched_cls", ProgramType::SchedClassifier),
    ("sched_act", ProgramType::SchedAction),
    ("tracepoint", ProgramType::TracePoint),
    ("xdp", ProgramType::Xdp),
    ("perf_event", ProgramType::PerfEvent),
    ("cgroup_skb", ProgramType::CgroupSkb),
    ("cgroup_sock", ProgramType::CgroupSock),
    ("lwt_in", ProgramType::LwtInput),
    ("lwt_out", ProgramType::LwtOutput),
    ("lwt_xmit", ProgramType::LwtXmit),
    ("sock_ops", ProgramType::SockOps),
    ("sk_skb", ProgramType::SkSkb),
    ("cgroup_device", ProgramType::CgroupDevice),
    ("sk_msg", ProgramType::SkMsg),
    ("raw_tracepoint", ProgramType::RawTracePoint),
    ("cgroup_sock_addr", ProgramType::CgroupSockAddr),
    ("lwt_seg6local", ProgramType::LwtSeg6local),
    ("lirc_mode2", ProgramType::LircMode2),
    ("sk_reuseport", ProgramType::SkReuseport),
    ("flow_dissector", ProgramType::FlowDissector),
    ("cgroup_sysctl", ProgramType::CgroupSysctl),
    (
        "raw_tracepoint_writable",
        ProgramType::RawTracePointWritable,
    ),
    ("cgroup_sockopt", ProgramType::CgroupSockopt),
    ("tracing", ProgramType::Tracing),
    ("struct_ops", ProgramType::StructOps),
    ("extension", ProgramType::Extension),
    ("lsm", ProgramType::Lsm(LsmAttachType::Mac)),
    ("sk_lookup", ProgramType::SkLookup),
    ("syscall", ProgramType::Syscall),
    ("netfilter", ProgramType::Netfilter),
];

const MAP_TYPES: &[(&str, MapType)] = &[
    ("hash", MapType::Hash),
    ("array", MapType::Array),
    ("prog_array", MapType::ProgramArray),
    ("perf_event_array", MapType::PerfEventArray),
    ("percpu_hash", MapType::PerCpuHash),
    ("percpu_array", MapType::PerCpuArray),
    ("stack_trace", MapType::StackTrace),
    ("cgroup_array", MapType::CgroupArray),
    ("lru_hash", MapType::LruHash),
    ("lru_percpu_hash", MapType::LruPerCpuHash),
    ("lpm_trie", MapType::LpmTrie),
    ("array_of_maps", MapType::ArrayOfMaps),
    ("hash_of_maps", MapType::HashOfMaps),
    ("devmap", MapType::DevMap),
    ("sockmap", MapType::SockMap),
    ("cpumap", MapType::CpuMap),
    ("xskmap", MapType::XskMap),
    ("sockhash", MapType::SockHash),
    ("cgroup_storage", MapType::CgroupStorage),
    ("reuseport_sockarray", MapType::ReuseportSockArray),
    ("percpu_cgroup_storage", MapType::PerCpuCgroupStorage),
    ("queue", MapType::Queue),
    ("stack", MapType::Stack),
    ("sk_storage", MapType::SkStorage),
    ("devmap_hash", MapType::DevMapHash),
    ("struct_ops", MapType::StructOps),
    ("ringbuf", MapType::RingBuf),
    ("inode_storage", MapType::InodeStorage),
    ("task_storage", MapType::TaskStorage),
    ("bloom_filter", MapType::BloomFilter),
    ("user_ringbuf", MapType::UserRingBuf),
    ("cgrp_storage", MapType::CgrpStorage),
    ("arena", MapType::Arena),
];

/// Helpers agents ask about, with the program type to check each from.
const HELPERS: &[(&str, ProgramType, BpfHelper)] = &[
    (
        "probe_read_kernel",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_probe_read_kernel,
    ),
    (
        "probe_read_user_str",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_probe_read_user_str,
    ),
    (
        "ringbuf_output",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_ringbuf_output,
    ),
    (
        "ringbuf_reserve",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_ringbuf_reserve,
    ),
    (
        "perf_event_output",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_perf_event_output,
    ),
    (
        "get_stackid",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_get_stackid,
    ),
    (
        "get_stack",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_get_stack,
    ),
    (
        "get_current_cgroup_id",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_get_current_cgroup_id,
    ),
    (
        "get_current_task_btf",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_get_current_task_btf,
    ),
    (
        "ktime_get_boot_ns",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_ktime_get_boot_ns,
    ),
    ("loop", ProgramType::TracePoint, BpfHelper::BPF_FUNC_loop),
    (
        "snprintf",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_snprintf,
    ),
    (
        "trace_printk",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_trace_printk,
    ),
    (
        "send_signal",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_send_signal,
    ),
    (
        "probe_write_user",
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_probe_write_user,
    ),
    (
        "override_return",
        ProgramType::KProbe,
        BpfHelper::BPF_FUNC_override_return,
    ),
];

fn probe_program_types(facts: &KernelFacts) -> BTreeMap<String, Support> {
    PROGRAM_TYPES
        .iter()
        .map(|&(name, ty)| {
            let support = match is_program_supported(ty) {
                Ok(true) => Support::available(),
                Ok(false) => Support::unavailable("the kernel does not know this program type"),
                Err(e) => refused(facts, &e, "loading a minimal program"),
            };
            (name.to_owned(), support)
        })
        .collect()
}

fn probe_map_types(facts: &KernelFacts) -> BTreeMap<String, Support> {
    MAP_TYPES
        .iter()
        .map(|&(name, ty)| {
            let support = match is_map_supported(ty) {
                Ok(true) => Support::available(),
                Ok(false) => Support::unavailable("the kernel does not know this map type"),
                Err(e) => refused(facts, &e, "creating a minimal map"),
            };
            (name.to_owned(), support)
        })
        .collect()
}

fn probe_helpers(facts: &KernelFacts) -> BTreeMap<String, Support> {
    HELPERS
        .iter()
        .map(|&(name, prog, helper)| {
            let support = match is_helper_supported(prog, helper) {
                Ok(true) => Support::available(),
                Ok(false) => {
                    let mut why = String::from("the verifier rejects calls to it");
                    if name == "probe_write_user" && facts.lockdown.mode != "none" {
                        why.push_str(&format!(
                            " (kernel lockdown '{}' removes it)",
                            facts.lockdown.mode
                        ));
                    }
                    if name == "override_return"
                        && host::config_enabled(&facts.config, "CONFIG_BPF_KPROBE_OVERRIDE")
                            == Some(false)
                    {
                        why.push_str(" (CONFIG_BPF_KPROBE_OVERRIDE is not set)");
                    }
                    Support::unavailable(why)
                }
                Err(e) => refused(facts, &e, "verifying a helper call"),
            };
            (name.to_owned(), support)
        })
        .collect()
}

/// Runs one attach probe: load the program named `prog` out of a fresh copy of the probe
/// object and hand it to `attach`. Everything is released when the object is dropped.
fn attach_probe<P, F>(facts: &KernelFacts, ebpf: &mut Ebpf, prog: &str, attach: F) -> Support
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    F: FnOnce(&mut P) -> Result<(), Probe>,
{
    attach_probe_explained(facts, ebpf, prog, None, attach)
}

/// As [`attach_probe`], with a known explanation that replaces the errno-based one.
fn attach_probe_explained<P, F>(
    facts: &KernelFacts,
    ebpf: &mut Ebpf,
    prog: &str,
    explanation: Option<&str>,
    attach: F,
) -> Support
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    F: FnOnce(&mut P) -> Result<(), Probe>,
{
    let program = match ebpf.program_mut(prog) {
        Some(p) => p,
        None => return Support::unknown(format!("probe object has no program `{prog}`")),
    };
    let program: &mut P = match program.try_into() {
        Ok(p) => p,
        Err(e) => return Support::unknown(format!("probe program `{prog}`: {e}")),
    };
    match attach(program) {
        Ok(()) => Support::available(),
        Err(Probe::Refused(what, e)) => match explanation {
            Some(why) => Support::unavailable(format!("{why} ({what}: {})", error_text(&e))),
            None => refused(facts, &e, what),
        },
        Err(Probe::Skipped(reason)) => Support::unknown(reason),
    }
}

/// Why an attach probe did not succeed.
enum Probe {
    /// The kernel (or aya on its behalf) said no while doing `&str`.
    Refused(&'static str, ProgramError),
    /// A prerequisite of the probe itself is missing.
    Skipped(String),
}

fn step<T>(what: &'static str, r: Result<T, ProgramError>) -> Result<T, Probe> {
    r.map_err(|e| Probe::Refused(what, e))
}

fn load_probe_object() -> Result<Ebpf, String> {
    let btf = btf::vmlinux().ok();
    EbpfLoader::new()
        .btf(btf.as_deref())
        .load(PROBES_OBJ)
        .map_err(|e| format!("loading the probe object: {e}"))
}

fn probe_attach_kinds(facts: &KernelFacts) -> BTreeMap<String, Support> {
    let mut out = BTreeMap::new();
    let mut ebpf = match load_probe_object() {
        Ok(e) => e,
        Err(e) => {
            for kind in ATTACH_KINDS {
                out.insert((*kind).to_owned(), Support::unknown(e.clone()));
            }
            return out;
        }
    };
    let vmlinux = btf::vmlinux();
    let need_btf = |what: &str| -> Result<Arc<aya::Btf>, Probe> {
        vmlinux
            .clone()
            .map_err(|e| Probe::Skipped(format!("{what} needs vmlinux BTF: {e}")))
    };

    let tracefs = host::tracefs_root();
    out.insert(
        "tracepoint".into(),
        attach_probe(
            facts,
            &mut ebpf,
            "probe_tracepoint",
            |p: &mut TracePoint| {
                if tracefs.is_none() {
                    return Err(Probe::Skipped(
                        "tracefs is not mounted, so tracepoint ids cannot be read; mount it at \
                     /sys/kernel/tracing or enable ebpf.auto_mount"
                            .into(),
                    ));
                }
                step("loading a tracepoint program", p.load())?;
                let sched = step(
                    "attaching to tracepoint syscalls:sys_enter_getpid",
                    p.attach("syscalls", "sys_enter_getpid"),
                );
                if sched.is_err() {
                    step(
                        "attaching to tracepoint sched:sched_process_exec",
                        p.attach("sched", "sched_process_exec"),
                    )?;
                }
                Ok(())
            },
        ),
    );
    out.insert(
        "raw_tp".into(),
        attach_probe(facts, &mut ebpf, "probe_raw_tp", |p: &mut RawTracePoint| {
            step("loading a raw_tp program", p.load())?;
            step(
                "attaching to raw tracepoint sched_process_exec",
                p.attach("sched_process_exec"),
            )?;
            Ok(())
        }),
    );
    out.insert(
        "tp_btf".into(),
        attach_probe(facts, &mut ebpf, "probe_tp_btf", |p: &mut BtfTracePoint| {
            let btf = need_btf("tp_btf")?;
            step(
                "loading a tp_btf program for sched_process_exec",
                p.load("sched_process_exec", &btf),
            )?;
            step("attaching a tp_btf program", p.attach())?;
            Ok(())
        }),
    );
    let kprobes_off = kprobes_not_configured(facts);
    out.insert(
        "kprobe".into(),
        attach_probe_explained(
            facts,
            &mut ebpf,
            "probe_kprobe",
            kprobes_off,
            |p: &mut KProbe| {
                step("loading a kprobe program", p.load())?;
                step(
                    "attaching a kprobe to do_nanosleep",
                    p.attach("do_nanosleep", 0),
                )?;
                Ok(())
            },
        ),
    );
    out.insert(
        "fentry".into(),
        attach_probe(facts, &mut ebpf, "probe_fentry", |p: &mut FEntry| {
            let btf = need_btf("fentry")?;
            step(
                "loading an fentry program for do_nanosleep",
                p.load("do_nanosleep", &btf),
            )?;
            step("attaching an fentry program", p.attach())?;
            Ok(())
        }),
    );
    out.insert(
        "fexit".into(),
        attach_probe(facts, &mut ebpf, "probe_fexit", |p: &mut FExit| {
            let btf = need_btf("fexit")?;
            step(
                "loading an fexit program for do_nanosleep",
                p.load("do_nanosleep", &btf),
            )?;
            step("attaching an fexit program", p.attach())?;
            Ok(())
        }),
    );
    out.insert(
        "lsm".into(),
        attach_probe(facts, &mut ebpf, "probe_lsm", |p: &mut Lsm| {
            let btf = need_btf("lsm")?;
            step(
                "loading an LSM program for the bpf hook",
                p.load("bpf", &btf),
            )?;
            step("attaching an LSM program", p.attach())?;
            Ok(())
        }),
    );
    out.insert(
        "uprobe".into(),
        attach_probe(facts, &mut ebpf, "probe_uprobe", |p: &mut UProbe| {
            let (exe, offset) = own_probe_target().map_err(|e| {
                Probe::Skipped(format!("cannot locate this binary's probe function: {e}"))
            })?;
            step("loading a uprobe program", p.load())?;
            step(
                "attaching a uprobe to this server's own binary",
                p.attach(
                    UProbeAttachLocation::AbsoluteOffset(offset),
                    &exe,
                    UProbeScope::CallingProcess,
                ),
            )?;
            Ok(())
        }),
    );
    out.insert(
        "perf_event".into(),
        attach_probe(facts, &mut ebpf, "probe_perf_event", |p: &mut PerfEvent| {
            step("loading a perf_event program", p.load())?;
            // One sample per CPU-second of this process: it never fires during the probe.
            step(
                "attaching to a cpu-clock perf event",
                p.attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::CallingProcess { cpu: None },
                    SamplePolicy::Period(1_000_000_000),
                    false,
                ),
            )?;
            Ok(())
        }),
    );
    out.insert(
        "cgroup".into(),
        attach_probe(facts, &mut ebpf, "probe_cgroup_skb", |p: &mut CgroupSkb| {
            let root = host::cgroup2_root()
                .ok_or_else(|| Probe::Skipped("no cgroup v2 hierarchy is mounted".into()))?;
            let dir = TempCgroup::create(&root).map_err(|e| {
                Probe::Skipped(format!(
                    "cannot create a probe cgroup under {}: {e}",
                    root.display()
                ))
            })?;
            step("loading a cgroup_skb program", p.load())?;
            let fd = std::fs::File::open(&dir.0)
                .map_err(|e| Probe::Skipped(format!("cannot open {}: {e}", dir.0.display())))?;
            step(
                "attaching a cgroup_skb program to an empty cgroup",
                p.attach(&fd, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single),
            )?;
            Ok(())
        }),
    );
    drop(ebpf);
    let (xdp, tc) = probe_network_kinds(facts);
    out.insert("xdp".into(), xdp);
    out.insert("tc".into(), tc);
    out
}

/// Why kprobes cannot work, when the kernel's build says so.
fn kprobes_not_configured(facts: &KernelFacts) -> Option<&'static str> {
    let pmu = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    match host::config_enabled(&facts.config, "CONFIG_KPROBES") {
        Some(false) => Some("not configured: the kernel is built without CONFIG_KPROBES"),
        None if !pmu => {
            Some("not configured: the kernel has no kprobe PMU (CONFIG_KPROBES is off)")
        }
        _ => None,
    }
}

const ATTACH_KINDS: &[&str] = &[
    "tracepoint",
    "raw_tp",
    "tp_btf",
    "kprobe",
    "fentry",
    "fexit",
    "lsm",
    "uprobe",
    "perf_event",
    "xdp",
    "tc",
    "cgroup",
];

/// XDP and TC attach to the loopback device of a private network namespace that exists only
/// for the probe's thread, so no host interface ever sees the programs.
fn probe_network_kinds(facts: &KernelFacts) -> (Support, Support) {
    let run = || -> (Support, Support) {
        if let Err(e) = sys::unshare_network_namespace() {
            let why = format!("cannot create a private network namespace for the probe: {e}");
            return (Support::unknown(why.clone()), Support::unknown(why));
        }
        let mut ebpf = match load_probe_object() {
            Ok(e) => e,
            Err(e) => return (Support::unknown(e.clone()), Support::unknown(e)),
        };
        let xdp = attach_probe(facts, &mut ebpf, "probe_xdp", |p: &mut Xdp| {
            step("loading an XDP program", p.load())?;
            step(
                "attaching XDP (generic mode) to a private loopback",
                p.attach("lo", XdpMode::Skb),
            )?;
            Ok(())
        });
        let tc = attach_probe(facts, &mut ebpf, "probe_tc", |p: &mut SchedClassifier| {
            step("loading a TC classifier", p.load())?;
            let tcx = p.attach_with_options(
                "lo",
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            );
            if tcx.is_err() {
                // Kernels before 6.6 have no TCX links: fall back to a clsact qdisc filter.
                let _ = aya::programs::tc::qdisc_add_clsact("lo");
                step(
                    "attaching a TC classifier to a private loopback",
                    p.attach("lo", TcAttachType::Ingress),
                )?;
            }
            Ok(())
        });
        (xdp, tc)
    };
    std::thread::scope(|s| {
        s.spawn(run).join().unwrap_or_else(|_| {
            let why = "the network probe thread panicked";
            (Support::unknown(why), Support::unknown(why))
        })
    })
}

/// A child cgroup that exists only while the probe runs.
struct TempCgroup(PathBuf);

impl TempCgroup {
    fn create(root: &Path) -> io::Result<Self> {
        let dir = root.join(format!("ebpf-mcp-probe-{}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(Self(dir)),
            // Left by a probe that was killed: reuse it (it is removed below).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Self(dir)),
            Err(e) => Err(e),
        }
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "could not remove probe cgroup");
        }
    }
}

/// The uprobe probe attaches here, in this binary, scoped to this process: no other process
/// is touched and the function is never called while the probe is attached.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn ebpf_mcp_uprobe_probe_target() {
    std::hint::black_box(());
}

/// This executable's path and the file offset of [`ebpf_mcp_uprobe_probe_target`], found
/// through /proc/self/maps so it works on stripped binaries.
fn own_probe_target() -> io::Result<(PathBuf, u64)> {
    let addr = ebpf_mcp_uprobe_probe_target as *const () as u64;
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(_perms), Some(offset)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let parse = |s: &str| u64::from_str_radix(s, 16).ok();
        let (Some(start), Some(end), Some(offset)) = (parse(start), parse(end), parse(offset))
        else {
            continue;
        };
        if (start..end).contains(&addr) {
            return Ok((exe, addr - start + offset));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "function address not in any mapping of /proc/self/maps",
    ))
}

/// The errno inside an error's source chain, if any.
fn errno_of(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(n) = io.raw_os_error()
        {
            return Some(n);
        }
        cur = e.source();
    }
    None
}

/// Turns a kernel refusal into a reason an operator can act on: what was tried, the
/// kernel's answer, and the fact about this host that explains it.
fn refused(facts: &KernelFacts, err: &(dyn std::error::Error + 'static), what: &str) -> Support {
    let errno = errno_of(err);
    let mut reason = format!("{what}: {}", error_text(err));
    let lockdown = facts.lockdown.mode.as_str();
    let note = match errno {
        Some(libc::EPERM) | Some(libc::EACCES)
            if lockdown == "integrity" || lockdown == "confidentiality" =>
        {
            Some(format!(
                "the kernel refused with {} while lockdown is '{lockdown}'",
                errno_name(errno)
            ))
        }
        Some(libc::EPERM) | Some(libc::EACCES) => Some(format!(
            "the kernel refused with {}; check the process's capabilities and LSM policy",
            errno_name(errno)
        )),
        Some(libc::ENOENT) => Some("the attach target does not exist on this kernel".into()),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(524) => {
            Some("the kernel does not support it".into())
        }
        _ => None,
    };
    if let Some(note) = note {
        reason = format!("{note} ({reason})");
    }
    // An errno-less failure is our own (a missing symbol, an unparsable object): unknown.
    if errno.is_none() {
        return Support::unknown(reason);
    }
    Support::unavailable(reason)
}

/// An error and its sources as one line ("a: b: c"), without aya's empty "Verifier
/// output:" tail and without repeating a source its parent already quotes.
fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let part = e.to_string();
        let part = part.trim_end();
        let part = part
            .strip_suffix("Verifier output:")
            .map_or(part, |t| t.trim_end().trim_end_matches('.'));
        if !text.contains(part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(part);
        }
        cur = e.source();
    }
    text
}

fn errno_name(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        _ => "an error",
    }
}
