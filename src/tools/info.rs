//! `info`: what this host's kernel lets eBPF do (facts and real probes) and how this server
//! is set up. The first call an agent should make.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::config::LogLevel;
use crate::config::Tier;
use crate::core::Core;
use crate::ebpf::caps::{CapSet, Needed};
use crate::ebpf::gadget::Hook;
use crate::ebpf::host::{self, KernelFacts};
use crate::ebpf::probe::{self, Features, Status};
use crate::ebpf::tracefs;
use crate::error::{Code, EbpfError};
use crate::gadgets::{self, Field};
use crate::resources::Counts;
use crate::trace::{self, Mode};

/// Arguments of `info`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfoParams {
    /// Probe again instead of using cached probes.
    #[serde(default)]
    pub refresh: bool,
    /// Details besides the summary.
    #[serde(default)]
    pub sections: Vec<Section>,
}

// A part of `info` given in full when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Kernel,
    Features,
    Server,
    Gadgets,
    All,
}

/// Result of `info`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct InfoOutput {
    /// The essentials, in a few hundred bytes.
    pub summary: Summary,
    /// section kernel: the running kernel, from /proc and /sys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelFacts>,
    /// section features: every probe with its reason; absent when the server lacks the
    /// capabilities to probe (see `problems`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// section server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerFacts>,
    /// section gadgets: what each reports, where it attaches, its fields, and whether this
    /// kernel supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gadgets: Option<Vec<GadgetFacts>>,
    /// section gadgets: fields every event of an event gadget starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gadget_common_fields: Option<Vec<Field>>,
    /// What limits this server on this host, each with how to fix it.
    pub problems: Vec<EbpfError>,
    /// How to get the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// What an agent needs first: the kernel, what works, the server, the gadgets.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Summary {
    /// Release and architecture.
    pub kernel: String,
    /// none, integrity or confidentiality.
    pub lockdown: String,
    /// vmlinux BTF is there (CO-RE, typed map dumps).
    pub btf: bool,
    pub jit: bool,
    /// Probed attach kinds (absent without the capabilities to probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<Availability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_types: Option<Availability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_types: Option<Availability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helpers: Option<Availability>,
    /// Server version, pid and uptime.
    pub server: String,
    /// Enabled tiers.
    pub tiers: Vec<Tier>,
    /// The container the server runs in: `ID (runtime)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The pod and node, in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesFacts>,
    /// Kernel objects this server holds and background sessions, when any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holding: Vec<String>,
    /// Gadgets that load here.
    pub gadgets: Vec<String>,
    /// Gadgets that do not, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gadgets_unsupported: Vec<Unsupported>,
}

/// Which of a kind of feature work: how many do, and the names of those that do not (the
/// features section says why).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Availability {
    pub available: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Unsupported {
    pub name: String,
    pub reason: String,
}

/// This server process.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ServerFacts {
    pub name: String,
    pub version: String,
    /// Process id of the server.
    pub pid: u32,
    /// When the server started (RFC 3339).
    pub started_at: String,
    pub uptime_seconds: u64,
    /// The configuration file, or "built-in defaults".
    pub config_source: String,
    /// Configuration keys set in the file whose feature this version does not implement.
    pub config_keys_not_in_effect: Vec<String>,
    pub tiers: Vec<TierFacts>,
    pub limits: Limits,
    /// Kernel objects this server created and still holds.
    pub live_objects: Counts,
    /// Background trace sessions (trace_start).
    pub trace_sessions: Vec<crate::trace::sessions::SessionInfo>,
    /// The confinement in force (absent for the command line, which is not sandboxed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::security::sandbox::SandboxReport>,
    /// The container the server runs in (absent on the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<super::process::ContainerInfo>,
    /// Where the server runs when it is a Kubernetes pod (the downward API's NODE_NAME,
    /// POD_NAME, POD_NAMESPACE and the cluster's CLUSTER_NAME, as deploy/kubernetes sets them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesFacts>,
}

/// The pod this server runs in.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct KubernetesFacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

impl KubernetesFacts {
    /// From the environment; `None` outside a pod (no NODE_NAME or POD_NAME).
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let facts = Self {
            node: var("NODE_NAME"),
            pod: var("POD_NAME"),
            namespace: var("POD_NAMESPACE"),
            cluster: var("CLUSTER_NAME"),
        };
        (facts.node.is_some() || facts.pod.is_some()).then_some(facts)
    }
}

