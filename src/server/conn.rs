//! Noticing that an HTTP client went away while its request is still being worked on.
//! hyper learns that a connection closed only when it next reads or writes, and a 2026-07-28
//! tool call writes nothing until its result: a client that gives up on a 30-second trace
//! would leave it attached for the rest of its time. Each accepted connection gets a watcher
//! that waits, on a duplicate of the socket's descriptor, for the peer's end of stream, and
//! then cancels the connection's token, which the HTTP layer hands to the calls it carries.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, DropGuard};

/// A request's connection: its token is cancelled when the peer closes it.
#[derive(Debug, Clone)]
pub struct Conn {
    pub gone: CancellationToken,
}

impl<L> Connected<IncomingStream<'_, Watched<L>>> for Conn
where
    L: Listener<Addr = std::net::SocketAddr>,
    L::Io: SocketFd,
{
    fn connect_info(stream: IncomingStream<'_, Watched<L>>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A stream whose socket can be watched.
pub trait SocketFd {
    fn socket_fd(&self) -> BorrowedFd<'_>;
}

impl SocketFd for tokio::net::TcpStream {
    fn socket_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

impl SocketFd for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn socket_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().0.as_fd()
    }
}

/// A listener whose connections are watched for the peer closing them.
#[derive(Debug)]
pub struct Watched<L>(pub L);

impl<L> Listener for Watched<L>
where
    L: Listener<Addr = std::net::SocketAddr>,
    L::Io: SocketFd,
{
    type Io = WatchedIo<L::Io>;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, _peer) = self.0.accept().await;
        let gone = CancellationToken::new();
        let served = CancellationToken::new();
        match io.socket_fd().try_clone_to_owned() {
            Ok(fd) => {
                tokio::spawn(watch(fd, gone.clone(), served.clone()));
            }
            Err(e) => tracing::debug!(error = %e, "connection not watched: dup failed"),
        }
        let io = WatchedIo {
            inner: io,
            _served: served.drop_guard(),
        };
        (io, Conn { gone })
    }

    /// (axum asks only to log it; the address is the inner listener's.)
    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr().map(|_| Conn {
            gone: CancellationToken::new(),
        })
    }
}

/// Waits for the peer's end of stream on `fd` (a duplicate of the connection's socket) and
/// cancels `gone`; stops when the server is done with the connection (`served`), so the
/// duplicate never keeps a socket open that the server closed.
async fn watch(fd: OwnedFd, gone: CancellationToken, served: CancellationToken) {
    let std = std::net::TcpStream::from(fd);
    if std.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(socket) = tokio::net::TcpStream::from_std(std) else {
        return;
    };
    let mut byte = [0u8; 1];
    loop {
        tokio::select! {
            () = served.cancelled() => return,
            peeked = socket.peek(&mut byte) => match peeked {
                // The peer closed (or reset) the connection.
                Ok(0) | Err(_) => {
                    gone.cancel();
                    return;
                }
                // A request the server has not read yet: look again once it has.
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
        }
    }
}

/// A connection's stream; dropping it (the server is done with the connection) ends its
/// watcher.
#[derive(Debug)]
pub struct WatchedIo<S> {
    inner: S,
    _served: DropGuard,
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
