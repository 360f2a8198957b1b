//! Configuration: the seed's YAML layout (`server`, `security`, `resources`, `ebpf`,
//! `observability`, `tools`), every key optional with a safe default, unknown keys and bad
//! values rejected with the key path and line.

mod tier;
mod types;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use tier::Tier;
pub use types::*;

/// The documented default configuration; `Config::default()` equals what it parses to.
pub const DEFAULT_YAML: &str = include_str!("../../configs/default.yaml");

/// Where the running configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// No file: built-in defaults.
    Defaults,
    /// Loaded from this file.
    File(PathBuf),
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Defaults => f.write_str("built-in defaults"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A configuration file that cannot be used, with where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}{}: {}{message}", location(*.line, *.column), key_prefix(.key))]
    Invalid {
        origin: String,
        /// Dotted key path (`server.request_timeout`), empty for the document root.
        key: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() || key == "." {
        String::new()
    } else {
        format!("key `{key}`: ")
    }
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(", line {l}, column {c}"),
        (Some(l), None) => format!(", line {l}"),
        _ => String::new(),
    }
}

impl Config {
    /// Loads `path`, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<(Self, ConfigSource), ConfigError> {
        let Some(path) = path else {
            return Ok((Self::default(), ConfigSource::Defaults));
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::from_yaml(&text, &path.display().to_string())?;
        Ok((config, ConfigSource::File(path.to_owned())))
    }

