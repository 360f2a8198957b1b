//! The audit log: one JSON line per tool call at `security.audit_log` — when, who (identity,
//! transport, client), which tool with which parameters (large values such as an object's
//! bytes replaced by their sha256 and size), the outcome and error code, how long it took,
//! and for deploy the validator's verdict and the loaded programs' tags. A line is written
//! before the response is sent, and for calls that change state (deploy, undeploy,
//! trace_start, trace_stop) a `begin` line before they act: they do not run when it cannot
//! be written. Lines are written whole or not at all. Deploy-tier calls fail closed when the
//! log cannot be written; other calls go on (or fail too, with
//! `security.audit_required_for_reads`). The server's own releases are retried until the
//! log takes them; refusals before a tool (HTTP 401, 429, ...) are rate-limited per kind.
//! SIGHUP reopens the file, for logrotate; a deleted file is created again.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::access::Identity;
use crate::config::Tier;

/// Parameter values longer than this are logged as their sha256 and size.
const MAX_LOGGED_VALUE: usize = 1024;

/// Who made a call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// stdio, http, unix or cli.
    pub transport: &'static str,
    /// `uid:N(name)` on stdio, the unix socket and the command line; `token:ID` on HTTP
    /// with tokens; `anonymous` on loopback HTTP without them.
    pub identity: String,
    /// The client's name from its initialize request, when it gave one.
    pub client: Option<String>,
    /// Tiers the caller may use; `None` only for in-process callers that are not users
    /// (benchmarks, examples).
    pub tiers: Option<BTreeSet<Tier>>,
}

impl Caller {
    pub fn new(transport: &'static str, identity: &Identity) -> Self {
        Self {
            transport,
            identity: identity.id.clone(),
            client: None,
            tiers: Some(identity.tiers.clone()),
        }
    }
}

/// Records of the server's own acts (expiries, CPU-limit releases) kept for a retry while
/// the log cannot be written; beyond this the oldest are dropped, and that is logged.
const MAX_PENDING: usize = 10_000;
/// Free space below which the log is reported as not writable (a record is a few hundred
/// bytes; this leaves room for a burst).
const MIN_FREE_BYTES: u64 = 64 * 1024;
/// Refusals of one kind written at most this often; the ones in between are counted into
/// the next line (`suppressed`), so a flood of refused requests cannot fill the disk.
const REFUSAL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
pub struct Audit {
    enabled: bool,
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    file: Option<File>,
    /// Why the last open or write failed, until one succeeds.
    problem: Option<String>,
    /// Server records waiting for the log to be writable again.
    pending: std::collections::VecDeque<Vec<u8>>,
    /// Server records dropped because `pending` was full.
    lost: u64,
    /// Per refusal kind: when one was last written, and how many were not since.
    refusals: std::collections::HashMap<String, (std::time::Instant, u64)>,
}

/// Why the audit log cannot take a record.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("creating {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("opening {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("statvfs {}: {source}", path.display())]
    Statvfs { path: PathBuf, source: nix::Error },
    #[error(
        "the file system of {} has {free} bytes free; records need room (free space there)",
        path.display()
    )]
    Full { path: PathBuf, free: u64 },
    #[error("the record cannot be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A record of the server's own act, kept for a retry.
    #[error("{0}; the record is kept and written when the log can take it")]
    Queued(Box<AuditError>),
}

fn open(path: &Path) -> Result<File, AuditError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| AuditError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// Appends `line` whole or not at all: after a failed or short write the file is cut back
/// to where it ended, on a line boundary, so the next record never continues a torn one.
fn write_whole(f: &mut File, line: &[u8]) -> std::io::Result<()> {
    let before = f.metadata()?.len();
    match f.write_all(line) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = f.set_len(before);
            Err(e)
        }
    }
}

