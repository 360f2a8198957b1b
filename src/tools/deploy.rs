//! `deploy`, `undeploy`, `list_deployments`: an agent's own compiled BPF object, loaded only
//! after it passed validation (security/validate.rs) and the resource limits, always with an
//! expiry, and released by `undeploy`, by expiry (the cleanup task), or at shutdown. Every
//! program, map and link is fd-owned: a killed server leaves nothing attached. Pins are made
//! under the server's own bpffs directory only and removed at the next start.

use std::collections::HashMap;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aya::Ebpf;
use aya::programs::{CgroupAttachMode, CgroupSkbAttachType, Program, TcAttachType, XdpMode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::config::LogLevel;
use crate::core::Core;
use crate::deploy::target::{self, Requested, Target, TargetError};
use crate::ebpf::{bpf, btf, inventory, pins};
use crate::error::{EbpfError, codes};
use crate::resources::{Kind, Release};
use crate::security::Tier;
use crate::security::validate::{self, Inspection, Policy, Violation};

/// Lines of a verifier log kept in a result (the end, where the reason is).
const VERIFIER_LOG_LINES: usize = 60;

// ---------------------------------------------------------------- parameters

/// Where one program attaches. Which fields apply depends on the program's type.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachSpec {
    /// The program (its function name in the object).
    pub program: String,
    /// tracepoint: `category:name` (default: from the section, `tracepoint/category/name`).
    #[serde(default)]
    pub tracepoint: Option<String>,
    /// raw_tp: the tracepoint name (default: from the section, `raw_tp/name`).
    #[serde(default)]
    pub raw_tp: Option<String>,
    /// uprobe: `binary:symbol`.
    #[serde(default)]
    pub target: Option<String>,
    /// uprobe: only in this process.
    #[serde(default)]
    pub pid: Option<u32>,
    /// xdp, tc: the network interface.
    #[serde(default)]
    pub interface: Option<String>,
    /// tc: ingress (default) or egress.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// cgroup_skb: a cgroup v2 directory.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// perf_event: samples per second on every CPU (cpu-clock).
    #[serde(default)]
    pub frequency_hz: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// Arguments of `deploy`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployParams {
    /// The compiled object (`clang -target bpf -O2 -g -c`), base64. Or give `path`.
    #[serde(default)]
    pub object: Option<String>,
    /// An object file on the server, under tools.deploy.allowed_dirs.
    #[serde(default)]
    pub path: Option<String>,
    /// Programs to load (default: all of them).
    #[serde(default)]
    pub programs: Option<Vec<String>>,
    /// Where programs attach; needed for xdp, tc, uprobe, cgroup_skb and perf_event, and
    /// to override a tracepoint section.
    #[serde(default)]
    pub attach: Option<Vec<AttachSpec>>,
    /// Lifetime (default tools.deploy.default_ttl, at most tools.deploy.max_ttl).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Only run the kernel verifier: load, report, unload; attach nothing.
    #[serde(default)]
    pub verify_only: bool,
    /// Pin the maps under the server's bpffs directory (ebpf.bpffs_dir/<deployment_id>/).
    #[serde(default)]
    pub pin: bool,
}

// ---------------------------------------------------------------- results

/// One program of a deployment.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeployedProgram {
    pub name: String,
    /// Program type (policy terms: tracepoint, xdp, tc, ...).
    #[serde(rename = "type")]
    pub kind: String,
    pub section: String,
    /// Kernel program id (absent for verify_only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Where it is attached (`tracepoint:syscalls:sys_enter_getpid`, `xdp:veth0`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_to: Option<String>,
    /// Instructions in the object.
    pub instructions: usize,
    /// Instructions the verifier processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_insns: Option<u32>,
    pub helpers: Vec<String>,
    /// list_deployments: why it no longer acts although it is still loaded (its interface
    /// was deleted, ...); absent while it is attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detached: Option<String>,
}

/// One map of a deployment.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeployedMap {
    pub name: String,
    /// Kernel map id (for map_dump and map_lookup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    #[serde(rename = "type")]
    pub map_type: String,
    pub max_entries: u32,
    /// Memory the kernel charges for it (estimated before loading).
    pub bytes: u64,
    /// Where it is pinned, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_at: Option<String>,
}

/// Result of `deploy`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeployOutput {
    /// deployed; or, with verify_only, accepted or rejected (by the kernel verifier).
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    pub programs: Vec<DeployedProgram>,
    pub maps: Vec<DeployedMap>,
    /// When the deployment is released by itself (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// sha256 of the object as received.
    pub object_sha256: String,
    pub object_bytes: usize,
    /// verify_only: the end of the verifier's log when it rejected a program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifier_log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

// ---------------------------------------------------------------- the registry

/// A loaded deployment: everything it holds is released when it is dropped.
struct Deployment {
    id: String,
    owner: String,
    created_at: SystemTime,
    expires_at: SystemTime,
    output: DeployOutput,
    memory: u64,
    pin_dir: Option<PathBuf>,
    ebpf: Mutex<Option<Ebpf>>,
    tracked: AtomicU64,
    cpu: Mutex<CpuWatch>,
}

