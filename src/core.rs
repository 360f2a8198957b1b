//! The state every request shares: configuration, where it came from, the tracker of kernel
//! objects the server created, and when the process started.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::config::{Config, ConfigSource};
use crate::resources::Tracker;
use crate::security::access::Tokens;

#[derive(Debug)]
pub struct Core {
    /// The configuration in effect; a reload swaps it whole (see [`Core::config`]).
    config: RwLock<Arc<Config>>,
    pub config_source: ConfigSource,
    /// Keys the configuration file sets whose feature this version does not implement.
    pub reserved_keys: Vec<&'static str>,
    pub tracker: Tracker,
    /// Background trace sessions (trace_start).
    pub sessions: crate::trace::sessions::Sessions,
    /// Agents' own objects (deploy).
    pub deployments: crate::deploy::Deployments,
    /// `trace` calls running now (bounded by tools.trace.max_concurrent).
    pub active_traces: std::sync::atomic::AtomicU32,
    /// One line per tool call (security.audit_log).
    pub audit: crate::security::audit::Audit,
    pub started_at: SystemTime,
    /// ebpf.bpffs_dir as the server started (pins stay where they were made).
    pub pins_base: PathBuf,
    /// What the sandbox put in force (set once, before serving).
    pub sandbox: std::sync::OnceLock<crate::security::sandbox::SandboxReport>,
    /// Prometheus metrics (observability.metrics).
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// HTTP bearer tokens (security.access_control.tokens_file), when configured.
    tokens: RwLock<Option<Arc<Tokens>>>,
    /// Bumped when a reload may have changed which tools clients see; every session tells
    /// its client (`notifications/tools/list_changed`).
    tool_list: tokio::sync::watch::Sender<u64>,
}

impl Core {
    pub fn new(
        config: Config,
        config_source: ConfigSource,
        reserved_keys: Vec<&'static str>,
    ) -> Self {
        Self {
            audit: crate::security::audit::Audit::new(
                config.security.enable_audit,
                &config.security.audit_log,
            ),
            pins_base: config.ebpf.bpffs_dir.clone(),
            config: RwLock::new(Arc::new(config)),
            config_source,
            reserved_keys,
            tracker: Tracker::default(),
            sessions: Default::default(),
            deployments: Default::default(),
            active_traces: Default::default(),
            started_at: SystemTime::now(),
            tokens: RwLock::new(None),
            tool_list: tokio::sync::watch::Sender::new(0),
            metrics: Default::default(),
            sandbox: std::sync::OnceLock::new(),
        }
    }

    /// The configuration in effect now. Callers hold the returned snapshot for the whole
    /// of one piece of work, so a reload never mixes old and new values inside it.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts `config` in effect for every call that starts from now on.
    pub fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// The tokens HTTP requests are checked against; `None`: no tokens file configured.
    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_tokens(&self, tokens: Option<Tokens>) {
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = tokens.map(Arc::new);
    }

    /// Tells every session that the tools its client may see could have changed.
    pub fn tool_list_changed(&self) {
        self.tool_list.send_modify(|generation| *generation += 1);
    }

    /// Wakes on each [`Core::tool_list_changed`] after this call.
    pub fn watch_tool_list(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tool_list.subscribe()
    }

    /// What the deploy engine works with.
    pub fn deploy_env(&self) -> crate::deploy::Env<'_> {
        crate::deploy::Env {
            deployments: &self.deployments,
            tracker: &self.tracker,
            audit: &self.audit,
            metrics: &self.metrics,
            pins_base: &self.pins_base,
        }
    }

    /// Releases every kernel object the server created; logs what could not be released.
    pub fn shutdown(&self) {
        let report = self.tracker.release_all();
        for failure in &report.failures {
            tracing::error!(%failure, "kernel object not released at shutdown");
        }
        tracing::info!(
            released = report.released,
            failed = report.failures.len(),
            "released server-created kernel objects"
        );
        let pins = crate::ebpf::pins::server_dir(&self.pins_base);
        if let Err(e) = crate::ebpf::pins::remove(&pins) {
            tracing::error!(error = %e, "pins not removed at shutdown");
        }
    }
}
