//! Tiers: groups of tools the configuration enables or disables together; a disabled
//! tier's tools are neither listed nor callable.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Config;

/// A group of tools enabled or disabled together.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Inspection: info, list_*, map_*, resources. Always enabled.
    Read,
    /// Bounded tracing with built-in programs (`tools.trace.enabled`).
    Trace,
    /// Loading agents' own BPF objects (`tools.deploy.enabled`, off by default).
    Deploy,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Read, Tier::Trace, Tier::Deploy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Trace => "trace",
            Self::Deploy => "deploy",
        }
    }

    /// Whether `config` enables this tier.
    pub fn enabled(self, config: &Config) -> bool {
        match self {
            Self::Read => true,
            Self::Trace => config.tools.trace.enabled,
            Self::Deploy => config.tools.deploy.enabled,
        }
    }

    /// The tiers `config` enables, in order.
    pub fn enabled_in(config: &Config) -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|t| t.enabled(config))
            .collect()
    }

    /// The configuration key that enables this tier (`None` for read: always on).
    pub fn config_key(self) -> Option<&'static str> {
        match self {
            Self::Read => None,
            Self::Trace => Some("tools.trace.enabled"),
            Self::Deploy => Some("tools.deploy.enabled"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_enable_read_and_trace_but_not_deploy() {
        let c = Config::default();
        assert!(Tier::Read.enabled(&c));
        assert!(Tier::Trace.enabled(&c));
        assert!(!Tier::Deploy.enabled(&c));
    }
}
