//! What a deploy call asks for and what it answers: the object, where each program
//! attaches, and the programs and maps that were loaded.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::deploy::target::{self, Requested};

// ---------------------------------------------------------------- parameters

/// Where one program attaches. Which fields apply depends on the program's type.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachSpec {
    /// The program (its function name in the object).
    pub program: String,
    /// tracepoint: `category:name` (default: from the section, `tracepoint/category/name`).
    #[serde(default)]
    pub tracepoint: Option<String>,
    /// raw_tp: the tracepoint name (default: from the section, `raw_tp/name`).
    #[serde(default)]
    pub raw_tp: Option<String>,
    /// uprobe: `binary:symbol`.
    #[serde(default)]
    pub target: Option<String>,
    /// uprobe: only in this process.
    #[serde(default)]
    pub pid: Option<u32>,
    /// xdp, tc: the network interface.
    #[serde(default)]
    pub interface: Option<String>,
    /// tc: ingress (default) or egress.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// cgroup_skb: a cgroup v2 directory.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// perf_event: samples per second on every CPU (cpu-clock).
    #[serde(default)]
    pub frequency_hz: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// Arguments of `deploy`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployParams {
    /// The compiled object (`clang -target bpf -O2 -g -c`), base64. Or give `path`.
    #[serde(default)]
    pub object: Option<String>,
    /// An object file on the server, under tools.deploy.allowed_dirs.
    #[serde(default)]
    pub path: Option<String>,
    /// Programs to load (default: all of them).
    #[serde(default)]
    pub programs: Option<Vec<String>>,
    /// Where programs attach; needed for xdp, tc, uprobe, cgroup_skb and perf_event, and
    /// to override a tracepoint section.
    #[serde(default)]
    pub attach: Option<Vec<AttachSpec>>,
    /// Lifetime (default tools.deploy.default_ttl, at most tools.deploy.max_ttl).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Only run the kernel verifier: load, report, unload; attach nothing.
    #[serde(default)]
    pub verify_only: bool,
    /// Pin the maps under the server's bpffs directory (ebpf.bpffs_dir/<deployment_id>/).
    #[serde(default)]
    pub pin: bool,
}

// ---------------------------------------------------------------- results

/// One program of a deployment.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeployedProgram {
    pub name: String,
    /// Program type (policy terms: tracepoint, xdp, tc, ...).
    #[serde(rename = "type")]
    pub kind: String,
    pub section: String,
    /// Kernel program id (absent for verify_only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Where it is attached (`tracepoint:syscalls:sys_enter_getpid`, `xdp:veth0`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_to: Option<String>,
    /// Instructions in the object.
    pub instructions: usize,
    /// Instructions the verifier processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_insns: Option<u32>,
    pub helpers: Vec<String>,
    /// list_deployments: why it no longer acts although it is still loaded (its interface
    /// was deleted, ...); absent while it is attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detached: Option<String>,
}

/// One map of a deployment.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeployedMap {
    pub name: String,
    /// Kernel map id (for map_dump and map_lookup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    #[serde(rename = "type")]
    pub map_type: String,
    pub max_entries: u32,
    /// Memory the kernel charges for it (estimated before loading).
    pub bytes: u64,
    /// Where it is pinned, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_at: Option<String>,
}

/// Result of `deploy`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeployOutput {
    /// deployed; or, with verify_only, accepted or rejected (by the kernel verifier).
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    pub programs: Vec<DeployedProgram>,
    pub maps: Vec<DeployedMap>,
    /// When the deployment is released by itself (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// sha256 of the object as received.
    pub object_sha256: String,
    pub object_bytes: usize,
    /// verify_only: the end of the verifier's log when it rejected a program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifier_log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl AttachSpec {
    pub(crate) fn requested(&self) -> Requested {
        Requested {
            tracepoint: self.tracepoint.clone(),
            raw_tp: self.raw_tp.clone(),
            target: self.target.clone(),
            pid: self.pid,
            interface: self.interface.clone(),
            direction: self.direction.map(|d| match d {
                Direction::Ingress => target::Direction::Ingress,
                Direction::Egress => target::Direction::Egress,
            }),
            cgroup: self.cgroup.clone(),
            frequency_hz: self.frequency_hz,
        }
    }
}