/// What a deployment's programs cost in CPU, from the kernel's run-time statistics.
#[derive(Debug, Default, Clone, Copy)]
struct CpuWatch {
    /// run_time_ns summed over its programs at the last sample, and when it was taken.
    last: Option<(u64, Instant)>,
    /// CPU milliseconds per second of wall time over the last interval.
    ms_per_s: Option<f64>,
    runs: u64,
    run_time_ns: u64,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Deployment {
    /// Detaches and unloads everything, removes its pins. Idempotent.
    fn release(&self) -> Result<(), String> {
        let ebpf = self.ebpf.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(ebpf);
        match &self.pin_dir {
            Some(dir) => pins::remove(dir),
            None => Ok(()),
        }
    }

    /// Runs and run time of its programs (counted while statistics are on); `None` when a
    /// program could not be read.
    fn run_totals(&self) -> Option<(u64, u64)> {
        let mut totals = (0u64, 0u64);
        for id in self.output.programs.iter().filter_map(|p| p.id) {
            match bpf::prog_run_stats(id) {
                Ok((runs, ns)) => {
                    totals.0 += runs;
                    totals.1 += ns;
                }
                Err(e) => {
                    tracing::debug!(deployment = self.id, program = id, error = %e, "run statistics not read");
                    return None;
                }
            }
        }
        Some(totals)
    }

    fn cpu(&self) -> std::sync::MutexGuard<'_, CpuWatch> {
        self.cpu.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn released(&self) -> bool {
        self.ebpf
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }
}

struct DeploymentHandle(Arc<Deployment>);

impl Release for DeploymentHandle {
    fn release(self: Box<Self>) -> Result<(), String> {
        self.0.release()
    }
}

/// Every deployment of this server.
#[derive(Debug, Default)]
pub struct Deployments {
    all: Mutex<HashMap<String, Arc<Deployment>>>,
    next: AtomicU64,
    /// Keeps the kernel's BPF run-time statistics on while deployments are watched for
    /// resources.max_cpu_time_ms.
    stats: Mutex<Option<OwnedFd>>,
    /// The statistics could not be turned on (said once in the log).
    stats_refused: AtomicBool,
}

/// Programs, maps and memory in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    programs: usize,
    maps: usize,
    memory: u64,
}

impl Deployments {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Deployment>>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets deployments released behind the registry's back (expiry, shutdown).
    fn purge(&self) {
        self.lock().retain(|_, d| !d.released());
    }

    fn usage(&self, owner: Option<&str>) -> Usage {
        self.purge();
        let mut u = Usage::default();
        for d in self.lock().values() {
            if owner.is_some_and(|o| o != d.owner) {
                continue;
            }
            u.programs += d.output.programs.len();
            u.maps += d.output.maps.len();
            u.memory += d.memory;
        }
        u
    }

    pub fn count(&self) -> usize {
        self.purge();
        self.lock().len()
    }

    /// Turns the kernel's run-time statistics on (held until [`Self::stats_off`]).
    fn stats_on(&self) -> bool {
        let mut held = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_some() {
            return true;
        }
        match bpf::enable_stats() {
            Ok(fd) => {
                *held = Some(fd);
                self.stats_refused.store(false, Ordering::Relaxed);
                true
            }
            Err(e) => {
                if !self.stats_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "BPF run-time statistics cannot be turned on: resources.max_cpu_time_ms is not enforced");
                }
                false
            }
        }
    }

    /// Whether this server holds the kernel's run-time statistics on.
    pub fn stats_held(&self) -> bool {
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn stats_off(&self) {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

// ---------------------------------------------------------------- deploy

pub fn deploy_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "deploy",
            title: "Load your own BPF program",
            description: "Load a compiled BPF object (base64 `object`, or `path` under \
                tools.deploy.allowed_dirs) after the server validates it: program types, \
                helpers, kernel symbols, instruction count, maps and attach points against \
                policy, every violation reported with a code. Attaches per `attach`, expires \
                after `ttl_seconds`; returns the deployment_id, program and map ids (map_dump \
                reads the maps). `verify_only` runs the kernel verifier and unloads.",
            tier: Tier::Deploy,
            hints: Hints {
                read_only: false,
                destructive: true,
                idempotent: false,
            },
            list_field: Some("programs"),
        },
        deploy,
    )
}

fn invalid(message: impl Into<String>) -> EbpfError {
    EbpfError::validation(codes::INVALID_ARGUMENTS, message)
}

