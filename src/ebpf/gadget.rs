//! Running a built-in gadget: load its object (maps sized for this run), write the filter
//! configuration, attach its programs, and read what they send through the ring buffer.
//! Everything is owned by [`Running`]: dropping it detaches every link and closes every
//! program and map, and a killed server leaves nothing attached because all of it is
//! file-descriptor owned.

use std::borrow::Cow;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::uprobe::UProbeScope;
use aya::programs::{FEntry, FExit, KProbe, PerfEvent, RawTracePoint, TracePoint, UProbe};
use aya::{Ebpf, Pod};

use super::btf;
use super::sys::SyscallError;

/// Where a gadget program attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// A tracefs tracepoint: (category, name).
    Tracepoint(Cow<'static, str>, Cow<'static, str>),
    /// A raw tracepoint by name.
    RawTracepoint(Cow<'static, str>),
    /// A user-space function: entry (`ret: false`) or return, in every process running
    /// `binary` or only in `pid`.
    Uprobe {
        binary: std::path::PathBuf,
        /// The binary pinned when it was checked: attached through its descriptor, so the
        /// path cannot be swapped in between. `None`: attach by `binary`.
        file: Option<super::sys::PinnedFile>,
        symbol: String,
        ret: bool,
        pid: Option<u32>,
    },
    /// A cpu-clock perf event on every online CPU, sampling at this frequency.
    CpuClock { frequency_hz: u64 },
    /// A kernel function's entry (fentry) or return (fexit, `ret: true`) through a BPF
    /// trampoline: the program is verified against that function, so one program each.
    Fentry { function: String, ret: bool },
    /// A kernel function's entry (kprobe) or return (kretprobe): one program may attach to
    /// several functions.
    Kprobe { function: String, ret: bool },
}

impl Hook {
    /// A tracepoint known at build time.
    pub const fn tracepoint(category: &'static str, name: &'static str) -> Self {
        Self::Tracepoint(Cow::Borrowed(category), Cow::Borrowed(name))
    }

    /// A raw tracepoint known at build time.
    pub const fn raw_tracepoint(name: &'static str) -> Self {
        Self::RawTracepoint(Cow::Borrowed(name))
    }
}

/// The filters the kernel side applies (layout of `struct gadget_cfg` in bpf/gadget.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GadgetCfg {
    pub tgid: u32,
    pub uid_set: u32,
    pub uid: u32,
    pub comm_set: u32,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
    /// Events of this process are never reported (set to the server's own pid).
    pub self_tgid: u32,
    pub arg0: u32,
    pub arg1: u32,
    pub arg2: u32,
    /// Count mode in the kernel: which fields key the counts (`COUNT_*` of bpf/gadget.h,
    /// see [`crate::gadgets::count`]); 0 sends every event.
    pub count_keys: u32,
    /// A numeric field of the hook's record the kernel reads (generic tracepoint).
    pub value_field: u32,
    /// [`NAME_CGROUPS`], [`UNDER_SCOPE`].
    pub flags: u32,
    pub pad: u32,
}

/// GadgetCfg::flags: record the names of events' cgroups (container ids).
pub const NAME_CGROUPS: u32 = 1;
/// GadgetCfg::flags: only tasks in the scope cgroup given to [`start`], or below it.
pub const UNDER_SCOPE: u32 = 2;

impl GadgetCfg {
    /// Filters on a process name: false, unchanged, unless it is 1 to 15 bytes (what the
    /// kernel keeps of a name) without a NUL (where the kernel's comparison stops).
    pub fn set_comm(&mut self, comm: &str) -> bool {
        if !(1..=15).contains(&comm.len()) || comm.contains('\0') {
            return false;
        }
        self.comm_set = 1;
        self.comm = [0; 16];
        self.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        true
    }
}

// SAFETY: #[repr(C)] of integers and a byte array with no padding holes (u64 fields are
// 8-aligned by the u32 pairs before them), matching the C struct; any bit pattern is valid.
unsafe impl Pod for GadgetCfg {}

