//! The configuration tree. Defaults here must equal `configs/default.yaml` (a test checks).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Tier;

/// A duration written as text with a unit ("30s", "500ms", "5m").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl Serialize for DurationValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

const fn secs(s: u64) -> DurationValue {
    DurationValue(Duration::from_secs(s))
}

const fn nz32(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(v) => v,
        None => panic!("zero"),
    }
}

const fn nz64(n: u64) -> NonZeroU64 {
    match NonZeroU64::new(n) {
        Some(v) => v,
        None => panic!("zero"),
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub security: SecurityConfig,
    pub resources: ResourcesConfig,
    pub ebpf: EbpfConfig,
    pub observability: ObservabilityConfig,
    pub tools: ToolsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address `serve --http` binds when given no address.
    pub bind_address: SocketAddr,
    /// HTTP requests (POST) being served at once; one more gets 503.
    pub max_concurrent_requests: NonZeroU32,
    /// Open MCP sessions (2025-11-25) at once; one more initialize gets 503.
    pub max_sessions: NonZeroU32,
    /// Open sessions of one identity (a token, a local user, `anonymous`); one more gets 503.
    pub max_sessions_per_identity: NonZeroU32,
    /// A session with no request for this long is closed.
    pub session_idle_timeout: DurationValue,
    /// Open HTTP connections; at the cap a new one takes the place of one that is not
    /// serving an authenticated request, or is refused.
    pub max_connections: NonZeroU32,
    /// Longest a client may take to send a request's head (and, again, its body); also how
    /// long a connection may stay idle between requests.
    pub request_read_timeout: DurationValue,
    /// Requests per identity (a token, or `anonymous`); over it, 429 with Retry-After.
    pub rate_limit: RateLimitConfig,
    /// Upper bound on one tool call; the call fails with REQUEST_TIMEOUT after it.
    pub request_timeout: DurationValue,
    /// Upper bound on one tool result's JSON; larger results are cut and marked truncated.
    pub max_result_bytes: NonZeroU64,
    /// `Host` header values the HTTP transport accepts (DNS-rebinding defence).
    pub allowed_hosts: Vec<String>,
    /// `Origin` header values the HTTP transport accepts; requests without Origin pass.
    pub allowed_origins: Vec<String>,
    /// Largest HTTP request body (413 above it).
    pub max_request_bytes: NonZeroU64,
    pub tls: TlsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind_address: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_concurrent_requests: nz32(100),
            max_sessions: nz32(64),
            max_sessions_per_identity: nz32(16),
            session_idle_timeout: secs(300),
            max_connections: nz32(256),
            request_read_timeout: secs(10),
            rate_limit: RateLimitConfig::default(),
            request_timeout: secs(30),
            max_result_bytes: nz64(100 * 1024),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: vec![
                "http://localhost:*".into(),
                "http://127.0.0.1:*".into(),
                "http://[::1]:*".into(),
            ],
            max_request_bytes: nz64(4 * 1024 * 1024),
            tls: TlsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second per identity; 0 turns the limit off.
    pub requests_per_second: u32,
    /// Requests an identity may make at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 50,
            burst: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub enabled: bool,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Confine the server after start-up: no_new_privs, capabilities, seccomp.
    pub enable_sandboxing: bool,
    /// Also enter a Landlock domain (file writes only where the server writes, no exec, no
    /// TCP connect). Off by default: a Landlock domain may not read other processes' /proc
    /// entries, which holders (list_*) and profile symbolization need.
    pub enable_landlock: bool,
    /// Write the audit log (one JSON line per tool call).
    pub enable_audit: bool,
    pub audit_log: PathBuf,
    /// Refuse read and trace calls too when the audit log cannot be written (deploy-tier
    /// calls always are).
    pub audit_required_for_reads: bool,
    pub bytecode_validation: BytecodeValidationConfig,
    pub access_control: AccessControlConfig,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            enable_sandboxing: true,
            enable_landlock: false,
            enable_audit: true,
            audit_log: PathBuf::from("/var/log/ebpf-mcp/audit.log"),
            audit_required_for_reads: false,
            bytecode_validation: BytecodeValidationConfig::default(),
            access_control: AccessControlConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BytecodeValidationConfig {
    pub max_instructions: NonZeroU32,
    pub allowed_opcodes: Vec<String>,
    pub blocked_symbols: Vec<String>,
    pub blocked_helpers: Vec<String>,
}

impl Default for BytecodeValidationConfig {
    fn default() -> Self {
        Self {
            max_instructions: nz32(4096),
            allowed_opcodes: [
                "BPF_LD", "BPF_LDX", "BPF_ST", "BPF_STX", "BPF_ALU", "BPF_JMP",
            ]
            .into_iter()
            .chain(["BPF_JMP32", "BPF_ALU64"])
            .map(String::from)
            .collect(),
            blocked_symbols: vec!["kallsyms_lookup_name".into(), "kernel_text_address".into()],
            blocked_helpers: [
                "bpf_probe_write_user",
                "bpf_override_return",
                "bpf_send_signal",
                "bpf_send_signal_thread",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessControlConfig {
    /// Local users (names or uids) who may use stdio and the unix socket.
    pub permitted_users: Vec<String>,
    /// Local groups (names or gids) whose members may use stdio and the unix socket.
    pub permitted_groups: Vec<String>,
    /// Tiers of local users, by user name or uid.
    pub user_tiers: BTreeMap<String, Vec<Tier>>,
    /// Tiers of local users, by group name or gid (membership counts).
    pub group_tiers: BTreeMap<String, Vec<Tier>>,
    /// Tiers of a permitted local user no entry above names, and of anonymous loopback HTTP.
    pub default_tiers: Vec<Tier>,
    pub required_capabilities: Vec<String>,
    /// Bearer tokens for HTTP (`ebpf-mcp token new` makes entries).
    pub tokens_file: Option<PathBuf>,
}

impl Default for AccessControlConfig {
    fn default() -> Self {
        Self {
            permitted_users: Vec::new(),
            permitted_groups: Vec::new(),
            user_tiers: BTreeMap::new(),
            group_tiers: BTreeMap::new(),
            default_tiers: Tier::ALL.to_vec(),
            required_capabilities: vec!["CAP_BPF".into(), "CAP_PERFMON".into()],
            tokens_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcesConfig {
    /// Programs all deployments together may hold.
    pub max_programs: u32,
    /// Maps all deployments together may hold (and the most one object may have).
    pub max_maps: u32,
    /// Map memory all deployments together may use (and the most one object may ask).
    pub max_memory_mb: u32,
    /// CPU milliseconds per second the programs of one deployment may use together (0: no
    /// limit, and no run-time statistics).
    pub max_cpu_time_ms: u32,
    /// How often expired deployments are released.
    pub cleanup_interval: DurationValue,
    pub max_events_per_second: u32,
    /// The same limits for each client.
    pub per_owner: OwnerLimits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OwnerLimits {
    pub max_programs: u32,
    pub max_maps: u32,
    pub max_memory_mb: u32,
}

impl Default for OwnerLimits {
    fn default() -> Self {
        Self {
            max_programs: 5,
            max_maps: 25,
            max_memory_mb: 32,
        }
    }
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        Self {
            max_programs: 10,
            max_maps: 50,
            max_memory_mb: 64,
            max_cpu_time_ms: 1000,
            cleanup_interval: secs(300),
            max_events_per_second: 2_000_000,
            per_owner: OwnerLimits::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EbpfConfig {
    pub enable_btf: bool,
    pub enable_core: bool,
    pub program_timeout: DurationValue,
    pub map_cleanup_interval: DurationValue,
    /// Mount tracefs, bpffs and securityfs at start when missing (needs CAP_SYS_ADMIN).
    pub auto_mount: bool,
    pub bpffs_dir: PathBuf,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        Self {
            enable_btf: true,
            enable_core: true,
            program_timeout: secs(30),
            map_cleanup_interval: secs(600),
            auto_mount: true,
            bpffs_dir: PathBuf::from("/sys/fs/bpf/ebpf-mcp"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    pub metrics: MetricsConfig,
    pub logging: LoggingConfig,
    pub health: HealthConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub prometheus_endpoint: String,
    pub collection_interval: DurationValue,
}

impl MetricsConfig {
    /// `HOST:PORT/path` as an address and a path (the seed's `:9090/metrics` means every
    /// interface; no path means `/metrics`).
    pub fn endpoint(&self) -> Result<(SocketAddr, String), String> {
        let text = self.prometheus_endpoint.as_str();
        let (addr, path) = match text.find('/') {
            Some(i) => (&text[..i], &text[i..]),
            None => (text, "/metrics"),
        };
        let addr = if addr.starts_with(':') {
            format!("0.0.0.0{addr}")
        } else {
            addr.to_owned()
        };
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not HOST:PORT/path, e.g. 127.0.0.1:9090/metrics"))?;
        Ok((addr, path.to_owned()))
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            prometheus_endpoint: "127.0.0.1:9090/metrics".into(),
            collection_interval: secs(15),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub format: LogFormat,
    /// Append logs to this file instead of stderr.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    pub endpoint: String,
    pub check_interval: DurationValue,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            endpoint: "/health".into(),
            check_interval: secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    pub map_dump: MapDumpConfig,
    pub trace: TraceConfig,
    pub deploy: DeployConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MapDumpConfig {
    pub enabled: bool,
    pub max_entries: NonZeroU32,
    pub timeout: DurationValue,
}

impl Default for MapDumpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: nz32(1000),
            timeout: secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceConfig {
    /// Enables the trace tier.
    pub enabled: bool,
    pub max_duration: DurationValue,
    pub max_events: NonZeroU32,
    /// Longest background session (trace_start).
    pub session_max_duration: DurationValue,
    /// Most events a session keeps for trace_read.
    pub session_buffer: NonZeroU32,
    /// Most bytes (of JSON text) the events a session keeps may take.
    pub session_buffer_bytes: NonZeroU64,
    /// Most sessions running at once.
    pub max_sessions: NonZeroU32,
    /// Most `trace` calls running at once (sessions count separately).
    pub max_concurrent: NonZeroU32,
    /// Most kernel functions one kfunc trace attaches to (a glob naming more is refused).
    pub max_functions: NonZeroU32,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_duration: secs(60),
            max_events: nz32(10_000),
            session_max_duration: secs(600),
            session_buffer: nz32(10_000),
            session_buffer_bytes: nz64(1024 * 1024),
            max_sessions: nz32(4),
            max_concurrent: nz32(4),
            max_functions: nz32(64),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeployConfig {
    /// Enables the deploy tier (off by default: it loads agents' own code into the kernel).
    pub enabled: bool,
    /// Program types an object may contain (tracepoint, raw_tp, tp_btf, uprobe, xdp, tc,
    /// cgroup_skb, perf_event, ...).
    pub allowed_types: Vec<String>,
    /// Directories `path` may name objects in (resolved without leaving them).
    pub allowed_dirs: Vec<PathBuf>,
    /// Globs every attach point must match (`tracepoint:syscalls:*`, `xdp:veth*`).
    pub allowed_attach_points: Vec<String>,
    /// Largest object accepted (decoded `object` or file at `path`).
    pub max_object_bytes: NonZeroU64,
    /// Lifetime of a deployment when the call gives no `ttl_seconds`.
    pub default_ttl: DurationValue,
    /// Longest `ttl_seconds` accepted.
    pub max_ttl: DurationValue,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allowed_types: vec!["xdp".into(), "tc".into(), "tracepoint".into()],
            allowed_dirs: Vec::new(),
            allowed_attach_points: vec![
                "tracepoint:*".into(),
                "raw_tp:*".into(),
                "tp_btf:*".into(),
                "xdp:*".into(),
                "tc:*".into(),
                "uprobe:*".into(),
                "perf_event:*".into(),
                "cgroup_skb:*".into(),
            ],
            max_object_bytes: nz64(1024 * 1024),
            default_ttl: secs(600),
            max_ttl: secs(3600),
        }
    }
}
