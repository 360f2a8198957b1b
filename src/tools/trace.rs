//! `trace`: run a built-in gadget for a bounded time and return its events, or counts of
//! them grouped by fields. Filters are applied in the kernel; every event the kernel
//! delivers is consumed, so totals are exact and drops (a full ring buffer) are counted.
//! Everything the gadget attached is released when the call ends, however it ends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::config::LogLevel;
use crate::core::Core;
use crate::ebpf::caps::{CapSet, Needed};
use crate::ebpf::gadget::{self as runner, GadgetCfg, GadgetError, Hook};
use crate::ebpf::tracefs;
use crate::error::{EbpfError, codes};
use crate::gadgets::hist::{self, Hist, HistRow};
use crate::gadgets::profile::{self, FunctionRow, Sample, StackRow};
use crate::gadgets::{self, Clock, Output};
use crate::security::Tier;

const DEFAULT_DURATION_MS: u64 = 5000;
const DEFAULT_MAX_EVENTS: u32 = 1000;
const DEFAULT_TOP: u32 = 20;
/// Ring buffer per trace: room for bursts of several thousand events between reads.
const RING_BYTES: u32 = 4 * 1024 * 1024;
/// Ring buffer per background session: several run at once for minutes, so each gets a
/// quarter of a trace's (its memory is the kernel's, charged to the server's cgroup).
const SESSION_RING_BYTES: u32 = 1024 * 1024;
/// Longest wait for events before reading the ring buffer again. Gadgets do not wake the
/// reader for every event (that would cost the traced task more than the event): they wake
/// it when 128 KiB are pending, and otherwise the reader looks every POLL. So an event
/// reaches the server at most POLL after it happened, at ~100 idle wakeups a second.
const POLL: Duration = Duration::from_millis(10);
/// How often a `pid`-scoped trace looks whether its process still runs.
const PROCESS_LOOK: Duration = Duration::from_millis(250);
/// Distinct groups a count keeps; events of further groups are counted in `other`.
pub const MAX_GROUPS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decoded events, oldest first.
    #[default]
    Events,
    /// Counts grouped by `group_by`, largest first.
    Count,
    /// Latency histograms (log2 µs) grouped by `group_by`.
    Histogram,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoppedBy {
    /// Its `duration_ms` passed.
    Duration,
    /// `max_events` events were seen.
    MaxEvents,
    /// The client cancelled it (or went away), or `trace_stop` stopped it.
    Cancelled,
    /// The process the trace was scoped to (`pid`) exited.
    ProcessExited,
}

/// Arguments of `trace`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceParams {
    /// Which gadget (listed in the description).
    pub gadget: String,
    /// How long to trace (default 5000; at most tools.trace.max_duration).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// events mode: stop after this many events (default 1000; at most
    /// tools.trace.max_events).
    #[serde(default)]
    pub max_events: Option<u32>,
    /// Only this process (thread group id).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Only processes with this name (15 characters at most, exact).
    #[serde(default)]
    pub comm: Option<String>,
    /// Only this user id.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Only processes in this cgroup v2 directory (a path under the cgroup2 mount).
    #[serde(default)]
    pub cgroup: Option<String>,
    /// events, count or histogram (default: the gadget's).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// count/histogram mode: fields to group by (default: the gadget's).
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// count/histogram mode: groups to return, largest first (default 20).
    #[serde(default)]
    pub top: Option<u32>,
    /// gadget tracepoint: `category:name` (list_tracepoints finds them).
    #[serde(default)]
    pub tracepoint: Option<String>,
    /// gadget uprobe: `binary:symbol`, e.g. `libc.so.6:malloc`.
    #[serde(default)]
    pub target: Option<String>,
    /// gadget profile: samples per second per CPU (default 49, at most 1000).
    #[serde(default)]
    pub frequency_hz: Option<u32>,
}

/// One group of a count.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CountRow {
    /// The group's field values.
    pub key: Map<String, Value>,
    pub count: u64,
}

/// Result of `trace`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TraceOutput {
    pub gadget: String,
    /// Where it attached (`category:name`).
    pub hooks: Vec<String>,
    pub mode: Mode,
    /// events mode: decoded events, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Map<String, Value>>>,
    #[serde(flatten)]
    pub aggregates: Aggregates,
    /// Events that passed the filters and reached the server (for kernel-counted gadgets:
    /// the sum of the counts).
    pub events_total: u64,
    /// Events the kernel could not deliver: its ring buffer (or count table) was full.
    pub events_dropped: u64,
    /// Events counted but not decoded: over resources.max_events_per_second.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub events_shed: u64,
    pub events_returned: usize,
    /// More events or groups exist than are returned.
    pub truncated: bool,
    pub stopped_by: StoppedBy,
    /// How long the gadget was attached.
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

pub fn spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "trace",
            title: "Trace with a built-in gadget",
            description: "Watch the host for a bounded time with a built-in gadget: exec, \
                exit, open, tcp_connect, tcp_accept, tcp_state, tcp_retransmit, signal, \
                oom_kill, syscalls, biolatency, runqlat, profile, uprobe, tracepoint (info \
                lists each with its fields and modes). Filters run in the kernel; totals are \
                exact, drops counted; progress every second; cancel returns what was seen.",
            tier: Tier::Trace,
            hints: Hints::READ_ONLY,
            list_field: Some("events"),
        },
        run,
    )
    .with_timeout(|c| {
        c.tools
            .trace
            .max_duration
            .0
            .saturating_add(Duration::from_secs(30))
    })
}

fn invalid(message: impl Into<String>) -> EbpfError {
    EbpfError::validation(codes::INVALID_ARGUMENTS, message)
}