/// The object's bytes: decoded from base64, or read from a file inside an allowed directory.
fn object_bytes(core: &Core, p: &DeployParams) -> Result<Vec<u8>, EbpfError> {
    use base64::Engine;
    let cap = core.config().tools.deploy.max_object_bytes.get();
    let too_big = |n: u64| {
        EbpfError::validation(
            "OBJECT_TOO_LARGE",
            format!("the object is {n} bytes; the limit is {cap} (tools.deploy.max_object_bytes)"),
        )
    };
    match (&p.object, &p.path) {
        (Some(_), Some(_)) => Err(invalid("give `object` or `path`, not both")),
        (None, None) => Err(invalid(
            "give the compiled object as base64 `object`, or a `path` under tools.deploy.allowed_dirs",
        )),
        (Some(b64), None) => {
            // Reject by the encoded size first: no need to decode a huge string.
            let encoded = b64.len() as u64;
            if encoded / 4 * 3 > cap + 3 {
                return Err(too_big(encoded / 4 * 3));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| {
                    EbpfError::validation(
                        "INVALID_ELF",
                        format!("`object` is not valid base64 ({e}); encode the .o file with `base64 -w0`"),
                    )
                })?;
            if bytes.len() as u64 > cap {
                return Err(too_big(bytes.len() as u64));
            }
            Ok(bytes)
        }
        (None, Some(path)) => {
            let config = core.config();
            let dirs = &config.tools.deploy.allowed_dirs;
            let refused = |why: String| EbpfError::permission("PATH_NOT_ALLOWED", why);
            if dirs.is_empty() {
                return Err(refused(
                    "`path` is disabled: tools.deploy.allowed_dirs is empty; send the object as base64 `object`".into(),
                ));
            }
            // The file is pinned (opened without being read: a FIFO cannot block it, a
            // device cannot act) and judged by the path the kernel resolves it to, links and
            // `..` followed. Every failure reads the same, so a refusal tells nothing about
            // what exists outside the allowed directories or where a link leads.
            let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            let not_here = || {
                refused(format!(
                    "`{path}` names no regular file inside tools.deploy.allowed_dirs ({}) once \
                     links are followed",
                    shown.join(", ")
                ))
            };
            let pinned = crate::ebpf::sys::PinnedFile::open(std::path::Path::new(path))
                .map_err(|_| not_here())?;
            let inside = dirs.iter().any(|d| {
                crate::ebpf::sys::PinnedFile::open(d)
                    .is_ok_and(|d| d.is_dir() && pinned.real.starts_with(&d.real))
            });
            if !inside || !pinned.is_regular() {
                return Err(not_here());
            }
            let file = pinned.reopen().map_err(|_| not_here())?;
            let real = pinned.real.clone();
            let meta = file
                .metadata()
                .map_err(|e| invalid(format!("`path` {}: {e}", real.display())))?;
            if meta.len() > cap {
                return Err(too_big(meta.len()));
            }
            let mut bytes = Vec::with_capacity(meta.len() as usize);
            file.take(cap + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| invalid(format!("reading {}: {e}", real.display())))?;
            if bytes.len() as u64 > cap {
                return Err(too_big(bytes.len() as u64));
            }
            Ok(bytes)
        }
    }
}

impl AttachSpec {
    fn requested(&self) -> Requested {
        Requested {
            tracepoint: self.tracepoint.clone(),
            raw_tp: self.raw_tp.clone(),
            target: self.target.clone(),
            pid: self.pid,
            interface: self.interface.clone(),
            direction: self.direction.map(|d| match d {
                Direction::Ingress => target::Direction::Ingress,
                Direction::Egress => target::Direction::Egress,
            }),
            cgroup: self.cgroup.clone(),
            frequency_hz: self.frequency_hz,
        }
    }
}

fn verifier_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(VERIFIER_LOG_LINES)..].join("\n")
}

/// What the audit log and a refusal record of each program: the helpers and kernel symbols
/// its code (subprograms and callbacks included) uses.
fn program_summary(programs: &[validate::ProgramFacts]) -> Vec<serde_json::Value> {
    programs
        .iter()
        .map(|p| json!({"name": p.name, "helpers": p.helpers, "symbols": p.symbols}))
        .collect()
}

/// The error for a refused object: the first violation's code, all of them in context.
fn refusal(violations: &[Violation]) -> EbpfError {
    let listed: Vec<String> = violations
        .iter()
        .map(|v| {
            let at = match (&v.program, v.offset) {
                (Some(p), Some(o)) => format!("{p} at instruction {o}: "),
                (Some(p), None) => format!("{p}: "),
                _ => String::new(),
            };
            format!("{} ({at}{})", v.code, v.detail)
        })
        .collect();
    let code = violations
        .first()
        .map_or("VALIDATION_FAILED", |v| v.code.as_str());
    EbpfError::validation(
        code,
        format!(
            "the object was refused before loading: {}",
            listed.join("; ")
        ),
    )
    .with_context("violations", violations)
}

/// Why a program did not load: the kernel's answer, or a type this server cannot load.
enum LoadFailure {
    Kernel(aya::programs::ProgramError),
    Unsupported(String),
}

