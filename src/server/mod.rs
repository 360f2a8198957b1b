//! Transports: MCP over stdio (what desktop clients spawn) and over Streamable HTTP at
//! `/mcp`. Both stop cleanly on SIGINT, SIGTERM or (stdio) end of input, and release every
//! kernel object the server created before the process exits.

use std::net::SocketAddr;
use std::sync::Arc;

use rmcp::ServiceExt;
use rmcp::service::ServerInitializeError;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::mcp::McpServer;
use crate::security::access;

mod conn;
mod framing;
mod http;
mod observability;
mod reload;
mod tls;
mod unix;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve HTTP on {addr} without authentication: set \
         security.access_control.tokens_file (`ebpf-mcp token new` makes entries), or bind \
         127.0.0.1 or ::1"
    )]
    NonLoopback { addr: SocketAddr },
    #[error("{0}")]
    Tokens(String),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Runtime(String),
    #[error("observability.metrics.prometheus_endpoint: {0}")]
    Metrics(String),
    #[error("cannot serve on unix socket {path}: {why}")]
    Unix {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("{0}")]
    NotPermitted(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the stdio session failed to start: {0}")]
    Stdio(String),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Runs `work` on a blocking thread every `period` (a missed beat is not made up) until
/// `stop`.
fn periodic(
    core: &Arc<Core>,
    stop: &CancellationToken,
    period: std::time::Duration,
    work: fn(&Core),
) {
    let core = Arc::clone(core);
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let core = Arc::clone(&core);
            tokio::task::spawn_blocking(move || work(&core)).await.ok();
        }
    });
}

/// What every server does before serving: removes the pins a previous server left in its
/// bpffs directory (it crashed, or was killed), and starts the tasks that reload on SIGHUP
/// or file changes, release deployments over resources.max_cpu_time_ms (checked every
/// second), and release expired deployments at their expiry, sweeping at least every
/// `resources.cleanup_interval`. The tasks stop with `stop`.
fn start_housekeeping(core: &Arc<Core>, stop: CancellationToken) {
    // SIGHUP reopens the audit log (logrotate) and reloads the configuration and tokens;
    // so does a change to either file.
    {
        let core = Arc::clone(core);
        let stop = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::error!("cannot install the SIGHUP handler: reload by restarting");
                return;
            };
            let stamps = |core: &Core| {
                reload::watched(core)
                    .into_iter()
                    .map(|p| reload::Stamp::of(&p))
                    .collect::<Vec<_>>()
            };
            let mut seen = stamps(&core);
            let mut poll = tokio::time::interval(std::time::Duration::from_secs(2));
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        match core.audit.reopen() {
                            Ok(()) => tracing::info!("SIGHUP: audit log reopened"),
                            Err(e) => tracing::error!(error = %e, "SIGHUP: reopening the audit log failed"),
                        }
                        reload::reload(&core, reload::SIGHUP);
                        seen = stamps(&core);
                    }
                    _ = poll.tick() => {
                        let now = stamps(&core);
                        if now != seen {
                            reload::reload(&core, "file changed");
                            seen = stamps(&core);
                        }
                    }
                    () = stop.cancelled() => return,
                }
            }
        });
    }
    // Finished trace sessions go after their time for a last read, or when newer ones
    // finished: what they hold is bounded even when no one starts or reads a session. The
    // audit records the log could not take are retried on the same beat.
    periodic(core, &stop, std::time::Duration::from_secs(5), |core| {
        core.sessions.purge(
            core.config().tools.trace.max_sessions.get() as usize,
            &core.tracker,
        );
        let _ = core.audit.check();
    });
    // Deployments whose programs use more CPU than resources.max_cpu_time_ms go.
    periodic(core, &stop, std::time::Duration::from_secs(1), |core| {
        let limit = core.config().resources.max_cpu_time_ms;
        crate::deploy::watchdog::enforce_cpu(&core.deploy_env(), limit);
    });
    let core = Arc::clone(core);
    let every = core.config().resources.cleanup_interval.0;
    tokio::spawn(async move {
        loop {
            // Wake at the next deadline, a new deadline, or the sweep interval, whichever
            // comes first: deployments go at their expiry, the sweep is the backstop.
            let wait = core.tracker.next_expiry().map_or(every, |at| {
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .min(every)
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = core.tracker.expiry_added() => continue,
                () = stop.cancelled() => return,
            }
            let core = Arc::clone(&core);
            let released = tokio::task::spawn_blocking(move || {
                crate::deploy::watchdog::release_expired(&core.deploy_env())
            })
            .await
            .unwrap_or(0);
            if released > 0 {
                tracing::info!(released, "released expired deployments");
            }
        }
    });
}

