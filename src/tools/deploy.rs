//! `deploy`, `undeploy`, `list_deployments`: the tools of the deploy engine
//! (`crate::deploy`), which validates, loads, attaches and releases agents' objects.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::config::Tier;
use crate::core::Core;
use crate::deploy::{DeployedMap, DeployedProgram, deployment_not_found, detached_programs};
use crate::error::{Code, EbpfError};

pub fn deploy_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "deploy",
            title: "Load your own BPF program",
            description: "Load a compiled BPF object (base64 `object`, or `path` under \
                tools.deploy.allowed_dirs) after the server validates it: program types, \
                helpers, kernel symbols, instruction count, maps and attach points against \
                policy, every violation reported with a code. Attaches per `attach`, expires \
                after `ttl_seconds`; returns the deployment_id, program and map ids (map_dump \
                reads the maps). `verify_only` runs the kernel verifier and unloads.",
            tier: Tier::Deploy,
            hints: Hints {
                read_only: false,
                destructive: true,
                idempotent: false,
            },
            list_field: Some("programs"),
        },
        |core, p, ctx| crate::deploy::deploy(&core.deploy_env(), p, ctx),
    )
}

// ---------------------------------------------------------------- undeploy

/// Arguments of `undeploy`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UndeployParams {
    /// From deploy or list_deployments.
    pub deployment_id: String,
}

/// Result of `undeploy`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UndeployOutput {
    pub deployment_id: String,
    /// Programs detached and unloaded.
    pub programs: Vec<String>,
    /// Maps freed (and unpinned).
    pub maps: Vec<String>,
    /// How long it was deployed.
    pub age_seconds: u64,
}

pub fn undeploy_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "undeploy",
            title: "Unload a deployment",
            description: "Detach and unload every program of a deployment, free its maps and \
                remove its pins, now rather than at its expiry.",
            tier: Tier::Deploy,
            hints: Hints {
                read_only: false,
                destructive: true,
                idempotent: false,
            },
            list_field: None,
        },
        undeploy,
    )
}

fn undeploy(
    core: &Core,
    p: UndeployParams,
    ctx: &CallContext,
) -> Result<UndeployOutput, EbpfError> {
    core.deployments.purge();
    let found = core
        .deployments
        .lock()
        .get(&p.deployment_id)
        .filter(|d| d.owner == ctx.owner)
        .cloned();
    let Some(d) = found else {
        return Err(deployment_not_found(&p.deployment_id));
    };
    let released = core.tracker.release(d.tracked.load(Ordering::Relaxed));
    let result = match released {
        Some(r) => r,
        None => d.release(),
    };
    core.deployments.lock().remove(&d.id);
    result.map_err(|e| EbpfError::new(Code::ReleaseFailed, e.to_string()))?;
    Ok(UndeployOutput {
        deployment_id: d.id.clone(),
        programs: d.output.programs.iter().map(|p| p.name.clone()).collect(),
        maps: d.output.maps.iter().map(|m| m.name.clone()).collect(),
        age_seconds: d.created_at.elapsed().map_or(0, |a| a.as_secs()),
    })
}

// ---------------------------------------------------------------- list_deployments

/// Arguments of `list_deployments`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Everyone's deployments, not only this client's.
    #[serde(default)]
    pub all: bool,
    /// Only this deployment (an error when it is not there: expired, undeployed, or another
    /// client's without `all`).
    pub deployment_id: Option<String>,
}

/// One deployment.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeploymentRow {
    pub deployment_id: String,
    pub owner: String,
    pub created_at: String,
    pub age_seconds: u64,
    pub expires_at: String,
    pub expires_in_seconds: u64,
    pub programs: Vec<DeployedProgram>,
    pub maps: Vec<DeployedMap>,
    /// Memory of its maps, in bytes.
    pub memory_bytes: u64,
    /// What its programs cost in CPU, measured every second while resources.max_cpu_time_ms
    /// is on (absent before the first measurement).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<DeploymentCpu>,
}

/// CPU use of a deployment's programs, from the kernel's BPF run-time statistics.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeploymentCpu {
    /// CPU milliseconds per second over the last measured second (all CPUs together;
    /// 1000 is one CPU's worth). Over resources.max_cpu_time_ms, the deployment is released.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms_per_s: Option<f64>,
    /// The limit in effect.
    pub max_ms_per_s: u32,
    /// Runs of its programs counted so far.
    pub runs: u64,
    /// Their run time so far, in milliseconds.
    pub run_time_ms: f64,
}

/// Result of `list_deployments`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    pub deployments: Vec<DeploymentRow>,
}

pub fn list_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "list_deployments",
            title: "List deployments",
            description: "Deployments of this client (`all: true`: everyone's; \
                `deployment_id`: just that one): owner, age, expiry, programs with ids and attach \
                points, maps with ids, memory, and the CPU its programs use.",
            tier: Tier::Deploy,
            hints: Hints::READ_ONLY,
            list_field: Some("deployments"),
        },
        list,
    )
}

fn list(core: &Core, p: ListParams, ctx: &CallContext) -> Result<ListOutput, EbpfError> {
    core.deployments.purge();
    let limit = ctx.config.resources.max_cpu_time_ms;
    let detached = detached_programs();
    let mut rows: Vec<DeploymentRow> = core
        .deployments
        .lock()
        .values()
        .filter(|d| p.all || d.owner == ctx.owner)
        .filter(|d| p.deployment_id.as_ref().is_none_or(|id| *id == d.id))
        .map(|d| DeploymentRow {
            deployment_id: d.id.clone(),
            owner: d.owner.clone(),
            created_at: crate::time::rfc3339_seconds(d.created_at),
            age_seconds: d.created_at.elapsed().map_or(0, |a| a.as_secs()),
            expires_at: crate::time::rfc3339_seconds(d.expires_at),
            expires_in_seconds: d
                .expires_at
                .duration_since(SystemTime::now())
                .map_or(0, |r| r.as_secs()),
            programs: d
                .output
                .programs
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    p.detached = p.id.and_then(|id| detached.get(&id).cloned());
                    p
                })
                .collect(),
            maps: d.output.maps.clone(),
            memory_bytes: d.memory,
            cpu: {
                let cpu = *d.cpu();
                cpu.last.map(|_| DeploymentCpu {
                    ms_per_s: cpu.ms_per_s.map(|r| (r * 100.0).round() / 100.0),
                    max_ms_per_s: limit,
                    runs: cpu.runs,
                    run_time_ms: (cpu.run_time_ns as f64 / 1e4).round() / 100.0,
                })
            },
        })
        .collect();
    rows.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then(a.deployment_id.cmp(&b.deployment_id))
    });
    if let (Some(id), true) = (&p.deployment_id, rows.is_empty()) {
        return Err(deployment_not_found(id));
    }
    Ok(ListOutput { deployments: rows })
}