fn load_program(program: &mut Program, kind: &str, section: &str) -> Result<(), LoadFailure> {
    let r = match program {
        Program::TracePoint(p) => p.load(),
        Program::RawTracePoint(p) => p.load(),
        Program::BtfTracePoint(p) => {
            let tp = section.split_once('/').map_or("", |(_, r)| r);
            let btf = btf::vmlinux().map_err(|e| {
                LoadFailure::Unsupported(format!("tp_btf programs need vmlinux BTF: {e}"))
            })?;
            p.load(tp, &btf)
        }
        Program::UProbe(p) => p.load(),
        Program::Xdp(p) => p.load(),
        Program::SchedClassifier(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        Program::PerfEvent(p) => p.load(),
        Program::SocketFilter(p) => p.load(),
        Program::KProbe(p) => p.load(),
        _ => {
            return Err(LoadFailure::Unsupported(format!(
                "this server cannot load {kind} programs (section {section})"
            )));
        }
    };
    r.map_err(LoadFailure::Kernel)
}

fn attach_program(program: &mut Program, target: &Target) -> Result<(), String> {
    let e = |err: aya::programs::ProgramError| err.to_string();
    match (program, target) {
        (Program::TracePoint(p), Target::Tracepoint { category, name }) => {
            p.attach(category, name).map(drop).map_err(e)
        }
        (Program::RawTracePoint(p), Target::RawTp(n)) => p.attach(n).map(drop).map_err(e),
        (Program::BtfTracePoint(p), Target::TpBtf(_)) => p.attach().map(drop).map_err(e),
        (
            Program::UProbe(p),
            Target::Uprobe {
                file, symbol, pid, ..
            },
        ) => {
            let scope = match pid.and_then(std::num::NonZeroU32::new) {
                Some(pid) => aya::programs::uprobe::UProbeScope::OneProcess(pid),
                None => aya::programs::uprobe::UProbeScope::AllProcesses,
            };
            // The file that was checked, by its descriptor: not whatever the path names now.
            p.attach(symbol.as_str(), Target::uprobe_path(file), scope)
                .map(drop)
                .map_err(e)
        }
        (Program::Xdp(p), Target::Xdp { index, .. }) => p
            .attach_to_if_index(*index, XdpMode::Default)
            .map(drop)
            .map_err(e),
        (
            Program::SchedClassifier(p),
            Target::Tc {
                name,
                index,
                direction,
            },
        ) => {
            let t = match direction {
                target::Direction::Egress => TcAttachType::Egress,
                target::Direction::Ingress => TcAttachType::Ingress,
            };
            p.attach(name, t).map(drop).map_err(e)?;
            // TC attaches by name: the name must still be the device that was checked.
            match crate::ebpf::sys::interface(name) {
                Ok((_, now)) if now == *index => Ok(()),
                _ => Err(format!("interface `{name}` changed while attaching")),
            }
        }
        (Program::CgroupSkb(p), Target::CgroupSkb { dir, direction, .. }) => {
            let t = match direction {
                target::CgroupDirection::Egress => CgroupSkbAttachType::Egress,
                target::CgroupDirection::Ingress => CgroupSkbAttachType::Ingress,
            };
            let dir = dir
                .reopen()
                .map_err(|err| format!("opening the cgroup's directory: {err}"))?;
            p.attach(dir, t, CgroupAttachMode::Single)
                .map(drop)
                .map_err(e)
        }
        (Program::PerfEvent(p), Target::PerfEvent(hz)) => {
            crate::ebpf::gadget::attach_cpu_clock(p, *hz).map_err(|err| err.to_string())
        }
        (_, Target::None) => Ok(()),
        _ => Err("the program's type does not match its attach target".into()),
    }
}

fn program_error(name: &str, err: &LoadFailure) -> (String, Option<String>) {
    match err {
        LoadFailure::Kernel(aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => (
            format!("the kernel verifier rejected `{name}` ({io_error})"),
            Some(verifier_tail(&verifier_log.to_string())),
        ),
        LoadFailure::Kernel(other) => (format!("loading `{name}`: {other}"), None),
        LoadFailure::Unsupported(why) => (format!("`{name}`: {why}"), None),
    }
}

fn deploy(core: &Core, p: DeployParams, ctx: &CallContext) -> Result<DeployOutput, EbpfError> {
    let all = core.config();
    let config = &all.tools.deploy;
    let bytes = object_bytes(core, &p)?;
    // One parse of vmlinux BTF for the validator's link and the loader's.
    let _btf = btf::vmlinux();
    let sha = crate::security::sha256_hex(&bytes);
    let policy = Policy::from_config(&all);
    ctx.progress(0.0, Some(3.0), "validating the object");
    let inspection = validate::inspect(&bytes, &policy);
    // Which programs, and where they attach (part of validation: attach points are policy).
    let selected: Vec<&validate::ProgramFacts> = match &p.programs {
        None => inspection.programs.iter().collect(),
        Some(names) => {
            if let Some(bad) = names
                .iter()
                .find(|n| !inspection.programs.iter().any(|f| &f.name == *n))
                && inspection.violations.is_empty()
            {
                let have: Vec<&str> = inspection
                    .programs
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect();
                return Err(invalid(format!(
                    "the object has no program `{bad}`; it has: {}",
                    have.join(", ")
                )));
            }
            inspection
                .programs
                .iter()
                .filter(|f| names.contains(&f.name))
                .collect()
        }
    };
    let specs: HashMap<&str, &AttachSpec> = p
        .attach
        .iter()
        .flatten()
        .map(|s| (s.program.as_str(), s))
        .collect();
    if let Some(orphan) = specs
        .keys()
        .find(|k| !inspection.programs.iter().any(|f| f.name == **k))
        && inspection.violations.is_empty()
    {
        return Err(invalid(format!(
            "`attach` names `{orphan}`, which is not a program of the object"
        )));
    }
    let mut violations = inspection.violations.clone();
    let mut targets: Vec<(String, Target)> = Vec::new();
    for f in &selected {
        let target = if p.verify_only {
            Target::None
        } else {
            let asked = specs.get(f.name.as_str()).map(|s| s.requested());
            match target::resolve(
                &f.name,
                &f.kind,
                &f.section,
                asked.as_ref(),
                &policy.allowed_attach_points,
            ) {
                Ok(t) => t,
                Err(TargetError::NotAllowed { point, .. }) => {
                    violations.push(validate::attach_refusal(&f.name, &point, &policy));
                    Target::None
                }
                // A type that is refused anyway says so through its violation.
                Err(_)
                    if violations
                        .iter()
                        .any(|v| v.program.as_deref() == Some(&f.name)) =>
                {
                    Target::None
                }
                Err(TargetError::Invalid(why)) => return Err(invalid(why)),
            }
        };
        targets.push((f.name.clone(), target));
    }
    if !violations.is_empty() {
        return Err(
            refusal(&violations).with_context("programs", program_summary(&inspection.programs))
        );
    }
    // Limits: this object on top of what is already deployed, globally and for this owner.
    let est_memory: u64 = inspection.maps.iter().map(|m| m.bytes).sum();
    if !p.verify_only {
        check_limits(
            core,
            &ctx.owner,
            selected.len(),
            inspection.maps.len(),
            est_memory,
        )?;
    }
    let ttl = ttl(config, p.ttl_seconds)?;
    let n = core.deployments.next.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("dep-{n}-{:08x}", crate::resources::id_suffix());
    let base = &core.pins_base;
    let pin_dir = pins::deployment_dir(base, &id);
    let pinning = p.pin && !p.verify_only;
    if pinning {
        pins::create(base, &pin_dir)
            .map_err(|e| EbpfError::resource(codes::FILESYSTEM_NOT_MOUNTED, e))?;
    }
    ctx.progress(1.0, Some(3.0), "loading through the kernel verifier");
    let loaded = load(
        &inspection,
        &selected,
        &targets,
        &pin_dir,
        pinning,
        p.verify_only,
    );
    let (ebpf, mut output) = match loaded {
        Ok(x) => x,
        Err(e) => {
            if pinning {
                let _ = pins::remove(&pin_dir);
            }
            return Err(e);
        }
    };
    output.object_sha256 = sha;
    output.object_bytes = bytes.len();
    if p.verify_only {
        drop(ebpf);
        return Ok(output);
    }
    ctx.progress(2.0, Some(3.0), "attached");
    let created_at = SystemTime::now();
    let expires_at = crate::time::add(created_at, ttl);
    output.deployment_id = Some(id.clone());
    output.expires_at = Some(crate::time::rfc3339_seconds(expires_at));
    let memory = output.maps.iter().map(|m| m.bytes).sum::<u64>();
    let deployment = Arc::new(Deployment {
        id: id.clone(),
        owner: ctx.owner.clone(),
        created_at,
        expires_at,
        output: output.clone(),
        memory,
        pin_dir: pinning.then_some(pin_dir),
        ebpf: Mutex::new(Some(ebpf)),
        tracked: AtomicU64::new(0),
        cpu: Mutex::default(),
    });
    let tracked = core.tracker.track(
        Kind::Deployment,
        &ctx.owner,
        &format!("deployment {id} ({} programs)", output.programs.len()),
        Some(expires_at),
        Box::new(DeploymentHandle(Arc::clone(&deployment))),
    );
    deployment.tracked.store(tracked, Ordering::Relaxed);
    core.deployments
        .lock()
        .insert(id.clone(), Arc::clone(&deployment));
    ctx.log(
        LogLevel::Info,
        format!(
            "deployed {id}: {} (expires {})",
            output
                .programs
                .iter()
                .map(|p| format!(
                    "{} on {}",
                    p.name,
                    p.attached_to.as_deref().unwrap_or("nothing")
                ))
                .collect::<Vec<_>>()
                .join(", "),
            output.expires_at.as_deref().unwrap_or("")
        ),
    );
    Ok(output)
}

fn ttl(config: &crate::config::DeployConfig, asked: Option<u64>) -> Result<Duration, EbpfError> {
    let max = config.max_ttl.0;
    match asked {
        None => Ok(config.default_ttl.0.min(max)),
        Some(0) => Err(invalid("`ttl_seconds` must be at least 1")),
        Some(s) if Duration::from_secs(s) > max => Err(invalid(format!(
            "`ttl_seconds` is at most {} (tools.deploy.max_ttl)",
            max.as_secs()
        ))),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

fn check_limits(
    core: &Core,
    owner: &str,
    programs: usize,
    maps: usize,
    memory: u64,
) -> Result<(), EbpfError> {
    let config = core.config();
    let r = &config.resources;
    let per = &r.per_owner;
    let mb = |b: u64| b.div_ceil(1024 * 1024);
    for (scope, used, (max_p, max_m, max_mb), keys) in [
        (
            "on this server",
            core.deployments.usage(None),
            (r.max_programs, r.max_maps, r.max_memory_mb),
            "resources.max_programs, max_maps, max_memory_mb",
        ),
        (
            "for this client",
            core.deployments.usage(Some(owner)),
            (per.max_programs, per.max_maps, per.max_memory_mb),
            "resources.per_owner",
        ),
    ] {
        let over = if used.programs + programs > max_p as usize {
            Some(format!(
                "{} programs deployed {scope} + {programs} > {max_p}",
                used.programs
            ))
        } else if used.maps + maps > max_m as usize {
            Some(format!(
                "{} maps deployed {scope} + {maps} > {max_m}",
                used.maps
            ))
        } else if mb(used.memory + memory) > u64::from(max_mb) {
            Some(format!(
                "{} MiB of maps deployed {scope} + {} MiB > {max_mb} MiB",
                mb(used.memory),
                mb(memory)
            ))
        } else {
            None
        };
        if let Some(why) = over {
            return Err(EbpfError::resource(
                "RESOURCE_LIMIT",
                format!(
                    "deploying this would exceed a limit ({why}; {keys}); undeploy something first"
                ),
            )
            .with_context("programs_in_use", used.programs)
            .with_context("maps_in_use", used.maps)
            .with_context("memory_in_use", used.memory));
        }
    }
    Ok(())
}

/// Loads (and unless verify_only attaches) the selected programs. Returns the object and
/// the result to report; everything is released if anything fails.
fn load(
    inspection: &Inspection,
    selected: &[&validate::ProgramFacts],
    targets: &[(String, Target)],
    pin_dir: &Path,
    pinning: bool,
    verify_only: bool,
) -> Result<(Ebpf, DeployOutput), EbpfError> {
    let mut ebpf = btf::load_deploy_object(&inspection.normalized, pin_dir).map_err(|e| {
        EbpfError::kernel(
            "LOAD_FAILED",
            format!("creating the object's maps failed: {e}"),
        )
    })?;
    let mut out = DeployOutput {
        verdict: if verify_only { "accepted" } else { "deployed" }.into(),
        deployment_id: None,
        programs: Vec::new(),
        maps: Vec::new(),
        expires_at: None,
        object_sha256: String::new(),
        object_bytes: 0,
        verifier_log: None,
        hint: None,
    };
    for (facts, (_, target)) in selected.iter().zip(targets) {
        let program = ebpf.program_mut(&facts.name).ok_or_else(|| {
            EbpfError::internal(format!("program `{}` vanished after loading", facts.name))
        })?;
        if let Err(err) = load_program(program, &facts.kind, &facts.section) {
            let (message, log) = program_error(&facts.name, &err);
            if verify_only && log.is_some() {
                out.verdict = "rejected".into();
                out.verifier_log = log;
                out.hint = Some(format!("{message}; the log's last lines say why"));
                out.programs.push(describe(facts, None, None));
                continue;
            }
            let mut e = EbpfError::kernel(
                if log.is_some() {
                    "VERIFIER_REJECTED"
                } else {
                    "LOAD_FAILED"
                },
                format!("{message}; deploy with `verify_only: true` to see the whole verdict"),
            )
            .with_context("program", &facts.name);
            if let Some(log) = log {
                e = e.with_context("verifier_log", log);
            }
            return Err(e);
        }
        let info = program.info().ok();
        if !verify_only {
            attach_program(program, target)
                .and_then(|()| crate::fault::hit("deploy.after_attach"))
                .map_err(|why| {
                    EbpfError::kernel(
                        "ATTACH_FAILED",
                        format!(
                            "attaching `{}` to {} failed: {why}",
                            facts.name,
                            target.point()
                        ),
                    )
                    .with_context("program", &facts.name)
                })?;
        }
        let record = info.and_then(|i| inventory::read_program(i.id()).ok().map(|(p, _)| p));
        let attached = (!verify_only).then(|| target.point());
        out.programs.push(describe(facts, record, attached));
    }
    for m in &inspection.maps {
        let kernel = ebpf.map(&m.name).and_then(map_record);
        let pinned_at = if pinning {
            let path = pin_dir.join(&m.name);
            if let Some(map) = ebpf.map(&m.name)
                && !path.exists()
            {
                map.pin(&path).map_err(|e| {
                    EbpfError::kernel(
                        "PIN_FAILED",
                        format!("pinning map `{}` at {}: {e}", m.name, path.display()),
                    )
                })?;
            }
            Some(path.display().to_string())
        } else {
            None
        };
        out.maps.push(DeployedMap {
            name: m.name.clone(),
            id: kernel.as_ref().map(|r| r.id),
            map_type: m.map_type.clone(),
            max_entries: m.max_entries,
            bytes: kernel.as_ref().map_or(m.bytes, |r| r.memlock.max(1)),
            pinned_at,
        });
    }
    Ok((ebpf, out))
}

fn map_record(map: &aya::maps::Map) -> Option<inventory::MapRecord> {
    use aya::maps::Map;
    let data = match map {
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

fn describe(
    facts: &validate::ProgramFacts,
    record: Option<inventory::Program>,
    attached_to: Option<String>,
) -> DeployedProgram {
    DeployedProgram {
        name: facts.name.clone(),
        kind: facts.kind.clone(),
        section: facts.section.clone(),
        id: record.as_ref().map(|r| r.id),
        tag: record.as_ref().map(|r| r.tag.clone()),
        attached_to,
        instructions: facts.instructions,
        verified_insns: record.as_ref().map(|r| r.verified_insns),
        helpers: facts.helpers.clone(),
        detached: None,
    }
}

// ---------------------------------------------------------------- undeploy

/// Arguments of `undeploy`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UndeployParams {
    /// From deploy or list_deployments.
    pub deployment_id: String,
}

/// Result of `undeploy`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UndeployOutput {
    pub deployment_id: String,
    /// Programs detached and unloaded.
    pub programs: Vec<String>,
    /// Maps freed (and unpinned).
    pub maps: Vec<String>,
    /// How long it was deployed.
    pub age_seconds: u64,
}

pub fn undeploy_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "undeploy",
            title: "Unload a deployment",
            description: "Detach and unload every program of a deployment, free its maps and \
                remove its pins, now rather than at its expiry.",
            tier: Tier::Deploy,
            hints: Hints {
                read_only: false,
                destructive: true,
                idempotent: false,
            },
            list_field: None,
        },
        undeploy,
    )
}

fn undeploy(
    core: &Core,
    p: UndeployParams,
    ctx: &CallContext,
) -> Result<UndeployOutput, EbpfError> {
    core.deployments.purge();
    let found = core
        .deployments
        .lock()
        .get(&p.deployment_id)
        .filter(|d| d.owner == ctx.owner)
        .cloned();
    let Some(d) = found else {
        return Err(deployment_not_found(&p.deployment_id));
    };
    let released = core.tracker.release(d.tracked.load(Ordering::Relaxed));
    let result = match released {
        Some(r) => r,
        None => d.release(),
    };
    core.deployments.lock().remove(&d.id);
    result.map_err(|e| EbpfError::kernel("RELEASE_FAILED", e))?;
    Ok(UndeployOutput {
        deployment_id: d.id.clone(),
        programs: d.output.programs.iter().map(|p| p.name.clone()).collect(),
        maps: d.output.maps.iter().map(|m| m.name.clone()).collect(),
        age_seconds: d.created_at.elapsed().map_or(0, |a| a.as_secs()),
    })
}

fn deployment_not_found(id: &str) -> EbpfError {
    EbpfError::validation(
        "DEPLOYMENT_NOT_FOUND",
        format!(
            "no deployment `{id}` of this client (it may have expired, been undeployed, or been released for using more CPU than resources.max_cpu_time_ms); list_deployments shows yours"
        ),
    )
    .with_context("deployment_id", id)
}

// ---------------------------------------------------------------- list_deployments

/// Arguments of `list_deployments`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Everyone's deployments, not only this client's.
    #[serde(default)]
    pub all: bool,
    /// Only this deployment (an error when it is not there: expired, undeployed, or another
    /// client's without `all`).
    pub deployment_id: Option<String>,
}

