//! Per-connection state: who the peer is, whether it is TLS, when it last
//! sent or received anything and how many requests are in flight (for the
//! idle timeout), plus the IO wrapper that feeds the HTTP/1 framing scanner
//! and records activity.

#![forbid(unsafe_code)]

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::h1_scan::Scanner;

/// What the request phases know about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The peer: the TCP peer, or the PROXY protocol source from a trusted proxy.
    pub peer: SocketAddr,
    pub tls: bool,
    pub listener: Arc<str>,
    started: Instant,
    last_activity_ms: AtomicU64,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    smuggling: Mutex<Vec<u64>>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool, listener: Arc<str>) -> Self {
        Self {
            peer,
            tls,
            listener,
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            smuggling: Mutex::new(Vec::new()),
        }
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// Idle: no request in flight and no bytes for `timeout`.
    pub fn idle_for(&self, timeout: Duration) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        self.in_flight.load(Ordering::Relaxed) == 0
            && now.saturating_sub(last) >= timeout.as_millis() as u64
    }

    /// Index of the next request on this connection (HTTP/1 order).
    pub fn next_request_index(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether HTTP/1 request `index` carried Content-Length and Transfer-Encoding.
    pub fn smuggling_suspected(&self, index: u64) -> bool {
        self.smuggling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&index)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// A request in flight on a connection.
pub struct Busy(Arc<ConnInfo>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Client IO that records activity and scans HTTP/1 framing.
pub struct ConnIo<S> {
    inner: S,
    info: Arc<ConnInfo>,
    scanner: Option<Scanner>,
}

impl<S> ConnIo<S> {
    /// `scan_h1`: false for connections that negotiated h2 by ALPN.
    pub fn new(inner: S, info: Arc<ConnInfo>, scan_h1: bool) -> Self {
        info.touch();
        Self {
            inner,
            info,
            scanner: scan_h1.then(Scanner::default),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let this = &mut *self;
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.info.touch();
                if let Some(scanner) = &mut this.scanner {
                    let info = &this.info;
                    scanner.feed(new, &mut |i| {
                        info.smuggling
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(i)
                    });
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.info.touch();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.info.touch();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
