//! Feature probes done for real: tiny programs are loaded and attached for an instant, tiny
//! maps created, helpers checked by the verifier. Results are cached for the process; each
//! "unavailable" carries the kernel's own answer (syscall, errno) and what it means.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aya::Ebpf;
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
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::host::{self, KernelFacts};
use super::{btf, sys};

/// The probe programs (bpf/probes.bpf.c), compiled and committed by scripts/build-bpf.
static PROBES_OBJ: &[u8] = aya::include_bytes_aligned!("../../bpf/obj/probes.bpf.o");

/// Outcome of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Loaded (and attached, for attach kinds) successfully.
    Available,
    /// The kernel refused; `reason` says why.
    Unavailable,
    /// The probe itself could not run (a prerequisite is missing); `reason` says which.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
    /// Built-in gadgets whose programs the verifier accepted here (loaded, not attached).
    pub gadgets: BTreeMap<String, Support>,
    /// When the probes ran (RFC 3339); results are cached until `refresh`, and for this
    /// boot across restarts of the same binary (docs/operations.md).
    pub probed_at: String,
    /// How long probing took.
    pub probe_ms: u64,
}

static CACHE: Mutex<Option<Arc<Features>>> = Mutex::new(None);

/// Whether the features were probed already in this process.
pub fn is_cached() -> bool {
    CACHE.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

/// Whether a way of hooking works here: programs of attach kind `kind` (`fentry`,
/// `kprobe`, ...) attach, and `check` (the gadget's programs for that way) loads. As probed
/// already in this process, else probed now (the kernel's facts read once, for reasons).
pub fn way_works(kind: &str, check: &GadgetCheck) -> Support {
    let cached = CACHE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let facts = std::cell::OnceCell::new();
    let facts = || facts.get_or_init(host::kernel_facts);
    let attach = cached
        .as_ref()
        .and_then(|f| f.attach.get(kind).cloned())
        .unwrap_or_else(
            || match ATTACH_PROBES.iter().find(|(name, _)| *name == kind) {
                Some((_, probe)) => probe(facts()),
                None => Support::unknown(format!("no probe for attach kind `{kind}`")),
            },
        );
    if attach.status != Status::Available {
        return attach;
    }
    cached
        .and_then(|f| f.gadgets.get(check.name).cloned())
        .unwrap_or_else(|| check_gadget(facts(), check))
}

/// A gadget whose programs `info` has the kernel verify: its object, the programs (None:
/// all of them) and the kernel function its fentry/fexit programs are verified against.
#[derive(Debug, Clone)]
pub struct GadgetCheck {
    pub name: &'static str,
    pub object: &'static [u8],
    pub programs: Option<Vec<&'static str>>,
    pub target: Option<&'static str>,
    /// A tracepoint record its programs read at fixed offsets where BTF lacks its type.
    pub record: Option<&'static super::tracefs::FixedRecord>,
}

/// The probed features, from the cache unless `refresh` (or never probed): this process's,
/// else the one this binary wrote in this boot ([`BootCache`]). Needs CAP_BPF and
/// CAP_PERFMON; callers check first. Blocking: run it off the async runtime.
pub fn features(facts: &KernelFacts, refresh: bool, gadgets: &[GadgetCheck]) -> Arc<Features> {
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if !refresh && let Some(f) = cache.as_ref() {
        return Arc::clone(f);
    }
    let boot = BootCache::new(facts, gadgets);
    if !refresh && let Some(f) = boot.as_ref().and_then(BootCache::read) {
        let f = Arc::new(f);
        *cache = Some(Arc::clone(&f));
        return f;
    }
    let started = Instant::now();
    let probed_at = crate::error::now_rfc3339();
    // Memory: one vmlinux BTF parse at a time. The loader's own parse (made once) comes
    // first; then one parse shared by every attach probe and gadget load, held until they
    // are done; then, with it given back, the program-type probes, for two of which aya
    // parses its own.
    btf::prepare_loaders();
    let held = btf::vmlinux();
    let (attach, map_types, helpers, gadgets) = std::thread::scope(|s| {
        let attach = s.spawn(|| probe_attach_kinds(facts));
        let map_types = s.spawn(|| probe_map_types(facts));
        let gadgets = s.spawn(|| probe_gadgets(facts, gadgets));
        let helpers = probe_helpers(facts);
        // Each probe inside a group already turns its own panic into `unknown`; a group
        // itself has nothing that can panic, but an empty group is logged, not hidden.
        let join = |h: std::thread::ScopedJoinHandle<'_, BTreeMap<String, Support>>| {
            h.join().unwrap_or_else(|_| {
                tracing::error!("a probe group panicked; its results are missing");
                BTreeMap::new()
            })
        };
        (join(attach), join(map_types), helpers, join(gadgets))
    });
    drop(held);
    let program_types = probe_program_types(facts);
    crate::ebpf::sys::trim_heap();
    let features = Features {
        attach,
        program_types,
        map_types,
        helpers,
        gadgets,
        probed_at,
        probe_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    tracing::info!(
        elapsed_ms = features.probe_ms,
        "probed kernel eBPF features"
    );
    if let Some(boot) = &boot {
        boot.write(&features);
    }
    let features = Arc::new(features);
    *cache = Some(Arc::clone(&features));
    features
}

/// Probe results kept for the rest of the boot, so that each start of the server (or of
/// `ebpf-mcp call`) need not probe again: /run/ebpf-mcp/probes.json, owned by the user and
/// readable by it alone. It is used only when written by this very binary file, in this
/// boot, for this kernel release and lockdown mode, with the same capabilities and the same
/// gadgets; anything else, a file not ours or a key that differs, means probing afresh.
/// `info` with `refresh` probes again and rewrites it.
#[derive(Debug)]
pub struct BootCache {
    path: PathBuf,
    key: String,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    key: String,
    features: Features,
}

const BOOT_CACHE_DIR: &str = "/run/ebpf-mcp";

impl BootCache {
    fn new(facts: &KernelFacts, gadgets: &[GadgetCheck]) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
        let boot_id = read("/proc/sys/kernel/random/boot_id").ok()?;
        let exe = std::fs::metadata("/proc/self/exe").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        // What the process may do: its capabilities, and whether a seccomp filter or
        // no_new_privs confine it (`serve` sandboxes itself, `call` may not).
        let process: Vec<&str> = status
            .lines()
            .filter(|l| {
                ["CapEff:", "Seccomp:", "NoNewPrivs:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(str::trim)
            .collect();
        // Settings that change what loads within a boot: stack depth (stack maps), ftrace.
        let sysctls: Vec<String> = ["kernel/perf_event_max_stack", "kernel/ftrace_enabled"]
            .iter()
            .map(|k| {
                format!(
                    "{k}={}",
                    read(&format!("/proc/sys/{k}")).unwrap_or_default()
                )
            })
            .collect();
        let names: Vec<&str> = gadgets.iter().map(|g| g.name).collect();
        let key = format!(
            "boot {boot_id} | kernel {} {} | lockdown {} | {} | {} | exe {}:{} {} {}.{} | v{} | \
             gadgets {}",
            facts.release,
            facts.version,
            facts.lockdown.mode,
            process.join(" "),
            sysctls.join(" "),
            exe.dev(),
            exe.ino(),
            exe.size(),
            exe.mtime(),
            exe.mtime_nsec(),
            env!("CARGO_PKG_VERSION"),
            names.join(",")
        );
        Some(Self {
            path: Path::new(BOOT_CACHE_DIR).join("probes.json"),
            key,
        })
    }

    /// Owned by this user and writable by no one else.
    fn ours(m: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o022 == 0
    }

    /// The directory, if it is a real one of ours.
    fn dir_is_ours() -> bool {
        std::fs::symlink_metadata(BOOT_CACHE_DIR).is_ok_and(|m| m.is_dir() && Self::ours(&m))
    }

    /// The cached features, if the file is a regular file of ours in a directory of ours
    /// (opened without following links, checked on the open descriptor) and its key is
    /// this one.
    fn read(&self) -> Option<Features> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        if !Self::dir_is_ours() {
            return None;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || !Self::ours(&meta) {
            return None;
        }
        let mut text = Vec::new();
        file.take(4 << 20).read_to_end(&mut text).ok()?;
        let cached: Cached = serde_json::from_slice(&text).ok()?;
        (cached.key == self.key).then_some(cached.features)
    }

    /// Saves `features` (best effort: a read-only /run only means probing next time).
    /// Results with an `unknown` among them (a probe that could not run: often passing) are
    /// not kept beyond the process.
    fn write(&self, features: &Features) {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let unknown = [
            &features.attach,
            &features.program_types,
            &features.map_types,
            &features.helpers,
            &features.gadgets,
        ]
        .iter()
        .any(|group| group.values().any(|s| s.status == Status::Unknown));
        if unknown {
            tracing::debug!("probe results not kept for the boot: some are unknown");
            return;
        }
        let cached = Cached {
            key: self.key.clone(),
            features: features.clone(),
        };
        let result = (|| -> io::Result<()> {
            match std::fs::DirBuilder::new()
                .mode(0o700)
                .create(BOOT_CACHE_DIR)
            {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            if !Self::dir_is_ours() {
                return Err(io::Error::other(format!(
                    "{BOOT_CACHE_DIR} is not a directory of this user that only it can write"
                )));
            }
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let tmp = self
                .path
                .with_extension(format!("tmp.{}.{nanos}", std::process::id()));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&tmp)?;
            let written = serde_json::to_vec(&cached)
                .map_err(io::Error::other)
                .and_then(|bytes| file.write_all(&bytes));
            drop(file);
            written
                .and_then(|()| std::fs::rename(&tmp, &self.path))
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })
        })();
        if let Err(e) = result {
            tracing::debug!(error = %e, path = %self.path.display(), "probe results not cached for the boot");
        }
    }
}

/// Has the kernel verify each gadget's programs, side by side.
fn probe_gadgets(facts: &KernelFacts, checks: &[GadgetCheck]) -> BTreeMap<String, Support> {
    let results = in_parallel(checks, |c| check_gadget(facts, c));
    collect(checks.iter().map(|c| c.name), results)
}

fn check_gadget(facts: &KernelFacts, c: &GadgetCheck) -> Support {
    let started = Instant::now();
    let loaded = super::gadget::check_load(c.object, c.programs.as_deref(), c.target);
    tracing::debug!(
        gadget = c.name,
        elapsed_ms = started.elapsed().as_millis(),
        "verified a gadget's programs"
    );
    match loaded {
        Ok(()) => match c.record.map_or(Ok(None), |r| r.resolve()) {
            Ok(_) => Support::available(),
            Err(why) => Support::unavailable(why),
        },
        Err(e) => gadget_refused(facts, &e),
    }
}

/// Why a gadget did not load: the verifier's last words when it refused, else the errno.
fn gadget_refused(facts: &KernelFacts, e: &super::gadget::GadgetError) -> Support {
    let text = error_text(e);
    match text.contains("Verifier output") {
        true => Support::unavailable(format!(
            "the verifier rejected it: {}",
            verifier_tail(&text)
        )),
        false => refused(facts, e, "loading the gadget's programs"),
    }
}

/// The last few lines of a verifier log that say why (not its statistics).
fn verifier_tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("verification time")
                && !l.starts_with("processed ")
                && !l.starts_with("stack depth")
        })
        .collect();
    let start = lines.len().saturating_sub(3);
    lines[start..].join(" | ")
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