/// One deployment.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeploymentRow {
    pub deployment_id: String,
    pub owner: String,
    pub created_at: String,
    pub age_seconds: u64,
    pub expires_at: String,
    pub expires_in_seconds: u64,
    pub programs: Vec<DeployedProgram>,
    pub maps: Vec<DeployedMap>,
    /// Memory of its maps, in bytes.
    pub memory_bytes: u64,
    /// What its programs cost in CPU, measured every second while resources.max_cpu_time_ms
    /// is on (absent before the first measurement).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<DeploymentCpu>,
}

/// CPU use of a deployment's programs, from the kernel's BPF run-time statistics.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeploymentCpu {
    /// CPU milliseconds per second over the last measured second (all CPUs together;
    /// 1000 is one CPU's worth). Over resources.max_cpu_time_ms, the deployment is released.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms_per_s: Option<f64>,
    /// The limit in effect.
    pub max_ms_per_s: u32,
    /// Runs of its programs counted so far.
    pub runs: u64,
    /// Their run time so far, in milliseconds.
    pub run_time_ms: f64,
}

/// Result of `list_deployments`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    pub deployments: Vec<DeploymentRow>,
}

pub fn list_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "list_deployments",
            title: "List deployments",
            description: "Deployments of this client (`all: true`: everyone's; \
                `deployment_id`: just that one): owner, age, expiry, programs with ids and attach \
                points, maps with ids, memory, and the CPU its programs use.",
            tier: Tier::Deploy,
            hints: Hints::READ_ONLY,
            list_field: Some("deployments"),
        },
        list,
    )
}

