//! The HTTP transport's connections: accepted, counted and served by our own loop, so that
//! what a connection costs is bounded before any request on it is parsed.
//!
//! - At most `server.max_connections` are open. When a new one arrives at the cap, the
//!   connection idle longest (no admitted request in progress: authenticated, its body read,
//!   within the concurrency cap) is closed for it; only when every connection is serving an
//!   admitted request is the new one refused. A process that holds connections half-open,
//!   with or without a token, displaces only its own: a client's fresh connection is always
//!   the newest, and an admitted request is never displaced.
//! - A request's head must arrive within `server.request_read_timeout` (hyper's header
//!   timer, which also closes connections idle between requests for that long), its body
//!   within the same time again (the HTTP gate).
//! - Each connection costs two descriptors: its socket, and a duplicate that a watcher waits
//!   on for the peer's close (hyper learns that a connection closed only when it next reads
//!   or writes, and a 2026-07-28 tool call writes nothing until its result: a client that
//!   gives up on a 30-second trace would leave it attached for the rest of its time). The
//!   watcher cancels the connection's token, which the HTTP layer hands to the calls it
//!   carries. [`fd_budget`] fits the cap to the process's descriptor limit.
//! - Both descriptors belong to the connection's task, and an evicted connection's task has
//!   dropped them before the next connection is accepted: a flood of connections holds at
//!   most the cap's descriptors and the one being accepted, however fast it arrives (the
//!   accept loop waits up to [`EVICTION_WAIT`] for that, and warns should it not happen).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Descriptors kept free of connections for everything else the server holds: BPF
/// programs, maps, links and perf events of traces and deployments, files, the listeners
/// (under a small limit, half of it).
pub const RESERVED_FDS: u64 = 1024;
/// Descriptors one connection costs (its socket and the watcher's duplicate).
pub const FDS_PER_CONNECTION: u64 = 2;
/// Longest the accept loop waits for an evicted connection's task to drop its descriptors
/// (it does so as soon as it runs).
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// How long requests in progress may take to finish once the server is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A request's connection: its token is cancelled when the peer closes it; the HTTP gate
/// marks it authenticated and busy.
#[derive(Debug, Clone)]
pub struct Conn {
    pub gone: CancellationToken,
    pub state: Arc<ConnState>,
}

/// What admission needs to know of an open connection.
#[derive(Debug, Default)]
pub struct ConnState {
    /// A request on it was admitted.
    authenticated: AtomicBool,
    /// Admitted requests in progress on it.
    busy: AtomicUsize,
    /// Cancelled to close the connection (evicted, or the server stops).
    close: CancellationToken,
    /// Cancelled once the connection's task has dropped its descriptors.
    closed: CancellationToken,
    opened: Mutex<Option<Instant>>,
    /// When it last became idle.
    idle_since: Mutex<Option<Instant>>,
}

impl ConnState {
    /// An admitted request started on this connection; it stays busy until the returned
    /// guard goes (when the response's body ends).
    pub fn begin(self: &Arc<Self>) -> BusyGuard {
        self.authenticated.store(true, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
        BusyGuard(Arc::clone(self))
    }
}

/// Keeps a connection busy (not evictable) while an authenticated request is served.
#[derive(Debug)]
pub struct BusyGuard(Arc<ConnState>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }
}

/// The open connections and the cap on them.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    open: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    /// Evicted connections whose tasks may not have dropped their descriptors yet.
    evicted: Mutex<Vec<Arc<ConnState>>>,
    next: std::sync::atomic::AtomicU64,
    /// `ebpf_mcp_http_connections_open`.
    gauge: prometheus_client::metrics::gauge::Gauge,
}

/// What admission decided for a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Admitted after closing another that was not serving an authenticated request.
    Evicted {
        unauthenticated: bool,
    },
    /// Every open connection is serving an authenticated request.
    Refused,
}

