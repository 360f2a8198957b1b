//! An agent's own BPF object in the kernel: its maps created, each program loaded through
//! the verifier and attached, maps pinned where asked. Everything it holds is fd-owned, so
//! dropping an [`AgentObject`] detaches and unloads it all (a killed server leaves nothing
//! attached). What to load and where to attach is decided above (the deploy engine); this is
//! only the kernel side, through aya.

use std::path::Path;

use aya::Ebpf;
use aya::programs::{
    CgroupAttachMode, CgroupSkbAttachType, Program, ProgramError, TcAttachType, XdpMode,
};

use super::inventory::{self, MapRecord};
use super::sys::PinnedFile;

/// Where one program attaches, as the kernel takes it (resolved and checked by the caller).
#[derive(Debug, Clone, Copy)]
pub enum Attach<'a> {
    Tracepoint {
        category: &'a str,
        name: &'a str,
    },
    RawTracepoint(&'a str),
    /// A `tp_btf` program attaches to the tracepoint its section names.
    BtfTracepoint,
    Uprobe {
        /// The binary that was checked, attached through its descriptor (not whatever its
        /// path names now).
        file: &'a PinnedFile,
        symbol: &'a str,
        pid: Option<u32>,
    },
    Xdp {
        ifindex: u32,
    },
    /// TC attaches by interface name; `ifindex` is what the name was checked to be, and is
    /// checked again after attaching.
    Tc {
        name: &'a str,
        ifindex: u32,
        egress: bool,
    },
    CgroupSkb {
        /// The cgroup directory that was checked, opened through its descriptor.
        dir: &'a PinnedFile,
        egress: bool,
    },
    /// A software CPU clock on every online CPU, `hz` samples per second.
    CpuClock {
        hz: u64,
    },
}

/// Why a program did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    /// The verifier said no; `log` is its whole log.
    #[error("the kernel verifier rejected it ({error})")]
    Verifier { error: String, log: String },
    #[error("{0}")]
    Kernel(String),
    /// A program type this server does not load.
    #[error("{0}")]
    Unsupported(String),
}

impl From<ProgramError> for LoadFailure {
    fn from(e: ProgramError) -> Self {
        match e {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => LoadFailure::Verifier {
                error: io_error.to_string(),
                log: verifier_log.to_string(),
            },
            other => LoadFailure::Kernel(other.to_string()),
        }
    }
}

