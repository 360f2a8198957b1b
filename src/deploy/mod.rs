//! The deploy engine: an agent's own compiled BPF object, loaded only after it passed
//! validation (security/validate.rs) and the resource limits, always with an expiry, and
//! released by `undeploy`, by expiry, by the CPU watchdog or at shutdown. Every program, map
//! and link is fd-owned: a killed server leaves nothing attached. Pins are made under the
//! server's own bpffs directory only and removed at the next start. The tools in
//! tools/deploy.rs are its adapters.

mod flow;
mod intake;
mod loader;
pub mod registry;
pub mod target;
mod types;
pub mod watchdog;

pub(crate) use flow::deploy;
pub(crate) use flow::{describe, verifier_tail};
pub(crate) use intake::object_bytes;
pub(crate) use loader::load;
pub use registry::Deployments;
pub(crate) use registry::{Deployment, DeploymentHandle, check_limits};
pub(crate) use registry::{deployment_not_found, detached_programs};
pub use types::*;

use std::path::Path;

use crate::error::{Code, EbpfError};
use crate::resources::Tracker;
use crate::security::audit::Audit;
use crate::telemetry::metrics::Metrics;

/// The server's shared state the engine reads and changes. It takes these explicitly (not
/// the server's `Core`) so that it sits below the tools and the server that call it.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    pub deployments: &'a Deployments,
    /// Every kernel object the server made (shutdown and expiry release through it).
    pub tracker: &'a Tracker,
    /// Releases the server makes on its own (CPU limit, expiry) are recorded here.
    pub audit: &'a Audit,
    pub metrics: &'a Metrics,
    /// ebpf.bpffs_dir as the server started.
    pub pins_base: &'a Path,
}

pub(crate) fn invalid(message: impl Into<String>) -> EbpfError {
    EbpfError::new(Code::InvalidArguments, message)
}
