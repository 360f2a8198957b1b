//! The tracker of every kernel object the server creates (programs, maps, links, pins, trace
//! sessions, deployments): who owns it, when it was made, when it expires. Shutdown, expiry
//! and explicit release all go through here, so nothing the server made outlives its need.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::Serialize;

/// What a tracked object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Program,
    Map,
    Link,
    Pin,
    TraceSession,
    Deployment,
}

/// Something that gives a kernel object back. Most handles are fd-owned and release on drop;
/// pins and sessions also need work (unlink, stop), which may fail.
pub trait Release: Send {
    fn release(self: Box<Self>) -> Result<(), ReleaseError>;
}

/// Why a release failed, with its cause chain (a pin directory's unlink, ...).
pub type ReleaseError = Box<dyn std::error::Error + Send + Sync>;

/// A handle whose drop is its release (aya programs, maps and links own their fds).
#[derive(Debug)]
pub struct DropRelease<T: Send>(pub T);

impl<T: Send> Release for DropRelease<T> {
    fn release(self: Box<Self>) -> Result<(), ReleaseError> {
        drop(self);
        Ok(())
    }
}

struct Entry {
    kind: Kind,
    owner: String,
    description: String,
    created_at: SystemTime,
    expires_at: Option<SystemTime>,
    handle: Box<dyn Release>,
}

/// Live object counts, as `info` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Counts {
    pub programs: u32,
    pub maps: u32,
    pub links: u32,
    pub pins: u32,
    pub trace_sessions: u32,
    pub deployments: u32,
}

/// What `release_all` did.
#[derive(Debug, Default)]
pub struct ReleaseReport {
    pub released: usize,
    pub failures: Vec<String>,
}

/// A number that keeps the ids of what the server creates (`ts-3-…`, `dep-1-…`) from
/// repeating across restarts. Not a secret: ids are names, ownership is checked apart.
pub fn id_suffix() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

#[derive(Default)]
pub struct Tracker {
    next_id: AtomicU64,
    entries: Mutex<BTreeMap<u64, Entry>>,
    /// Wakes the cleanup task when an object with an expiry is tracked, so that it can
    /// release it at its deadline rather than at the next sweep.
    expiry_added: tokio::sync::Notify,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("counts", &self.counts())
            .finish()
    }
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written: keep going.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking `handle`; returns its tracker id.
    pub fn track(
        &self,
        kind: Kind,
        owner: &str,
        description: &str,
        expires_at: Option<SystemTime>,
        handle: Box<dyn Release>,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Entry {
            kind,
            owner: owner.to_owned(),
            description: description.to_owned(),
            created_at: SystemTime::now(),
            expires_at,
            handle,
        };
        self.lock().insert(id, entry);
        if expires_at.is_some() {
            self.expiry_added.notify_one();
        }
        id
    }

    /// The earliest expiry of a tracked object.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.lock().values().filter_map(|e| e.expires_at).min()
    }

    /// Resolves when an object with an expiry has been tracked since the last call.
    pub async fn expiry_added(&self) {
        self.expiry_added.notified().await;
    }

    /// Releases one object now. `None` if the id is not tracked.
    pub fn release(&self, id: u64) -> Option<Result<(), ReleaseError>> {
        let entry = self.lock().remove(&id)?;
        Some(entry.handle.release())
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for e in self.lock().values() {
            let slot = match e.kind {
                Kind::Program => &mut c.programs,
                Kind::Map => &mut c.maps,
                Kind::Link => &mut c.links,
                Kind::Pin => &mut c.pins,
                Kind::TraceSession => &mut c.trace_sessions,
                Kind::Deployment => &mut c.deployments,
            };
            *slot += 1;
        }
        c
    }

    /// Ids of objects whose expiry is at or before `now`.
    pub fn expired(&self, now: SystemTime) -> Vec<u64> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.expires_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Releases everything, newest first (links before the programs they attach). Used at
    /// shutdown; a failure is recorded and the rest are still released.
    pub fn release_all(&self) -> ReleaseReport {
        let entries = std::mem::take(&mut *self.lock());
        let mut report = ReleaseReport::default();
        for (id, entry) in entries.into_iter().rev() {
            let age = entry.created_at.elapsed().unwrap_or_default();
            match entry.handle.release() {
                Ok(()) => report.released += 1,
                Err(e) => report.failures.push(format!(
                    "#{id} {} of {} (age {}s): {e}",
                    entry.description,
                    entry.owner,
                    age.as_secs()
                )),
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Fault injection: a handle whose release fails.
    struct Failing;
    impl Release for Failing {
        fn release(self: Box<Self>) -> Result<(), ReleaseError> {
            Err("unlink: EBUSY".into())
        }
    }

    #[test]
    fn release_all_drops_every_handle_even_after_a_failure() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let t = Tracker::default();
        t.track(
            Kind::Program,
            "u",
            "p",
            None,
            Box::new(DropRelease(Counted(dropped.clone()))),
        );
        t.track(Kind::Pin, "u", "pin", None, Box::new(Failing));
        t.track(
            Kind::Link,
            "u",
            "l",
            None,
            Box::new(DropRelease(Counted(dropped.clone()))),
        );
        assert_eq!(t.counts().programs, 1);
        assert_eq!(t.counts().links, 1);
        let report = t.release_all();
        assert_eq!(report.released, 2);
        assert_eq!(report.failures.len(), 1);
        assert!(report.failures[0].contains("EBUSY"));
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
        assert_eq!(t.counts(), Counts::default());
    }

    #[test]
    fn expiry_is_reported_and_release_is_by_id() {
        let t = Tracker::default();
        let past = SystemTime::now() - Duration::from_secs(1);
        let old = t.track(
            Kind::Deployment,
            "u",
            "d",
            Some(past),
            Box::new(DropRelease(())),
        );
        let _live = t.track(Kind::Deployment, "u", "d2", None, Box::new(DropRelease(())));
        assert_eq!(t.expired(SystemTime::now()), vec![old]);
        assert!(t.release(old).unwrap().is_ok());
        assert!(t.release(old).is_none());
        assert_eq!(t.counts().deployments, 1);
    }
}
