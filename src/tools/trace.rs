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
use crate::gadgets::{self, Clock, Output};
use crate::security::Tier;

const DEFAULT_DURATION_MS: u64 = 5000;
const DEFAULT_MAX_EVENTS: u32 = 1000;
const DEFAULT_TOP: u32 = 20;
/// Ring buffer per trace: room for bursts of several thousand events between reads.
const RING_BYTES: u32 = 4 * 1024 * 1024;
/// Longest wait for events before checking the clock and the client again.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decoded events, oldest first.
    #[default]
    Events,
    /// Counts grouped by `group_by`, largest first.
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoppedBy {
    Duration,
    MaxEvents,
    Cancelled,
}

/// Arguments of `trace`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceParams {
    /// Which gadget (listed in the tool description).
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
    /// events (default) or count.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// count mode: event fields to group by (default: the gadget's, e.g. comm).
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// count mode: groups to return, largest first (default 20).
    #[serde(default)]
    pub top: Option<u32>,
    /// gadget tracepoint: which one, as `category:name` (list_tracepoints finds them).
    #[serde(default)]
    pub tracepoint: Option<String>,
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
    /// count mode: the largest groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Vec<CountRow>>,
    /// count mode: distinct groups seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    /// Events that passed the filters and reached the server (for kernel-counted gadgets:
    /// the sum of the counts).
    pub events_total: u64,
    /// Events the kernel could not deliver: its ring buffer (or count table) was full.
    pub events_dropped: u64,
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
            description: "Watch the host for a bounded time with a built-in gadget: exec \
                (process starts, argv), exit (exit codes, signals), open (file opens, flags, \
                errors), signal (signals sent), syscalls (counts per process and syscall), \
                tracepoint (any `category:name`, fields decoded). Filters run in the kernel. \
                mode events: decoded events; count: the top groups by `group_by`. Totals are \
                exact, drops counted, progress every second; cancel returns what was seen.",
            tier: Tier::Trace,
            hints: Hints::READ_ONLY,
            list_field: Some("events"),
        },
        run,
    )
    .with_timeout(|c| c.tools.trace.max_duration.0 + Duration::from_secs(30))
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

/// The cgroup v2 id of a directory: its inode number.
fn cgroup_id(path: &str) -> Result<u64, EbpfError> {
    use std::os::unix::fs::MetadataExt;
    let root = crate::ebpf::host::cgroup2_root()
        .ok_or_else(|| invalid("`cgroup` needs a cgroup v2 hierarchy, and none is mounted"))?;
    let given = std::path::Path::new(path);
    let full = if given.is_absolute() {
        given.to_path_buf()
    } else {
        root.join(given)
    };
    let meta = std::fs::metadata(&full).map_err(|e| {
        invalid(format!(
            "cgroup {}: {e}; give a directory under {}",
            full.display(),
            root.display()
        ))
    })?;
    if !meta.is_dir() || !full.starts_with(&root) {
        return Err(invalid(format!(
            "`cgroup` must be a directory under {}",
            root.display()
        )));
    }
    Ok(meta.ino())
}

/// Turns one record from the kernel into an event.
type Decoder = Box<dyn Fn(&[u8], &Clock) -> Option<Map<String, Value>> + Send + Sync>;