/// Where a server will serve, bound before the sandbox closes binding and file access.
#[derive(Debug)]
pub struct Prepared {
    transport: Transport,
    observability: Option<observability::Bound>,
}

enum Transport {
    Stdio,
    Http {
        listener: std::net::TcpListener,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    },
    Unix {
        listener: std::os::unix::net::UnixListener,
        path: std::path::PathBuf,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdio => f.write_str("stdio"),
            Self::Http { listener, acceptor } => f
                .debug_struct("Http")
                .field("listener", listener)
                .field("tls", &acceptor.is_some())
                .finish(),
            Self::Unix { path, .. } => f.debug_struct("Unix").field("path", path).finish(),
        }
    }
}

impl Prepared {
    /// What the sandbox must leave writable: the unix socket's directory (the socket is
    /// removed at exit).
    pub fn socket_dir(&self) -> Option<&std::path::Path> {
        match &self.transport {
            Transport::Unix { path, .. } => path.parent(),
            _ => None,
        }
    }
}

/// The start-up work that needs privileges the sandbox then takes away: binding listeners,
/// loading tokens and TLS keys, opening the audit log, cleaning pins of dead servers.
/// Synchronous, on the only thread, so that the sandbox applies to every thread after it.
pub fn prepare(
    core: &Arc<Core>,
    http: Option<SocketAddr>,
    unix: Option<std::path::PathBuf>,
) -> Result<Prepared, ServeError> {
    let base = &core.pins_base;
    match crate::ebpf::pins::clean_stale(base) {
        Ok(removed) if !removed.is_empty() => tracing::warn!(
            dir = %base.display(),
            removed = removed.len(),
            "removed pins a previous server left behind"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not clean the pin directory"),
    }
    if let Err(why) = core.audit.ensure_open() {
        tracing::warn!(
            error = %why,
            "the audit log cannot be written: deploy-tier calls will be refused (security.audit_log)"
        );
    }
    let unknown = access::unknown_names(&core.config().security.access_control);
    if !unknown.is_empty() {
        tracing::warn!(
            names = ?unknown,
            "security.access_control names users or groups this host does not have: they match no one"
        );
    }
    let transport = match (http, unix) {
        (_, Some(path)) => Transport::Unix {
            listener: unix::bind(&path)?,
            path,
        },
        (Some(addr), None) => {
            let (listener, acceptor) = prepare_http(core, addr)?;
            Transport::Http { listener, acceptor }
        }
        (None, None) => Transport::Stdio,
    };
    let observability = observability::bind(core)?;
    Ok(Prepared {
        transport,
        observability,
    })
}

/// Serves on what [`prepare`] bound until a signal (or, on stdio, end of input) comes.
pub async fn serve(core: Arc<Core>, prepared: Prepared) -> Result<(), ServeError> {
    let stop = CancellationToken::new();
    if let Some(bound) = prepared.observability {
        observability::start(&core, bound, stop.child_token())?;
    }
    let result = match prepared.transport {
        Transport::Stdio => serve_stdio(core, stop.clone()).await,
        Transport::Http { listener, acceptor } => {
            serve_http(core, listener, acceptor, stop.clone()).await
        }
        Transport::Unix { listener, path } => {
            unix::serve_unix(core, listener, path, stop.clone()).await
        }
    };
    stop.cancel();
    result
}

/// Serves one MCP session on stdin/stdout until the client closes stdin or a signal comes.
async fn serve_stdio(core: Arc<Core>, housekeeping: CancellationToken) -> Result<(), ServeError> {
    start_housekeeping(&core, housekeeping.child_token());
    // One signal listener for the whole life of the session: a signal that arrives while
    // waiting for the client's first message must not be lost.
    let mut stop = std::pin::pin!(shutdown_signal());
    // The OS decided who may start the server; permitted_users still applies to the user.
    let identity = access::local_identity(
        &core.config().security.access_control,
        &access::Peer::this_process(),
        true,
    )
    .map_err(|refused| ServeError::NotPermitted(refused.0))?;
    tracing::info!(identity = %identity.id, tiers = ?identity.tier_names(), "stdio client");
    let server = McpServer::new(Arc::clone(&core), "stdio", Some(identity));
    tracing::info!("MCP over stdio: waiting for the client's messages on stdin");
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    let max_line =
        usize::try_from(core.config().server.max_request_bytes.get()).unwrap_or(usize::MAX);
    let (pipes, pump) = framing::guard(stdin, stdout, max_line);
    let pump = tokio::spawn(pump);
    let started = tokio::select! {
        started = server.serve(pipes) => Some(started),
        () = &mut stop => None,
    };
    let outcome = match started {
        None => Ok(()),
        Some(Err(ServerInitializeError::ConnectionClosed(_))) => {
            tracing::info!("the client closed stdin before its first request");
            Ok(())
        }
        Some(Err(e)) => Err(ServeError::Stdio(e.to_string())),
        Some(Ok(running)) => {
            tracing::info!("serving MCP over stdio");
            tokio::select! {
                quit = running.waiting() => {
                    tracing::info!(reason = ?quit, "stdio session ended");
                }
                () = &mut stop => {}
            }
            Ok(())
        }
    };
    housekeeping.cancel();
    core.shutdown();
    // The guard has passed on the session's last words (or stdin is gone).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), pump).await;
    outcome
}

/// Tokens, TLS and the listening socket of the HTTP transport.
fn prepare_http(
    core: &Core,
    addr: SocketAddr,
) -> Result<(std::net::TcpListener, Option<tokio_rustls::TlsAcceptor>), ServeError> {
    let config = core.config();
    let tokens = match &config.security.access_control.tokens_file {
        Some(path) => Some(access::Tokens::load(path).map_err(ServeError::Tokens)?),
        None => None,
    };
    if tokens.is_none() && !addr.ip().is_loopback() {
        return Err(ServeError::NonLoopback { addr });
    }
    match &tokens {
        Some(t) => tracing::info!(tokens = t.len(), "HTTP requests need a bearer token"),
        None => tracing::warn!(
            "no tokens_file: every local process that can reach the port is `anonymous` with \
             security.access_control.default_tiers"
        ),
    }
    core.set_tokens(tokens);
    let tls = &config.server.tls;
    let acceptor = match (tls.enabled, &tls.cert_file, &tls.key_file) {
        (true, Some(cert), Some(key)) => Some(tls::acceptor(cert, key).map_err(ServeError::Tls)?),
        _ => None,
    };
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok((listener, acceptor))
}

/// Serves MCP over Streamable HTTP at `http://ADDR/mcp` until a signal comes.
async fn serve_http(
    core: Arc<Core>,
    listener: std::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let config = core.config();
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = addr;
    start_housekeeping(&core, stop.child_token());
    let server_config = &config.server;
    let http_config = StreamableHttpServerConfig::default();
    // `*`: any Host (servers reached by changing names or pod IPs); only with tokens, which
    // a page a browser was lured to cannot present.
    let http_config = if server_config.allowed_hosts.iter().any(|h| h == "*") {
        http_config.disable_allowed_hosts()
    } else {
        http_config.with_allowed_hosts(server_config.allowed_hosts.clone())
    };
    let http_config = http_config
        .with_allowed_origins(server_config.allowed_origins.clone())
        .enforce_origin_validation()
        .with_max_request_body_bytes(
            usize::try_from(server_config.max_request_bytes.get()).unwrap_or(usize::MAX),
        )
        .with_cancellation_token(stop.child_token());
    let prototype = McpServer::new(Arc::clone(&core), "http", None);
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = Some(server_config.session_idle_timeout.0);
    let manager = Arc::new(manager);
    let service = StreamableHttpService::new(
        move || Ok(prototype.new_session()),
        Arc::clone(&manager),
        http_config,
    );
    let gate = http::Gate::new(Arc::clone(&core), manager);
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(gate, http::gate));
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let (max_connections, short) = conn::fd_budget(server_config.max_connections.get() as usize);
    if let Some(why) = short {
        tracing::warn!("{why}");
    }
    tracing::info!(
        max_connections,
        "serving MCP over HTTP at {scheme}://{local}/mcp"
    );
    let connections =
        conn::Connections::new(max_connections, core.metrics.http_connections.clone());
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        });
    }
    conn::serve(
        listener,
        acceptor,
        router,
        connections,
        server_config.request_read_timeout.0,
        Arc::new(Arc::clone(&core.metrics)),
        stop.clone(),
    )
    .await;
    core.shutdown();
    Ok(())
}
