//! Background traces: `trace_start` runs a gadget on a thread of its own and keeps what it
//! reports (the newest events, or counts); `trace_read` returns what is new since a cursor;
//! `trace_stop` ends it and returns the totals. A session belongs to the client that started
//! it, ends by itself at its duration, and is released at shutdown through the tracker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::config::Tier;
use crate::core::Core;
use crate::error::{Code, EbpfError};
use crate::resources::Kind;
use crate::trace::sessions::{DEFAULT_READ, End, Session, SessionHandle, State};
use crate::trace::{self, Cut, Delivery, Limits, Mode, Snapshot, StoppedBy, TraceParams};

// ---------------------------------------------------------------- trace_start

/// Result of `trace_start`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StartOutput {
    pub session_id: String,
    pub gadget: String,
    pub hooks: Vec<String>,
    pub mode: Mode,
    /// When the session ends by itself (RFC 3339).
    pub ends_at: String,
    /// Newest events kept for trace_read (older ones are overwritten and counted).
    pub buffer_events: u32,
    /// Why the session may see less than asked (a probe placed where nothing can fire).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

pub fn start_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "trace_start",
            title: "Start a background trace",
            description: "`trace` in the background (same arguments; `duration_ms` defaults \
                to tools.trace.session_max_duration; events mode keeps the newest \
                `max_events`): a session_id for trace_read/trace_stop, once attached.",
            tier: Tier::Trace,
            hints: Hints {
                read_only: true,
                destructive: false,
                idempotent: false,
            },
            list_field: None,
        },
        start,
    )
    .with_brief_input()
}