impl Inner {
    /// The open file, reopened when it was deleted or never opened.
    fn file(&mut self, path: &Path) -> Result<&mut File, AuditError> {
        use std::os::unix::fs::MetadataExt;
        let deleted = self
            .file
            .as_ref()
            .is_some_and(|f| f.metadata().is_ok_and(|m| m.nlink() == 0));
        if deleted {
            self.file = None;
        }
        match &mut self.file {
            Some(f) => Ok(f),
            slot => match open(path) {
                Ok(f) => Ok(slot.insert(f)),
                Err(e) => {
                    self.problem = Some(e.to_string());
                    Err(e)
                }
            },
        }
    }

    /// Writes the server records waiting for a retry, oldest first.
    fn flush(&mut self, path: &Path) -> Result<&mut File, AuditError> {
        self.file(path)?;
        let Inner {
            file: Some(f),
            pending,
            problem,
            ..
        } = self
        else {
            unreachable!("file() opened it");
        };
        while let Some(old) = pending.front() {
            if let Err(source) = write_whole(f, old) {
                let e = AuditError::Write {
                    path: path.to_path_buf(),
                    source,
                };
                *problem = Some(e.to_string());
                return Err(e);
            }
            pending.pop_front();
        }
        Ok(f)
    }

    /// Writes the pending server records, then `line`.
    fn write(&mut self, path: &Path, line: &[u8]) -> Result<(), AuditError> {
        let f = self.flush(path)?;
        match write_whole(f, line) {
            Ok(()) => {
                self.problem = None;
                Ok(())
            }
            Err(source) => {
                let e = AuditError::Write {
                    path: path.to_path_buf(),
                    source,
                };
                self.problem = Some(e.to_string());
                Err(e)
            }
        }
    }
}

fn line_of(record: &Value) -> Result<Vec<u8>, AuditError> {
    let mut line = serde_json::to_vec(record)?;
    line.push(b'\n');
    Ok(line)
}

