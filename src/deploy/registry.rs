//! The deployments this server holds: each one's programs, maps, pins and CPU use, the
//! limits a new one must fit, and their release.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use super::*;
use crate::config::Config;
use crate::ebpf::{bpf, inventory, pins};
use crate::error::{Code, EbpfError};
use crate::resources::Release;

// ---------------------------------------------------------------- the registry

/// A loaded deployment: everything it holds is released when it is dropped.
pub(crate) struct Deployment {
    pub(crate) id: String,
    pub(crate) owner: String,
    pub(crate) created_at: SystemTime,
    pub(crate) expires_at: SystemTime,
    pub(crate) output: DeployOutput,
    pub(crate) memory: u64,
    pub(crate) pin_dir: Option<PathBuf>,
    pub(crate) ebpf: Mutex<Option<crate::ebpf::object::AgentObject>>,
    pub(crate) tracked: AtomicU64,
    pub(crate) cpu: Mutex<CpuWatch>,
}

/// What a deployment's programs cost in CPU, from the kernel's run-time statistics.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CpuWatch {
    /// run_time_ns summed over its programs at the last sample, and when it was taken.
    pub(crate) last: Option<(u64, Instant)>,
    /// CPU milliseconds per second of wall time over the last interval.
    pub(crate) ms_per_s: Option<f64>,
    pub(crate) runs: u64,
    pub(crate) run_time_ns: u64,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Deployment {
    /// Detaches and unloads everything, removes its pins. Idempotent.
    pub(crate) fn release(&self) -> Result<(), crate::resources::ReleaseError> {
        let ebpf = self.ebpf.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(ebpf);
        match &self.pin_dir {
            Some(dir) => pins::remove(dir).map_err(Into::into),
            None => Ok(()),
        }
    }

    /// Runs and run time of its programs (counted while statistics are on); `None` when a
    /// program could not be read.
    pub(crate) fn run_totals(&self) -> Option<(u64, u64)> {
        let mut totals = (0u64, 0u64);
        for id in self.output.programs.iter().filter_map(|p| p.id) {
            match bpf::prog_run_stats(id) {
                Ok((runs, ns)) => {
                    totals.0 += runs;
                    totals.1 += ns;
                }
                Err(e) => {
                    tracing::debug!(deployment = self.id, program = id, error = %e, "run statistics not read");
                    return None;
                }
            }
        }
        Some(totals)
    }

    pub(crate) fn cpu(&self) -> std::sync::MutexGuard<'_, CpuWatch> {
        self.cpu.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn released(&self) -> bool {
        self.ebpf
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }
}

pub(crate) struct DeploymentHandle(pub(crate) Arc<Deployment>);

impl Release for DeploymentHandle {
    fn release(self: Box<Self>) -> Result<(), crate::resources::ReleaseError> {
        self.0.release()
    }
}

/// Every deployment of this server.
#[derive(Debug, Default)]
pub struct Deployments {
    pub(crate) all: Mutex<HashMap<String, Arc<Deployment>>>,
    pub(crate) next: AtomicU64,
    /// Keeps the kernel's BPF run-time statistics on while deployments are watched for
    /// resources.max_cpu_time_ms.
    pub(crate) stats: Mutex<Option<OwnedFd>>,
    /// The statistics could not be turned on (said once in the log).
    pub(crate) stats_refused: AtomicBool,
}

/// Programs, maps and memory in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) programs: usize,
    pub(crate) maps: usize,
    pub(crate) memory: u64,
}

impl Deployments {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Deployment>>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets deployments released behind the registry's back (expiry, shutdown).
    pub(crate) fn purge(&self) {
        self.lock().retain(|_, d| !d.released());
    }

    pub(crate) fn usage(&self, owner: Option<&str>) -> Usage {
        self.purge();
        let mut u = Usage::default();
        for d in self.lock().values() {
            if owner.is_some_and(|o| o != d.owner) {
                continue;
            }
            u.programs += d.output.programs.len();
            u.maps += d.output.maps.len();
            u.memory += d.memory;
        }
        u
    }

    pub fn count(&self) -> usize {
        self.purge();
        self.lock().len()
    }

    /// Turns the kernel's run-time statistics on (held until [`Self::stats_off`]).
    pub(crate) fn stats_on(&self) -> bool {
        let mut held = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_some() {
            return true;
        }
        match bpf::enable_stats() {
            Ok(fd) => {
                *held = Some(fd);
                self.stats_refused.store(false, Ordering::Relaxed);
                true
            }
            Err(e) => {
                if !self.stats_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "BPF run-time statistics cannot be turned on: resources.max_cpu_time_ms is not enforced");
                }
                false
            }
        }
    }

    /// Whether this server holds the kernel's run-time statistics on.
    pub fn stats_held(&self) -> bool {
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub(crate) fn stats_off(&self) {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

pub(crate) fn check_limits(
    config: &Config,
    deployments: &Deployments,
    owner: &str,
    programs: usize,
    maps: usize,
    memory: u64,
) -> Result<(), EbpfError> {
    let r = &config.resources;
    let per = &r.per_owner;
    let mb = |b: u64| b.div_ceil(1024 * 1024);
    for (scope, used, (max_p, max_m, max_mb), keys) in [
        (
            "on this server",
            deployments.usage(None),
            (r.max_programs, r.max_maps, r.max_memory_mb),
            "resources.max_programs, max_maps, max_memory_mb",
        ),
        (
            "for this client",
            deployments.usage(Some(owner)),
            (per.max_programs, per.max_maps, per.max_memory_mb),
            "resources.per_owner",
        ),
    ] {
        let over = if used.programs + programs > max_p as usize {
            Some(format!(
                "{} programs deployed {scope} + {programs} > {max_p}",
                used.programs
            ))
        } else if used.maps + maps > max_m as usize {
            Some(format!(
                "{} maps deployed {scope} + {maps} > {max_m}",
                used.maps
            ))
        } else if mb(used.memory + memory) > u64::from(max_mb) {
            Some(format!(
                "{} MiB of maps deployed {scope} + {} MiB > {max_mb} MiB",
                mb(used.memory),
                mb(memory)
            ))
        } else {
            None
        };
        if let Some(why) = over {
            return Err(EbpfError::new(
                Code::ResourceLimit,
                format!(
                    "deploying this would exceed a limit ({why}; {keys}); undeploy something first"
                ),
            )
            .with_context("programs_in_use", used.programs)
            .with_context("maps_in_use", used.maps)
            .with_context("memory_in_use", used.memory));
        }
    }
    Ok(())
}

pub(crate) fn deployment_not_found(id: &str) -> EbpfError {
    EbpfError::new(
        Code::DeploymentNotFound,
        format!(
            "no deployment `{id}` of this client (it may have expired, been undeployed, or been released for using more CPU than resources.max_cpu_time_ms); list_deployments shows yours"
        ),
    )
    .with_context("deployment_id", id)
}

/// Programs whose links no longer act, by program id, with why (read from the kernel's
/// links: a deleted interface leaves its XDP or TC link detached).
pub(crate) fn detached_programs() -> HashMap<u32, String> {
    let Ok(ids) = inventory::ids(crate::ebpf::bpf::Object::Link) else {
        return HashMap::new();
    };
    ids.into_iter()
        .filter_map(|id| inventory::read_link(id).ok())
        .filter_map(|l| l.detached.map(|why| (l.prog_id, why)))
        .collect()
}
