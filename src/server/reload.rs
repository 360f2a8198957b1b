//! Configuration hot reload: on SIGHUP, and when the configuration or tokens file changes
//! (checked every two seconds), the file is parsed and validated and, if sound, swapped in
//! whole; calls already running finish with the snapshot they started with. A file that
//! does not load leaves the running configuration in effect, logged with its key and line
//! and counted in `ebpf_mcp_config_reloads_total{outcome="failed"}`.
//!
//! Keys fixed at start (listeners, TLS, the audit file, the pin directory, logging, the
//! observability listener, the cleanup interval) keep their running value after a reload
//! that changes them; the server logs that they need a restart.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Tier;
use crate::config::{AccessControlConfig, Config, ConfigSource};
use crate::core::Core;
use crate::security::access;

/// Copies the values that only a restart can change from `running` into `new`; returns the
/// keys `new` wanted to change.
pub fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $key:literal) => {
            if new.$($field).+ != running.$($field).+ {
                new.$($field).+ = running.$($field).+.clone();
                kept.push($key);
            }
        };
    }
    keep!(server.bind_address, "server.bind_address");
    keep!(server.allowed_hosts, "server.allowed_hosts");
    keep!(server.allowed_origins, "server.allowed_origins");
    keep!(server.max_request_bytes, "server.max_request_bytes");
    keep!(server.tls, "server.tls");
    keep!(security.enable_audit, "security.enable_audit");
    keep!(security.audit_log, "security.audit_log");
    keep!(security.enable_sandboxing, "security.enable_sandboxing");
    keep!(security.enable_landlock, "security.enable_landlock");
    keep!(resources.cleanup_interval, "resources.cleanup_interval");
    keep!(ebpf, "ebpf");
    keep!(observability, "observability");
    kept
}

/// The trigger of a reload an operator asked for.
pub const SIGHUP: &str = "SIGHUP";

/// Re-reads the configuration file (if the server has one) and the tokens file.
pub fn reload(core: &Core, why: &str) {
    if let ConfigSource::File(path) = &core.config_source {
        match Config::load(Some(path)) {
            Ok((mut new, _)) => {
                let running = core.config();
                let kept = keep_restart_only(&running, &mut new);
                let changed = *running != new;
                let tools_changed = tool_view(&running) != tool_view(&new);
                core.set_config(new);
                if tools_changed {
                    core.tool_list_changed();
                }
                core.metrics.reload(true);
                if changed {
                    tracing::info!(file = %path.display(), trigger = why, "configuration reloaded");
                } else if why == SIGHUP {
                    // Whoever sent it gets an answer, even when the file watcher was first.
                    tracing::info!(file = %path.display(), trigger = why, "configuration unchanged");
                } else {
                    tracing::debug!(file = %path.display(), trigger = why, "configuration unchanged");
                }
                if !kept.is_empty() {
                    tracing::warn!(
                        keys = ?kept,
                        "these keys changed but apply only at start: restart the server for them \
                         (their running values stay in effect)"
                    );
                }
            }
            Err(e) => {
                core.metrics.reload(false);
                tracing::error!(
                    trigger = why,
                    "configuration not reloaded, the running one stays: {e}"
                );
            }
        }
    }
    reload_tokens(core);
}

/// What decides which tools a client sees: the enabled tiers, and who gets which.
fn tool_view(config: &Config) -> (Vec<Tier>, &AccessControlConfig) {
    (Tier::enabled_in(config), &config.security.access_control)
}

/// Re-reads the tokens file of an HTTP server; a file that does not load leaves the tokens
/// in effect as they were.
pub fn reload_tokens(core: &Core) {
    if core.tokens().is_none() {
        return;
    }
    let Some(path) = core.config().security.access_control.tokens_file.clone() else {
        tracing::warn!(
            "security.access_control.tokens_file was removed: the tokens loaded at start stay \
             in effect (a server with tokens never becomes open); restart to serve without them"
        );
        return;
    };
    match access::Tokens::load(&path) {
        Ok(tokens) => {
            tracing::info!(tokens = tokens.len(), file = %path.display(), "tokens reloaded");
            let grants_changed = core
                .tokens()
                .is_none_or(|running| running.grants() != tokens.grants());
            core.set_tokens(Some(tokens));
            if grants_changed {
                core.tool_list_changed();
            }
        }
        Err(e) => {
            core.metrics.reload(false);
            tracing::error!(error = %e, "tokens file not reloaded; the previous tokens stay in effect");
        }
    }
}

/// What identifies a version of a file: modification time, size, inode (an editor that
/// writes a new file and renames it changes the inode).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stamp(Option<(SystemTime, u64, u64)>);

impl Stamp {
    pub fn of(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self(
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino()))),
        )
    }
}

/// The files whose changes trigger a reload.
pub fn watched(core: &Core) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let ConfigSource::File(path) = &core.config_source {
        files.push(path.clone());
    }
    if core.tokens().is_some()
        && let Some(path) = &core.config().security.access_control.tokens_file
    {
        files.push(path.clone());
    }
    files
}