impl Connections {
    pub fn new(max: usize, gauge: prometheus_client::metrics::gauge::Gauge) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            open: Mutex::new(BTreeMap::new()),
            evicted: Mutex::default(),
            next: Default::default(),
            gauge,
        })
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more connection if it can; on success the new connection is
    /// registered and its id and state returned.
    pub fn admit(&self) -> (Admission, Option<(u64, Arc<ConnState>)>) {
        let mut open = self.lock();
        let mut admission = Admission::Admitted;
        if open.len() >= self.max {
            let now = Instant::now();
            let idle_for = |s: &ConnState| {
                let since = *s.idle_since.lock().unwrap_or_else(|p| p.into_inner());
                let opened = *s.opened.lock().unwrap_or_else(|p| p.into_inner());
                now.duration_since(since.or(opened).unwrap_or(now))
            };
            // Never one serving an admitted request; among the rest, whichever has done
            // nothing for longest. A client's fresh connection is the newest, so a flood of
            // connections displaces its own before it.
            let victim = open
                .iter()
                .filter(|(_, s)| s.busy.load(Ordering::Relaxed) == 0)
                .max_by_key(|(id, s)| (idle_for(s), std::cmp::Reverse(**id)))
                .map(|(id, s)| (*id, !s.authenticated.load(Ordering::Relaxed)));
            match victim {
                Some((id, unauthenticated)) => {
                    if let Some(s) = open.remove(&id) {
                        s.close.cancel();
                        self.evicted
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(s);
                    }
                    admission = Admission::Evicted { unauthenticated };
                }
                None => return (Admission::Refused, None),
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::default());
        *state.opened.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        open.insert(id, Arc::clone(&state));
        self.gauge.set(open.len() as i64);
        (admission, Some((id, state)))
    }

    /// Returns once every evicted connection's task has dropped its descriptors (or after
    /// [`EVICTION_WAIT`], warning, should one not).
    pub async fn evictions_closed(&self) {
        let evicted = std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|p| p.into_inner()));
        for s in evicted {
            if tokio::time::timeout(EVICTION_WAIT, s.closed.cancelled())
                .await
                .is_err()
            {
                tracing::warn!("an evicted connection was still open after {EVICTION_WAIT:?}");
            }
        }
    }

    /// Closes every connection not serving an authenticated request (shutdown).
    fn close_idle(&self) {
        for s in self.lock().values() {
            if s.busy.load(Ordering::Relaxed) == 0 {
                s.close.cancel();
            }
        }
    }

    fn forget(&self, id: u64) {
        let mut open = self.lock();
        open.remove(&id);
        self.gauge.set(open.len() as i64);
    }
}

/// The connection cap that fits this process's descriptor limit: the soft limit is raised
/// toward the hard one when the configured cap needs it; when even that is too low, the
/// cap is lowered to fit (and the caller says so).
pub fn fd_budget(configured: usize) -> (usize, Option<String>) {
    let want = configured as u64 * FDS_PER_CONNECTION + RESERVED_FDS;
    let (soft, hard) = match crate::ebpf::sys::nofile_limit() {
        Ok(l) => l,
        Err(e) => return (configured, Some(format!("cannot read RLIMIT_NOFILE: {e}"))),
    };
    if soft >= want {
        return (configured, None);
    }
    let raised = want.min(hard);
    let now = match crate::ebpf::sys::set_nofile_limit(raised, hard) {
        Ok(()) => raised,
        Err(_) => soft,
    };
    if now >= want {
        return (configured, None);
    }
    let reserve = RESERVED_FDS.min(now / 2);
    let fits =
        (now.saturating_sub(reserve) / FDS_PER_CONNECTION).clamp(1, configured as u64) as usize;
    (
        fits,
        Some(format!(
            "server.max_connections is {configured}, but the descriptor limit ({now}, hard \
             {hard}) fits only {fits} ({FDS_PER_CONNECTION} descriptors each, {reserve} kept \
             for BPF objects and files); raise LimitNOFILE (systemd) or `ulimit -n` to \
             at least {want}"
        )),
    )
}

/// A stream whose socket can be watched for the peer's close.
pub trait SocketFd {
    fn socket_fd(&self) -> BorrowedFd<'_>;
}

impl SocketFd for TcpStream {
    fn socket_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

impl SocketFd for tokio_rustls::server::TlsStream<TcpStream> {
    fn socket_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().0.as_fd()
    }
}