/// A gadget of `trace`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GadgetFacts {
    pub name: String,
    pub summary: String,
    /// Where it attaches (`category:name`, `raw_tp:name`, or what the call names).
    pub hooks: Vec<String>,
    /// Modes it offers, the default first.
    pub modes: Vec<Mode>,
    /// Its hooks exist here and the attach kinds it needs passed the probes.
    pub supported: bool,
    /// Why not, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its own fields (events also carry `gadget_common_fields`).
    pub fields: Vec<Field>,
}

/// A tier of tools and whether this configuration enables it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TierFacts {
    pub tier: Tier,
    /// Its tools are listed and callable.
    pub enabled: bool,
    /// The tier's tools (listed to clients only when enabled).
    pub tools: Vec<String>,
    /// The configuration key that turns the tier on or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_key: Option<String>,
}

/// Limits in effect for every call.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Limits {
    /// server.request_timeout.
    pub request_timeout_ms: u64,
    /// server.max_result_bytes.
    pub max_result_bytes: u64,
}

pub fn spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "info",
            title: "Host eBPF capabilities",
            description: "What eBPF can do here: kernel, lockdown, BTF, which program types, \
                attach kinds, maps, helpers and gadgets really work (probed), and this server. \
                A summary unless `sections` asks for more. Call it first; `problems` says what \
                is missing and how to fix it.",
            tier: Tier::Read,
            hints: Hints::READ_ONLY,
            list_field: None,
        },
        run,
    )
}

