//! Prometheus metrics: what the server does (tool calls, their latency and outcome, HTTP
//! refusals by reason), what it holds (live kernel objects, sessions, deployments), what
//! tracing delivered and lost, and its own health (audit write failures, config reloads).
//! Exposed in the text format on the observability listener (see `server::observability`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::resources::Counts;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub tool: String,
    /// ok, or the error code.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabel {
    pub tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GadgetLabel {
    pub gadget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LossLabels {
    pub gadget: String,
    /// kernel: the ring buffer was full; shed: over resources.max_events_per_second.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// Every metric of the server, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub tool_calls: Family<CallLabels, Counter>,
    pub tool_seconds: Family<ToolLabel, Histogram>,
    pub http_in_flight: Gauge,
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// Requests refused by a limit: rate, concurrent, sessions, body, tier, session_owner.
    pub http_refused: Family<ReasonLabel, Counter>,
    /// HTTP connections open now (server.max_connections caps them).
    pub http_connections: Gauge,
    /// Connections the server closed to admit others, or refused at the cap.
    http_connections_closed: Family<ReasonLabel, Counter>,
    live: Family<KindLabel, Gauge>,
    pub trace_events: Family<GadgetLabel, Counter>,
    pub trace_losses: Family<LossLabels, Counter>,
    pub audit_failures: Counter,
    pub config_reloads: Family<OutcomeLabel, Counter>,
    /// Deployments the server released by itself: expired, cpu_limit.
    deployments_released: Family<ReasonLabel, Counter>,
    /// 1 when the last readiness check passed.
    ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ebpf_mcp");
        let tool_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls by tool and outcome (ok or the error code)",
            tool_calls.clone(),
        );
        let tool_seconds = Family::<ToolLabel, Histogram>::new_with_constructor(|| {
            // 1 ms .. ~65 s
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        registry.register(
            "tool_call_duration_seconds",
            "Time from a tool call's start to its result",
            tool_seconds.clone(),
        );
        let http_in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being served (a tool call until its response ends)",
            http_in_flight.clone(),
        );
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "auth_failures",
            "HTTP requests refused for their token: missing, malformed, invalid, expired",
            auth_failures.clone(),
        );
        let http_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "http_refused",
            "HTTP requests refused by a limit or policy: rate_limited, concurrency, sessions, \
             sessions_per_identity, body_size, body_timeout, tier, session_owner",
            http_refused.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "http_connections_open",
            "HTTP connections open now (at most server.max_connections)",
            http_connections.clone(),
        );
        let http_connections_closed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "http_connections_closed",
            "HTTP connections closed at server.max_connections: evicted_unauthenticated (never \
             authenticated, closed for a new one), evicted_idle (idle, closed for a new one), \
             refused (every connection was serving an authenticated request)",
            http_connections_closed.clone(),
        );
        let live = Family::<KindLabel, Gauge>::default();
        registry.register(
            "live_objects",
            "Objects the server holds now: programs, maps, links, pins, trace_sessions, deployments",
            live.clone(),
        );
        let trace_events = Family::<GadgetLabel, Counter>::default();
        registry.register(
            "trace_events",
            "Events traces and sessions took from the kernel, by gadget",
            trace_events.clone(),
        );
        let trace_losses = Family::<LossLabels, Counter>::default();
        registry.register(
            "trace_events_lost",
            "Events not delivered: kernel (ring buffer full) or shed (over \
             resources.max_events_per_second)",
            trace_losses.clone(),
        );
        let audit_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Audit records that could not be written",
            audit_failures.clone(),
        );
        let config_reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads: ok, or failed (the previous configuration stays)",
            config_reloads.clone(),
        );
        let deployments_released = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "deployments_released",
            "Deployments the server released by itself: expired (their TTL), cpu_limit (over \
             resources.max_cpu_time_ms)",
            deployments_released.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when the last readiness check (/ready, and every \
             observability.health.check_interval) passed, else 0",
            ready.clone(),
        );
        // A gauge at 1 rather than an OpenMetrics `info`: the classic text format (what
        // promtool and most scrapers read) has no info type.
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "The server's version (always 1)", build);
        Self {
            registry,
            tool_calls,
            tool_seconds,
            http_in_flight,
            auth_failures,
            http_refused,
            http_connections,
            http_connections_closed,
            live,
            trace_events,
            trace_losses,
            audit_failures,
            config_reloads,
            deployments_released,
            ready,
        }
    }

    pub fn connection_closed(&self, reason: &str) {
        self.http_connections_closed
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub fn deployment_released(&self, reason: &str) {
        self.deployments_released
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn tool_call(&self, tool: &str, outcome: &str, seconds: f64) {
        self.tool_calls
            .get_or_create(&CallLabels {
                tool: tool.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.tool_seconds
            .get_or_create(&ToolLabel { tool: tool.into() })
            .observe(seconds);
    }

    pub fn refused(&self, reason: &str) {
        self.http_refused
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn traced(&self, gadget: &str, events: u64, kernel_lost: u64, shed: u64) {
        let gadget = gadget.to_owned();
        self.trace_events
            .get_or_create(&GadgetLabel {
                gadget: gadget.clone(),
            })
            .inc_by(events);
        for (reason, n) in [("kernel", kernel_lost), ("shed", shed)] {
            if n > 0 {
                self.trace_losses
                    .get_or_create(&LossLabels {
                        gadget: gadget.clone(),
                        reason: reason.into(),
                    })
                    .inc_by(n);
            }
        }
    }

    pub fn reload(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&OutcomeLabel {
                outcome: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }

    /// The exposition with the live counts as of now: OpenMetrics text, or with `classic`
    /// the Prometheus text format 0.0.4 (counters named `*_total` in HELP and TYPE, no
    /// `# EOF`), which promtool and older scrapers read.
    pub fn render(&self, counts: &Counts, classic: bool) -> String {
        for (kind, n) in [
            ("programs", counts.programs),
            ("maps", counts.maps),
            ("links", counts.links),
            ("pins", counts.pins),
            ("trace_sessions", counts.trace_sessions),
            ("deployments", counts.deployments),
        ] {
            self.live
                .get_or_create(&KindLabel { kind: kind.into() })
                .set(i64::from(n));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if classic { to_classic(&out) } else { out }
    }
}

/// OpenMetrics text to the Prometheus 0.0.4 text format.
fn to_classic(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 64);
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/security.md lists exactly the metrics the server exposes.
    #[test]
    fn the_documented_metrics_are_the_registered_ones() {
        let m = Metrics::new();
        m.tool_call("info", "ok", 0.01);
        m.refused("tier");
        m.auth_failure("missing");
        m.traced("exec", 1, 1, 1);
        m.reload(true);
        m.deployment_released("expired");
        m.connection_closed("refused");
        m.audit_failures.inc();
        let text = m.render(&Counts::default(), true);
        let exposed: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let doc = include_str!("../../docs/security.md");
        let documented: std::collections::BTreeSet<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter(|l| l.starts_with("ebpf_mcp_"))
            .filter_map(|l| l.split(['{', '`']).next())
            .collect();
        assert_eq!(documented, exposed);
    }
}