/// The kernel-side filter configuration for these arguments.
fn filters(p: &TraceParams) -> Result<GadgetCfg, EbpfError> {
    let mut cfg = GadgetCfg {
        self_tgid: std::process::id(),
        ..GadgetCfg::default()
    };
    if let Some(pid) = p.pid {
        cfg.tgid = pid;
    }
    if let Some(uid) = p.uid {
        cfg.uid_set = 1;
        cfg.uid = uid;
    }
    if let Some(comm) = &p.comm {
        if comm.is_empty() || comm.len() > 15 {
            return Err(invalid(format!(
                "`comm` must be 1 to 15 bytes (the kernel keeps 15 of a process name); `{comm}` is {}",
                comm.len()
            )));
        }
        cfg.comm_set = 1;
        cfg.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    }
    if let Some(path) = &p.cgroup {
        cfg.cgroup_id = cgroup_id(path)?;
    }
    Ok(cfg)
}

/// The cgroup v2 id of a directory: its inode number. Any failure reads the same, so the
/// argument cannot be used to learn what exists elsewhere on the host.
fn cgroup_id(path: &str) -> Result<u64, EbpfError> {
    let root = crate::ebpf::host::cgroup2_root()
        .ok_or_else(|| invalid("`cgroup` needs a cgroup v2 hierarchy, and none is mounted"))?;
    let given = std::path::Path::new(path);
    let full = if given.is_absolute() {
        given.to_path_buf()
    } else {
        root.join(given)
    };
    let not_one = || {
        invalid(format!(
            "`cgroup` names no directory of the cgroup v2 hierarchy at {}; give a path under \
             it (absolute, or relative to it)",
            root.display()
        ))
    };
    let dir = crate::ebpf::sys::PinnedFile::open(&full).map_err(|_| not_one())?;
    if !dir.is_cgroup2_dir() {
        return Err(not_one());
    }
    dir.inode().map_err(|_| not_one())
}

/// Turns one record from the kernel into an event (or one key of a kernel table into the
/// fields it stands for).
type Decoder = Box<dyn Fn(&[u8], &Clock) -> Option<Map<String, Value>> + Send + Sync>;

/// What to load and how to read it: a built-in gadget, or one fitted to the call (a
/// tracepoint's format, a uprobe's target, a profile's frequency).
struct Plan {
    name: &'static str,
    object: &'static [u8],
    programs: Vec<(&'static str, Hook)>,
    output: Output,
    fields: Vec<String>,
    default_group_by: Vec<String>,
    /// Fields the kernel keys by only when grouped by (sets arg0).
    detail_fields: &'static [&'static str],
    /// Gadget-specific settings for the kernel side (arg0..arg2 of gadget_cfg).
    args: (u32, u32, u32),
    decode: Decoder,
}

impl Plan {
    fn hooks(&self) -> Vec<String> {
        self.programs.iter().map(|(_, h)| h.to_string()).collect()
    }

    fn of(gadget: &'static gadgets::Gadget) -> Self {
        Plan {
            name: gadget.name,
            object: gadget.object,
            programs: gadget.programs.to_vec(),
            output: gadget.output,
            fields: gadget.all_fields().map(|f| f.name.to_owned()).collect(),
            default_group_by: gadget
                .default_group_by
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
            detail_fields: gadget.detail_fields,
            args: (0, 0, 0),
            decode: Box::new(move |bytes, clock| gadget.record(bytes, clock)),
        }
    }
}

/// Says which option belongs to which gadget when one is given to another.
fn check_options(p: &TraceParams) -> Result<(), EbpfError> {
    for (given, option, owner) in [
        (p.tracepoint.is_some(), "tracepoint", "tracepoint"),
        (p.target.is_some(), "target", "uprobe"),
        (p.frequency_hz.is_some(), "frequency_hz", "profile"),
    ] {
        if given && p.gadget != owner {
            return Err(invalid(format!(
                "`{option}` applies to the {owner} gadget only"
            )));
        }
    }
    Ok(())
}

fn plan(p: &TraceParams) -> Result<Plan, EbpfError> {
    check_options(p)?;
    match p.gadget.as_str() {
        "tracepoint" => tracepoint_plan(p),
        "uprobe" => uprobe_plan(p),
        "profile" => {
            let hz = p.frequency_hz.unwrap_or(profile::DEFAULT_HZ);
            if hz == 0 || hz > profile::MAX_HZ {
                return Err(invalid(format!(
                    "`frequency_hz` must be between 1 and {}",
                    profile::MAX_HZ
                )));
            }
            let mut plan = Plan::of(&profile::GADGET);
            plan.programs = vec![(
                profile::PROGRAM,
                Hook::CpuClock {
                    frequency_hz: u64::from(hz),
                },
            )];
            Ok(plan)
        }
        name => {
            let gadget = gadgets::find(name).ok_or_else(|| {
                let known: Vec<&str> = gadgets::catalogue().iter().map(|g| g.name).collect();
                invalid(format!(
                    "unknown gadget `{name}`; one of: {}",
                    known.join(", ")
                ))
                .with_context("gadget", name)
            })?;
            Ok(Plan::of(gadget))
        }
    }
}