fn start(core: &Core, p: TraceParams, ctx: &CallContext) -> Result<StartOutput, EbpfError> {
    let all = &ctx.config;
    let config = &all.tools.trace;
    let sessions = &core.sessions;
    let max_sessions = config.max_sessions.get() as usize;
    sessions.purge(max_sessions, &core.tracker);
    if sessions.running() >= max_sessions {
        return Err(EbpfError::new(
            Code::TooManySessions,
            format!("{max_sessions} trace sessions are running (tools.trace.max_sessions); stop one with trace_stop"),
        )
        .with_context("limit", max_sessions));
    }
    let prepared = trace::prepare(
        &p,
        &Limits::of_session(config),
        all.resources.max_events_per_second,
    )?;
    // In a session, max_events is how many of the newest events are kept, and
    // session_buffer_bytes how much text they may take.
    let buffer = prepared.max_events as u32;
    let buffer_bytes = usize::try_from(config.session_buffer_bytes.get()).unwrap_or(usize::MAX);
    let n = sessions.next.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("ts-{n}-{:08x}", crate::resources::id_suffix());
    let started_at = SystemTime::now();
    let warnings = prepared.warnings().to_vec();
    let session = Arc::new(Session {
        id: id.clone(),
        owner: ctx.owner.clone(),
        gadget: prepared.gadget(),
        hooks: prepared.hooks(),
        mode: prepared.mode,
        counted_in: prepared.counted_in(),
        group_by: prepared.group_by.clone(),
        top: prepared.top,
        started_at,
        ends_at: crate::time::add(started_at, prepared.duration),
        cancel: CancellationToken::new(),
        state: Mutex::new(State::default()),
        thread: Mutex::new(None),
        tracked: AtomicU64::new(0),
    });
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), EbpfError>>();
    let worker = Arc::clone(&session);
    let metrics = Arc::clone(&core.metrics);
    let gadget_name = prepared.gadget().to_owned();
    let handle = std::thread::Builder::new()
        .name(format!("trace-{n}"))
        .spawn(move || {
            let failed = ready_tx.clone();
            // A panic in the run ends the session with an error rather than leaving it
            // "running" for ever: what it attached is released while unwinding.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                trace::execute(
                    &prepared,
                    &worker.cancel,
                    true,
                    |delivery| {
                        let mut st = worker.lock();
                        st.total += 1;
                        match delivery {
                            Delivery::Event(mut record) if prepared.mode == Mode::Events => {
                                prepared.select(&mut record);
                                let text = Value::Object(record).to_string().into_boxed_str();
                                let seq = st.next_seq;
                                st.next_seq += 1;
                                st.bytes += text.len();
                                st.events.push_back((seq, text));
                                while st.events.len() > buffer as usize || st.bytes > buffer_bytes {
                                    let Some((_, old)) = st.events.pop_front() else {
                                        break;
                                    };
                                    st.bytes -= old.len();
                                    st.overwritten += 1;
                                }
                            }
                            Delivery::Event(record) => st.tally.add(&prepared.group_by, &record, 1),
                            Delivery::Group(group) => st.tally.add_group(group, 1),
                        }
                        true
                    },
                    |_, _, snapshot| {
                        if snapshot.is_some() {
                            worker.lock().kernel = snapshot;
                        }
                    },
                    move || {
                        let _ = ready_tx.send(Ok(()));
                    },
                )
            }))
            .unwrap_or_else(|_| {
                Err(EbpfError::internal(
                    "the trace failed unexpectedly (a panic); what it attached was released",
                ))
            });
            let mut st = worker.lock();
            let end = match result {
                Ok(run) => {
                    let taken =
                        st.total + run.shed + run.snapshot.as_ref().map_or(0, Snapshot::total);
                    metrics.traced(&gadget_name, taken, run.dropped, run.shed);
                    st.kernel = run.snapshot;
                    st.shed = run.shed;
                    End {
                        stopped_by: run.stopped_by,
                        elapsed: run.elapsed,
                        dropped: run.dropped,
                        error: None,
                        at: SystemTime::now(),
                    }
                }
                Err(e) => {
                    let _ = failed.send(Err(e.clone()));
                    End {
                        stopped_by: StoppedBy::Cancelled,
                        elapsed: Duration::ZERO,
                        dropped: 0,
                        error: Some(e),
                        at: SystemTime::now(),
                    }
                }
            };
            st.end = Some(end);
        })
        .map_err(|e| EbpfError::internal(format!("cannot start a trace thread: {e}")))?;
    *session.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    // Answer once the gadget is attached, or with the reason it could not be.
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            session.stop();
            return Err(e);
        }
        Err(_) => {
            session.stop();
            return Err(EbpfError::internal(
                "the trace thread ended before attaching",
            ));
        }
    }
    let tracked = core.tracker.track(
        Kind::TraceSession,
        &session.owner,
        &format!("trace session {id} ({})", session.gadget),
        Some(session.ends_at),
        Box::new(SessionHandle(Arc::clone(&session))),
    );
    session.tracked.store(tracked, Ordering::Relaxed);
    sessions.lock().insert(id.clone(), Arc::clone(&session));
    Ok(StartOutput {
        session_id: id,
        gadget: session.gadget.to_owned(),
        hooks: session.hooks.clone(),
        mode: session.mode,
        ends_at: crate::time::rfc3339_seconds(session.ends_at),
        buffer_events: buffer,
        warnings,
    })
}

// ---------------------------------------------------------------- trace_read / trace_stop

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// From trace_start.
    pub session_id: String,
    /// `next_cursor` of the previous read (default: the oldest kept).
    #[serde(default)]
    pub cursor: Option<u64>,
    /// Events to return (default 1000).
    #[serde(default)]
    pub max_events: Option<u32>,
}

/// Result of `trace_read` and `trace_stop`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReadOutput {
    pub session_id: String,
    /// running, or finished.
    pub state: String,
    /// events mode: events after the cursor, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Map<String, Value>>>,
    /// Pass to the next trace_read to get what follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_in: Option<trace::CountedIn>,
    #[serde(flatten)]
    pub aggregates: trace::Aggregates,
    pub events_total: u64,
    /// Events the kernel could not deliver (its ring buffer was full).
    pub events_dropped: u64,
    /// Events counted but not decoded: over resources.max_events_per_second.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub events_shed: u64,
    /// Events pushed out of the session's buffer before they were read.
    pub events_overwritten: u64,
    /// More events after this page are waiting.
    pub truncated: bool,
    /// What made the result smaller than what was seen (`hint` says how to get more).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cut: Vec<Cut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<StoppedBy>,
    /// Time traced so far.
    pub duration_ms: u64,
    /// Why the session failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EbpfError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

