//! `trace`: run a built-in gadget for a bounded time and return its events, or counts of
//! them grouped by fields (the engine is `crate::trace`).

use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::config::LogLevel;
use crate::config::Tier;
use crate::core::Core;
use crate::error::{Code, EbpfError};
use crate::trace::{
    Aggregates, CountedIn, Cut, Delivery, Limits, Mode, Snapshot, StoppedBy, Tally, TraceParams,
    add_cut, execute, note_shed, prepare, summarize,
};

/// Result of `trace`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TraceOutput {
    pub gadget: String,
    /// Where it attached (`category:name`).
    pub hooks: Vec<String>,
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_in: Option<CountedIn>,
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
    /// Events `filter` did not pass (not in events_total).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub events_filtered: u64,
    pub events_returned: usize,
    /// More events or groups exist than are returned.
    pub truncated: bool,
    /// What made the result smaller than what was seen (`hint` says how to get more).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cut: Vec<Cut>,
    pub stopped_by: StoppedBy,
    /// How long the gadget was attached.
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Why the trace may have seen less than asked (a probe placed where nothing can fire).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

pub fn spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "trace",
            title: "Trace with a built-in gadget",
            description: "Watch the host for a bounded time with a gadget: exec, exit, open, \
                tcp_connect, tcp_accept, tcp_state, tcp_retransmit, signal, oom_kill, syscalls, \
                biolatency, runqlat, profile, uprobe, kfunc, tracepoint (fields, modes: \
                ebpf://gadgets). Totals exact, drops counted.",
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

/// Holds one of `tools.trace.max_concurrent` slots while a trace runs.
struct Slot<'a>(&'a std::sync::atomic::AtomicU32);

impl<'a> Slot<'a> {
    fn take(core: &'a Core, config: &crate::config::Config) -> Result<Self, EbpfError> {
        use std::sync::atomic::Ordering;
        let limit = config.tools.trace.max_concurrent.get();
        core.active_traces
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| {
                EbpfError::new(
                    Code::TooManyTraces,
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
    let all = &ctx.config;
    let config = &all.tools.trace;
    let prepared = prepare(
        &p,
        &Limits::of_trace(config),
        all.resources.max_events_per_second,
    )?;
    let _slot = Slot::take(core, &ctx.config)?;
    for warning in prepared.warnings() {
        ctx.log(LogLevel::Warn, warning.clone());
    }
    let duration_ms = prepared.duration.as_millis() as f64;
    // Events are kept as JSON text, and only as many as fit the result: the size bound
    // holds while collecting, so a storm costs at most one result's worth of memory.
    let budget = super::row_budget(&ctx.config);
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
            Delivery::Event(mut record) if prepared.mode == Mode::Events => {
                seen += 1;
                if !cut_by_size {
                    prepared.select(&mut record);
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
            let attached = format!(
                "tracing with `{}` ({}) for {} ms",
                prepared.gadget(),
                prepared.hooks().join(", "),
                prepared.duration.as_millis()
            );
            // Progress at 0: a client without logging also learns when the trace started
            // (after the verifier), and can start its workload then.
            ctx.progress(0.0, Some(duration_ms), format!("attached: {attached}"));
            ctx.log(LogLevel::Info, attached);
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
        super::row_budget(&ctx.config),
    );
    let mut out = TraceOutput {
        gadget: prepared.gadget().to_owned(),
        hooks: prepared.hooks(),
        mode: prepared.mode,
        counted_in: prepared.counted_in(),
        events: None,
        aggregates: summary.rows,
        events_total: total,
        events_dropped: end.dropped,
        events_shed: end.shed,
        events_filtered: end.filtered,
        events_returned: summary.returned,
        truncated: summary.truncated,
        cut: summary.cut,
        stopped_by: end.stopped_by,
        duration_ms: u64::try_from(end.elapsed.as_millis()).unwrap_or(u64::MAX),
        hint: summary.hint,
        warnings: prepared.warnings().to_vec(),
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
            add_cut(&mut out.cut, Cut::Size);
            out.hint = Some(format!(
                "{} of {total} events fit server.max_result_bytes; lower max_events, ask for \
                 fewer fields, add filters, or use mode count",
                events.len()
            ));
        } else if end.stopped_by == StoppedBy::MaxEvents {
            add_cut(&mut out.cut, Cut::MaxEvents);
            out.hint = Some(format!(
                "stopped after max_events ({}); raise it, add filters, or use mode count for totals",
                prepared.max_events
            ));
        }
        out.events = Some(events);
    }
    note_shed(&mut out.cut, &mut out.hint, end.dropped, end.shed);
    Ok(out)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