/// Programs whose links no longer act, by program id, with why (read from the kernel's
/// links: a deleted interface leaves its XDP or TC link detached).
fn detached_programs() -> HashMap<u32, String> {
    let Ok(ids) = inventory::ids(crate::ebpf::bpf::Object::Link) else {
        return HashMap::new();
    };
    ids.into_iter()
        .filter_map(|id| inventory::read_link(id).ok())
        .filter_map(|l| l.detached.map(|why| (l.prog_id, why)))
        .collect()
}

fn list(core: &Core, p: ListParams, ctx: &CallContext) -> Result<ListOutput, EbpfError> {
    core.deployments.purge();
    let limit = core.config().resources.max_cpu_time_ms;
    let detached = detached_programs();
    let mut rows: Vec<DeploymentRow> = core
        .deployments
        .lock()
        .values()
        .filter(|d| p.all || d.owner == ctx.owner)
        .filter(|d| p.deployment_id.as_ref().is_none_or(|id| *id == d.id))
        .map(|d| DeploymentRow {
            deployment_id: d.id.clone(),
            owner: d.owner.clone(),
            created_at: crate::time::rfc3339_seconds(d.created_at),
            age_seconds: d.created_at.elapsed().map_or(0, |a| a.as_secs()),
            expires_at: crate::time::rfc3339_seconds(d.expires_at),
            expires_in_seconds: d
                .expires_at
                .duration_since(SystemTime::now())
                .map_or(0, |r| r.as_secs()),
            programs: d
                .output
                .programs
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    p.detached = p.id.and_then(|id| detached.get(&id).cloned());
                    p
                })
                .collect(),
            maps: d.output.maps.clone(),
            memory_bytes: d.memory,
            cpu: {
                let cpu = *d.cpu();
                cpu.last.map(|_| DeploymentCpu {
                    ms_per_s: cpu.ms_per_s.map(|r| (r * 100.0).round() / 100.0),
                    max_ms_per_s: limit,
                    runs: cpu.runs,
                    run_time_ms: (cpu.run_time_ns as f64 / 1e4).round() / 100.0,
                })
            },
        })
        .collect();
    rows.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then(a.deployment_id.cmp(&b.deployment_id))
    });
    if let (Some(id), true) = (&p.deployment_id, rows.is_empty()) {
        return Err(deployment_not_found(id));
    }
    Ok(ListOutput { deployments: rows })
}

