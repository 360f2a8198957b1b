//! MCP over a unix socket: each connection is one session (newline-delimited JSON-RPC, as on
//! stdio), its caller identified by SO_PEERCRED and checked against
//! `security.access_control` before the first message is read. The socket is mode 0660:
//! the file mode decides who may connect at all, the peer check who may use it.

use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rmcp::ServiceExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::{ServeError, shutdown_signal, start_housekeeping};
use crate::core::Core;
use crate::mcp::McpServer;
use crate::security::access;

/// Binds `path`: a socket file left by a server that is gone is replaced; a live one, or
/// any other file, is not.
pub(super) fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, ServeError> {
    let fail = |why: String| ServeError::Unix {
        path: path.to_owned(),
        why,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(fail(
                "it exists and is not a socket; remove it or choose another path".into(),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(fail("another server is listening on it".into()));
        }
        std::fs::remove_file(path).map_err(|e| fail(format!("removing the stale socket: {e}")))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| fail(format!("chmod 0660: {e}")))?;
    Ok(listener)
}

/// Serves MCP on the unix socket at `path` until a signal comes; removes the socket file.
pub(super) async fn serve_unix(
    core: Arc<Core>,
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let listener = UnixListener::from_std(listener).map_err(|e| ServeError::Unix {
        path: path.clone(),
        why: e.to_string(),
    })?;
    start_housekeeping(&core, stop.child_token());
    tracing::info!(socket = %path.display(), "serving MCP on unix socket {}", path.display());
    let mut signal = std::pin::pin!(shutdown_signal());
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a transient error: never spin on it.
                    tracing::warn!(error = %e, "accepting a unix socket connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        // Peers here passed the socket's mode and are checked by SO_PEERCRED; the cap
        // bounds what they cost in descriptors all the same.
        let max = core.config().server.max_connections.get() as usize;
        if open.load(std::sync::atomic::Ordering::Relaxed) >= max {
            core.metrics.connection_closed("refused");
            let line = serde_json::json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": -32000, "message": format!("{max} connections are open (server.max_connections); retry later"), "data": {"code": crate::error::Code::TooManyConnections.as_str()}},
            });
            // Written into the new socket's empty buffer without waiting, and closed before
            // the next accept: refusals hold no descriptors however fast they come.
            let _ = stream.try_write(format!("{line}\n").as_bytes());
            drop(stream);
            continue;
        }
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let core = Arc::clone(&core);
        let stop = stop.child_token();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            connection(core, stream, stop).await;
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
    stop.cancel();
    let _ = std::fs::remove_file(&path);
    core.shutdown();
    Ok(())
}

async fn connection(core: Arc<Core>, mut stream: UnixStream, stop: CancellationToken) {
    let peer = match access::Peer::of_socket(stream.as_fd()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "SO_PEERCRED failed; connection closed");
            return;
        }
    };
    let config = core.config();
    let identity = match access::local_identity(&config.security.access_control, &peer, false) {
        Ok(identity) => identity,
        Err(refused) => {
            tracing::warn!(
                uid = peer.uid,
                "unix socket connection refused: {}",
                refused.0
            );
            // Say why before closing, as a JSON-RPC error the client can show.
            let line = serde_json::json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": -32003, "message": refused.0, "data": {"code": "USER_NOT_PERMITTED"}},
            });
            let _ = stream.write_all(format!("{line}\n").as_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    drop(config);
    tracing::info!(identity = %identity.id, tiers = ?identity.tier_names(), "unix socket client");
    let (read, write) = stream.into_split();
    let max_line =
        usize::try_from(core.config().server.max_request_bytes.get()).unwrap_or(usize::MAX);
    let (pipes, pump) = super::framing::guard(read, write, max_line);
    tokio::spawn(pump);
    let server = McpServer::new(core, "unix", Some(identity));
    match server.serve(pipes).await {
        Ok(running) => {
            tokio::select! {
                quit = running.waiting() => tracing::info!(reason = ?quit, "unix socket session ended"),
                () = stop.cancelled() => {}
            }
        }
        Err(e) => tracing::info!(error = %e, "unix socket session did not start"),
    }
}
