//! The audit log: one JSON line per tool call at `security.audit_log` — when, who (identity,
//! transport, client), which tool with which parameters (large values such as an object's
//! bytes replaced by their sha256 and size), the outcome and error code, how long it took,
//! and for deploy the validator's verdict and the loaded programs' tags. A line is written
//! before the response is sent. Deploy-tier calls fail closed when the log cannot be
//! written; other calls go on (or fail too, with `security.audit_required_for_reads`).
//! SIGHUP reopens the file, for logrotate.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::Tier;
use super::access::Identity;

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

#[derive(Debug)]
pub struct Audit {
    enabled: bool,
    path: PathBuf,
    file: Mutex<Option<File>>,
    /// Why the file is not open, when it is not.
    problem: Mutex<Option<String>>,
}

fn open(path: &Path) -> Result<File, String> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

impl Audit {
    /// The log at `path`, opened on first use (so commands that make no tool call never
    /// create it). A log that cannot be opened is not fatal: the calls that require it
    /// refuse to run, and `problem` says why.
    pub fn new(enabled: bool, path: &Path) -> Self {
        Self {
            enabled,
            path: path.to_path_buf(),
            file: Mutex::new(None),
            problem: Mutex::new(None),
        }
    }

    /// Opens the file if it is not open yet; `Err` says why it cannot be.
    pub fn ensure_open(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_some() {
            return Ok(());
        }
        self.open_into(&mut file)
    }

    /// Opens the file into `file` (whose lock the caller holds), recording why not.
    fn open_into(&self, file: &mut Option<File>) -> Result<(), String> {
        let mut problem = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        match open(&self.path) {
            Ok(f) => {
                *file = Some(f);
                *problem = None;
                Ok(())
            }
            Err(e) => {
                *file = None;
                *problem = Some(e.clone());
                Err(e)
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Why nothing can be written, or `None` when the log is open.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Closes and opens the file again (after logrotate moved it).
    pub fn reopen(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        self.open_into(&mut file)
    }

    /// Appends one record as a JSON line.
    pub fn record(&self, record: &Value) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        self.ensure_open()?;
        let mut line = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = file.as_mut() else {
            return Err(self
                .problem()
                .unwrap_or_else(|| "the audit log is not open".into()));
        };
        // One write per line, append mode: lines of concurrent calls never interleave.
        f.write_all(&line).map_err(|e| {
            let why = format!("writing {}: {e}", self.path.display());
            *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
            why
        })
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