/// Measures the CPU each deployment's programs used since the last call and releases those
/// over resources.max_cpu_time_ms per second; returns how many it released. The server calls
/// it every second. It keeps the kernel's run-time statistics on (host-wide) while there are
/// deployments to watch, and off otherwise.
pub fn enforce_cpu(core: &Core) -> usize {
    let limit = core.config().resources.max_cpu_time_ms;
    core.deployments.purge();
    let all: Vec<Arc<Deployment>> = core.deployments.lock().values().cloned().collect();
    if limit == 0 || all.is_empty() {
        core.deployments.stats_off();
        return 0;
    }
    if !core.deployments.stats_on() {
        return 0;
    }
    let mut released = 0;
    for d in all {
        let Some((runs, ns)) = d.run_totals() else {
            continue;
        };
        let now = Instant::now();
        let over = {
            let mut cpu = d.cpu();
            cpu.runs = runs;
            cpu.run_time_ns = ns;
            match cpu.last {
                // Too short an interval says little; measure over the next one.
                Some((_, at)) if now.duration_since(at) < Duration::from_millis(500) => None,
                last => {
                    let rate = last.map(|(before, at)| {
                        ns.saturating_sub(before) as f64
                            / 1e6
                            / now.duration_since(at).as_secs_f64()
                    });
                    cpu.last = Some((ns, now));
                    cpu.ms_per_s = rate;
                    rate.filter(|r| *r > f64::from(limit))
                }
            }
        };
        let Some(rate) = over else { continue };
        let outcome = core
            .tracker
            .release(d.tracked.load(Ordering::Relaxed))
            .unwrap_or_else(|| d.release());
        tracing::warn!(
            deployment = d.id,
            owner = d.owner,
            cpu_ms_per_s = rate,
            limit,
            "deployment released: its programs used more CPU than resources.max_cpu_time_ms"
        );
        if outcome.is_ok() {
            released += 1;
            core.metrics.deployment_released("cpu_limit");
        }
        let mut record = release_record(&d, "deployment_cpu_exceeded", &outcome);
        record["cpu_ms_per_s"] = json!((rate * 10.0).round() / 10.0);
        record["max_cpu_time_ms"] = json!(limit);
        if let Err(why) = core.audit.record_or_retry(&record) {
            tracing::warn!(error = %why, deployment = d.id, "audit record of a CPU release not written");
        }
    }
    core.deployments.purge();
    released
}

