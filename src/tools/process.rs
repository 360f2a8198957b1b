//! `process_info`: one process as /proc shows it now — name, executable, command line, the
//! chain of parents, ids, cgroup and container — so that a pid seen in an event can be
//! turned into "what is that" in one call.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::config::Tier;
use crate::core::Core;
use crate::ebpf::process;
use crate::error::{Code, EbpfError};

const DEFAULT_ANCESTORS: u32 = 8;
const MAX_ANCESTORS: u32 = 32;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessInfoParams {
    /// Thread group id (a `pid` or `ppid` of trace events).
    pub pid: u32,
    /// Parents to follow (default 8, at most 32).
    #[serde(default)]
    pub ancestors: Option<u32>,
}

/// One parent in the chain.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Ancestor {
    pub pid: u32,
    pub comm: String,
    /// Its command line, arguments joined by spaces (bounded).
    pub cmdline: String,
}

/// The container a process runs in, read from its cgroup path.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContainerInfo {
    /// 64 hex digits.
    pub id: String,
    /// The runtime whose cgroup layout named it: docker, containerd, cri-o, podman, unknown.
    pub runtime: String,
    /// Kubernetes: the pod's UID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

impl From<process::Container> for ContainerInfo {
    fn from(c: process::Container) -> Self {
        ContainerInfo {
            id: c.id,
            runtime: c.runtime.to_owned(),
            pod_uid: c.pod_uid,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProcessInfoOutput {
    pub pid: u32,
    pub comm: String,
    /// R running, S sleeping, D disk sleep, T stopped, Z zombie, I idle (kernel thread).
    pub state: String,
    /// The executable (absent for kernel threads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Its arguments: at most 64, 256 bytes each, 4096 in all.
    pub cmdline: Vec<String>,
    /// The command line was longer than what is returned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cmdline_truncated: bool,
    pub ppid: u32,
    /// Parents, nearest first, up to `ancestors` (or pid 1).
    pub ancestors: Vec<Ancestor>,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    pub threads: u32,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its cgroup path (v2; else the most specific v1 path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerInfo>,
}

pub fn spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "process_info",
            title: "Describe a process",
            description: "One process by pid as /proc shows it now: name, state, executable, \
                command line, parents (names, command lines), ids, threads, start time, cgroup \
                and container (id, runtime, pod UID). For pids seen in trace events.",
            tier: Tier::Read,
            hints: Hints::READ_ONLY,
            list_field: None,
        },
        run,
    )
}

fn not_found(pid: u32) -> EbpfError {
    EbpfError::new(
        Code::ProcessNotFound,
        format!(
            "no process {pid} is running (it may have exited since the event that named it); \
             give the pid of a live process (thread group id)"
        ),
    )
    .with_context("pid", pid)
}

fn run(
    _core: &Core,
    p: ProcessInfoParams,
    _ctx: &CallContext,
) -> Result<ProcessInfoOutput, EbpfError> {
    let wanted = p.ancestors.unwrap_or(DEFAULT_ANCESTORS);
    if wanted > MAX_ANCESTORS {
        return Err(EbpfError::new(
            Code::InvalidArguments,
            format!("`ancestors` is at most {MAX_ANCESTORS}"),
        ));
    }
    if p.pid == 0 {
        return Err(not_found(0));
    }
    let me = process::read(p.pid).ok_or_else(|| not_found(p.pid))?;
    let (cmdline, cmdline_truncated) = process::cmdline(p.pid);
    let mut ancestors = Vec::new();
    let mut next = me.ppid;
    while next != 0 && ancestors.len() < wanted as usize {
        let Some(parent) = process::read(next) else {
            break;
        };
        ancestors.push(Ancestor {
            pid: parent.pid,
            comm: parent.comm.clone(),
            cmdline: process::cmdline(parent.pid).0.join(" "),
        });
        next = parent.ppid;
    }
    let (cgroup, container) = process::cgroup(p.pid);
    let container = container.map(ContainerInfo::from);
    Ok(ProcessInfoOutput {
        pid: me.pid,
        comm: me.comm,
        state: me.state,
        exe: process::exe(p.pid),
        cmdline,
        cmdline_truncated,
        ppid: me.ppid,
        ancestors,
        uid: me.uid.0,
        euid: me.uid.1,
        gid: me.gid.0,
        egid: me.gid.1,
        threads: me.threads,
        started_at: crate::time::rfc3339_seconds(me.started),
        cgroup,
        container,
    })
}