/// Sequential on purpose: these are quick, and aya parses vmlinux BTF afresh for the tracing
/// and lsm types, which in parallel would hold several copies in memory at once.
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
    let results = in_parallel(MAP_TYPES, |&(_, ty)| match is_map_supported(ty) {
        Ok(true) => Support::available(),
        Ok(false) => Support::unavailable("the kernel does not know this map type"),
        Err(e) => refused(facts, &e, "creating a minimal map"),
    });
    collect(MAP_TYPES.iter().map(|(name, _)| *name), results)
}

fn probe_helpers(facts: &KernelFacts) -> BTreeMap<String, Support> {
    let results = in_parallel(HELPERS, |&(name, prog, helper)| {
        match is_helper_supported(prog, helper) {
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
        }
    });
    collect(HELPERS.iter().map(|(name, _, _)| *name), results)
}

/// Runs `f` on every item, each on its own thread, and returns the results in order. Probes
/// spend most of their time waiting for the kernel (RCU grace periods when programs and maps
/// are freed), so running them side by side cuts the wall time to the slowest one.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<std::thread::Result<R>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|item| s.spawn(|| f(item))).collect();
        handles.into_iter().map(|h| h.join()).collect()
    })
}

/// Probe results keyed by name; a probe that panicked is reported, not hidden.
fn collect(
    names: impl Iterator<Item = &'static str>,
    results: Vec<std::thread::Result<Support>>,
) -> BTreeMap<String, Support> {
    names
        .zip(results)
        .map(|(name, r)| {
            (
                name.to_owned(),
                r.unwrap_or_else(|_| Support::unknown("the probe panicked")),
            )
        })
        .collect()
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
    btf::load_object(PROBES_OBJ).map_err(|e| format!("loading the probe object: {e}"))
}