/// Why a program did not attach.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("program `{0}` is not in the object")]
    NoProgram(String),
    #[error("the program's type does not match its attach target")]
    Mismatch,
    #[error(transparent)]
    Kernel(#[from] ProgramError),
    #[error("opening the cgroup's directory: {0}")]
    Cgroup(#[source] std::io::Error),
    #[error("interface `{0}` changed while attaching")]
    InterfaceChanged(String),
    #[error(transparent)]
    CpuClock(#[from] super::gadget::CpuClockError),
    /// A test asked for a failure here (crate::fault).
    #[error(transparent)]
    Injected(#[from] crate::fault::Injected),
}

/// An agent's object with its maps created; programs load and attach one by one.
pub struct AgentObject {
    ebpf: Ebpf,
}

impl std::fmt::Debug for AgentObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentObject").finish_non_exhaustive()
    }
}

impl AgentObject {
    /// Creates the object's maps (pins it asks for go under `pin_dir` only). `bytes` must
    /// have passed the validator; errors are the loader's, as text.
    pub fn create(bytes: &[u8], pin_dir: &Path) -> Result<Self, super::btf::LoaderError> {
        super::btf::load_deploy_object(bytes, pin_dir).map(|ebpf| Self { ebpf })
    }

    fn program(&mut self, name: &str) -> Result<&mut Program, AttachError> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| AttachError::NoProgram(name.to_owned()))
    }

    /// Loads program `name` (of `kind`, from `section`) through the verifier; returns its
    /// kernel id when the kernel tells it.
    pub fn load_program(
        &mut self,
        name: &str,
        kind: &str,
        section: &str,
    ) -> Result<Option<u32>, LoadFailure> {
        let program = self
            .program(name)
            .map_err(|e| LoadFailure::Kernel(e.to_string()))?;
        match program {
            Program::TracePoint(p) => p.load()?,
            Program::RawTracePoint(p) => p.load()?,
            Program::BtfTracePoint(p) => {
                let tp = section.split_once('/').map_or("", |(_, r)| r);
                let btf = super::btf::vmlinux().map_err(|e| {
                    LoadFailure::Unsupported(format!("tp_btf programs need vmlinux BTF: {e}"))
                })?;
                p.load(tp, &btf)?;
            }
            Program::UProbe(p) => p.load()?,
            Program::Xdp(p) => p.load()?,
            Program::SchedClassifier(p) => p.load()?,
            Program::CgroupSkb(p) => p.load()?,
            Program::PerfEvent(p) => p.load()?,
            Program::SocketFilter(p) => p.load()?,
            Program::KProbe(p) => p.load()?,
            _ => {
                return Err(LoadFailure::Unsupported(format!(
                    "this server cannot load {kind} programs (section {section})"
                )));
            }
        }
        Ok(program.info().ok().map(|i| i.id()))
    }

    /// Attaches loaded program `name` at `to`.
    pub fn attach(&mut self, name: &str, to: Attach<'_>) -> Result<(), AttachError> {
        let e = AttachError::Kernel;
        match (self.program(name)?, to) {
            (Program::TracePoint(p), Attach::Tracepoint { category, name }) => {
                p.attach(category, name).map(drop).map_err(e)
            }
            (Program::RawTracePoint(p), Attach::RawTracepoint(n)) => {
                p.attach(n).map(drop).map_err(e)
            }
            (Program::BtfTracePoint(p), Attach::BtfTracepoint) => p.attach().map(drop).map_err(e),
            (Program::UProbe(p), Attach::Uprobe { file, symbol, pid }) => {
                let scope = match pid.and_then(std::num::NonZeroU32::new) {
                    Some(pid) => aya::programs::uprobe::UProbeScope::OneProcess(pid),
                    None => aya::programs::uprobe::UProbeScope::AllProcesses,
                };
                p.attach(symbol, file.proc_path(), scope)
                    .map(drop)
                    .map_err(e)
            }
            (Program::Xdp(p), Attach::Xdp { ifindex }) => p
                .attach_to_if_index(ifindex, XdpMode::Default)
                .map(drop)
                .map_err(e),
            (
                Program::SchedClassifier(p),
                Attach::Tc {
                    name,
                    ifindex,
                    egress,
                },
            ) => {
                let t = if egress {
                    TcAttachType::Egress
                } else {
                    TcAttachType::Ingress
                };
                p.attach(name, t).map(drop).map_err(e)?;
                // TC attaches by name: the name must still be the device that was checked.
                match super::sys::interface(name) {
                    Ok((_, now)) if now == ifindex => Ok(()),
                    _ => Err(AttachError::InterfaceChanged(name.to_owned())),
                }
            }
            (Program::CgroupSkb(p), Attach::CgroupSkb { dir, egress }) => {
                let t = if egress {
                    CgroupSkbAttachType::Egress
                } else {
                    CgroupSkbAttachType::Ingress
                };
                let dir = dir.reopen().map_err(AttachError::Cgroup)?;
                p.attach(dir, t, CgroupAttachMode::Single)
                    .map(drop)
                    .map_err(e)
            }
            (Program::PerfEvent(p), Attach::CpuClock { hz }) => {
                Ok(super::gadget::attach_cpu_clock(p, hz)?)
            }
            _ => Err(AttachError::Mismatch),
        }
    }

    /// What the kernel says of map `name` (id, memory), when it can be read.
    pub fn map_record(&self, name: &str) -> Option<MapRecord> {
        use aya::maps::Map;
        let data = match self.ebpf.map(name)? {
            Map::Array(d)
            | Map::HashMap(d)
            | Map::LruHashMap(d)
            | Map::PerCpuArray(d)
            | Map::PerCpuHashMap(d)
            | Map::PerCpuLruHashMap(d)
            | Map::RingBuf(d)
            | Map::PerfEventArray(d)
            | Map::LpmTrie(d)
            | Map::Queue(d)
            | Map::Stack(d)
            | Map::StackTraceMap(d)
            | Map::ProgramArray(d)
            | Map::BloomFilter(d) => d,
            _ => return None,
        };
        let id = data.info().ok()?.id();
        inventory::read_map(id).ok().map(|(r, _)| r)
    }

    /// Pins map `name` at `path` unless something is there already (a map the object asked
    /// to pin, pinned by the loader).
    pub fn pin_map(&self, name: &str, path: &Path) -> Result<(), aya::pin::PinError> {
        match self.ebpf.map(name) {
            Some(map) if !path.exists() => map.pin(path),
            _ => Ok(()),
        }
    }
}