fn tracepoint_plan(p: &TraceParams) -> Result<Plan, EbpfError> {
    let spec = p.tracepoint.as_deref().ok_or_else(|| {
        invalid("the tracepoint gadget needs `tracepoint`: \"category:name\" (list_tracepoints finds them)")
    })?;
    let (category, name) = spec.split_once(':').ok_or_else(|| {
        invalid(format!(
            "`tracepoint` is `category:name`, e.g. \"sched:sched_switch\"; got `{spec}`"
        ))
    })?;
    let format = tracefs::format(category, name).map_err(|e| match e {
        tracefs::TracefsError::NoSuchTracepoint(_) => invalid(format!(
            "no tracepoint `{spec}` on this kernel; list_tracepoints with a pattern finds the right name"
        ))
        .with_context("tracepoint", spec),
        other => EbpfError::resource(codes::FILESYSTEM_NOT_MOUNTED, other.to_string()),
    })?;
    let (args, strings) = gadgets::tracepoint::config(&format);
    let fields: Vec<String> = gadgets::COMMON_FIELDS
        .iter()
        .map(|f| f.name.to_owned())
        .chain(
            format
                .fields
                .iter()
                .map(|f| gadgets::tracepoint::field_name(&f.name)),
        )
        .collect();
    let hook = Hook::Tracepoint(category.to_owned().into(), name.to_owned().into());
    let mut plan = Plan::of(&gadgets::tracepoint::GADGET);
    plan.programs = vec![(gadgets::tracepoint::PROGRAM, hook)];
    plan.fields = fields;
    plan.args = args;
    plan.decode = Box::new(move |bytes, clock| {
        if bytes.len() < gadgets::tracepoint::EVENT_SIZE {
            return None;
        }
        let mut out = Map::new();
        let rest = gadgets::header(bytes, clock, &mut out)?;
        gadgets::tracepoint::decode(&format, &strings, rest, &mut out);
        Some(out)
    });
    Ok(plan)
}

fn uprobe_plan(p: &TraceParams) -> Result<Plan, EbpfError> {
    use gadgets::uprobe;
    let target = p.target.as_deref().ok_or_else(|| {
        invalid(
            "the uprobe gadget needs `target`: \"binary:symbol\", e.g. \"/usr/bin/bash:readline\"",
        )
    })?;
    let (binary, symbol) = uprobe::parse_target(target).map_err(invalid)?;
    // Pinned before anything reads it: a FIFO cannot block the call, a device cannot act,
    // and the file attached is the file checked. Not a regular file: the same answer as a
    // missing symbol.
    let file = crate::ebpf::sys::PinnedFile::open(&binary)
        .ok()
        .filter(crate::ebpf::sys::PinnedFile::is_regular)
        .ok_or_else(target_not_found)?;
    let mut plan = Plan::of(&uprobe::GADGET);
    let hook = |ret| Hook::Uprobe {
        binary: file.real.clone(),
        file: Some(file.clone()),
        symbol: symbol.clone(),
        ret,
        pid: p.pid,
    };
    plan.programs = vec![(uprobe::ENTRY, hook(false))];
    if p.mode == Some(Mode::Histogram) {
        // Latency: entry stamps the time, return adds it to a histogram (arg1).
        plan.programs.push((uprobe::RETURN, hook(true)));
        plan.output = Output::KernelHistograms;
        plan.default_group_by = Vec::new();
        plan.args.1 = 1;
    }
    Ok(plan)
}

/// The mode a gadget produces when the call names none, and the modes it allows.
fn modes(output: Output) -> (Mode, &'static [Mode]) {
    match output {
        Output::Events => (Mode::Events, &[Mode::Events, Mode::Count]),
        Output::KernelCounts(_) => (Mode::Count, &[Mode::Count]),
        Output::KernelHistograms => (Mode::Histogram, &[Mode::Histogram]),
        Output::Stacks => (Mode::Count, &[Mode::Count]),
    }
}

/// The modes a gadget offers, its default first.
pub fn gadget_modes(gadget: &gadgets::Gadget) -> Vec<Mode> {
    if gadget.name == "uprobe" {
        return vec![Mode::Count, Mode::Histogram];
    }
    modes(gadget.output).1.to_vec()
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Events => "events",
        Mode::Count => "count",
        Mode::Histogram => "histogram",
    }
}

/// Lines of a verifier log an error keeps: the end, where the reason is.
const VERIFIER_TAIL: usize = 8;

/// `text` with a verifier log cut to its last lines.
fn shorten_verifier_log(text: &str) -> String {
    match text.split_once("Verifier output:") {
        Some((head, log)) => {
            let lines: Vec<&str> = log.trim().lines().collect();
            let tail = &lines[lines.len().saturating_sub(VERIFIER_TAIL)..];
            format!("{head}verifier log (last lines): {}", tail.join(" | "))
        }
        None => text.to_owned(),
    }
}

/// One answer for a uprobe target that is missing, not a regular file, not ELF, or lacks
/// the symbol: the trace tier must not learn which paths exist on the host.
fn target_not_found() -> EbpfError {
    EbpfError::validation(
        "TARGET_NOT_FOUND",
        "cannot place the uprobe: no such function in an ELF file at that path (the file does \
         not exist, is not a regular ELF binary or library, or has no such symbol); give an \
         existing binary and a symbol in its symbol table (`nm -D BINARY` or `nm BINARY` \
         lists them)",
    )
    .with_context("gadget", "uprobe")
}