fn vmlinux_for(what: &str) -> Result<std::sync::Arc<btf::Vmlinux>, Probe> {
    btf::vmlinux().map_err(|e| Probe::Skipped(format!("{what} needs vmlinux BTF: {e}")))
}

/// Runs one attach probe on a fresh copy of the probe object: the program named `prog` is
/// handed to `attach`, and everything is released when the object is dropped on return.
/// `explanation`, when known (e.g. from the kernel's build options), replaces the reason
/// derived from the errno.
fn attach_probe<P, F>(
    facts: &KernelFacts,
    prog: &str,
    explanation: Option<&str>,
    attach: F,
) -> Support
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    F: FnOnce(&mut P) -> Result<(), Probe>,
{
    let mut ebpf = match load_probe_object() {
        Ok(e) => e,
        Err(e) => return Support::unknown(e),
    };
    let Some(program) = ebpf.program_mut(prog) else {
        return Support::unknown(format!("probe object has no program `{prog}`"));
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

type AttachProbe = fn(&KernelFacts) -> Support;

const ATTACH_PROBES: &[(&str, AttachProbe)] = &[
    ("tracepoint", probe_tracepoint),
    ("raw_tp", probe_raw_tp),
    ("tp_btf", probe_tp_btf),
    ("kprobe", probe_kprobe),
    ("fentry", probe_fentry),
    ("fexit", probe_fexit),
    ("lsm", probe_lsm),
    ("uprobe", probe_uprobe),
    ("perf_event", probe_perf_event),
    ("xdp", probe_xdp),
    ("tc", probe_tc),
    ("cgroup", probe_cgroup),
];

fn probe_attach_kinds(facts: &KernelFacts) -> BTreeMap<String, Support> {
    let results = in_parallel(ATTACH_PROBES, |(_, probe)| probe(facts));
    collect(ATTACH_PROBES.iter().map(|(name, _)| *name), results)
}

fn probe_tracepoint(facts: &KernelFacts) -> Support {
    attach_probe(facts, "probe_tracepoint", None, |p: &mut TracePoint| {
        if host::tracefs_root().is_none() {
            return Err(Probe::Skipped(
                "tracefs is not mounted, so tracepoint ids cannot be read; mount it at \
                 /sys/kernel/tracing or enable ebpf.auto_mount"
                    .into(),
            ));
        }
        step("loading a tracepoint program", p.load())?;
        if p.attach("syscalls", "sys_enter_getpid").is_err() {
            // Kernels without syscall tracepoints (CONFIG_FTRACE_SYSCALLS off).
            step(
                "attaching to tracepoint sched:sched_process_exec",
                p.attach("sched", "sched_process_exec"),
            )?;
        }
        Ok(())
    })
}

fn probe_raw_tp(facts: &KernelFacts) -> Support {
    attach_probe(facts, "probe_raw_tp", None, |p: &mut RawTracePoint| {
        step("loading a raw_tp program", p.load())?;
        step(
            "attaching to raw tracepoint sched_process_exec",
            p.attach("sched_process_exec"),
        )?;
        Ok(())
    })
}

fn probe_tp_btf(facts: &KernelFacts) -> Support {
    attach_probe(facts, "probe_tp_btf", None, |p: &mut BtfTracePoint| {
        let btf = vmlinux_for("tp_btf")?;
        step(
            "loading a tp_btf program for sched_process_exec",
            p.load("sched_process_exec", &btf),
        )?;
        step("attaching a tp_btf program", p.attach())?;
        Ok(())
    })
}

fn probe_kprobe(facts: &KernelFacts) -> Support {
    let not_configured = kprobes_not_configured(facts);
    attach_probe(facts, "probe_kprobe", not_configured, |p: &mut KProbe| {
        step("loading a kprobe program", p.load())?;
        step(
            "attaching a kprobe to do_nanosleep",
            p.attach("do_nanosleep", 0),
        )?;
        Ok(())
    })
}

fn probe_fentry(facts: &KernelFacts) -> Support {
    attach_probe(facts, "probe_fentry", None, |p: &mut FEntry| {
        let btf = vmlinux_for("fentry")?;
        step(
            "loading an fentry program for do_nanosleep",
            p.load("do_nanosleep", &btf),
        )?;
        step("attaching an fentry program", p.attach())?;
        Ok(())
    })
}

fn probe_fexit(facts: &KernelFacts) -> Support {
    attach_probe(facts, "probe_fexit", None, |p: &mut FExit| {
        let btf = vmlinux_for("fexit")?;
        step(
            "loading an fexit program for do_nanosleep",
            p.load("do_nanosleep", &btf),
        )?;
        step("attaching an fexit program", p.attach())?;
        Ok(())
    })
}

fn probe_lsm(facts: &KernelFacts) -> Support {
    attach_probe(facts, "probe_lsm", None, |p: &mut Lsm| {
        let btf = vmlinux_for("lsm")?;
        step(
            "loading an LSM program for the bpf hook",
            p.load("bpf", &btf),
        )?;
        step("attaching an LSM program", p.attach())?;
        Ok(())
    })
}

fn probe_uprobe(facts: &KernelFacts) -> Support {
    attach_probe(facts, "probe_uprobe", None, |p: &mut UProbe| {
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
    })
}

fn probe_perf_event(facts: &KernelFacts) -> Support {
    attach_probe(facts, "probe_perf_event", None, |p: &mut PerfEvent| {
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
    })
}

fn probe_cgroup(facts: &KernelFacts) -> Support {
    attach_probe(facts, "probe_cgroup_skb", None, |p: &mut CgroupSkb| {
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
        // Detach before the cgroup directory is removed.
        Ok(())
    })
}

fn probe_xdp(facts: &KernelFacts) -> Support {
    in_private_netns(|| {
        attach_probe(facts, "probe_xdp", None, |p: &mut Xdp| {
            step("loading an XDP program", p.load())?;
            step(
                "attaching XDP (generic mode) to a private loopback",
                p.attach("lo", XdpMode::Skb),
            )?;
            Ok(())
        })
    })
}

fn probe_tc(facts: &KernelFacts) -> Support {
    in_private_netns(|| {
        attach_probe(facts, "probe_tc", None, |p: &mut SchedClassifier| {
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
        })
    })
}

/// Runs `probe` on a thread of its own inside a new, empty network namespace, so XDP and TC
/// attach to a loopback device no host traffic crosses. The namespace disappears with the
/// thread.
fn in_private_netns(probe: impl FnOnce() -> Support + Send) -> Support {
    std::thread::scope(|s| {
        s.spawn(|| match sys::unshare_network_namespace() {
            Ok(()) => probe(),
            Err(e) => Support::unknown(format!(
                "cannot create a private network namespace for the probe: {e}"
            )),
        })
        .join()
        .unwrap_or_else(|_| Support::unknown("the network probe panicked"))
    })
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
