//! Background trace sessions: each runs on a thread of its own and keeps what it reports
//! (the newest events as text, or counts) for `trace_read`, ends by itself at its duration,
//! and belongs to the client that started it. Finished sessions stay for a last read,
//! bounded in number and time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use schemars::JsonSchema;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Mode, Snapshot, StoppedBy, Tally};
use crate::error::{Code, EbpfError};
use crate::resources::{Release, ReleaseError, Tracker};

/// A finished session is kept this long for a last read.
pub(crate) const KEEP_FINISHED: Duration = Duration::from_secs(600);
pub(crate) const DEFAULT_READ: u32 = 1000;

#[derive(Debug, Default)]
pub(crate) struct State {
    /// The newest events, as JSON text (a decoded event costs several times its text).
    pub(crate) events: VecDeque<(u64, Box<str>)>,
    /// Bytes of text in `events`.
    pub(crate) bytes: usize,
    pub(crate) next_seq: u64,
    /// Events pushed out of the buffer before anyone read them.
    pub(crate) overwritten: u64,
    pub(crate) tally: Tally,
    /// What the kernel aggregated, as of the last second (aggregating gadgets).
    pub(crate) kernel: Option<Snapshot>,
    /// Events decoded (events and user-space counts).
    pub(crate) total: u64,
    /// Events over resources.max_events_per_second, counted but not decoded.
    pub(crate) shed: u64,
    pub(crate) end: Option<End>,
}

#[derive(Debug, Clone)]
pub(crate) struct End {
    pub(crate) stopped_by: StoppedBy,
    pub(crate) elapsed: Duration,
    pub(crate) dropped: u64,
    pub(crate) error: Option<EbpfError>,
    pub(crate) at: SystemTime,
}

/// One background trace.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) owner: String,
    pub(crate) gadget: &'static str,
    pub(crate) hooks: Vec<String>,
    pub(crate) mode: Mode,
    pub(crate) counted_in: Option<super::CountedIn>,
    pub(crate) group_by: Vec<String>,
    pub(crate) top: usize,
    pub(crate) started_at: SystemTime,
    pub(crate) ends_at: SystemTime,
    pub(crate) cancel: CancellationToken,
    pub(crate) state: Mutex<State>,
    pub(crate) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The resource tracker's id for it.
    pub(crate) tracked: AtomicU64,
}

impl Session {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the gadget and waits for its thread (which releases everything it attached).
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// The tracker's handle: releasing it stops the session.
pub(crate) struct SessionHandle(pub(crate) Arc<Session>);

impl Release for SessionHandle {
    fn release(self: Box<Self>) -> Result<(), ReleaseError> {
        self.0.stop();
        Ok(())
    }
}

/// Every session of this server.
#[derive(Debug, Default)]
pub struct Sessions {
    pub(crate) all: Mutex<HashMap<String, Arc<Session>>>,
    pub(crate) next: AtomicU64,
}

/// A session as `info` lists it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionInfo {
    pub session_id: String,
    pub owner: String,
    pub gadget: String,
    pub state: String,
    pub started_at: String,
    pub ends_at: String,
}

impl Sessions {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self
            .lock()
            .values()
            .map(|s| SessionInfo {
                session_id: s.id.clone(),
                owner: s.owner.clone(),
                gadget: s.gadget.to_owned(),
                state: if s.lock().end.is_some() {
                    "finished"
                } else {
                    "running"
                }
                .to_owned(),
                started_at: crate::time::rfc3339_seconds(s.started_at),
                ends_at: crate::time::rfc3339_seconds(s.ends_at),
            })
            .collect();
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        out
    }

    pub(crate) fn running(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| s.lock().end.is_none())
            .count()
    }

    /// Forgets finished sessions that were never stopped: those that ended over
    /// [`KEEP_FINISHED`] ago, and beyond the newest `tools.trace.max_sessions` of them, so
    /// what finished sessions hold is bounded whatever clients do. The server calls it on a
    /// timer, and every session call first.
    pub fn purge(&self, keep: usize, tracker: &Tracker) {
        let now = SystemTime::now();
        let mut finished: Vec<(SystemTime, Arc<Session>)> = self
            .lock()
            .values()
            .filter_map(|s| s.lock().end.as_ref().map(|e| (e.at, Arc::clone(s))))
            .collect();
        finished.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        for (i, (at, s)) in finished.into_iter().enumerate() {
            let old = at
                .checked_add(KEEP_FINISHED)
                .is_none_or(|until| until < now);
            if old || i >= keep {
                self.remove(tracker, &s);
            }
        }
    }

    /// Bytes of events the sessions hold now.
    pub fn buffered_bytes(&self) -> usize {
        self.lock().values().map(|s| s.lock().bytes).sum()
    }

    pub(crate) fn remove(&self, tracker: &Tracker, s: &Session) {
        self.lock().remove(&s.id);
        tracker.release(s.tracked.load(Ordering::Relaxed));
    }

    /// The caller's session, or an error that does not reveal other clients' sessions.
    pub(crate) fn get(&self, id: &str, owner: &str) -> Result<Arc<Session>, EbpfError> {
        self.lock()
            .get(id)
            .filter(|s| s.owner == owner)
            .cloned()
            .ok_or_else(|| {
                EbpfError::new(
                    Code::SessionNotFound,
                    format!("no trace session `{id}` of this client (it may have been stopped, or have ended over 10 minutes ago or before the newest tools.trace.max_sessions finished ones); trace_start starts one"),
                )
                .with_context("session_id", id)
            })
    }
}