impl Audit {
    /// The log at `path`, opened on first use (so commands that make no tool call never
    /// create it). A log that cannot be opened is not fatal: the calls that require it
    /// refuse to run, and `problem` says why.
    pub fn new(enabled: bool, path: &Path) -> Self {
        Self {
            enabled,
            path: path.to_path_buf(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the file if it is not open yet (or was deleted); `Err` says why it cannot be.
    pub fn ensure_open(&self) -> Result<(), AuditError> {
        if !self.enabled {
            return Ok(());
        }
        self.lock().file(&self.path).map(drop)
    }

    /// Whether records can be written now: the file is there (reopened if it was deleted),
    /// its disk has room, and the server's own records waiting for a retry went out.
    /// `/ready` and the readiness gauge follow this.
    pub fn check(&self) -> Result<(), AuditError> {
        if !self.enabled {
            return Ok(());
        }
        let mut inner = self.lock();
        inner.file(&self.path)?;
        let free = nix::sys::statvfs::statvfs(&self.path)
            .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
            .map_err(|source| AuditError::Statvfs {
                path: self.path.clone(),
                source,
            })?;
        if free < MIN_FREE_BYTES {
            let e = AuditError::Full {
                path: self.path.clone(),
                free,
            };
            inner.problem = Some(e.to_string());
            return Err(e);
        }
        inner.flush(&self.path)?;
        inner.problem = None;
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Why nothing can be written, or `None` when the log is open.
    pub fn problem(&self) -> Option<String> {
        self.lock().problem.clone()
    }

    /// Closes and opens the file again (after logrotate moved it).
    pub fn reopen(&self) -> Result<(), AuditError> {
        if !self.enabled {
            return Ok(());
        }
        let mut inner = self.lock();
        inner.file = None;
        inner.file(&self.path).map(drop)
    }

    /// Appends one record as a whole JSON line.
    pub fn record(&self, record: &Value) -> Result<(), AuditError> {
        if !self.enabled {
            return Ok(());
        }
        let line = line_of(record)?;
        self.lock().write(&self.path, &line)
    }

    /// Appends a record of the server's own act; when the log cannot take it now, keeps it
    /// to write before the next record (at most [`MAX_PENDING`]). `Err` says it was queued.
    pub fn record_or_retry(&self, record: &Value) -> Result<(), AuditError> {
        if !self.enabled {
            return Ok(());
        }
        let line = line_of(record)?;
        let mut inner = self.lock();
        match inner.write(&self.path, &line) {
            Ok(()) => Ok(()),
            Err(why) => {
                inner.pending.push_back(line);
                if inner.pending.len() > MAX_PENDING {
                    inner.pending.pop_front();
                    inner.lost += 1;
                    tracing::error!(
                        lost = inner.lost,
                        "audit records of the server's own acts dropped: the log has been unwritable for too long"
                    );
                }
                Err(AuditError::Queued(Box::new(why)))
            }
        }
    }

    /// Records a request refused before it reached a tool (HTTP 401/403/408/413/429/503),
    /// at most one line per `kind` a second: the ones in between are counted into the next
    /// line's `suppressed`, so a flood of refusals cannot fill the disk.
    pub fn record_refusal(&self, kind: &str, mut record: Value) -> Result<(), AuditError> {
        if !self.enabled {
            return Ok(());
        }
        let mut inner = self.lock();
        let now = std::time::Instant::now();
        let suppressed = match inner.refusals.get_mut(kind) {
            Some((at, n)) if now.duration_since(*at) < REFUSAL_INTERVAL => {
                *n += 1;
                return Ok(());
            }
            Some((at, n)) => {
                *at = now;
                std::mem::take(n)
            }
            None => {
                inner.refusals.insert(kind.to_owned(), (now, 0));
                0
            }
        };
        if suppressed > 0 {
            record["suppressed"] = suppressed.into();
        }
        let line = line_of(&record)?;
        inner.write(&self.path, &line)
    }
}

/// A tool's parameters as the log keeps them: long strings (an object's base64) become
/// `{"sha256": ..., "bytes": ...}` of what they encode.
pub fn redact(params: &Value) -> Value {
    match params {
        Value::String(s) if s.len() > MAX_LOGGED_VALUE => {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD.decode(s.trim());
            let bytes: &[u8] = decoded.as_deref().unwrap_or(s.as_bytes());
            json!({
                "sha256": super::sha256_hex(bytes),
                "bytes": bytes.len(),
                "redacted": true,
            })
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), redact(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_replaced_by_their_hash() {
        use base64::Engine;
        let object = vec![7u8; 5000];
        let b64 = base64::engine::general_purpose::STANDARD.encode(&object);
        let r = redact(&json!({"object": b64, "ttl_seconds": 60, "attach": [{"program": "p"}]}));
        assert_eq!(r["object"]["bytes"], 5000);
        assert_eq!(r["object"]["sha256"], crate::security::sha256_hex(&object));
        assert_eq!(r["ttl_seconds"], 60);
        assert_eq!(r["attach"][0]["program"], "p");
        assert!(!r.to_string().contains(&b64[..100]));
    }

    #[test]
    fn records_are_lines_and_a_closed_log_says_why() {
        let dir = std::env::temp_dir().join(format!("audit-test-{}", std::process::id()));
        let path = dir.join("a.log");
        let audit = Audit::new(true, &path);
        audit.record(&json!({"tool": "info"})).unwrap();
        audit.record(&json!({"tool": "deploy"})).unwrap();
        std::fs::rename(&path, dir.join("a.log.1")).unwrap();
        audit.reopen().unwrap();
        audit.record(&json!({"tool": "x"})).unwrap();
        let rotated = std::fs::read_to_string(dir.join("a.log.1")).unwrap();
        assert_eq!(rotated.lines().count(), 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"tool\":\"x\"}\n"
        );
        let off = Audit::new(true, Path::new("/proc/no/such/dir/a.log"));
        assert!(off.record(&json!({})).is_err());
        assert!(
            off.problem()
                .is_some_and(|p| p.contains("/proc/no/such/dir"))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