pub fn read_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "trace_read",
            title: "Read a background trace",
            description: "What a trace_start session saw since `cursor` (events mode), or its \
                counts so far (count mode), with totals. Does not stop it.",
            tier: Tier::Trace,
            hints: Hints::READ_ONLY,
            list_field: Some("events"),
        },
        read,
    )
}

pub fn stop_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "trace_stop",
            title: "Stop a background trace",
            description: "Stop a trace_start session, detach its gadget, and return its final \
                totals (and events after `cursor`). The session is gone afterwards.",
            tier: Tier::Trace,
            hints: Hints {
                read_only: true,
                destructive: false,
                idempotent: false,
            },
            list_field: Some("events"),
        },
        stop,
    )
}

fn report(budget: usize, s: &Session, p: &ReadParams) -> ReadOutput {
    let st = s.lock();
    let max = p.max_events.unwrap_or(DEFAULT_READ).max(1) as usize;
    let (events, next_cursor, truncated) = match s.mode {
        Mode::Events => {
            let after = p.cursor;
            // Only the page is decoded, and only as much of it as fits a result.
            let mut used = 0usize;
            let mut page: Vec<(u64, &str)> = Vec::new();
            let mut more = false;
            for (seq, text) in st
                .events
                .iter()
                .filter(|(seq, _)| after.is_none_or(|c| *seq > c))
            {
                if page.len() == max || (used + text.len() + 1 > budget && !page.is_empty()) {
                    more = true;
                    break;
                }
                used += text.len() + 1;
                page.push((*seq, text));
            }
            let mut rows: Vec<Map<String, Value>> = page
                .iter()
                .filter_map(|(_, t)| serde_json::from_str(t).ok())
                .collect();
            if super::fit_rows(&mut rows, budget) {
                more = true;
            }
            let last = page
                .get(rows.len().wrapping_sub(1))
                .map(|(seq, _)| *seq)
                .or(after);
            (Some(rows), last, more)
        }
        Mode::Count | Mode::Histogram => (None, None, false),
    };
    let summary = trace::summarize(
        s.mode,
        &s.group_by,
        s.top,
        &st.tally,
        st.kernel.as_ref(),
        budget,
    );
    let end = st.end.clone();
    let dropped = end.as_ref().map_or(0, |e| e.dropped);
    let (mut hint, mut cut) = (summary.hint, summary.cut);
    if truncated {
        trace::add_cut(&mut cut, Cut::Page);
        trace::note(
            &mut hint,
            "more events wait after this page: read on with `cursor` set to `next_cursor`".into(),
        );
    }
    trace::note_shed(&mut cut, &mut hint, dropped, st.shed);
    let elapsed = match &end {
        Some(e) => e.elapsed,
        None => s.started_at.elapsed().unwrap_or_default(),
    };
    ReadOutput {
        session_id: s.id.clone(),
        state: if end.is_some() { "finished" } else { "running" }.to_owned(),
        events,
        next_cursor,
        counted_in: s.counted_in,
        aggregates: summary.rows,
        events_total: st.total + st.shed + st.kernel.as_ref().map_or(0, Snapshot::total),
        events_dropped: dropped,
        events_shed: st.shed,
        events_overwritten: st.overwritten,
        truncated: truncated || summary.truncated,
        cut,
        hint,
        stopped_by: end
            .as_ref()
            .filter(|e| e.error.is_none())
            .map(|e| e.stopped_by),
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        error: end.and_then(|e| e.error),
    }
}

fn read(core: &Core, p: ReadParams, ctx: &CallContext) -> Result<ReadOutput, EbpfError> {
    core.sessions.purge(
        ctx.config.tools.trace.max_sessions.get() as usize,
        &core.tracker,
    );
    let s = core.sessions.get(&p.session_id, &ctx.owner)?;
    Ok(report(super::row_budget(&ctx.config), &s, &p))
}

fn stop(core: &Core, p: ReadParams, ctx: &CallContext) -> Result<ReadOutput, EbpfError> {
    let s = core.sessions.get(&p.session_id, &ctx.owner)?;
    s.stop();
    let out = report(super::row_budget(&ctx.config), &s, &p);
    core.sessions.remove(&core.tracker, &s);
    Ok(out)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
