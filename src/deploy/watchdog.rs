//! The server's own releases: deployments over `resources.max_cpu_time_ms`, expired ones,
//! and ones whose audit record could not be written.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::*;

/// Measures the CPU each deployment's programs used since the last call and releases those
/// over resources.max_cpu_time_ms per second; returns how many it released. The server calls
/// it every second. It keeps the kernel's run-time statistics on (host-wide) while there are
/// deployments to watch, and off otherwise.
pub fn enforce_cpu(env: &Env<'_>, limit: u32) -> usize {
    env.deployments.purge();
    let all: Vec<Arc<Deployment>> = env.deployments.lock().values().cloned().collect();
    if limit == 0 || all.is_empty() {
        env.deployments.stats_off();
        return 0;
    }
    if !env.deployments.stats_on() {
        return 0;
    }
    let mut released = 0;
    for d in all {
        let Some((runs, ns)) = d.run_totals() else {
            continue;
        };
        let now = Instant::now();
        let over = {
            let mut cpu = d.cpu();
            cpu.runs = runs;
            cpu.run_time_ns = ns;
            match cpu.last {
                // Too short an interval says little; measure over the next one.
                Some((_, at)) if now.duration_since(at) < Duration::from_millis(500) => None,
                last => {
                    let rate = last.map(|(before, at)| {
                        ns.saturating_sub(before) as f64
                            / 1e6
                            / now.duration_since(at).as_secs_f64()
                    });
                    cpu.last = Some((ns, now));
                    cpu.ms_per_s = rate;
                    rate.filter(|r| *r > f64::from(limit))
                }
            }
        };
        let Some(rate) = over else { continue };
        let outcome = env
            .tracker
            .release(d.tracked.load(Ordering::Relaxed))
            .unwrap_or_else(|| d.release());
        tracing::warn!(
            deployment = d.id,
            owner = d.owner,
            cpu_ms_per_s = rate,
            limit,
            "deployment released: its programs used more CPU than resources.max_cpu_time_ms"
        );
        if outcome.is_ok() {
            released += 1;
            env.metrics.deployment_released("cpu_limit");
        }
        let mut record = release_record(&d, "deployment_cpu_exceeded", &outcome);
        record["cpu_ms_per_s"] = json!((rate * 10.0).round() / 10.0);
        record["max_cpu_time_ms"] = json!(limit);
        if let Err(why) = env.audit.record_or_retry(&record) {
            tracing::warn!(error = %why, deployment = d.id, "audit record of a CPU release not written");
        }
    }
    env.deployments.purge();
    released
}

/// The audit record of a deployment the server itself released.
pub(crate) fn release_record(
    d: &Deployment,
    event: &str,
    outcome: &Result<(), crate::resources::ReleaseError>,
) -> serde_json::Value {
    let mut record = json!({
        "timestamp": crate::time::rfc3339_millis(SystemTime::now()),
        "identity": "server",
        "event": event,
        "deployment_id": d.id,
        "owner": d.owner,
        "expires_at": d.output.expires_at,
        "program_tags": d.output.programs.iter().filter_map(|p| p.tag.clone()).collect::<Vec<_>>(),
        "outcome": if outcome.is_ok() { "ok" } else { "error" },
    });
    if let Err(e) = outcome {
        record["error"] = e.to_string().into();
    }
    record
}

/// Releases expired deployments (and everything else the tracker holds that expired).
/// Run by the cleanup task every resources.cleanup_interval.
pub fn release_expired(env: &Env<'_>) -> usize {
    let expired = env.tracker.expired(SystemTime::now());
    let mut n = 0;
    for id in expired {
        let deployment = env
            .deployments
            .lock()
            .values()
            .find(|d| d.tracked.load(Ordering::Relaxed) == id)
            .cloned();
        let outcome = env.tracker.release(id);
        match &outcome {
            Some(Ok(())) if deployment.is_some() => {
                n += 1;
                env.metrics.deployment_released("expired");
            }
            Some(Ok(())) => n += 1,
            Some(Err(e)) => tracing::warn!(error = %e, "releasing an expired object failed"),
            None => {}
        }
        // The server's own act goes on the record too: who deployed what, and when it went.
        if let (Some(d), Some(outcome)) = (deployment, outcome) {
            let record = release_record(&d, "deployment_expired", &outcome);
            if let Err(why) = env.audit.record_or_retry(&record) {
                tracing::warn!(error = %why, deployment = d.id, "audit record of an expiry not written");
            }
        }
    }
    env.deployments.purge();
    n
}

/// Undoes a deployment whose audit record could not be written: nothing runs unrecorded.
pub fn rollback(env: &Env<'_>, deployment_id: &str) {
    let found = env.deployments.lock().remove(deployment_id);
    if let Some(d) = found {
        let released = env.tracker.release(d.tracked.load(Ordering::Relaxed));
        if let Err(e) = released.unwrap_or_else(|| d.release()) {
            tracing::error!(deployment = deployment_id, error = %e, "rolling back a deployment failed");
        }
        tracing::warn!(
            deployment = deployment_id,
            "deployment undone: its audit record could not be written"
        );
    }
}