fn load_error(gadget: &str, e: &GadgetError) -> EbpfError {
    let text = shorten_verifier_log(&e.to_string());
    let verifier = text.contains("verifier log");
    match (e, e.errno()) {
        // One answer for a missing file, a file that is not ELF and a missing symbol: the
        // trace tier must not learn which paths exist on the host.
        (GadgetError::Attach { .. }, errno)
            if gadget == "uprobe" && !matches!(errno, Some(libc::EPERM)) =>
        {
            target_not_found()
        }
        (_, Some(libc::EPERM) | Some(libc::EACCES)) if !verifier => EbpfError::permission(
            codes::MISSING_CAPABILITY,
            format!(
                "the kernel refused to run the `{gadget}` gadget ({text}); the server needs CAP_BPF \
                 and CAP_PERFMON, and `info` shows what this kernel allows"
            ),
        ),
        (_, Some(libc::ENOENT)) => EbpfError::kernel(
            "HOOK_NOT_FOUND",
            format!(
                "this kernel lacks a hook the `{gadget}` gadget needs ({text}); list_tracepoints \
                 shows the tracepoints it has, info which gadgets this kernel supports"
            ),
        ),
        _ if verifier => EbpfError::kernel(
            "VERIFIER_REJECTED",
            format!(
                "this kernel's verifier rejected the `{gadget}` gadget ({text}); info shows which \
                 gadgets this kernel supports"
            ),
        ),
        _ => EbpfError::kernel(
            "GADGET_FAILED",
            format!("the `{gadget}` gadget could not start: {text}"),
        ),
    }
    .with_context("gadget", gadget)
}

/// A validated request, ready to run (by `trace`, or in the background by `trace_start`).
pub struct Prepared {
    plan: Plan,
    cfg: GadgetCfg,
    pub mode: Mode,
    pub group_by: Vec<String>,
    pub duration: Duration,
    /// events mode: stop after this many (`trace`); sessions keep the newest instead.
    pub max_events: usize,
    pub top: usize,
    /// Events decoded per second at most (0: no limit).
    pub max_rate: u64,
    /// The process a `pid`-scoped trace follows: the trace ends when it exits.
    pub process: Option<crate::ebpf::host::ProcessId>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("gadget", &self.plan.name)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    pub fn gadget(&self) -> &'static str {
        self.plan.name
    }

    pub fn hooks(&self) -> Vec<String> {
        self.plan.hooks()
    }

    /// Whether results come from tables the kernel keeps rather than from events.
    pub fn kernel_aggregated(&self) -> bool {
        self.plan.output != Output::Events
    }
}

/// The bounds a run must stay within, and the configuration keys that set them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_duration: Duration,
    pub duration_key: &'static str,
    pub max_events: u32,
    pub events_key: &'static str,
    /// Used when the call gives none (each capped by its maximum).
    pub default_duration: Duration,
    pub default_events: u32,
}

impl Limits {
    /// A `trace` call's: `tools.trace.max_duration` and `max_events`.
    pub fn of_trace(config: &crate::config::TraceConfig) -> Self {
        Self {
            max_duration: config.max_duration.0,
            duration_key: "tools.trace.max_duration",
            max_events: config.max_events.get(),
            events_key: "tools.trace.max_events",
            default_duration: Duration::from_millis(DEFAULT_DURATION_MS),
            default_events: DEFAULT_MAX_EVENTS,
        }
    }

    /// A background session's: it runs until stopped or `session_max_duration`, keeping
    /// the newest `session_buffer` events.
    pub fn of_session(config: &crate::config::TraceConfig) -> Self {
        Self {
            max_duration: config.session_max_duration.0,
            duration_key: "tools.trace.session_max_duration",
            max_events: config.session_buffer.get(),
            events_key: "tools.trace.session_buffer",
            default_duration: config.session_max_duration.0,
            default_events: config.session_buffer.get(),
        }
    }
}

/// Checks the arguments against the gadget and the limits.
pub fn prepare(p: &TraceParams, limits: &Limits, max_rate: u32) -> Result<Prepared, EbpfError> {
    let (max_duration, max_events_cap) = (limits.max_duration, limits.max_events);
    let mut plan = plan(p)?;
    let (default_mode, allowed) = modes(plan.output);
    let mode = p.mode.unwrap_or(default_mode);
    if !allowed.contains(&mode) {
        let names: Vec<String> = allowed
            .iter()
            .map(|m| format!("`{}`", mode_name(*m)))
            .collect();
        let extra = if plan.name == "uprobe" {
            " (or `histogram` for latency)"
        } else {
            ""
        };
        return Err(invalid(format!(
            "the `{}` gadget gives mode {}{extra}, not `{}`",
            plan.name,
            names.join(" or "),
            mode_name(mode)
        )));
    }
    let group_by: Vec<String> = match &p.group_by {
        Some(fields) => fields.clone(),
        None => plan.default_group_by.clone(),
    };
    if mode == Mode::Events {
        if p.group_by.is_some() || p.top.is_some() {
            return Err(invalid(
                "`group_by` and `top` apply to modes `count` and `histogram`",
            ));
        }
    } else if let Some(bad) = group_by.iter().find(|f| !plan.fields.contains(f)) {
        return Err(invalid(format!(
            "`{bad}` is not a field of `{}` results; fields: {}",
            plan.name,
            plan.fields.join(", ")
        )));
    }
    if group_by
        .iter()
        .any(|f| plan.detail_fields.contains(&f.as_str()))
    {
        plan.args.0 = 1;
    }
    let max_ms = u64::try_from(max_duration.as_millis()).unwrap_or(u64::MAX);
    let default_ms = u64::try_from(limits.default_duration.as_millis()).unwrap_or(u64::MAX);
    let duration_ms = p.duration_ms.unwrap_or(default_ms.min(max_ms));
    if duration_ms == 0 || duration_ms > max_ms {
        return Err(invalid(format!(
            "`duration_ms` must be between 1 and {max_ms} ({})",
            limits.duration_key
        )));
    }
    let max_events = p
        .max_events
        .unwrap_or(limits.default_events.min(max_events_cap));
    if max_events == 0 || max_events > max_events_cap {
        return Err(invalid(format!(
            "`max_events` must be between 1 and {max_events_cap} ({})",
            limits.events_key
        )));
    }
    let mut cfg = filters(p)?;
    (cfg.arg0, cfg.arg1, cfg.arg2) = plan.args;
    let process = match p.pid {
        Some(pid) => Some(crate::ebpf::host::ProcessId::alive(pid).ok_or_else(|| {
            EbpfError::validation(
                "PROCESS_NOT_FOUND",
                format!(
                    "no process {pid} is running; give the pid of a live process (thread group id)"
                ),
            )
            .with_context("pid", pid)
        })?),
        None => None,
    };
    CapSet::current()
        .map_err(|e| EbpfError::internal(format!("cannot read this process's capabilities: {e}")))?
        .require(&[Needed::Bpf, Needed::Perfmon])?;
    Ok(Prepared {
        plan,
        cfg,
        mode,
        group_by,
        duration: Duration::from_millis(duration_ms),
        max_events: max_events as usize,
        top: p.top.unwrap_or(DEFAULT_TOP).max(1) as usize,
        max_rate: u64::from(max_rate),
        process,
    })
}

