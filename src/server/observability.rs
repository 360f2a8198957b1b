//! The observability listener (observability.metrics): Prometheus metrics at the configured
//! path, `/health` (the process answers) and `/ready` (it can do its job: capabilities,
//! tracefs, BTF, and the audit log when the deploy tier needs it). Its own address, so it can
//! be scraped without exposing MCP, and MCP without exposing it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::ServeError;
use super::http::json_response;
use crate::core::Core;
use crate::ebpf::caps::CapSet;

/// The listener, bound at start.
#[derive(Debug)]
pub struct Bound {
    listener: std::net::TcpListener,
    path: String,
}

/// Binds the listener when metrics are enabled.
pub fn bind(core: &Core) -> Result<Option<Bound>, ServeError> {
    let config = core.config();
    if !config.observability.metrics.enabled {
        return Ok(None);
    }
    let (addr, path) = config
        .observability
        .metrics
        .endpoint()
        .map_err(ServeError::Metrics)?;
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok(Some(Bound { listener, path }))
}

/// Serves metrics, health and readiness on the bound listener until `stop`.
pub fn start(core: &Arc<Core>, bound: Bound, stop: CancellationToken) -> Result<(), ServeError> {
    let config = core.config();
    let observability = &config.observability;
    let metrics_path = bound.path;
    let local = bound
        .listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
    let listener =
        tokio::net::TcpListener::from_std(bound.listener).map_err(|source| ServeError::Bind {
            addr: local,
            source,
        })?;
    if !local.ip().is_loopback() {
        tracing::warn!(
            %local,
            "metrics, /health and /ready are reachable from the network: they reveal what \
             the server holds and does, not what it reads"
        );
    }
    let router = axum::Router::new()
        .route(&metrics_path, get(metrics))
        .route(&observability.health.endpoint, get(health))
        .route("/ready", get(ready))
        .with_state(Arc::clone(core));
    tracing::info!(
        "observability at http://{local}: metrics {metrics_path}, health {}, ready /ready",
        observability.health.endpoint
    );
    tokio::spawn(watch_readiness(Arc::clone(core), stop.clone()));
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the observability listener failed");
        }
    });
    Ok(())
}

/// OpenMetrics to scrapers that ask for it (Prometheus does), the classic text format to
/// everyone else.
async fn metrics(State(core): State<Arc<Core>>, headers: axum::http::HeaderMap) -> Response {
    let open_metrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let text = core.metrics.render(&core.tracker.counts(), !open_metrics);
    let mut response = Response::new(axum::body::Body::from(text));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(if open_metrics {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "text/plain; version=0.0.4; charset=utf-8"
        }),
    );
    response
}

async fn health(State(core): State<Arc<Core>>) -> Response {
    let uptime = core.started_at.elapsed().map_or(0, |d| d.as_secs());
    json_response(
        StatusCode::OK,
        &json!({"status": "ok", "uptime_seconds": uptime}),
    )
}

/// Checks readiness every observability.health.check_interval: the `ebpf_mcp_ready` gauge,
/// and a log line when the server stops or starts being ready (a capability dropped, tracefs
/// unmounted, the audit log's disk gone).
async fn watch_readiness(core: Arc<Core>, stop: CancellationToken) {
    let every = core.config().observability.health.check_interval.0;
    let mut was_ready = None;
    loop {
        let checks = checked(Arc::clone(&core)).await;
        let failed: Vec<String> = checks
            .iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|why| format!("{name}: {why}")))
            .collect();
        let ready = failed.is_empty();
        match (was_ready, ready) {
            (None | Some(true), false) => tracing::warn!(problems = ?failed, "not ready"),
            (Some(false), true) => tracing::info!("ready again"),
            _ => {}
        }
        was_ready = Some(ready);
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The readiness checks, run off the async threads; the gauge follows the outcome.
async fn checked(core: Arc<Core>) -> Vec<(&'static str, Result<(), String>)> {
    let metrics = Arc::clone(&core.metrics);
    let checks = tokio::task::spawn_blocking(move || readiness(&core))
        .await
        .unwrap_or_else(|e| vec![("checks", Err(format!("the checks failed: {e}")))]);
    metrics.set_ready(checks.iter().all(|(_, r)| r.is_ok()));
    checks
}

/// Whether the server can do its job now; each failed check says how to fix it.
async fn ready(State(core): State<Arc<Core>>) -> Response {
    let checks = checked(core).await;
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let detail: serde_json::Map<String, Value> = checks
        .into_iter()
        .map(|(name, r)| {
            (
                name.to_owned(),
                match r {
                    Ok(()) => json!({"ok": true}),
                    Err(why) => json!({"ok": false, "problem": why}),
                },
            )
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &json!({"ready": ready, "checks": detail}))
}

fn readiness(core: &Core) -> Vec<(&'static str, Result<(), String>)> {
    let capabilities = CapSet::current()
        .map_err(|e| e.to_string())
        .and_then(|caps| {
            caps.require_named(&core.config().security.access_control.required_capabilities)
                .map_err(|e| e.message.clone())
        });
    let tracefs = crate::ebpf::host::tracefs_root()
        .map(|_| ())
        .ok_or_else(|| {
            "tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing".to_owned()
        });
    let btf = if crate::ebpf::host::has_vmlinux_btf() {
        Ok(())
    } else {
        Err("the kernel has no BTF (/sys/kernel/btf/vmlinux): gadgets cannot load".to_owned())
    };
    let mut checks = vec![
        ("capabilities", capabilities),
        ("tracefs", tracefs),
        ("btf", btf),
    ];
    if core.audit.enabled() {
        checks.push(("audit_log", core.audit.check().map_err(|e| e.to_string())));
    }
    checks
}