fn run(core: &Core, params: InfoParams, ctx: &CallContext) -> Result<InfoOutput, EbpfError> {
    ctx.progress(0.0, Some(2.0), "reading kernel facts");
    let mut kernel = host::kernel_facts();
    // A BPF_ENABLE_STATS hold (this server watching deployments' CPU) counts run time too,
    // though the sysctl does not show it.
    kernel.bpf_stats_enabled |= core.deployments.stats_held();
    let mut problems = Vec::new();
    let setup = host::setup();
    for p in &setup.mount_problems {
        problems.push(EbpfError::new(Code::FilesystemNotMounted, p.clone()));
    }
    let caps = CapSet::current().map_err(|e| {
        EbpfError::internal(format!("cannot read this process's capabilities: {e}"))
    })?;
    let features = match caps.require(&[Needed::Bpf, Needed::Perfmon]) {
        Ok(()) => {
            // What the operator requires beyond these (CAP_NET_ADMIN for XDP, ...).
            if let Err(e) =
                caps.require_named(&ctx.config.security.access_control.required_capabilities)
            {
                problems.push(e);
            }
            ctx.progress(1.0, Some(2.0), "probing kernel eBPF features");
            if params.refresh || !probe::is_cached() {
                ctx.log(
                    LogLevel::Info,
                    "probing kernel eBPF features by loading tiny programs (cached afterwards)",
                );
            }
            Some((*probe::features(&kernel, params.refresh, &gadget_checks())).clone())
        }
        Err(e) => {
            ctx.log(LogLevel::Warn, e.message.clone());
            problems.push(e);
            None
        }
    };
    ctx.progress(2.0, Some(2.0), "done");
    let wants =
        |s: Section| params.sections.contains(&s) || params.sections.contains(&Section::All);
    let gadgets = gadget_facts(features.as_ref());
    let server = server_facts(core, &ctx.config);
    let summary = summarize(&kernel, features.as_ref(), &server, &gadgets);
    let all = [
        Section::Kernel,
        Section::Features,
        Section::Server,
        Section::Gadgets,
    ];
    let rest: Vec<&str> = all
        .iter()
        .filter(|s| !wants(**s))
        .map(|s| section_name(*s))
        .collect();
    Ok(InfoOutput {
        summary,
        kernel: wants(Section::Kernel).then_some(kernel),
        features: features.filter(|_| wants(Section::Features)),
        server: wants(Section::Server).then_some(server),
        gadget_common_fields: wants(Section::Gadgets).then(|| gadgets::COMMON_FIELDS.to_vec()),
        gadgets: wants(Section::Gadgets).then_some(gadgets),
        problems,
        hint: (!rest.is_empty()).then(|| {
            format!(
                "details: `sections` [{}] (or [\"all\"]); each gadget's fields: section \
                 gadgets, or the ebpf://gadgets resource",
                rest.iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
    })
}

fn section_name(s: Section) -> &'static str {
    match s {
        Section::Kernel => "kernel",
        Section::Features => "features",
        Section::Server => "server",
        Section::Gadgets => "gadgets",
        Section::All => "all",
    }
}

fn availability(probes: &std::collections::BTreeMap<String, probe::Support>) -> Availability {
    Availability {
        available: probes
            .values()
            .filter(|s| s.status == Status::Available)
            .count(),
        unavailable: probes
            .iter()
            .filter(|(_, s)| s.status != Status::Available)
            .map(|(name, _)| name.clone())
            .collect(),
    }
}

fn summarize(
    kernel: &KernelFacts,
    features: Option<&Features>,
    server: &ServerFacts,
    gadgets: &[GadgetFacts],
) -> Summary {
    let live = &server.live_objects;
    let mut holding: Vec<String> = serde_json::to_value(live)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(kind, n)| n.as_u64().filter(|n| *n > 0).map(|n| format!("{n} {kind}")))
        .collect();
    if !server.trace_sessions.is_empty() && !holding.iter().any(|h| h.ends_with("trace_sessions")) {
        holding.push(format!("{} trace_sessions", server.trace_sessions.len()));
    }
    Summary {
        kernel: format!("{} {}", kernel.release, kernel.arch),
        lockdown: kernel.lockdown.mode.clone(),
        btf: kernel.btf.vmlinux,
        jit: kernel.jit.enabled,
        attach: features.map(|f| availability(&f.attach)),
        program_types: features.map(|f| availability(&f.program_types)),
        map_types: features.map(|f| availability(&f.map_types)),
        helpers: features.map(|f| availability(&f.helpers)),
        server: format!(
            "{} {}, pid {}, up {} s",
            server.name, server.version, server.pid, server.uptime_seconds
        ),
        tiers: server
            .tiers
            .iter()
            .filter(|t| t.enabled)
            .map(|t| t.tier)
            .collect(),
        container: server
            .container
            .as_ref()
            .map(|c| format!("{} ({})", c.id, c.runtime)),
        kubernetes: server.kubernetes.clone(),
        holding,
        gadgets: gadgets
            .iter()
            .filter(|g| g.supported)
            .map(|g| g.name.clone())
            .collect(),
        gadgets_unsupported: gadgets
            .iter()
            .filter(|g| !g.supported)
            .map(|g| Unsupported {
                name: g.name.clone(),
                reason: g.reason.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// Which attach kind a hook needs, and whether it exists on this kernel.
fn hook_needs(hook: &Hook) -> (&'static str, Option<String>) {
    match hook {
        Hook::Tracepoint(category, name) => {
            let missing = tracefs::format(category, name)
                .err()
                .map(|_| format!("no tracepoint {category}:{name} on this kernel"));
            ("tracepoint", missing)
        }
        Hook::RawTracepoint(_) => ("raw_tp", None),
        Hook::Uprobe { .. } => ("uprobe", None),
        Hook::CpuClock { .. } => ("perf_event", None),
        Hook::Fentry { .. } => ("fentry", None),
        Hook::Kprobe { .. } => ("kprobe", None),
    }
}

/// Every gadget's programs, for the kernel to verify (`features.gadgets`).
fn gadget_checks() -> Vec<probe::GadgetCheck> {
    let mut checks: Vec<probe::GadgetCheck> = gadgets::catalogue()
        .iter()
        .filter(|g| g.name != "kfunc")
        .map(|g| {
            // The programs a trace of it can load: those of objects shared by several
            // gadgets (tcp) are checked per gadget; gadgets that pick their programs per
            // call (uprobe, tracepoint, profile) have all of theirs checked.
            let mut programs: Vec<&'static str> = g.programs.iter().map(|(n, _)| *n).collect();
            if let Some(k) = &g.kernel_count {
                programs.extend(k.programs.iter().map(|(n, _)| *n));
            }
            programs.sort_unstable();
            programs.dedup();
            probe::GadgetCheck {
                name: g.name,
                object: g.object,
                programs: (!programs.is_empty()).then_some(programs),
                target: None,
                record: g.fixed_record,
            }
        })
        .collect();
    // kfunc: each way it hooks functions, verified on its own.
    checks.extend(gadgets::kfunc::checks());
    checks
}

const NOT_PROBED: &str = "unknown: the server lacks CAP_BPF/CAP_PERFMON to probe (see problems)";

/// Why kernel functions cannot be traced here (None: they can): each way, fentry or
/// kprobe, needs its attach kind to work and its programs to load.
fn kfunc_reason(features: &Features) -> Option<String> {
    let mut why = Vec::new();
    for (kind, check) in [
        ("fentry", gadgets::kfunc::FENTRY_CHECK),
        ("kprobe", gadgets::kfunc::KPROBE_CHECK),
    ] {
        let attach = features.attach.get(kind);
        let loads = features.gadgets.get(check);
        match (attach, loads) {
            (Some(a), Some(l))
                if a.status == Status::Available && l.status == Status::Available =>
            {
                return None;
            }
            (Some(a), _) if a.status != Status::Available => why.push(format!(
                "{kind}: {}",
                a.reason.as_deref().unwrap_or("does not attach")
            )),
            (_, Some(l)) => why.push(format!(
                "{kind}: its programs do not load: {}",
                l.reason.as_deref().unwrap_or("refused")
            )),
            _ => why.push(format!("{kind}: not probed")),
        }
    }
    Some(format!(
        "kernel functions cannot be traced here ({})",
        why.join("; ")
    ))
}

fn gadget_facts(features: Option<&Features>) -> Vec<GadgetFacts> {
    gadgets::catalogue()
        .iter()
        .map(|g| {
            let (hooks, needs): (Vec<String>, Vec<(&str, Option<String>)>) = match g.name {
                "tracepoint" => (
                    vec!["tracepoint:<tracepoint>".into()],
                    vec![("tracepoint", None)],
                ),
                "uprobe" => (vec!["uprobe:<target>".into()], vec![("uprobe", None)]),
                "profile" => (
                    vec!["perf_event:cpu-clock".into()],
                    vec![("perf_event", None)],
                ),
                "kfunc" => (vec!["fentry|kprobe:<target>".into()], vec![]),
                _ => (
                    g.hooks(),
                    g.programs.iter().map(|(_, h)| hook_needs(h)).collect(),
                ),
            };
            let reason = needs.iter().find_map(|(kind, missing)| {
                if let Some(m) = missing {
                    return Some(m.clone());
                }
                let Some(features) = features else {
                    return Some(NOT_PROBED.to_owned());
                };
                match features.attach.get(*kind) {
                    Some(s) if s.status == Status::Available => None,
                    Some(s) => Some(format!(
                        "{kind} programs do not attach here: {}",
                        s.reason.as_deref().unwrap_or("refused")
                    )),
                    None => Some(format!("{kind} was not probed")),
                }
            });
            let reason = match (g.name, features) {
                ("kfunc", Some(f)) => kfunc_reason(f),
                ("kfunc", None) => Some(NOT_PROBED.to_owned()),
                _ => reason.or_else(|| loads_here(g, features?)),
            };
            GadgetFacts {
                name: g.name.to_owned(),
                summary: g.summary.to_owned(),
                hooks,
                modes: trace::gadget_modes(g),
                supported: reason.is_none(),
                reason,
                fields: g.fields.to_vec(),
            }
        })
        .collect()
}

/// Why the gadget cannot run although its hooks exist: its programs did not load, or its
/// tracepoint record cannot be read here. None: it loads.
fn loads_here(g: &gadgets::Gadget, features: &Features) -> Option<String> {
    match features.gadgets.get(g.name) {
        Some(s) if s.status == Status::Available => None,
        Some(s) => Some(format!(
            "it cannot run here: {}",
            s.reason.as_deref().unwrap_or("refused")
        )),
        None => Some("its programs were not checked".into()),
    }
}

fn server_facts(core: &Core, config: &crate::config::Config) -> ServerFacts {
    let registry = super::registry();
    ServerFacts {
        name: env!("CARGO_PKG_NAME").into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        started_at: crate::time::rfc3339_seconds(core.started_at),
        uptime_seconds: core.started_at.elapsed().map_or(0, |d| d.as_secs()),
        config_source: core.config_source.to_string(),
        config_keys_not_in_effect: core.reserved_keys.iter().map(|k| (*k).to_owned()).collect(),
        tiers: Tier::ALL
            .into_iter()
            .map(|tier| TierFacts {
                tier,
                enabled: tier.enabled(config),
                tools: registry
                    .all()
                    .iter()
                    .filter(|t| t.tier == tier)
                    .map(|t| t.name.to_owned())
                    .collect(),
                config_key: tier.config_key().map(String::from),
            })
            .collect(),
        limits: Limits {
            request_timeout_ms: u64::try_from(config.server.request_timeout.0.as_millis())
                .unwrap_or(u64::MAX),
            max_result_bytes: config.server.max_result_bytes.get(),
        },
        live_objects: core.tracker.counts(),
        trace_sessions: core.sessions.list(),
        sandbox: core.sandbox.get().cloned(),
        kubernetes: KubernetesFacts::from_env(),
        container: crate::ebpf::process::own_container().map(super::process::ContainerInfo::from),
    }
}
