//! The HTTP gate in front of rmcp's Streamable HTTP service: who is calling (bearer token,
//! or anonymous on an unauthenticated loopback server; 401), how often (429 per identity),
//! that a session is used only by the identity that opened it (403), request body size
//! (413), how many requests and sessions at once (503), and whether they may call what they
//! ask (a `tools/call` outside their tiers is a 403, audited).
//!
//! The identity travels to the MCP handler in the request's extensions (rmcp hands the
//! request's `Parts` to handlers).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use crate::core::Core;
use crate::mcp::{ClientGone, admission};
use crate::security::access::{AuthFailure, Identity};

/// What the gate needs across requests.
pub struct Gate {
    pub core: Arc<Core>,
    /// rmcp's sessions, to forget the owners of sessions that ended.
    manager: Arc<LocalSessionManager>,
    /// Session id → the identity that opened it.
    sessions: Mutex<HashMap<String, String>>,
    /// Identity → its token bucket.
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A token bucket: `level` requests may be made now; it refills at the configured rate.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
}

/// One request in flight, counted in `ebpf_mcp_http_requests_in_flight` (which is also
/// what admission reads); dropped when its response body ends.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A response body that keeps its request counted until the last byte is sent (tool calls
/// stream their progress, so the work lasts as long as the body), and that tells the call
/// the client went away when it is dropped before its end.
struct Counted {
    inner: Body,
    _in_flight: Option<InFlight>,
    /// Keeps the connection from being closed for another while this response is sent.
    _busy: Option<super::conn::BusyGuard>,
    gone: Option<ClientGone>,
    ended: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if !self.ended
            && !http_body::Body::is_end_stream(&self.inner)
            && let Some(gone) = &self.gone
        {
            gone.0.cancel();
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

impl Gate {
    pub fn new(core: Arc<Core>, manager: Arc<LocalSessionManager>) -> Arc<Self> {
        Arc::new(Self {
            core,
            manager,
            sessions: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one request from `identity`'s bucket; `Err(seconds)` says when to retry.
    fn admit(&self, identity: &str, rate: u32, burst: u32) -> Result<(), u64> {
        if rate == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let capacity = f64::from(burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(identity.to_owned()).or_insert(Bucket {
            level: capacity,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * f64::from(rate);
        bucket.level = (bucket.level + refill).min(capacity);
        bucket.at = now;
        if bucket.level >= 1.0 {
            bucket.level -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.level) / f64::from(rate)).ceil().max(1.0) as u64)
        }
    }

    /// Sessions open now, and how many of them `identity` opened.
    async fn open_sessions(&self, identity: &str) -> (usize, usize) {
        let live: std::collections::HashSet<String> = self
            .manager
            .sessions
            .read()
            .await
            .keys()
            .map(|k| k.to_string())
            .collect();
        let mut sessions = self.sessions();
        sessions.retain(|k, _| live.contains(k));
        let mine = sessions.values().filter(|owner| *owner == identity).count();
        (live.len(), mine)
    }

    /// Records who opened `sid`, forgetting sessions rmcp no longer has.
    async fn opened(&self, sid: &str, identity: String) {
        let live: std::collections::HashSet<String> = self
            .manager
            .sessions
            .read()
            .await
            .keys()
            .map(|k| k.to_string())
            .collect();
        let mut sessions = self.sessions();
        sessions.retain(|k, _| live.contains(k));
        sessions.insert(sid.to_owned(), identity);
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

const SESSION_HEADER: &str = "mcp-session-id";

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// 401 with the challenge RFC 6750 describes; no detail about which tokens exist.
fn unauthorized(failure: AuthFailure) -> Response {
    let challenge = match failure {
        AuthFailure::Missing => "Bearer realm=\"ebpf-mcp\"".to_owned(),
        other => format!(
            "Bearer realm=\"ebpf-mcp\", error=\"invalid_token\", error_description=\"{}\"",
            other.description()
        ),
    };
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "unauthorized", "reason": failure.label(), "message": failure.description()}),
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// A JSON-RPC error in an HTTP error status: clients that read the body learn why.
fn refused(status: StatusCode, id: &Value, code: i64, message: String, data: Value) -> Response {
    json_response(
        status,
        &json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": code, "message": message, "data": data},
        }),
    )
}

/// The audit line of a request refused before it reached a tool (at most one a second per
/// reason: a flood of refusals cannot fill the disk). Never the credentials.
fn audit_refusal(core: &Core, reason: &str, status: StatusCode, identity: &str, method: &str) {
    let record = json!({
        "timestamp": crate::time::rfc3339_millis(SystemTime::now()),
        "identity": identity,
        "transport": "http",
        "event": "http_refused",
        "reason": reason,
        "status": status.as_u16(),
        "method": method,
        "outcome": "error",
    });
    if let Err(why) = core.audit.record_refusal(&format!("http:{reason}"), record) {
        core.metrics.audit_failures.inc();
        tracing::warn!(error = %why, "audit record of a refused request not written");
    }
}

/// A refusal at the HTTP layer: counted by `reason` and on the audit record.
fn count_refusal(core: &Core, reason: &str, status: StatusCode, identity: &str, method: &str) {
    core.metrics.refused(reason);
    audit_refusal(core, reason, status, identity, method);
}

/// 503 for a request over `key`'s limit, counted by `reason` and logged.
fn refuse_busy(core: &Core, reason: &str, key: &str, what: String, identity: &str) -> Response {
    count_refusal(
        core,
        reason,
        StatusCode::SERVICE_UNAVAILABLE,
        identity,
        "POST",
    );
    tracing::warn!("HTTP request refused: {key}");
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"error": "busy", "limit": key, "message": what}),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn too_large(limit: u64) -> Response {
    json_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &json!({
            "error": "payload_too_large",
            "message": format!(
                "the request body is over server.max_request_bytes ({limit} bytes); send a \
                 smaller request (a deploy object over the limit can be placed under \
                 tools.deploy.allowed_dirs and sent as `path`)"
            ),
        }),
    )
}

pub async fn gate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let core = &gate.core;
    let config = core.config();
    let (mut parts, body) = request.into_parts();

    // Who is calling.
    let identity = match core.tokens() {
        Some(tokens) => {
            let header = parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match tokens.authenticate(header, SystemTime::now()) {
                Ok(identity) => identity,
                Err(failure) => {
                    core.metrics.auth_failure(failure.label());
                    audit_refusal(
                        core,
                        &format!("unauthorized_{}", failure.label()),
                        StatusCode::UNAUTHORIZED,
                        "unauthenticated",
                        parts.method.as_str(),
                    );
                    // Never the header itself: it may hold a secret.
                    tracing::warn!(reason = failure.label(), method = %parts.method, "HTTP request refused: authentication");
                    return unauthorized(failure);
                }
            }
        }
        None => Identity::anonymous(&config.security.access_control),
    };
    let connection = parts.extensions.get::<super::conn::Conn>().cloned();

    // How often.
    let rate = &config.server.rate_limit;
    if let Err(retry) = gate.admit(&identity.id, rate.requests_per_second, rate.burst) {
        count_refusal(
            core,
            "rate_limited",
            StatusCode::TOO_MANY_REQUESTS,
            &identity.id,
            parts.method.as_str(),
        );
        tracing::warn!(identity = %identity.id, "HTTP request refused: rate limit");
        let mut response = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({
                "error": "rate_limited",
                "message": format!(
                    "{} makes more requests than server.rate_limit allows ({}/s, bursts of {}); retry in {retry} s",
                    identity.id, rate.requests_per_second, rate.burst
                ),
            }),
        );
        if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }

    // A session belongs to the identity that opened it.
    let session = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(sid) = &session
        && let Some(owner) = gate.sessions().get(sid)
        && *owner != identity.id
    {
        count_refusal(
            core,
            "session_owner",
            StatusCode::FORBIDDEN,
            &identity.id,
            parts.method.as_str(),
        );
        tracing::warn!(identity = %identity.id, "HTTP request refused: another identity's session");
        return refused(
            StatusCode::FORBIDDEN,
            &Value::Null,
            -32003,
            "this session was opened by another identity; initialize a session of your own".into(),
            json!({"code": crate::error::Code::SessionNotYours.as_str()}),
        );
    }

    // The body: bounded, and read once to see which tool a call asks for.
    let limit = config.server.max_request_bytes.get();
    // Said before reading (Content-Length) or found while reading: the same refusal.
    let too_big = || {
        count_refusal(
            core,
            "body_size",
            StatusCode::PAYLOAD_TOO_LARGE,
            &identity.id,
            parts.method.as_str(),
        );
        too_large(limit)
    };
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit)
    {
        return too_big();
    }
    let read_timeout = config.server.request_read_timeout.0;
    let read = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes: Bytes = match tokio::time::timeout(read_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return too_big(),
        Err(_) => {
            count_refusal(
                core,
                "body_timeout",
                StatusCode::REQUEST_TIMEOUT,
                &identity.id,
                parts.method.as_str(),
            );
            return json_response(
                StatusCode::REQUEST_TIMEOUT,
                &json!({
                    "error": "request_timeout",
                    "message": format!(
                        "the request body did not arrive within server.request_read_timeout ({})",
                        humantime::format_duration(read_timeout)
                    ),
                }),
            );
        }
    };
    let peek = admission::Peek::of(&bytes);
    let method = peek.method();

    // How many at once.
    let counted = if parts.method == axum::http::Method::POST {
        let max = i64::from(config.server.max_concurrent_requests.get());
        let in_flight = core.metrics.http_in_flight.clone();
        if in_flight.inc() >= max {
            in_flight.dec();
            return refuse_busy(
                core,
                "concurrency",
                "server.max_concurrent_requests",
                format!(
                    "{max} requests are being served (server.max_concurrent_requests); retry shortly"
                ),
                &identity.id,
            );
        }
        Some(InFlight(in_flight))
    } else {
        None
    };
    // From here on the connection carries an admitted request (authenticated, its body
    // read, within the concurrency cap): it is not closed for another until the response
    // ends. A slow body or a refused request leaves it evictable.
    let busy = connection.as_ref().map(|c| c.state.begin());
    if method == Some("initialize") && session.is_none() {
        let max = config.server.max_sessions.get() as usize;
        let per_identity = config.server.max_sessions_per_identity.get() as usize;
        let (open, mine) = gate.open_sessions(&identity.id).await;
        if mine >= per_identity {
            return refuse_busy(
                core,
                "sessions_per_identity",
                "server.max_sessions_per_identity",
                format!(
                    "{} has {mine} sessions open (server.max_sessions_per_identity is {per_identity}); \
                     close one (HTTP DELETE) or reuse it",
                    identity.id
                ),
                &identity.id,
            );
        }
        if open >= max {
            return refuse_busy(
                core,
                "sessions",
                "server.max_sessions",
                format!(
                    "{max} sessions are open (server.max_sessions); close one (HTTP DELETE) or retry later"
                ),
                &identity.id,
            );
        }
    }

    if let Some(refusal) = admission::tier_refusal(core, &config, &identity, &peek, &bytes) {
        return refused(
            StatusCode::FORBIDDEN,
            &refusal.id,
            -32003,
            refusal.error.message.clone(),
            refusal.error.to_json(),
        );
    }

    let opened_by = identity.id.clone();
    parts.extensions.insert(identity);
    // Gone when the connection closes, or when the response is dropped before its end.
    let gone = connection
        .as_ref()
        .map_or_else(ClientGone::default, |c| ClientGone(c.gone.child_token()));
    if counted.is_some() {
        parts.extensions.insert(gone.clone());
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let response = {
        let (parts, body) = response.into_parts();
        Response::from_parts(
            parts,
            Body::new(Counted {
                inner: body,
                gone: counted.is_some().then_some(gone),
                _in_flight: counted,
                _busy: busy,
                ended: false,
            }),
        )
    };
    // Remember who opened a new session.
    if session.is_none()
        && let Some(sid) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        let sid = sid.to_owned();
        gate.opened(&sid, opened_by).await;
    }
    response
}
