//! The process's Linux capabilities, read from /proc/self/status, and the checks tools make
//! before they ask the kernel for something that needs CAP_BPF or CAP_PERFMON.

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::{Code, EbpfError};

/// Capability names by bit number (linux/capability.h).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The name of capability `bit` (`CAP_42` for one this build does not know).
pub fn name(bit: u32) -> String {
    NAMES
        .get(bit as usize)
        .map_or_else(|| format!("CAP_{bit}"), |n| (*n).to_owned())
}

/// The number of capability `name` (`CAP_BPF`; case and the `CAP_` prefix optional).
pub fn bit(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

/// Capability numbers (linux/capability.h) the server names.
pub const DAC_OVERRIDE: u32 = 1;
pub const DAC_READ_SEARCH: u32 = 2;
pub const SETPCAP: u32 = 8;
pub const NET_ADMIN: u32 = 12;
pub const SYS_PTRACE: u32 = 19;
pub const SYS_ADMIN: u32 = 21;
pub const SYSLOG: u32 = 34;
pub const PERFMON: u32 = 38;
pub const BPF: u32 = 39;

/// A capability the kernel checks for BPF work. CAP_SYS_ADMIN satisfies both, as the kernel's
/// `bpf_capable()` and `perfmon_capable()` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    /// Loading programs, creating maps, reading other programs' info.
    Bpf,
    /// Tracing programs (tracepoints, perf events, uprobes) and reading kernel memory.
    Perfmon,
}

impl Needed {
    fn name(self) -> &'static str {
        match self {
            Self::Bpf => "CAP_BPF",
            Self::Perfmon => "CAP_PERFMON",
        }
    }
}

/// The effective capability set of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSet(u64);

impl CapSet {
    /// Reads `CapEff` of the current process.
    pub fn current() -> std::io::Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        Self::from_status(&status).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "/proc/self/status has no CapEff line",
            )
        })
    }

    fn from_status(status: &str) -> Option<Self> {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))?
            .trim();
        u64::from_str_radix(hex, 16).ok().map(Self)
    }

    fn has(self, bit: u32) -> bool {
        self.0 & (1 << bit) != 0
    }

    pub fn names(self) -> Vec<String> {
        (0..64u32)
            .filter(|&b| self.has(b))
            .map(|b| {
                NAMES
                    .get(b as usize)
                    .map_or_else(|| format!("CAP_{b}"), |n| (*n).to_owned())
            })
            .collect()
    }

    pub fn allows(self, needed: Needed) -> bool {
        let bit = match needed {
            Needed::Bpf => BPF,
            Needed::Perfmon => PERFMON,
        };
        self.has(bit) || self.has(SYS_ADMIN)
    }

    pub fn sys_admin(self) -> bool {
        self.has(SYS_ADMIN)
    }

    pub fn summary(self) -> Capabilities {
        Capabilities {
            effective: self.names(),
            bpf: self.allows(Needed::Bpf),
            perfmon: self.allows(Needed::Perfmon),
            net_admin: self.has(NET_ADMIN),
            sys_admin: self.has(SYS_ADMIN),
        }
    }

    /// A permission error naming every missing capability and how to grant it, or `Ok`.
    pub fn require(self, needed: &[Needed]) -> Result<(), EbpfError> {
        let missing: Vec<&str> = needed
            .iter()
            .filter(|n| !self.allows(**n))
            .map(|n| n.name())
            .collect();
        self.missing(&missing)
    }

    /// [`Self::require`] for capabilities named in configuration
    /// (security.access_control.required_capabilities). CAP_SYS_ADMIN stands in for CAP_BPF
    /// and CAP_PERFMON, as the kernel lets it; names that are not capabilities are skipped
    /// (the configuration refuses them).
    pub fn require_named(self, names: &[String]) -> Result<(), EbpfError> {
        let missing: Vec<&str> = names
            .iter()
            .filter_map(|n| bit(n))
            .filter(|&b| match b {
                BPF => !self.allows(Needed::Bpf),
                PERFMON => !self.allows(Needed::Perfmon),
                other => !self.has(other),
            })
            .filter_map(|b| NAMES.get(b as usize).copied())
            .collect();
        self.missing(&missing)
    }

    fn missing(self, missing: &[&str]) -> Result<(), EbpfError> {
        if missing.is_empty() {
            return Ok(());
        }
        let list = missing.join(", ");
        let caps_lower = missing
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",");
        Err(EbpfError::new(
            Code::MissingCapability,
            format!(
                "the server process lacks {list}; run it as root, or grant the capabilities: \
                 `sudo setcap {caps_lower}+ep $(command -v ebpf-mcp)`, or in a systemd unit \
                 `AmbientCapabilities={}`",
                missing.join(" ")
            ),
        )
        .with_context("missing", missing)
        .with_context("effective", self.names()))
    }
}

/// Capabilities as `info` reports them.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Capabilities {
    /// Names of the effective capabilities.
    pub effective: Vec<String>,
    /// BPF loading allowed (CAP_BPF or CAP_SYS_ADMIN).
    pub bpf: bool,
    /// Tracing allowed (CAP_PERFMON or CAP_SYS_ADMIN).
    pub perfmon: bool,
    /// XDP/TC attachment allowed (CAP_NET_ADMIN).
    pub net_admin: bool,
    /// CAP_SYS_ADMIN (mounts, other programs' fds by id).
    pub sys_admin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff_and_names_bits() {
        let set = CapSet::from_status("Name:\tx\nCapEff:\t000000c000000000\n").unwrap();
        assert_eq!(set.names(), vec!["CAP_PERFMON", "CAP_BPF"]);
        assert!(set.allows(Needed::Bpf) && set.allows(Needed::Perfmon));
        assert!(!set.sys_admin());
    }

    #[test]
    fn configured_names_are_required_as_the_kernel_checks_them() {
        assert_eq!(bit("cap_net_admin"), Some(NET_ADMIN));
        assert_eq!(bit("BPF"), Some(BPF));
        assert_eq!(bit("CAP_NOPE"), None);
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let admin = CapSet(1 << SYS_ADMIN);
        assert!(
            admin
                .require_named(&names(&["CAP_BPF", "CAP_PERFMON"]))
                .is_ok()
        );
        let err = admin
            .require_named(&names(&["CAP_BPF", "CAP_NET_ADMIN"]))
            .unwrap_err();
        assert_eq!(err.context["missing"], serde_json::json!(["CAP_NET_ADMIN"]));
        assert!(
            err.message.contains("setcap cap_net_admin+ep"),
            "{}",
            err.message
        );
    }

    #[test]
    fn sys_admin_implies_bpf_and_perfmon() {
        let set = CapSet(1 << SYS_ADMIN);
        assert!(set.require(&[Needed::Bpf, Needed::Perfmon]).is_ok());
    }

    #[test]
    fn missing_capabilities_are_named_with_the_fix() {
        let err = CapSet(0)
            .require(&[Needed::Bpf, Needed::Perfmon])
            .unwrap_err();
        assert_eq!(err.code, Code::MissingCapability.as_str());
        assert!(
            err.message.contains("CAP_BPF, CAP_PERFMON"),
            "{}",
            err.message
        );
        assert!(err.message.contains("setcap cap_bpf,cap_perfmon+ep"));
        assert!(
            err.message
                .contains("AmbientCapabilities=CAP_BPF CAP_PERFMON")
        );
    }
}
