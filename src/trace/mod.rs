//! The trace engine: what a `trace` or `trace_start` call asks for (`TraceParams`), how it
//! becomes a plan of programs and hooks checked against the gadget and the limits
//! (`plan`), the run that attaches it and reads what the kernel reports until its end
//! (`run`), the counts, histograms and profiles built from that (`tally`), and the registry
//! of background sessions (`sessions`). Filters are applied in the kernel; every event the
//! kernel delivers is consumed, so totals are exact and drops are counted. Everything a run
//! attached is released when it ends, however it ends.

pub mod filter;
mod kfunc;
mod plan;
mod run;
pub mod sessions;
mod tally;
pub(crate) use tally::note;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use plan::{Limits, Prepared, gadget_modes, prepare};
pub use run::{RunEnd, execute};
pub use tally::{
    Aggregates, Delivery, Group, MAX_GROUPS, Snapshot, Summary, Tally, note_losses, note_shed,
    summarize,
};

pub(crate) const DEFAULT_DURATION_MS: u64 = 5000;
pub(crate) const DEFAULT_MAX_EVENTS: u32 = 1000;
pub(crate) const DEFAULT_TOP: u32 = 20;

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

/// What made a result smaller than what was seen; the `hint` says how to get more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cut {
    /// Rows were cut to fit server.max_result_bytes.
    Size,
    /// More groups than `top` exist; the largest are returned.
    Top,
    /// events mode stopped at `max_events`.
    MaxEvents,
    /// Over the bound on distinct groups: the rest were counted together.
    Groups,
    /// Events over resources.max_events_per_second were counted, not decoded.
    Shed,
    /// trace_read: more events wait after this page (read on from `next_cursor`).
    Page,
}

/// Adds `cut` once.
pub fn add_cut(cuts: &mut Vec<Cut>, cut: Cut) {
    if !cuts.contains(&cut) {
        cuts.push(cut);
    }
}

/// count mode: where the events were counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CountedIn {
    /// In a kernel table: no event crossed to the server (every group key is known where
    /// the event happens, and the filter is wholly the kernel's).
    Kernel,
    /// By the server, from every event (a group key or filter needs the whole event).
    Server,
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
    /// Which gadget.
    pub gadget: String,
    /// ms to trace (default 5000, max tools.trace.max_duration).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// events mode: stop after this many (default 1000).
    #[serde(default)]
    pub max_events: Option<u32>,
    /// Only this process (thread group id).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Only this process name (exact, ≤15 bytes).
    #[serde(default)]
    pub comm: Option<String>,
    /// Only this user id.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Only this cgroup v2 directory.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Only this container (id or unique prefix).
    #[serde(default)]
    pub container: Option<String>,
    /// events, count or histogram (default: the gadget's).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Events where this holds: `ret < 0 && comm ~ "py*"`, `dport in [80, 443]`
    /// (== != < <= > >= ~ in && || !).
    #[serde(default)]
    pub filter: Option<String>,
    /// events mode: only these fields per event, e.g. `["pid", "argv"]`.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// count/histogram: fields to group by (default: the gadget's).
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// count/histogram: groups to return, largest first (default 20).
    #[serde(default)]
    pub top: Option<u32>,
    /// tracepoint: `category:name` (list_tracepoints finds them).
    #[serde(default)]
    pub tracepoint: Option<String>,
    /// tracepoint, mode histogram: integer field to bucket.
    #[serde(default)]
    pub value: Option<String>,
    /// uprobe: `binary:symbol` (`libc:malloc`); kfunc: a kernel function or glob.
    #[serde(default)]
    pub target: Option<String>,
    /// uprobe, kfunc, mode events: events at return, with `ret`, `duration_ns`.
    #[serde(default, rename = "return")]
    pub on_return: Option<bool>,
    /// profile: samples/s per CPU (default 49, max 1000).
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