/// What to load and how to read it: a built-in gadget, or the generic tracepoint gadget
/// fitted to one tracepoint's format.
struct Plan {
    name: &'static str,
    object: &'static [u8],
    programs: Vec<(&'static str, Hook)>,
    output: Output,
    fields: Vec<String>,
    default_group_by: Vec<String>,
    /// Gadget-specific settings for the kernel side (arg0..arg2 of gadget_cfg).
    args: (u32, u32, u32),
    decode: Decoder,
}

impl Plan {
    fn hooks(&self) -> Vec<String> {
        self.programs
            .iter()
            .map(|(_, h)| match h {
                Hook::Tracepoint(c, n) => format!("{c}:{n}"),
                Hook::RawTracepoint(n) => format!("raw_tp:{n}"),
            })
            .collect()
    }
}

fn plan(p: &TraceParams) -> Result<Plan, EbpfError> {
    if p.gadget == "tracepoint" {
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
        return Ok(Plan {
            name: "tracepoint",
            object: gadgets::tracepoint::OBJECT,
            programs: vec![(gadgets::tracepoint::PROGRAM, hook)],
            output: Output::Events,
            fields,
            default_group_by: vec!["comm".to_owned()],
            args,
            decode: Box::new(move |bytes, clock| {
                if bytes.len() < gadgets::tracepoint::EVENT_SIZE {
                    return None;
                }
                let mut out = Map::new();
                let rest = gadgets::header(bytes, clock, &mut out)?;
                gadgets::tracepoint::decode(&format, &strings, rest, &mut out);
                Some(out)
            }),
        });
    }
    if p.tracepoint.is_some() {
        return Err(invalid(
            "`tracepoint` applies to the tracepoint gadget only",
        ));
    }
    let known = || {
        gadgets::catalogue()
            .iter()
            .map(|g| g.name)
            .chain(["tracepoint"])
            .collect::<Vec<_>>()
            .join(", ")
    };
    let gadget = gadgets::find(&p.gadget).ok_or_else(|| {
        invalid(format!(
            "unknown gadget `{}`; one of: {}",
            p.gadget,
            known()
        ))
        .with_context("gadget", &p.gadget)
    })?;
    Ok(Plan {
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
        args: (0, 0, 0),
        decode: Box::new(move |bytes, clock| gadget.record(bytes, clock)),
    })
}

fn load_error(gadget: &str, e: &GadgetError) -> EbpfError {
    match e.errno() {
        Some(libc::EPERM) | Some(libc::EACCES) => EbpfError::permission(
            codes::MISSING_CAPABILITY,
            format!(
                "the kernel refused to run the `{gadget}` gadget ({e}); the server needs CAP_BPF \
                 and CAP_PERFMON, and `info` shows what this kernel allows"
            ),
        ),
        Some(libc::ENOENT) => EbpfError::kernel(
            "HOOK_NOT_FOUND",
            format!(
                "this kernel lacks a hook the `{gadget}` gadget needs ({e}); list_tracepoints \
                 shows the tracepoints it has"
            ),
        ),
        _ => EbpfError::kernel(
            "GADGET_FAILED",
            format!("the `{gadget}` gadget could not start: {e}"),
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

/// Checks the arguments against the gadget and the limits. `max_duration` is the longest
/// run allowed (a trace's or a session's).
pub fn prepare(p: &TraceParams, limits: &Limits) -> Result<Prepared, EbpfError> {
    let (max_duration, max_events_cap) = (limits.max_duration, limits.max_events);
    let plan = plan(p)?;
    let mode = p.mode.unwrap_or(match plan.output {
        Output::Events => Mode::Events,
        Output::KernelCounts => Mode::Count,
    });
    if plan.output == Output::KernelCounts && mode != Mode::Count {
        return Err(invalid(format!(
            "the `{}` gadget counts in the kernel: use mode `count`",
            plan.name
        )));
    }
    let group_by: Vec<String> = match &p.group_by {
        Some(fields) if !fields.is_empty() => fields.clone(),
        _ => plan.default_group_by.clone(),
    };
    if mode == Mode::Count {
        if let Some(bad) = group_by.iter().find(|f| !plan.fields.contains(f)) {
            return Err(invalid(format!(
                "`{bad}` is not a field of `{}` events; fields: {}",
                plan.name,
                plan.fields.join(", ")
            )));
        }
    } else if p.group_by.is_some() || p.top.is_some() {
        return Err(invalid("`group_by` and `top` apply to mode `count`"));
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
    })
}

/// Counts of events grouped by fields.
#[derive(Debug, Default)]
pub struct Tally {
    groups: HashMap<String, (Map<String, Value>, u64)>,
}

impl Tally {
    pub fn add(&mut self, group_by: &[String], record: &Map<String, Value>, n: u64) {
        let key: Map<String, Value> = group_by
            .iter()
            .map(|f| (f.clone(), record.get(f).cloned().unwrap_or(Value::Null)))
            .collect();
        let id = Value::Object(key.clone()).to_string();
        self.groups.entry(id).or_insert((key, 0)).1 += n;
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
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

/// How a run ended.
#[derive(Debug)]
pub struct RunEnd {
    pub stopped_by: StoppedBy,
    pub elapsed: Duration,
    pub dropped: u64,
    pub malformed: u64,
    /// Kernel-counted gadgets: each group's key record and count.
    pub kernel_counts: Vec<(Map<String, Value>, u64)>,
}

/// Attaches the gadget, hands every decoded event to `on_event` until the duration passes,
/// `cancel` fires or `on_event` returns false (then: max_events), calls `tick` with the
/// running total about every second, and releases everything before returning.
pub fn execute(
    prepared: &Prepared,
    cancel: &tokio_util::sync::CancellationToken,
    mut on_event: impl FnMut(Map<String, Value>) -> bool,
    mut tick: impl FnMut(Duration, u64),
    ready: impl FnOnce(),
) -> Result<RunEnd, EbpfError> {
    let plan = &prepared.plan;
    let mut running = runner::start(plan.object, RING_BYTES, prepared.cfg, &plan.programs)
        .map_err(|e| load_error(plan.name, &e))?;
    ready();
    let clock = Clock::now();
    let started = Instant::now();
    let deadline = started + prepared.duration;
    let mut total: u64 = 0;
    let mut malformed: u64 = 0;
    let mut last_tick = Instant::now();
    let stopped_by = loop {
        if cancel.is_cancelled() {
            break StoppedBy::Cancelled;
        }
        let now = Instant::now();
        if now >= deadline {
            break StoppedBy::Duration;
        }
        let mut full = false;
        running
            .poll(POLL.min(deadline - now), |bytes| {
                let Some(record) = (plan.decode)(bytes, &clock) else {
                    malformed += 1;
                    return true;
                };
                total += 1;
                full = !on_event(record);
                !full
            })
            .map_err(|e| EbpfError::kernel("GADGET_FAILED", format!("reading events: {e}")))?;
        if full {
            break StoppedBy::MaxEvents;
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            tick(started.elapsed(), total);
        }
    };
    let elapsed = started.elapsed();
    let dropped = running.dropped();
    let mut kernel_counts = Vec::new();
    // Kernel-side counts are read while the gadget is still loaded.
    if plan.output == Output::KernelCounts {
        let entries = running
            .hash_entries::<[u8; gadgets::syscalls::KEY_SIZE], u64>("syscall_counts")
            .map_err(|e| EbpfError::kernel("GADGET_FAILED", format!("reading counts: {e}")))?;
        kernel_counts = entries
            .into_iter()
            .filter_map(|(key, n)| (plan.decode)(&key, &clock).map(|record| (record, n)))
            .collect();
    }
    // Detach and release everything before answering.
    drop(running);
    Ok(RunEnd {
        stopped_by,
        elapsed,
        dropped,
        malformed,
        kernel_counts,
    })
}

fn note_drops(out: &mut Option<String>, dropped: u64) {
    if dropped > 0 {
        let note = format!(
            "{dropped} events were dropped in the kernel (ring buffer full); add filters or shorten the trace"
        );
        *out = Some(match out.take() {
            Some(h) => format!("{h}; {note}"),
            None => note,
        });
    }
}

fn run(core: &Core, p: TraceParams, ctx: &CallContext) -> Result<TraceOutput, EbpfError> {
    let config = &core.config.tools.trace;
    let prepared = prepare(&p, &Limits::of_trace(config))?;
    let duration_ms = prepared.duration.as_millis() as f64;
    let mut events: Vec<Map<String, Value>> = Vec::new();
    let mut tally = Tally::default();
    let end = execute(
        &prepared,
        &ctx.cancel,
        |record| match prepared.mode {
            Mode::Events => {
                events.push(record);
                events.len() < prepared.max_events
            }
            Mode::Count => {
                tally.add(&prepared.group_by, &record, 1);
                true
            }
        },
        |elapsed, total| {
            ctx.progress(
                elapsed.as_millis() as f64,
                Some(duration_ms),
                format!("{total} events so far"),
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
    let mut total = match prepared.mode {
        Mode::Events => events.len() as u64,
        Mode::Count => tally.groups.values().map(|(_, n)| n).sum(),
    };
    for (record, n) in &end.kernel_counts {
        tally.add(&prepared.group_by, record, *n);
        total += n;
    }
    let mut out = TraceOutput {
        gadget: prepared.gadget().to_owned(),
        hooks: prepared.hooks(),
        mode: prepared.mode,
        events: None,
        counts: None,
        groups: None,
        events_total: total,
        events_dropped: end.dropped,
        events_returned: 0,
        truncated: false,
        stopped_by: end.stopped_by,
        duration_ms: u64::try_from(end.elapsed.as_millis()).unwrap_or(u64::MAX),
        hint: None,
    };
    match prepared.mode {
        Mode::Events => {
            let cut = super::fit_rows(&mut events, super::row_budget(core));
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
        Mode::Count => {
            let mut rows = tally.top(prepared.top);
            let cut = super::fit_rows(&mut rows, super::row_budget(core));
            out.events_returned = rows.iter().map(|r| r.count as usize).sum();
            out.truncated = rows.len() < tally.groups();
            if cut {
                out.hint = Some("groups cut to fit server.max_result_bytes; lower top".into());
            }
            out.groups = Some(tally.groups());
            out.counts = Some(rows);
        }
    }
    note_drops(&mut out.hint, end.dropped);
    Ok(out)
}
