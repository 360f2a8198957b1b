//! The state every request shares: configuration, where it came from, the tracker of kernel
//! objects the server created, and when the process started.

use std::time::SystemTime;

use crate::config::{Config, ConfigSource};
use crate::resources::Tracker;
use crate::security::Tier;
use crate::tools::{self, ToolSpec};

#[derive(Debug)]
pub struct Core {
    pub config: Config,
    pub config_source: ConfigSource,
    /// Keys the configuration file sets whose feature this version does not implement.
    pub reserved_keys: Vec<&'static str>,
    pub tracker: Tracker,
    /// Background trace sessions (trace_start).
    pub sessions: crate::tools::sessions::Sessions,
    /// Agents' own objects (deploy).
    pub deployments: crate::tools::deploy::Deployments,
    /// `trace` calls running now (bounded by tools.trace.max_concurrent).
    pub active_traces: std::sync::atomic::AtomicU32,
    /// One line per tool call (security.audit_log).
    pub audit: crate::security::audit::Audit,
    pub started_at: SystemTime,
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
            config,
            config_source,
            reserved_keys,
            tracker: Tracker::default(),
            sessions: Default::default(),
            deployments: Default::default(),
            active_traces: Default::default(),
            started_at: SystemTime::now(),
        }
    }

    /// Tiers this configuration enables, in order.
    pub fn enabled_tiers(&self) -> Vec<Tier> {
        Tier::ALL
            .into_iter()
            .filter(|t| t.enabled(&self.config))
            .collect()
    }

    /// Tools of the enabled tiers, in registry order.
    pub fn enabled_tools(&self) -> impl Iterator<Item = &'static ToolSpec> + '_ {
        tools::registry()
            .all()
            .iter()
            .filter(|t| t.enabled(&self.config))
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
        let pins = crate::ebpf::pins::server_dir(&self.config.ebpf.bpffs_dir);
        if let Err(e) = crate::ebpf::pins::remove(&pins) {
            tracing::error!(error = %e, "pins not removed at shutdown");
        }
    }
}