/// A group of a count: its identity (the values as JSON text) and its field values.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub key: Map<String, Value>,
}

/// What the reader hands over: a decoded event (events mode), or the group an event falls
/// in (count mode, where repeated records are not decoded again).
#[derive(Debug)]
pub enum Delivery<'a> {
    Event(Map<String, Value>),
    Group(&'a Group),
}

/// Count mode remembers the group of this many distinct records (then starts afresh).
const MEMO_ENTRIES: usize = 16_384;

/// Counts of events grouped by fields.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    groups: HashMap<String, (Map<String, Value>, u64)>,
    /// Events of groups beyond [`MAX_GROUPS`]: counted, not kept apart.
    other: u64,
}

impl Tally {
    /// The group a record falls in: its identity and its field values.
    pub fn key_of(group_by: &[String], record: &Map<String, Value>) -> Group {
        let key: Map<String, Value> = group_by
            .iter()
            .map(|f| (f.clone(), record.get(f).cloned().unwrap_or(Value::Null)))
            .collect();
        let id = Value::Object(key.clone()).to_string();
        Group { id, key }
    }

    pub fn add(&mut self, group_by: &[String], record: &Map<String, Value>, n: u64) {
        self.add_group(&Self::key_of(group_by, record), n);
    }

    pub fn add_group(&mut self, group: &Group, n: u64) {
        let full = self.groups.len() >= MAX_GROUPS;
        match self.groups.get_mut(&group.id) {
            Some(entry) => entry.1 += n,
            None if full => self.other += n,
            None => {
                self.groups.insert(group.id.clone(), (group.key.clone(), n));
            }
        }
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Events counted in groups past [`MAX_GROUPS`].
    pub fn other(&self) -> u64 {
        self.other
    }

    /// Every event counted, in kept groups or not.
    pub fn total(&self) -> u64 {
        self.groups.values().map(|(_, n)| n).sum::<u64>() + self.other
    }

    /// The `n` largest groups, largest first (ties in key order).
    pub fn top(&self, n: usize) -> Vec<CountRow> {
        let mut rows: Vec<_> = self.groups.iter().collect();
        rows.sort_by(|a, b| b.1.1.cmp(&a.1.1).then_with(|| a.0.cmp(b.0)));
        rows.into_iter()
            .take(n)
            .map(|(_, (key, count))| CountRow {
                key: key.clone(),
                count: *count,
            })
            .collect()
    }
}

/// What the kernel has aggregated so far (its tables are cumulative: a later snapshot
/// replaces an earlier one).
#[derive(Debug, Clone)]
pub enum Snapshot {
    Counts(Vec<(Map<String, Value>, u64)>),
    Histograms(Vec<(Map<String, Value>, Hist)>),
    Stacks(Vec<Sample>),
}

impl Snapshot {
    /// Events it stands for: counts, observations or samples.
    pub fn total(&self) -> u64 {
        match self {
            Snapshot::Counts(rows) => rows.iter().map(|(_, n)| n).sum(),
            Snapshot::Histograms(rows) => rows.iter().map(|(_, h)| h.count).sum(),
            Snapshot::Stacks(samples) => samples.iter().map(|s| s.count).sum(),
        }
    }
}

fn read_error(e: impl std::fmt::Display) -> EbpfError {
    EbpfError::kernel("GADGET_FAILED", format!("reading the gadget's tables: {e}"))
}

/// Reads the kernel's tables of an aggregating gadget; `stacks: false` leaves a profile's
/// stacks unread (enough for progress).
fn snapshot(
    running: &runner::Running,
    plan: &Plan,
    clock: &Clock,
    stacks: bool,
) -> Result<Option<Snapshot>, EbpfError> {
    let decode = |key: &[u8]| (plan.decode)(key, clock);
    Ok(Some(match plan.output {
        Output::Events => return Ok(None),
        Output::KernelCounts(map) => Snapshot::Counts(
            running
                .map_entries(map)
                .map_err(read_error)?
                .into_iter()
                .filter_map(|(k, v)| Some((decode(&k)?, gadgets::decode_u64(&v))))
                .collect(),
        ),
        Output::KernelHistograms => Snapshot::Histograms(
            running
                .map_entries("hists")
                .map_err(read_error)?
                .into_iter()
                .filter_map(|(k, v)| Some((decode(&k)?, Hist::parse(&v)?)))
                .collect(),
        ),
        Output::Stacks => {
            let mut samples = Vec::new();
            for (k, v) in running.map_entries(profile::SAMPLES).map_err(read_error)? {
                let (pid, comm, user_id, kernel_id) = Sample::key(&k);
                let mut lost = false;
                let mut read = |id: i32| -> Vec<u64> {
                    if !stacks || id < 0 {
                        // -EFAULT: no user stack (a kernel thread); others: table full.
                        lost |= stacks && id != -libc::EFAULT;
                        return Vec::new();
                    }
                    running
                        .stack(profile::STACKS, id as u32)
                        .unwrap_or_else(|_| {
                            lost = true;
                            Vec::new()
                        })
                };
                let user = read(user_id);
                let kernel = read(kernel_id);
                samples.push(Sample {
                    pid,
                    comm,
                    user_id,
                    user,
                    user_names: None,
                    kernel,
                    lost,
                    count: gadgets::decode_u64(&v),
                });
            }
            Snapshot::Stacks(samples)
        }
    }))
}

/// How a run ended.
#[derive(Debug)]
pub struct RunEnd {
    pub stopped_by: StoppedBy,
    pub elapsed: Duration,
    pub dropped: u64,
    pub malformed: u64,
    /// Events taken from the kernel but not decoded (over the rate limit).
    pub shed: u64,
    /// The kernel's tables at the end (aggregating gadgets).
    pub snapshot: Option<Snapshot>,
}

/// Attaches the gadget, hands every decoded event to `on_event` until the duration passes,
/// `cancel` fires or `on_event` returns false (then: max_events), calls `tick` about every
/// second with the time and events so far (and, when `live`, the kernel's tables), and
/// releases everything before returning.
pub fn execute(
    prepared: &Prepared,
    cancel: &tokio_util::sync::CancellationToken,
    live: bool,
    mut on_event: impl FnMut(Delivery<'_>) -> bool,
    mut tick: impl FnMut(Duration, u64, Option<Snapshot>),
    ready: impl FnOnce(),
) -> Result<RunEnd, EbpfError> {
    let plan = &prepared.plan;
    let ring = if live { SESSION_RING_BYTES } else { RING_BYTES };
    let mut running = runner::start(plan.object, ring, prepared.cfg, &plan.programs)
        .map_err(|e| load_error(plan.name, &e))?;
    crate::fault::hit(if live {
        "session.after_attach"
    } else {
        "trace.after_attach"
    })
    .map_err(EbpfError::internal)?;
    ready();
    let clock = Clock::now();
    let started = Instant::now();
    // A duration past what an Instant can hold is as good as forever.
    let deadline = started
        .checked_add(prepared.duration)
        .unwrap_or(started + Duration::from_secs(86_400 * 365));
    let mut total: u64 = 0;
    let mut malformed: u64 = 0;
    let mut shed: u64 = 0;
    let mut window = (Instant::now(), 0u64);
    let mut last_tick = Instant::now();
    let mut user_names = (plan.output == Output::Stacks).then(profile::UserNames::default);
    // Count mode: a record identical to an earlier one (all but its time stamp, the first 8
    // bytes) falls in the same group, so the group is looked up instead of decoding again.
    // Not when grouping by time, the one field those bytes hold.
    let memoize = prepared.mode == Mode::Count && !prepared.group_by.iter().any(|f| f == "time");
    let mut memo: HashMap<Box<[u8]>, Group> = HashMap::new();
    let mut last_look = Instant::now();
    // Set once the followed process is gone: one more read takes what it left in the ring.
    let mut exited = false;
    let stopped_by = loop {
        if cancel.is_cancelled() {
            break StoppedBy::Cancelled;
        }
        let now = Instant::now();
        if now >= deadline {
            break StoppedBy::Duration;
        }
        if exited {
            running
                .poll(Duration::ZERO, |bytes| {
                    total += 1;
                    match (plan.decode)(bytes, &clock) {
                        Some(record) => on_event(Delivery::Event(record)),
                        None => {
                            total -= 1;
                            malformed += 1;
                            true
                        }
                    }
                })
                .map_err(|e| EbpfError::kernel("GADGET_FAILED", format!("reading events: {e}")))?;
            break StoppedBy::ProcessExited;
        }
        if let Some(process) = &prepared.process
            && last_look.elapsed() >= PROCESS_LOOK
        {
            last_look = Instant::now();
            exited = !process.still_alive();
        }
        let mut full = false;
        let mut drained: u32 = 0;
        let mut handle = |bytes: &[u8]| -> bool {
            total += 1;
            if prepared.max_rate > 0 {
                if window.0.elapsed() >= Duration::from_secs(1) {
                    window = (Instant::now(), 0);
                }
                if window.1 >= prepared.max_rate {
                    shed += 1;
                    return true;
                }
                window.1 += 1;
            }
            if memoize {
                let tail = bytes.get(8..).unwrap_or_default();
                if let Some(group) = memo.get(tail) {
                    return on_event(Delivery::Group(group));
                }
            }
            let Some(record) = (plan.decode)(bytes, &clock) else {
                total -= 1;
                malformed += 1;
                return true;
            };
            if memoize {
                if memo.len() >= MEMO_ENTRIES {
                    memo.clear();
                }
                let group = Tally::key_of(&prepared.group_by, &record);
                let tail: Box<[u8]> = bytes.get(8..).unwrap_or_default().into();
                return on_event(Delivery::Group(memo.entry(tail).or_insert(group)));
            }
            full = !on_event(Delivery::Event(record));
            !full
        };
        running
            .poll(POLL.min(deadline - now), |bytes| {
                let more = handle(bytes);
                // Under a storm the ring never empties: stop reading at the deadline, a
                // cancellation or the next progress tick, so the run ends on time however
                // slow decoding is.
                drained = drained.wrapping_add(1);
                more && !(drained.is_multiple_of(1024)
                    && (cancel.is_cancelled()
                        || Instant::now() >= deadline
                        || last_tick.elapsed() >= Duration::from_secs(1)))
            })
            .map_err(|e| EbpfError::kernel("GADGET_FAILED", format!("reading events: {e}")))?;
        if full {
            break StoppedBy::MaxEvents;
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            let mut snap = snapshot(&running, plan, &clock, live || user_names.is_some())?;
            if let (Some(names), Some(Snapshot::Stacks(samples))) = (&mut user_names, &mut snap) {
                names.learn(samples);
                names.apply(samples);
            }
            let so_far = total + snap.as_ref().map_or(0, Snapshot::total);
            tick(started.elapsed(), so_far, if live { snap } else { None });
        }
    };
    let elapsed = started.elapsed();
    let dropped = running.dropped();
    // Kernel tables are read while the gadget is still loaded, and before symbolizing
    // anything, processes that were sampled may still be alive.
    let mut snapshot = snapshot(&running, plan, &clock, true)?;
    if let (Some(mut names), Some(Snapshot::Stacks(samples))) = (user_names, &mut snapshot) {
        names.learn(samples);
        names.apply(samples);
    }
    // Detach and release everything before answering.
    drop(running);
    Ok(RunEnd {
        stopped_by,
        elapsed,
        dropped,
        malformed,
        shed,
        snapshot,
    })
}

/// The aggregate rows of a `trace` or `trace_read` result: counts, histograms or a profile.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Aggregates {
    /// count mode: the largest groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Vec<CountRow>>,
    /// count and histogram modes: distinct groups seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    /// histogram mode: one per group, largest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histograms: Option<Vec<HistRow>>,
    /// profile: the functions CPU samples were in, most first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<FunctionRow>>,
    /// profile: the most sampled stacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stacks: Option<Vec<StackRow>>,
    /// profile: folded stacks (`comm;root;...;leaf count`) for flame graphs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded: Option<Vec<String>>,
}

/// The aggregate part of a result, with how much of it fits.
#[derive(Debug, Default)]
pub struct Summary {
    pub rows: Aggregates,
    /// Events the rows stand for.
    pub returned: usize,
    pub truncated: bool,
    pub hint: Option<String>,
}

/// Builds the aggregate part of a result from what user space counted (`tally`) and what
/// the kernel aggregated (`snapshot`), within `budget` bytes of rows.
pub fn summarize(
    mode: Mode,
    group_by: &[String],
    top: usize,
    tally: &Tally,
    snapshot: Option<&Snapshot>,
    budget: usize,
) -> Summary {
    let mut out = Summary::default();
    let counted = |tally: &Tally, out: &mut Summary| {
        let mut rows = tally.top(top);
        let cut = super::fit_rows(&mut rows, budget);
        out.returned = rows.iter().map(|r| r.count as usize).sum();
        out.truncated = rows.len() < tally.groups() || tally.other() > 0;
        if cut {
            out.hint = Some("groups cut to fit server.max_result_bytes; lower top".into());
        }
        if tally.other() > 0 {
            note(
                &mut out.hint,
                format!(
                    "over {MAX_GROUPS} distinct groups: {} events of further groups were \
                     counted but not kept apart; group by fewer fields or add filters",
                    tally.other()
                ),
            );
        }
        out.rows.groups = Some(tally.groups());
        out.rows.counts = Some(rows);
    };
    match (mode, snapshot) {
        (Mode::Events, _) => {}
        (Mode::Histogram, Some(Snapshot::Histograms(entries))) => {
            let mut rows = hist::grouped(entries, group_by);
            let groups = rows.len();
            rows.truncate(top);
            let cut = super::fit_rows(&mut rows, budget);
            out.returned = rows.iter().map(|r| r.count as usize).sum();
            out.truncated = rows.len() < groups;
            if cut {
                out.hint = Some("histograms cut to fit server.max_result_bytes; lower top or group by fewer fields".into());
            }
            out.rows.groups = Some(groups);
            out.rows.histograms = Some(rows);
        }
        (Mode::Histogram, _) => out.rows.histograms = Some(Vec::new()),
        (Mode::Count, Some(Snapshot::Stacks(samples))) => {
            let mut by_process = Tally::default();
            for s in samples {
                let mut record = Map::new();
                record.insert("pid".into(), s.pid.into());
                record.insert("comm".into(), s.comm.clone().into());
                by_process.add(group_by, &record, s.count);
            }
            counted(&by_process, &mut out);
            let report = profile::report(samples, top);
            // Functions and stacks are small; folded stacks get the rest of the budget.
            let (mut functions, mut stacks, mut folded) =
                (report.functions, report.stacks, report.folded);
            let all_folded = folded.len();
            let mut cut = super::fit_rows(&mut functions, budget / 5);
            cut |= super::fit_rows(&mut stacks, budget * 2 / 5);
            cut |= super::fit_rows(&mut folded, budget / 5);
            if folded.len() < all_folded || cut {
                out.truncated = true;
                out.hint = Some(format!(
                    "{} of {all_folded} folded stacks fit server.max_result_bytes; the largest are kept",
                    folded.len()
                ));
            }
            out.rows.functions = Some(functions);
            out.rows.stacks = Some(stacks);
            out.rows.folded = Some(folded);
        }
        (Mode::Count, snap) => {
            let mut merged = tally.clone();
            if let Some(Snapshot::Counts(rows)) = snap {
                for (record, n) in rows {
                    merged.add(group_by, record, *n);
                }
            }
            counted(&merged, &mut out);
        }
    }
    out
}

fn note(out: &mut Option<String>, note: String) {
    *out = Some(match out.take() {
        Some(h) => format!("{h}; {note}"),
        None => note,
    });
}

/// Adds to the hint what the kernel dropped and what the server shed.
pub fn note_losses(out: &mut Option<String>, dropped: u64, shed: u64) {
    if dropped > 0 {
        note(
            out,
            format!(
                "{dropped} events were dropped in the kernel (ring buffer or table full); add filters or shorten the trace"
            ),
        );
    }
    if shed > 0 {
        note(
            out,
            format!(
                "{shed} events were counted but not decoded: over resources.max_events_per_second; add filters or raise it"
            ),
        );
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Holds one of `tools.trace.max_concurrent` slots while a trace runs.
struct Slot<'a>(&'a std::sync::atomic::AtomicU32);

impl<'a> Slot<'a> {
    fn take(core: &'a Core) -> Result<Self, EbpfError> {
        use std::sync::atomic::Ordering;
        let limit = core.config().tools.trace.max_concurrent.get();
        core.active_traces
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| {
                EbpfError::resource(
                    "TOO_MANY_TRACES",
                    format!(
                        "{limit} traces are running (tools.trace.max_concurrent); retry when one ends, or use trace_start"
                    ),
                )
                .with_context("limit", limit)
            })?;
        Ok(Slot(&core.active_traces))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn run(core: &Core, p: TraceParams, ctx: &CallContext) -> Result<TraceOutput, EbpfError> {
    let all = core.config();
    let config = &all.tools.trace;
    let prepared = prepare(
        &p,
        &Limits::of_trace(config),
        all.resources.max_events_per_second,
    )?;
    let _slot = Slot::take(core)?;
    let duration_ms = prepared.duration.as_millis() as f64;
    // Events are kept as JSON text, and only as many as fit the result: the size bound
    // holds while collecting, so a storm costs at most one result's worth of memory.
    let budget = super::row_budget(core);
    let mut kept: Vec<Box<str>> = Vec::new();
    let mut kept_bytes = 0usize;
    let mut seen: u64 = 0;
    let mut cut_by_size = false;
    let mut tally = Tally::default();
    let unit = if prepared.gadget() == "profile" {
        "samples"
    } else {
        "events"
    };
    let end = execute(
        &prepared,
        &ctx.cancel,
        false,
        |delivery| match delivery {
            Delivery::Event(record) if prepared.mode == Mode::Events => {
                seen += 1;
                if !cut_by_size {
                    let text = Value::Object(record).to_string();
                    if kept_bytes + text.len() + 1 > budget && !kept.is_empty() {
                        cut_by_size = true;
                    } else {
                        kept_bytes += text.len() + 1;
                        kept.push(text.into_boxed_str());
                    }
                }
                seen < prepared.max_events as u64
            }
            Delivery::Event(record) => {
                tally.add(&prepared.group_by, &record, 1);
                true
            }
            Delivery::Group(group) => {
                tally.add_group(group, 1);
                true
            }
        },
        |elapsed, total, _| {
            ctx.progress(
                elapsed.as_millis() as f64,
                Some(duration_ms),
                format!("{total} {unit} so far"),
            )
        },
        || {
            ctx.log(
                LogLevel::Info,
                format!(
                    "tracing with `{}` ({}) for {} ms",
                    prepared.gadget(),
                    prepared.hooks().join(", "),
                    prepared.duration.as_millis()
                ),
            );
        },
    )?;
    if end.malformed > 0 {
        ctx.log(
            LogLevel::Warn,
            format!("{} malformed records were skipped", end.malformed),
        );
    }
    let decoded = match prepared.mode {
        Mode::Events => seen,
        _ => tally.total(),
    };
    let total = decoded + end.shed + end.snapshot.as_ref().map_or(0, Snapshot::total);
    core.metrics
        .traced(prepared.gadget(), total, end.dropped, end.shed);
    let summary = summarize(
        prepared.mode,
        &prepared.group_by,
        prepared.top,
        &tally,
        end.snapshot.as_ref(),
        super::row_budget(core),
    );
    let mut out = TraceOutput {
        gadget: prepared.gadget().to_owned(),
        hooks: prepared.hooks(),
        mode: prepared.mode,
        events: None,
        aggregates: summary.rows,
        events_total: total,
        events_dropped: end.dropped,
        events_shed: end.shed,
        events_returned: summary.returned,
        truncated: summary.truncated,
        stopped_by: end.stopped_by,
        duration_ms: u64::try_from(end.elapsed.as_millis()).unwrap_or(u64::MAX),
        hint: summary.hint,
    };
    if prepared.mode == Mode::Events {
        let mut events: Vec<Map<String, Value>> = kept
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect();
        drop(kept);
        let cut = cut_by_size | super::fit_rows(&mut events, budget);
        out.events_returned = events.len();
        out.truncated = (events.len() as u64) < total;
        if cut {
            out.hint = Some("events cut to fit server.max_result_bytes; lower max_events, add filters, or use mode count".into());
        } else if end.stopped_by == StoppedBy::MaxEvents {
            out.hint = Some(format!(
                "stopped after max_events ({}); raise it, add filters, or use mode count for totals",
                prepared.max_events
            ));
        }
        out.events = Some(events);
    }
    note_losses(&mut out.hint, end.dropped, end.shed);
    Ok(out)
}