/// Waits for the peer's end of stream on `fd` (a duplicate of the connection's socket) and
/// cancels `gone`. It runs inside the connection's future, so the duplicate goes with the
/// connection and never keeps a socket open that the server closed.
async fn watch(fd: OwnedFd, gone: CancellationToken) {
    let std = std::net::TcpStream::from(fd);
    if std.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(socket) = TcpStream::from_std(std) else {
        return;
    };
    let mut byte = [0u8; 1];
    loop {
        match socket.peek(&mut byte).await {
            // The peer closed (or reset) the connection.
            Ok(0) | Err(_) => {
                gone.cancel();
                return;
            }
            // A request the server has not read yet: look again once it has.
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What the accept loop reports to metrics.
pub trait ConnEvents: Send + Sync + 'static {
    fn evicted(&self, unauthenticated: bool);
    fn refused(&self);
}

impl ConnEvents for Arc<crate::telemetry::metrics::Metrics> {
    fn evicted(&self, unauthenticated: bool) {
        self.connection_closed(if unauthenticated {
            "evicted_unauthenticated"
        } else {
            "evicted_idle"
        });
    }

    fn refused(&self) {
        self.connection_closed("refused");
    }
}

/// Accepts and serves connections on `listener` with `router` until `stop`; then stops
/// accepting, lets requests in progress finish (graceful shutdown) and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    connections: Arc<Connections>,
    read_timeout: Duration,
    events: Arc<dyn ConnEvents>,
    stop: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut warned_emfile = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors (or a transient error): make room by closing an idle
                // connection, and do not spin.
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    if !warned_emfile {
                        tracing::warn!(error = %e, open = connections.len(), "out of file descriptors while accepting; lower server.max_connections or raise LimitNOFILE");
                        warned_emfile = true;
                    }
                } else {
                    tracing::debug!(error = %e, "accepting a TCP connection failed");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let (admission, slot) = connections.admit();
        match admission {
            Admission::Refused => {
                events.refused();
                tracing::debug!(%peer, "connection refused: every connection is serving an authenticated request (server.max_connections)");
                drop(stream);
                continue;
            }
            Admission::Evicted { unauthenticated } => events.evicted(unauthenticated),
            Admission::Admitted => {}
        }
        // The connection just closed for this one goes before another is accepted.
        connections.evictions_closed().await;
        let Some((id, state)) = slot else { continue };
        let router = router.clone();
        let tls = tls.clone();
        let connections = Arc::clone(&connections);
        let stop = stop.clone();
        tasks.spawn(async move {
            // Dropped last: the connection's future (its socket, its watcher's duplicate)
            // ends with the `select!`.
            let _closed = state.closed.clone().drop_guard();
            let close = state.close.clone();
            tokio::select! {
                () = close.cancelled() => {}
                () = connection(stream, tls, router, Arc::clone(&state), read_timeout, stop) => {}
            }
            connections.forget(id);
        });
    }
    // Graceful: connections serving an authenticated request finish it (each watches
    // `stop`); the rest (idle, half-open, never authenticated) are closed now. Whatever is
    // still open after the grace period is closed too.
    connections.close_idle();
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing connections still open after the shutdown grace period"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

async fn connection(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    state: Arc<ConnState>,
    read_timeout: Duration,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve_one(stream, router, state, read_timeout, stop).await,
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_one(tls, router, state, read_timeout, stop).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn serve_one<S>(
    io: S,
    router: axum::Router,
    state: Arc<ConnState>,
    read_timeout: Duration,
    stop: CancellationToken,
) where
    S: SocketFd + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let gone = CancellationToken::new();
    let watching = {
        let duplicate = io
            .socket_fd()
            .try_clone_to_owned()
            .map_err(|e| tracing::debug!(error = %e, "connection not watched: dup failed"))
            .ok();
        let gone = gone.clone();
        async move {
            if let Some(fd) = duplicate {
                watch(fd, gone).await;
            }
            std::future::pending::<()>().await
        }
    };
    let conn = Conn { gone, state };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(conn.clone());
        router.clone().oneshot(request.map(Body::new))
    });
    let builder = {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(read_timeout)
            .keep_alive(true);
        b
    };
    let serving = async move {
        let served = builder.serve_connection(TokioIo::new(io), service);
        let mut served = std::pin::pin!(served);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended");
                }
                return;
            }
            () = stop.cancelled() => {}
        }
        served.as_mut().graceful_shutdown();
        let _ = served.await;
    };
    // The watcher never ends the connection; it only cancels `gone`. Polled first, so that a
    // peer's close seen by both at once still cancels `gone`.
    tokio::select! {
        biased;
        () = watching => {}
        () = serving => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Connections {
        /// Marks connection `id` authenticated, and busy while the guard lives.
        fn mark(&self, id: u64, authenticated: bool, busy: bool) -> Option<BusyGuard> {
            let state = Arc::clone(self.lock().get(&id)?);
            if authenticated || busy {
                let guard = state.begin();
                if busy {
                    return Some(guard);
                }
            }
            None
        }
    }

    #[test]
    fn a_full_table_closes_the_connection_idle_longest() {
        let c = Connections::new(3, Default::default());
        let (_, a) = c.admit();
        std::thread::sleep(Duration::from_millis(5));
        let (_, b) = c.admit();
        std::thread::sleep(Duration::from_millis(5));
        let (_, d) = c.admit();
        let (a, b, d) = (a.unwrap(), b.unwrap(), d.unwrap());
        // a: oldest but serving a request; b: idle since it opened; d: newest, idle.
        let _busy = c.mark(a.0, true, true);
        let (admission, e) = c.admit();
        assert_eq!(
            admission,
            Admission::Evicted {
                unauthenticated: true
            }
        );
        assert!(b.1.close.is_cancelled() && !a.1.close.is_cancelled() && !d.1.close.is_cancelled());
        // Next: d has been idle longer than the newcomer e.
        let (admission, _) = c.admit();
        assert_eq!(
            admission,
            Admission::Evicted {
                unauthenticated: true
            }
        );
        assert!(d.1.close.is_cancelled() && !e.unwrap().1.close.is_cancelled());
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn busy_everywhere_refuses() {
        let c = Connections::new(1, Default::default());
        let (_, a) = c.admit();
        let _g = c.mark(a.unwrap().0, true, true);
        assert_eq!(c.admit().0, Admission::Refused);
    }
}
