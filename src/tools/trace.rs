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
    /// The gadget: exec, exit, open, signal, syscalls (list in the tool description).
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
            description: "Watch what the host does for a bounded time, with a built-in \
                gadget: exec (process starts, with arguments), exit (exits, codes, signals), \
                open (file opens, flags, errors), signal (signals sent), syscalls (counts per \
                process and syscall), tracepoint (any tracepoint, `tracepoint: \
                \"category:name\"`, fields decoded). Filter in the kernel by pid, comm, uid, \
                cgroup. mode \
                events returns decoded events; count groups them (`group_by`) and returns the \
                top groups. Totals are exact; drops are counted. Progress every second; \
                cancel stops at once and returns what was seen.",
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
type Decoder = Box<dyn Fn(&[u8], &Clock) -> Option<Map<String, Value>>>;

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

fn run(core: &Core, p: TraceParams, ctx: &CallContext) -> Result<TraceOutput, EbpfError> {
    let plan = plan(&p)?;
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
    let limits = &core.config.tools.trace;
    let max_duration = u64::try_from(limits.max_duration.0.as_millis()).unwrap_or(u64::MAX);
    let duration_ms = p.duration_ms.unwrap_or(DEFAULT_DURATION_MS);
    if duration_ms == 0 || duration_ms > max_duration {
        return Err(invalid(format!(
            "`duration_ms` must be between 1 and {max_duration} (tools.trace.max_duration)"
        )));
    }
    let max_events = p.max_events.unwrap_or(DEFAULT_MAX_EVENTS);
    if max_events == 0 || max_events > limits.max_events.get() {
        return Err(invalid(format!(
            "`max_events` must be between 1 and {} (tools.trace.max_events)",
            limits.max_events
        )));
    }
    let top = p.top.unwrap_or(DEFAULT_TOP).max(1) as usize;
    let mut cfg = filters(&p)?;
    (cfg.arg0, cfg.arg1, cfg.arg2) = plan.args;
    CapSet::current()
        .map_err(|e| EbpfError::internal(format!("cannot read this process's capabilities: {e}")))?
        .require(&[Needed::Bpf, Needed::Perfmon])?;

    let mut running = runner::start(plan.object, RING_BYTES, cfg, &plan.programs)
        .map_err(|e| load_error(plan.name, &e))?;
    ctx.log(
        LogLevel::Info,
        format!(
            "tracing with `{}` ({}) for {duration_ms} ms",
            plan.name,
            plan.hooks().join(", ")
        ),
    );
    let clock = Clock::now();
    let started = Instant::now();
    let deadline = started + Duration::from_millis(duration_ms);
    let mut events: Vec<Map<String, Value>> = Vec::new();
    let mut counts: HashMap<String, (Map<String, Value>, u64)> = HashMap::new();
    let mut total: u64 = 0;
    let mut malformed: u64 = 0;
    let mut last_progress = Instant::now();
    let stopped_by = loop {
        if ctx.cancel.is_cancelled() {
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
                match mode {
                    Mode::Events => {
                        events.push(record);
                        if events.len() >= max_events as usize {
                            full = true;
                            return false;
                        }
                    }
                    Mode::Count => {
                        let key: Map<String, Value> = group_by
                            .iter()
                            .map(|f| (f.clone(), record.get(f).cloned().unwrap_or(Value::Null)))
                            .collect();
                        let id = Value::Object(key.clone()).to_string();
                        counts.entry(id).or_insert((key, 0)).1 += 1;
                    }
                }
                true
            })
            .map_err(|e| EbpfError::kernel("GADGET_FAILED", format!("reading events: {e}")))?;
        if full {
            break StoppedBy::MaxEvents;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            ctx.progress(
                started.elapsed().as_millis() as f64,
                Some(duration_ms as f64),
                format!("{total} events so far"),
            );
        }
    };
    let elapsed = started.elapsed();
    let dropped = running.dropped();
    // Kernel-side counts are read while the gadget is still loaded.
    if plan.output == Output::KernelCounts {
        let entries = running
            .hash_entries::<[u8; gadgets::syscalls::KEY_SIZE], u64>("syscall_counts")
            .map_err(|e| EbpfError::kernel("GADGET_FAILED", format!("reading counts: {e}")))?;
        for (key, n) in entries {
            let Some(record) = (plan.decode)(&key, &clock) else {
                continue;
            };
            total += n;
            let group: Map<String, Value> = group_by
                .iter()
                .map(|f| (f.clone(), record.get(f).cloned().unwrap_or(Value::Null)))
                .collect();
            let id = Value::Object(group.clone()).to_string();
            counts.entry(id).or_insert((group, 0)).1 += n;
        }
    }
    // Detach and release everything before answering.
    drop(running);
    if malformed > 0 {
        ctx.log(
            LogLevel::Warn,
            format!("{malformed} malformed records were skipped"),
        );
    }
    let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let mut out = TraceOutput {
        gadget: plan.name.to_owned(),
        hooks: plan.hooks(),
        mode,
        events: None,
        counts: None,
        groups: None,
        events_total: total,
        events_dropped: dropped,
        events_returned: 0,
        truncated: false,
        stopped_by,
        duration_ms,
        hint: None,
    };
    match mode {
        Mode::Events => {
            let cut = super::fit_rows(&mut events, super::row_budget(core));
            out.events_returned = events.len();
            out.truncated = (events.len() as u64) < total;
            if cut {
                out.hint = Some("events cut to fit server.max_result_bytes; lower max_events, add filters, or use mode count".into());
            } else if stopped_by == StoppedBy::MaxEvents {
                out.hint = Some(format!(
                    "stopped after max_events ({max_events}); raise it, add filters, or use mode count for totals"
                ));
            }
            out.events = Some(events);
        }
        Mode::Count => {
            let groups = counts.len();
            let mut rows: Vec<CountRow> = counts
                .into_values()
                .map(|(key, count)| CountRow { key, count })
                .collect();
            rows.sort_by(|a, b| {
                b.count.cmp(&a.count).then_with(|| {
                    Value::Object(a.key.clone())
                        .to_string()
                        .cmp(&Value::Object(b.key.clone()).to_string())
                })
            });
            rows.truncate(top);
            let cut = super::fit_rows(&mut rows, super::row_budget(core));
            out.events_returned = rows.iter().map(|r| r.count as usize).sum();
            out.truncated = rows.len() < groups;
            if cut {
                out.hint = Some("groups cut to fit server.max_result_bytes; lower top".into());
            }
            out.groups = Some(groups);
            out.counts = Some(rows);
        }
    }
    if dropped > 0 {
        let note = format!(
            "{dropped} events were dropped in the kernel (ring buffer full); add filters or shorten the trace"
        );
        out.hint = Some(match out.hint.take() {
            Some(h) => format!("{h}; {note}"),
            None => note,
        });
    }
    Ok(out)
}