    /// Parses and validates YAML text; `origin` names it in errors (a path or `<default>`).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        // An empty document (or one holding only comments) means "all defaults".
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Ok(Self::default());
        }
        let de = yaml_serde::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let location = inner.location();
            ConfigError::Invalid {
                origin: origin.to_owned(),
                key,
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                message: strip_yaml_path(&strip_location(&inner.to_string())),
            }
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                origin: origin.to_owned(),
                line: find_key_line(text, &key),
                column: None,
                key,
                message,
            })?;
        Ok(config)
    }

    /// Every duration with its bounds: zero would make the server useless (every call
    /// timing out, a busy loop) and a huge value would overflow the times derived from it.
    fn durations(&self) -> Vec<(&'static str, Duration, Duration, Duration)> {
        const MS: Duration = Duration::from_millis(1);
        const S: Duration = Duration::from_secs(1);
        const H: Duration = Duration::from_secs(3600);
        const D: Duration = Duration::from_secs(86_400);
        vec![
            // Not zero (every call would fail); a millisecond is allowed for tests of it.
            (
                "server.request_timeout",
                self.server.request_timeout.0,
                MS,
                D,
            ),
            (
                "server.session_idle_timeout",
                self.server.session_idle_timeout.0,
                S,
                7 * D,
            ),
            (
                "server.request_read_timeout",
                self.server.request_read_timeout.0,
                100 * MS,
                H,
            ),
            (
                "resources.cleanup_interval",
                self.resources.cleanup_interval.0,
                S,
                D,
            ),
            ("ebpf.program_timeout", self.ebpf.program_timeout.0, S, D),
            (
                "ebpf.map_cleanup_interval",
                self.ebpf.map_cleanup_interval.0,
                S,
                D,
            ),
            (
                "observability.metrics.collection_interval",
                self.observability.metrics.collection_interval.0,
                S,
                H,
            ),
            (
                "observability.health.check_interval",
                self.observability.health.check_interval.0,
                S,
                H,
            ),
            (
                "tools.map_dump.timeout",
                self.tools.map_dump.timeout.0,
                100 * MS,
                H,
            ),
            (
                "tools.trace.max_duration",
                self.tools.trace.max_duration.0,
                S,
                D,
            ),
            (
                "tools.trace.session_max_duration",
                self.tools.trace.session_max_duration.0,
                S,
                7 * D,
            ),
            (
                "tools.deploy.default_ttl",
                self.tools.deploy.default_ttl.0,
                S,
                30 * D,
            ),
            (
                "tools.deploy.max_ttl",
                self.tools.deploy.max_ttl.0,
                S,
                30 * D,
            ),
        ]
    }

    /// Cross-field rules that a single value's type cannot express.
    fn validate(&self) -> Result<(), (String, String)> {
        for (key, value, min, max) in self.durations() {
            if value < min || value > max {
                return Err((
                    key.into(),
                    format!(
                        "`{}` is out of range: give a duration from {} to {}",
                        humantime::format_duration(value),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        let deploy = &self.tools.deploy;
        if deploy.default_ttl.0 > deploy.max_ttl.0 {
            return Err((
                "tools.deploy.default_ttl".into(),
                format!(
                    "`{}` is longer than tools.deploy.max_ttl ({}); a deployment could never get it",
                    humantime::format_duration(deploy.default_ttl.0),
                    humantime::format_duration(deploy.max_ttl.0)
                ),
            ));
        }
        let bv = &self.security.bytecode_validation;
        if let Some(bad) = bv
            .allowed_opcodes
            .iter()
            .find(|o| !crate::ebpf::names::OPCODE_CLASSES.contains(&o.as_str()))
        {
            return Err((
                "security.bytecode_validation.allowed_opcodes".into(),
                format!(
                    "`{bad}` is not an instruction class; use {}",
                    crate::ebpf::names::OPCODE_CLASSES.join(", ")
                ),
            ));
        }
        if let Some(bad) = bv
            .blocked_helpers
            .iter()
            .find(|h| crate::ebpf::names::helper_id(h).is_none())
        {
            return Err((
                "security.bytecode_validation.blocked_helpers".into(),
                format!(
                    "`{bad}` is not a BPF helper this build knows (names like \
                     `bpf_probe_write_user`, as in bpf_helper_defs.h)"
                ),
            ));
        }
        if let Some(bad) = self
            .security
            .access_control
            .required_capabilities
            .iter()
            .find(|c| crate::ebpf::caps::bit(c).is_none())
        {
            return Err((
                "security.access_control.required_capabilities".into(),
                format!(
                    "`{bad}` is not a capability; use names as in capabilities(7), e.g. CAP_BPF"
                ),
            ));
        }
        for glob in &self.tools.deploy.allowed_attach_points {
            if let Err(e) = crate::glob::Glob::new(glob) {
                return Err((
                    "tools.deploy.allowed_attach_points".into(),
                    format!(
                        "`{glob}` is not a glob ({e}); `*` matches any run of characters, `?` \
                         one, `[a-z]` one of a set, e.g. \"xdp:veth*\""
                    ),
                ));
            }
        }
        if let Err(why) = self.observability.metrics.endpoint() {
            return Err(("observability.metrics.prometheus_endpoint".into(), why));
        }
        let health = &self.observability.health.endpoint;
        if !health.starts_with('/') || health == "/ready" {
            return Err((
                "observability.health.endpoint".into(),
                format!(
                    "`{health}` must be a path starting with `/` (and not /ready), e.g. /health"
                ),
            ));
        }
        let tls = &self.server.tls;
        if tls.enabled && (tls.cert_file.is_none() || tls.key_file.is_none()) {
            return Err((
                "server.tls.enabled".into(),
                "`enabled: true` needs `cert_file` (PEM chain, leaf first) and `key_file` \
                 (PEM private key)"
                    .into(),
            ));
        }
        if self.server.allowed_hosts.is_empty() {
            return Err((
                "server.allowed_hosts".into(),
                "must list at least one host name (the defaults are localhost, 127.0.0.1, ::1); \
                 an empty list would disable DNS-rebinding protection"
                    .into(),
            ));
        }
        if self.server.allowed_hosts.iter().any(|h| h == "*")
            && self.security.access_control.tokens_file.is_none()
        {
            return Err((
                "server.allowed_hosts".into(),
                "`*` (any Host) is only allowed with security.access_control.tokens_file: \
                 without tokens, the Host check is what stops DNS rebinding"
                    .into(),
            ));
        }
        for origin in &self.server.allowed_origins {
            if origin != "null" && !origin.contains("://") {
                return Err((
                    "server.allowed_origins".into(),
                    format!(
                        "`{origin}` has no scheme; write origins as `http://host:port` \
                         (`:*` for any port)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Keys the file sets whose feature this version does not implement yet. They are
    /// accepted so that one file serves every version, and reported so none is silently
    /// ignored: `config check` prints them and the server logs them at start.
    pub fn reserved_keys_set(text: &str) -> Vec<&'static str> {
        let Ok(doc) = yaml_serde::from_str::<yaml_serde::Value>(text) else {
            return Vec::new();
        };
        RESERVED_KEYS
            .iter()
            .copied()
            .filter(|key| {
                key.split('.')
                    .try_fold(&doc, |node, part| node.get(part))
                    .is_some()
            })
            .collect()
    }
}

/// Keys accepted now whose feature arrives in a later version (see docs/configuration.md).
pub const RESERVED_KEYS: &[&str] = &[
    "ebpf.enable_btf",
    "ebpf.enable_core",
    "ebpf.program_timeout",
    "ebpf.map_cleanup_interval",
    "observability.metrics.collection_interval",
];

/// yaml errors end with "at line L column C"; the location is reported separately.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// yaml errors start with their own (shorter) path, e.g. "server: unknown field"; the full
/// path is reported separately.
fn strip_yaml_path(message: &str) -> String {
    let message = match message.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && !head.contains('`') => rest,
        _ => message,
    };
    // "expected struct ServerConfig" names a Rust type; say what to write instead.
    match message.find("expected struct ") {
        Some(i) => format!("{}expected a mapping of keys", &message[..i]),
        None => message.to_owned(),
    }
}

/// Best-effort line of a dotted key in block-style YAML, for errors found after parsing.
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let mut want = key.split('.').peekable();
    let mut depth_indent: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let part = want.peek()?;
        if depth_indent.is_none_or(|d| indent > d)
            && trimmed
                .strip_prefix(*part)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        {
            want.next();
            depth_indent = Some(indent);
            if want.peek().is_none() {
                return Some(i + 1);
            }
        }
    }
    None
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(DurationValue)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration `{s}` ({e}); write a number with a unit, e.g. \"30s\", \
                     \"500ms\", \"5m\""
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_yaml_is_the_default_config() {
        let parsed = Config::from_yaml(DEFAULT_YAML, "<default>").unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn production_yaml_loads() {
        let text = include_str!("../../configs/production.yaml");
        let parsed = Config::from_yaml(text, "production.yaml").unwrap();
        assert!(!parsed.tools.deploy.enabled);
        assert_eq!(parsed.server.bind_address.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(
            Config::from_yaml("# nothing\n", "x").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let text = "server:\n  bind_address: \"127.0.0.1:9000\"\n  request_timout: 5s\n";
        let err = Config::from_yaml(text, "t.yaml").unwrap_err();
        let ConfigError::Invalid {
            key, line, message, ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(key, "server.request_timout");
        assert_eq!(*line, Some(3));
        assert!(
            message.starts_with("unknown field `request_timout`"),
            "{message}"
        );
        assert!(message.contains("request_timeout"), "{message}");
        assert!(err.to_string().contains("t.yaml"));
    }

    #[test]
    fn bad_duration_names_key_and_line() {
        let text = "tools:\n  trace:\n    max_duration: soon\n";
        let err = Config::from_yaml(text, "t.yaml").unwrap_err();
        let ConfigError::Invalid {
            key, line, message, ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(key, "tools.trace.max_duration");
        assert_eq!(*line, Some(3));
        assert!(message.contains("\"30s\""), "{message}");
    }

    #[test]
    fn bad_bind_address_is_rejected() {
        let err = Config::from_yaml("server:\n  bind_address: localhost\n", "t").unwrap_err();
        assert!(err.to_string().contains("server.bind_address"), "{err}");
    }

    #[test]
    fn cross_field_errors_find_their_line() {
        let text = "server:\n  tls:\n    enabled: true\n";
        let err = Config::from_yaml(text, "t").unwrap_err();
        let ConfigError::Invalid { key, line, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(key, "server.tls.enabled");
        assert_eq!(*line, Some(3));
    }

    #[test]
    fn zero_limits_are_rejected() {
        let err = Config::from_yaml("server:\n  max_result_bytes: 0\n", "t").unwrap_err();
        assert!(err.to_string().contains("server.max_result_bytes"), "{err}");
    }

    #[test]
    fn required_capabilities_must_be_capabilities() {
        let err = Config::from_yaml(
            "security:\n  access_control:\n    required_capabilities: [CAP_BPF, CAP_FLY]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("security.access_control.required_capabilities")
                && err.contains("`CAP_FLY` is not a capability"),
            "{err}"
        );
    }

    #[test]
    fn durations_are_bounded() {
        for (text, key) in [
            ("server:\n  request_timeout: 0s\n", "server.request_timeout"),
            (
                "tools:\n  trace:\n    session_max_duration: \"100000000h\"\n",
                "tools.trace.session_max_duration",
            ),
            (
                "tools:\n  deploy:\n    max_ttl: \"100000000h\"\n",
                "tools.deploy.max_ttl",
            ),
            (
                "resources:\n  cleanup_interval: 0s\n",
                "resources.cleanup_interval",
            ),
            (
                "observability:\n  health:\n    check_interval: 0s\n",
                "observability.health.check_interval",
            ),
            (
                "tools:\n  deploy:\n    default_ttl: 2h\n    max_ttl: 1h\n",
                "tools.deploy.default_ttl",
            ),
        ] {
            let err = Config::from_yaml(text, "t").unwrap_err();
            let ConfigError::Invalid { key: got, line, .. } = &err else {
                panic!("{err}")
            };
            assert_eq!(got, key, "{err}");
            assert!(line.is_some(), "{err}");
        }
    }

    #[test]
    fn every_cross_field_rule_names_its_key() {
        for (text, key, needle) in [
            (
                "security:\n  bytecode_validation:\n    allowed_opcodes: [BPF_ALU, BPF_WARP]\n",
                "security.bytecode_validation.allowed_opcodes",
                "`BPF_WARP` is not an instruction class",
            ),
            (
                "security:\n  bytecode_validation:\n    blocked_helpers: [bpf_nope]\n",
                "security.bytecode_validation.blocked_helpers",
                "`bpf_nope` is not a BPF helper",
            ),
            (
                "observability:\n  health:\n    endpoint: health\n",
                "observability.health.endpoint",
                "must be a path starting with `/`",
            ),
            (
                "observability:\n  health:\n    endpoint: /ready\n",
                "observability.health.endpoint",
                "not /ready",
            ),
            (
                "observability:\n  metrics:\n    prometheus_endpoint: metrics\n",
                "observability.metrics.prometheus_endpoint",
                "",
            ),
            (
                "server:\n  allowed_hosts: []\n",
                "server.allowed_hosts",
                "DNS-rebinding",
            ),
            (
                "server:\n  allowed_origins: [\"localhost:8080\"]\n",
                "server.allowed_origins",
                "has no scheme",
            ),
        ] {
            let err = Config::from_yaml(text, "t").unwrap_err();
            let ConfigError::Invalid {
                key: got,
                line,
                message,
                ..
            } = &err
            else {
                panic!("{err}")
            };
            assert_eq!(got, key, "{err}");
            assert!(message.contains(needle), "{err}");
            assert!(line.is_some(), "{text}: {err}");
        }
    }

    #[test]
    fn yaml_messages_lose_their_own_location_and_rust_names() {
        assert_eq!(strip_location("bad value at line 3 column 4"), "bad value");
        assert_eq!(strip_location("no location"), "no location");
        assert_eq!(strip_yaml_path("server: unknown field"), "unknown field");
        assert_eq!(
            strip_yaml_path("invalid type: string, expected struct ServerConfig"),
            "invalid type: string, expected a mapping of keys"
        );
        assert_eq!(strip_yaml_path("`a b`: kept"), "`a b`: kept");
        let text = "# c\nserver:\n\n  tls:\n    enabled: true\n";
        assert_eq!(find_key_line(text, "server.tls.enabled"), Some(5));
        assert_eq!(find_key_line(text, "server.nothing"), None);
        // A mapping where a scalar belongs names the mapping's key.
        let err = Config::from_yaml("server: 3\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server") && err.contains("mapping of keys"),
            "{err}"
        );
    }

    #[test]
    fn attach_point_globs_must_compile() {
        let err = Config::from_yaml(
            "tools:\n  deploy:\n    allowed_attach_points: [\"xdp:[\"]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tools.deploy.allowed_attach_points") && err.contains("never closed"),
            "{err}"
        );
    }

    #[test]
    fn reserved_keys_are_reported() {
        let text = "ebpf:\n  program_timeout: 5s\nserver:\n  request_timeout: 5s\n";
        assert_eq!(
            Config::reserved_keys_set(text),
            vec!["ebpf.program_timeout"]
        );
    }
}