#[derive(Debug, thiserror::Error)]
pub enum GadgetError {
    #[error("loading the gadget object: {0}")]
    Load(String),
    #[error("the gadget object has no {what} `{name}`")]
    Missing { what: &'static str, name: String },
    #[error("loading program `{program}`: {source}")]
    Program {
        program: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching `{program}` to {hook}: {source}")]
    Attach {
        program: String,
        hook: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("{0}")]
    Map(#[from] Box<aya::maps::MapError>),
    #[error(transparent)]
    Syscall(#[from] SyscallError),
}

impl GadgetError {
    /// The errno behind the failure, if the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && let Some(n) = io.raw_os_error()
            {
                return Some(n);
            }
            cur = e.source();
        }
        None
    }
}

/// A key and value of a kernel table, as raw bytes.
pub type RawEntry = (Vec<u8>, Vec<u8>);

/// A gadget loaded and attached.
pub struct Running {
    ring: RingBuf<MapData>,
    drops: PerCpuArray<MapData, u64>,
    /// Holds the programs, links and remaining maps; dropped last.
    ebpf: Ebpf,
}

/// The names a gadget recorded for the cgroups its events came from.
#[derive(Debug)]
pub struct CgroupNames(std::os::fd::OwnedFd);

impl CgroupNames {
    /// The names of cgroup v2 `id`: its directory's and its parent's.
    pub fn get(&self, id: u64) -> Option<(String, String)> {
        const NAME: usize = 96;
        let mut v = [0u8; 2 * NAME];
        if !super::bpf::lookup(self.0.as_fd(), &id.to_ne_bytes(), &mut v).ok()? {
            return None;
        }
        let text = |b: &[u8]| {
            let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        Some((text(&v[..NAME]), text(&v[NAME..])))
    }
}

/// A gadget's table of stacks, readable while its ring buffer is read.
#[derive(Debug)]
pub struct Stacks(std::os::fd::OwnedFd);

impl Stacks {
    /// The addresses of stack `id`, leaf first (empty when the table has no such stack).
    pub fn get(&self, id: u32) -> Vec<u64> {
        const DEPTH: usize = 127;
        let mut v = [0u8; DEPTH * 8];
        if !super::bpf::lookup(self.0.as_fd(), &id.to_ne_bytes(), &mut v).unwrap_or(false) {
            return Vec::new();
        }
        v.chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .take_while(|a| *a != 0)
            .collect()
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

/// Loads `object`, sizes its ring buffer to `ring_bytes` (a power of two, at least a page)
/// and the maps named in `sizes` (the loader is shared: name every size that matters
/// to a gadget, each time), writes `cfg` (and `scope`, a cgroup directory, for
/// [`UNDER_SCOPE`]), and attaches `programs` in order.
pub fn start(
    object: &[u8],
    ring_bytes: u32,
    sizes: &[(&'static str, u32)],
    cfg: GadgetCfg,
    scope: Option<&std::fs::File>,
    programs: &[(&str, Hook)],
) -> Result<Running, GadgetError> {
    let mut ebpf = btf::load_object_with(object, |loader| {
        loader.map_max_entries("events", ring_bytes);
        for (map, entries) in sizes {
            loader.map_max_entries(map, *entries);
        }
    })
    .map_err(|e| GadgetError::Load(e.to_string()))?;
    if let Some(dir) = scope {
        let map = ebpf.map("cgroup_scope").ok_or(GadgetError::Missing {
            what: "map",
            name: "cgroup_scope".into(),
        })?;
        let aya::maps::Map::CgroupArray(data) = map else {
            return Err(GadgetError::Missing {
                what: "cgroup array",
                name: "cgroup_scope".into(),
            });
        };
        let fd = (dir.as_raw_fd() as u32).to_ne_bytes();
        super::bpf::update(data.fd().as_fd(), &0u32.to_ne_bytes(), &fd)?;
    }
    {
        let map = ebpf.map_mut("gadget_cfg").ok_or(GadgetError::Missing {
            what: "map",
            name: "gadget_cfg".into(),
        })?;
        let mut config: Array<_, GadgetCfg> = Array::try_from(map).map_err(Box::new)?;
        config.set(0, cfg, 0).map_err(Box::new)?;
    }
    for (name, hook) in programs {
        let program = ebpf.program_mut(name).ok_or_else(|| GadgetError::Missing {
            what: "program",
            name: (*name).to_owned(),
        })?;
        let fail_load = |source| GadgetError::Program {
            program: (*name).to_owned(),
            source: Box::new(source),
        };
        let fail_attach = |source| GadgetError::Attach {
            program: (*name).to_owned(),
            hook: describe(hook),
            source: Box::new(source),
        };
        match hook {
            Hook::Tracepoint(category, event) => {
                let p: &mut TracePoint = program.try_into().map_err(fail_load)?;
                p.load().map_err(fail_load)?;
                p.attach(category, event).map_err(fail_attach)?;
            }
            Hook::RawTracepoint(event) => {
                let p: &mut RawTracePoint = program.try_into().map_err(fail_load)?;
                p.load().map_err(fail_load)?;
                p.attach(event).map_err(fail_attach)?;
            }
            Hook::Uprobe {
                binary,
                file,
                symbol,
                pid,
                ..
            } => {
                let p: &mut UProbe = program.try_into().map_err(fail_load)?;
                p.load().map_err(fail_load)?;
                let scope = match pid.and_then(std::num::NonZeroU32::new) {
                    Some(pid) => UProbeScope::OneProcess(pid),
                    None => UProbeScope::AllProcesses,
                };
                let path = file
                    .as_ref()
                    .map_or_else(|| binary.clone(), |f| f.proc_path());
                p.attach(symbol.as_str(), path, scope)
                    .map_err(fail_attach)?;
            }
            Hook::CpuClock { frequency_hz } => {
                let p: &mut PerfEvent = program.try_into().map_err(fail_load)?;
                p.load().map_err(fail_load)?;
                attach_cpu_clock(p, *frequency_hz).map_err(|e| match e {
                    CpuClockError::OnlineCpus(e) => {
                        GadgetError::Load(format!("reading the online CPUs: {e}"))
                    }
                    CpuClockError::Attach(e) => fail_attach(e),
                })?;
            }
            Hook::Fentry { function, ret } => {
                let btf = btf::vmlinux().map_err(GadgetError::Load)?;
                if *ret {
                    let p: &mut FExit = program.try_into().map_err(fail_load)?;
                    p.load(function, &btf).map_err(fail_load)?;
                    p.attach().map_err(fail_attach)?;
                } else {
                    let p: &mut FEntry = program.try_into().map_err(fail_load)?;
                    p.load(function, &btf).map_err(fail_load)?;
                    p.attach().map_err(fail_attach)?;
                }
            }
            Hook::Kprobe { function, .. } => {
                // One program for every function: loaded the first time only.
                let p: &mut KProbe = program.try_into().map_err(fail_load)?;
                if p.fd().is_err() {
                    p.load().map_err(fail_load)?;
                }
                p.attach(function.as_str(), 0).map_err(fail_attach)?;
            }
        }
    }
    let ring = RingBuf::try_from(ebpf.take_map("events").ok_or(GadgetError::Missing {
        what: "map",
        name: "events".into(),
    })?)
    .map_err(Box::new)?;
    let drops = PerCpuArray::try_from(ebpf.take_map("drops").ok_or(GadgetError::Missing {
        what: "map",
        name: "drops".into(),
    })?)
    .map_err(Box::new)?;
    Ok(Running { ring, drops, ebpf })
}

/// Loads `object` with its tables at their smallest and has the kernel verify its programs
/// (those named in `only`, else all), attaching nothing; fentry/fexit programs are verified
/// against kernel function `target`. Everything is closed on return. This is how `info`
/// learns which gadgets really load here.
pub fn check_load(
    object: &[u8],
    only: Option<&[&str]>,
    target: Option<&str>,
) -> Result<(), GadgetError> {
    use aya::programs::Program;
    let mut ebpf = btf::load_check_object(object, |loader| {
        loader.map_max_entries("events", 4096);
        for map in ["counts", "cgroup_names", "hists"] {
            loader.map_max_entries(map, 1);
        }
    })
    .map_err(|e| GadgetError::Load(e.to_string()))?;
    let vmlinux = btf::vmlinux();
    for (name, program) in ebpf.programs_mut() {
        if only.is_some_and(|names| !names.contains(&name)) {
            continue;
        }
        let tracing_target = || {
            let btf = vmlinux.as_ref().map_err(|e| GadgetError::Load(e.clone()))?;
            let function = target.ok_or_else(|| {
                GadgetError::Load(format!(
                    "program `{name}` needs a kernel function to verify"
                ))
            })?;
            Ok::<_, GadgetError>((function, btf))
        };
        let loaded = match program {
            Program::TracePoint(p) => p.load(),
            Program::RawTracePoint(p) => p.load(),
            Program::UProbe(p) => p.load(),
            Program::KProbe(p) => p.load(),
            Program::PerfEvent(p) => p.load(),
            Program::FEntry(p) => {
                let (function, btf) = tracing_target()?;
                p.load(function, btf)
            }
            Program::FExit(p) => {
                let (function, btf) = tracing_target()?;
                p.load(function, btf)
            }
            _ => {
                return Err(GadgetError::Load(format!(
                    "program `{name}` is of a type gadgets do not use"
                )));
            }
        };
        loaded.map_err(|source| GadgetError::Program {
            program: name.to_owned(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

/// Why a program could not be attached to every CPU's clock.
#[derive(Debug)]
pub enum CpuClockError {
    OnlineCpus(std::io::Error),
    Attach(aya::programs::ProgramError),
}

impl std::error::Error for CpuClockError {}

impl std::fmt::Display for CpuClockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OnlineCpus(e) => write!(f, "reading the online CPUs: {e}"),
            Self::Attach(e) => e.fmt(f),
        }
    }
}

/// Attaches a loaded perf_event program to the cpu-clock of every online CPU, sampling
/// every process `hz` times a second (the profile gadget; deployed perf_event programs).
pub fn attach_cpu_clock(p: &mut PerfEvent, hz: u64) -> Result<(), CpuClockError> {
    let cpus = aya::util::online_cpus().map_err(|(_, e)| CpuClockError::OnlineCpus(e))?;
    for cpu in cpus {
        p.attach(
            PerfEventConfig::Software(SoftwareEvent::CpuClock),
            PerfEventScope::AllProcessesOneCpu { cpu },
            SamplePolicy::Frequency(hz),
            false,
        )
        .map_err(CpuClockError::Attach)?;
    }
    Ok(())
}

pub fn describe(hook: &Hook) -> String {
    match hook {
        Hook::Tracepoint(c, n) => format!("tracepoint {c}:{n}"),
        Hook::RawTracepoint(n) => format!("raw tracepoint {n}"),
        _ => hook.to_string(),
    }
}

impl std::fmt::Display for Hook {
    /// As results show it: `category:name`, `raw_tp:name`, `uprobe:/bin/x:symbol`, ...
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::Tracepoint(c, n) => write!(f, "{c}:{n}"),
            Hook::RawTracepoint(n) => write!(f, "raw_tp:{n}"),
            Hook::Uprobe {
                binary,
                symbol,
                ret,
                ..
            } => write!(
                f,
                "{}:{}:{symbol}",
                if *ret { "uretprobe" } else { "uprobe" },
                binary.display()
            ),
            Hook::CpuClock { frequency_hz } => write!(f, "perf_event:cpu-clock@{frequency_hz}Hz"),
            Hook::Fentry { function, ret } => {
                write!(f, "{}:{function}", if *ret { "fexit" } else { "fentry" })
            }
            Hook::Kprobe { function, ret } => {
                write!(
                    f,
                    "{}:{function}",
                    if *ret { "kretprobe" } else { "kprobe" }
                )
            }
        }
    }
}

impl Running {
    /// Waits up to `timeout` for events, then hands every event in the ring buffer to
    /// `each` (which returns false to stop consuming). Returns how many were handed over.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<u64, SyscallError> {
        let mut n = 0;
        if let Some(item) = self.ring.next() {
            // Data is already waiting: no need to sleep.
            n += 1;
            if !each(&item) {
                return Ok(n);
            }
        } else {
            super::sys::poll_readable(self.ring.as_fd().as_raw_fd(), timeout)?;
        }
        while let Some(item) = self.ring.next() {
            n += 1;
            if !each(&item) {
                break;
            }
        }
        Ok(n)
    }

    /// Events the kernel side could not deliver because the ring buffer was full.
    pub fn dropped(&self) -> u64 {
        self.drops
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map, GadgetError> {
        self.ebpf.map(name).ok_or_else(|| GadgetError::Missing {
            what: "map",
            name: name.to_owned(),
        })
    }

    /// Every entry of a hash map the gadget aggregates into, as raw key and value bytes
    /// (batched reads; the gadget keeps running).
    pub fn map_entries(&self, name: &str) -> Result<Vec<RawEntry>, GadgetError> {
        use aya::maps::Map;
        let data = match self.map(name)? {
            Map::HashMap(d) | Map::LruHashMap(d) => d,
            _ => {
                return Err(GadgetError::Missing {
                    what: "hash map",
                    name: name.to_owned(),
                });
            }
        };
        let fd =
            data.fd().as_fd().try_clone_to_owned().map_err(|e| {
                GadgetError::Load(format!("duplicating the fd of map `{name}`: {e}"))
            })?;
        let map = super::maps::OpenMap::from_fd(fd)?;
        let (ks, vs) = (map.key_size(), map.value_stride);
        let mut out = Vec::new();
        map.scan(|keys, values, n| {
            for i in 0..n {
                out.push((
                    keys[i * ks..(i + 1) * ks].to_vec(),
                    values[i * vs..(i + 1) * vs].to_vec(),
                ));
            }
            true
        })?;
        Ok(out)
    }

    /// The gadget's record of cgroup names (bpf/gadget.h `cgroup_names`), readable while
    /// its ring buffer is read.
    pub fn cgroup_names(&self) -> Option<CgroupNames> {
        let (aya::maps::Map::HashMap(data) | aya::maps::Map::LruHashMap(data)) =
            self.map("cgroup_names").ok()?
        else {
            return None;
        };
        data.fd().as_fd().try_clone_to_owned().ok().map(CgroupNames)
    }

    /// The gadget's stack table `name`, by descriptor (read while the ring is polled).
    pub fn stacks(&self, name: &str) -> Option<Stacks> {
        let aya::maps::Map::StackTraceMap(data) = self.map(name).ok()? else {
            return None;
        };
        data.fd().as_fd().try_clone_to_owned().ok().map(Stacks)
    }

    /// The addresses of stack `id` in the gadget's stack map, leaf first.
    pub fn stack(&self, name: &str, id: u32) -> Result<Vec<u64>, GadgetError> {
        let map: StackTraceMap<&MapData> =
            StackTraceMap::try_from(self.map(name)?).map_err(Box::new)?;
        let trace = map.get(&id, 0).map_err(Box::new)?;
        Ok(trace.frames().iter().map(|f| f.ip).collect())
    }
}