/// The audit record of a deployment the server itself released.
fn release_record(d: &Deployment, event: &str, outcome: &Result<(), String>) -> serde_json::Value {
    let mut record = json!({
        "timestamp": crate::time::rfc3339_millis(SystemTime::now()),
        "identity": "server",
        "event": event,
        "deployment_id": d.id,
        "owner": d.owner,
        "expires_at": d.output.expires_at,
        "program_tags": d.output.programs.iter().filter_map(|p| p.tag.clone()).collect::<Vec<_>>(),
        "outcome": if outcome.is_ok() { "ok" } else { "error" },
    });
    if let Err(e) = outcome {
        record["error"] = e.clone().into();
    }
    record
}

/// Releases expired deployments (and everything else the tracker holds that expired).
/// Run by the cleanup task every resources.cleanup_interval.
pub fn release_expired(core: &Core) -> usize {
    let expired = core.tracker.expired(SystemTime::now());
    let mut n = 0;
    for id in expired {
        let deployment = core
            .deployments
            .lock()
            .values()
            .find(|d| d.tracked.load(Ordering::Relaxed) == id)
            .cloned();
        let outcome = core.tracker.release(id);
        match &outcome {
            Some(Ok(())) if deployment.is_some() => {
                n += 1;
                core.metrics.deployment_released("expired");
            }
            Some(Ok(())) => n += 1,
            Some(Err(e)) => tracing::warn!(error = %e, "releasing an expired object failed"),
            None => {}
        }
        // The server's own act goes on the record too: who deployed what, and when it went.
        if let (Some(d), Some(outcome)) = (deployment, outcome) {
            let record = release_record(&d, "deployment_expired", &outcome);
            if let Err(why) = core.audit.record_or_retry(&record) {
                tracing::warn!(error = %why, deployment = d.id, "audit record of an expiry not written");
            }
        }
    }
    core.deployments.purge();
    n
}

/// Undoes a deployment whose audit record could not be written: nothing runs unrecorded.
pub fn rollback(core: &Core, deployment_id: &str) {
    let found = core.deployments.lock().remove(deployment_id);
    if let Some(d) = found {
        let released = core.tracker.release(d.tracked.load(Ordering::Relaxed));
        if let Err(e) = released.unwrap_or_else(|| d.release()) {
            tracing::error!(deployment = deployment_id, error = %e, "rolling back a deployment failed");
        }
        tracing::warn!(
            deployment = deployment_id,
            "deployment undone: its audit record could not be written"
        );
    }
}
