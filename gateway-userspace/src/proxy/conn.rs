//! Per-connection state: who the peer is, whether it is TLS, when it last
//! sent or received anything and how many requests are in flight (for the
//! idle timeout), plus the IO wrapper that feeds the HTTP/1 framing scanner,
//! records activity, and answers 408 when a request head takes longer than
//! `header_read_timeout` from its first byte (hyper's own timeout closes the
//! connection without a response, and also runs while the connection idles).
//! It also holds the connection to the protocol ALPN negotiated (hyper's
//! auto builder would serve whatever the first bytes look like), and runs
//! the HTTP/2 flood guard (`h2_guard`): past a budget it writes GOAWAY
//! (ENHANCE_YOUR_CALM) at the next frame boundary and closes.

#![forbid(unsafe_code)]

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

use super::{
    h1_scan::{Finding, Scanner},
    h2_guard::{self, Flood, H2Budget, Inbound, Outbound, Preface, Sniffed},
    reject::{Reason, Rejection},
};

/// Which protocol a client connection may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x only: TLS that negotiated `http/1.1` or no ALPN, or
    /// cleartext that did not start with the preface. An HTTP/2 preface
    /// closes the connection.
    Http1,
    /// HTTP/2 only: TLS that negotiated `h2`, or cleartext whose first
    /// bytes were the preface (prior knowledge). Anything but the HTTP/2
    /// preface closes the connection.
    Http2,
}

/// What the request phases know about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The peer: the TCP peer, or the PROXY protocol source from a trusted proxy.
    pub peer: SocketAddr,
    /// The TCP peer (the load balancer) when `peer` came from a PROXY
    /// protocol header. Its packets, not the client's, are what XDP sees.
    pub proxied_by: Option<SocketAddr>,
    /// Whether the client connection is TLS (the request's scheme is then `https`).
    pub tls: bool,
    /// The listener's name (`display_name`), for logs and the access log.
    pub listener: Arc<str>,
    started: Instant,
    last_activity_ms: AtomicU64,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// What the HTTP/1 scanner found, by request index.
    findings: Mutex<Vec<(u64, Finding)>>,
    /// Request heads the HTTP/1 scanner completed.
    scanned_heads: AtomicU64,
    /// Heads the HTTP/1 scanner had completed when it met framing it
    /// cannot follow (`u64::MAX` while it follows).
    scan_lost_at: AtomicU64,
    /// Where a slowloris (408 on the raw connection) is reported.
    escalation: Option<(Arc<crate::escalate::Escalator>, crate::escalate::Seen)>,
    /// The listener drains (shutdown, upgrade, removed by a reload): each
    /// HTTP/1 response from now on says `Connection: close`.
    draining: AtomicBool,
    /// An idle HTTP/1 connection is being parked: hyper's connection ends
    /// without shutting the socket down (see `server::serve`).
    parking: AtomicBool,
    /// `peer`'s address as a field value, made at the first request and
    /// shared by every later one (`X-Forwarded-For`, `X-Real-IP`).
    peer_value: std::sync::OnceLock<Option<http::HeaderValue>>,
}

impl ConnInfo {
    /// Marks the peer as learnt from a PROXY header sent by `lb`.
    pub fn proxied_by(mut self, lb: Option<SocketAddr>) -> Self {
        self.proxied_by = lb;
        self
    }

    /// A fresh connection from `peer` on `listener`, with no request yet.
    pub fn new(peer: SocketAddr, tls: bool, listener: Arc<str>) -> Self {
        Self {
            peer,
            proxied_by: None,
            tls,
            listener,
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            findings: Mutex::new(Vec::new()),
            scanned_heads: AtomicU64::new(0),
            scan_lost_at: AtomicU64::new(u64::MAX),
            escalation: None,
            draining: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            peer_value: std::sync::OnceLock::new(),
        }
    }

    /// The peer's address as a field value, made once per connection
    /// (cloning it is a reference count).
    pub fn peer_value(&self) -> Option<&http::HeaderValue> {
        self.peer_value
            .get_or_init(|| super::headers::ip_value(self.peer.ip()))
            .as_ref()
    }

    /// While set, [`ConnIo`] does not shut the socket down when hyper ends
    /// the connection: it is parked, not closed.
    pub fn set_parking(&self, on: bool) {
        self.parking.store(on, Ordering::Relaxed);
    }

    /// Requests started on this connection so far.
    pub fn requests_started(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// From now on, close after each response (see [`ConnInfo::is_draining`]).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the connection closes after its current response.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Reports header timeouts on this connection to the escalation engine.
    pub fn with_escalation(
        mut self,
        escalator: Option<Arc<crate::escalate::Escalator>>,
        seen: crate::escalate::Seen,
    ) -> Self {
        self.escalation = escalator.map(|e| (e, seen));
        self
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
        self.found(index, Finding::ContentLengthWithTransferEncoding)
    }

    /// Whether HTTP/1 request `index` had a `#fragment` in its target.
    pub fn fragment_in_target(&self, index: u64) -> bool {
        self.found(index, Finding::Fragment)
    }

    /// Whether the HTTP/1 framing scanner followed this connection up to
    /// and including request `index`: it saw that request's head and never
    /// lost track. When this is false the scanner's findings cannot be
    /// trusted for `index`, so the request is refused and the connection
    /// closed (fail closed: the scanner and hyper never disagree silently).
    pub fn scanned(&self, index: u64) -> bool {
        self.scanned_heads.load(Ordering::Relaxed) > index
    }

    /// Whether the HTTP/1 scanner lost track of this connection's framing
    /// before the request after `index`: then the response to `index`
    /// closes the connection, so nothing unscanned is parsed as a request.
    pub fn scan_lost_after(&self, index: u64) -> bool {
        self.scan_lost_at.load(Ordering::Relaxed) <= index.saturating_add(1)
    }

    /// Whether HTTP/1 request `index` was `OPTIONS` with an absolute-form
    /// target and an empty path (answered like `OPTIONS *`).
    pub fn server_wide_options(&self, index: u64) -> bool {
        self.found(index, Finding::ServerWideOptions)
    }

    fn found(&self, index: u64, what: Finding) -> bool {
        self.findings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(index, what))
    }

    /// A request head (or the HTTP/2 preface) that started but did not
    /// complete within `header_read_timeout`: logged, and a slowloris
    /// offence for escalation.
    pub fn head_timed_out(&self) {
        tracing::info!(peer = %self.peer, reason = Reason::HeaderTimeout.code(), "request head timed out (408)");
        if let Some((e, seen)) = &self.escalation {
            e.record(
                self.peer.ip(),
                crate::escalate::Offence::LimitViolation,
                *seen,
            );
        }
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
    header_timeout: Duration,
    head_deadline: Option<Pin<Box<Sleep>>>,
    /// Bytes of the 408 answer already written, once the head timed out.
    timing_out: Option<(Vec<u8>, usize)>,
    protocol: Protocol,
    /// Set until the first bytes said which protocol this is.
    preface: Option<Preface>,
    budget: H2Budget,
    /// The HTTP/2 flood guard, once the preface arrived (boxed: HTTP/1
    /// connections do not carry its size).
    h2: Option<Box<H2State>>,
    /// Bytes read (and scanned) before an idle HTTP/1 connection was
    /// parked that its next hyper connection must read first.
    replay: Option<bytes::Bytes>,
}

/// The flood guard of an HTTP/2 connection.
struct H2State {
    inbound: Inbound,
    outbound: Outbound,
    /// Set once a budget is exceeded.
    calm: Option<Calm>,
}

/// A connection being sent GOAWAY(ENHANCE_YOUR_CALM) and closed.
struct Calm {
    frame: [u8; 17],
    written: usize,
    /// Closed without GOAWAY if no frame boundary is reached by then.
    deadline: Pin<Box<Sleep>>,
}

impl<S> ConnIo<S> {
    /// `protocol`: what the connection may speak (by ALPN); `budget`: the
    /// HTTP/2 flood limits.
    pub fn new(
        inner: S,
        info: Arc<ConnInfo>,
        protocol: Protocol,
        header_timeout: Duration,
        budget: H2Budget,
    ) -> Self {
        info.touch();
        Self {
            inner,
            info,
            scanner: (protocol != Protocol::Http2).then(Scanner::default),
            header_timeout,
            head_deadline: None,
            timing_out: None,
            protocol,
            preface: Some(Preface::default()),
            budget,
            h2: None,
            replay: None,
        }
    }

    /// Hands `bytes` (already read from the socket and scanned) to the next
    /// reader before anything new from the socket.
    pub fn replay(&mut self, bytes: bytes::Bytes) {
        if !bytes.is_empty() {
            self.replay = Some(bytes);
        }
    }

    /// Frees what an idle connection does not need (the scanner's head
    /// buffer).
    pub fn release_idle(&mut self) {
        if let Some(s) = &mut self.scanner {
            s.release_idle();
        }
    }

    /// Checks the first bytes against the negotiated protocol and starts
    /// the HTTP/2 guard after a preface; `Err` closes the connection.
    fn sniff(&mut self, new: &[u8]) -> io::Result<()> {
        let Some(preface) = &mut self.preface else {
            return Ok(());
        };
        match (preface.feed(new), self.protocol) {
            (Sniffed::Undecided, _) => Ok(()),
            (Sniffed::Other, Protocol::Http2) => Err(protocol_error(
                "ALPN negotiated h2 but the client did not send the HTTP/2 preface",
            )),
            (Sniffed::Other, _) => {
                self.preface = None;
                Ok(())
            }
            (Sniffed::Http2 { .. }, Protocol::Http1) => Err(protocol_error(
                "the client sent the HTTP/2 preface on an HTTP/1.1 connection",
            )),
            (Sniffed::Http2 { frames_at }, _) => {
                self.preface = None;
                self.scanner = None;
                self.h2 = Some(Box::new(H2State {
                    inbound: Inbound::new(self.budget),
                    outbound: Outbound::default(),
                    calm: None,
                }));
                self.guard_h2(&new[frames_at..]);
                Ok(())
            }
        }
    }

    /// Counts HTTP/2 frames read; past a budget, starts the GOAWAY.
    fn guard_h2(&mut self, new: &[u8]) {
        let Some(h2) = &mut self.h2 else { return };
        if h2.calm.is_some() {
            return;
        }
        if let Err(flood) = h2.inbound.feed(new, &h2.outbound) {
            self.calm_down(flood);
        }
    }

    fn calm_down(&mut self, flood: Flood) {
        let Some(h2) = &mut self.h2 else { return };
        tracing::warn!(peer = %self.info.peer, reason = flood.code(), "HTTP/2 flood; sending GOAWAY(ENHANCE_YOUR_CALM) and closing");
        h2.calm = Some(Calm {
            frame: h2_guard::goaway(h2.inbound.last_stream()),
            written: 0,
            deadline: Box::pin(tokio::time::sleep(h2_guard::GOAWAY_GRACE)),
        });
        if let Some((e, seen)) = &self.info.escalation {
            e.record(
                self.info.peer.ip(),
                crate::escalate::Offence::MalformedHttp,
                *seen,
            );
        }
    }
}

fn protocol_error(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn calmed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "HTTP/2 flood: connection closed after GOAWAY",
    )
}

impl<S: AsyncWrite + Unpin> ConnIo<S> {
    /// Once a flood was detected: waits for hyper's output to reach a frame
    /// boundary, writes the GOAWAY and flushes. `Ready` when the connection
    /// can be closed (GOAWAY sent, or the grace period over); `Pending`
    /// while hyper is mid-frame or the GOAWAY is being written.
    fn poll_calm(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(H2State {
            outbound,
            calm: Some(calm),
            ..
        }) = self.h2.as_deref_mut()
        else {
            return Poll::Ready(());
        };
        if calm.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if !outbound.at_boundary() {
            // hyper finishes its frame through poll_write.
            return Poll::Pending;
        }
        while calm.written < calm.frame.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &calm.frame[calm.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(n)) => calm.written += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(()),
        }
    }

    fn calming(&self) -> bool {
        matches!(self.h2.as_deref(), Some(H2State { calm: Some(_), .. }))
    }
}

/// The raw HTTP/1.1 408 answer for a request head that took too long.
pub(super) fn request_timeout_response() -> Vec<u8> {
    let body = Rejection::new(
        Reason::HeaderTimeout,
        "the request headers were not received in time",
    )
    .problem_json("-");
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<S: AsyncWrite + Unpin> ConnIo<S> {
    /// Writes the 408 answer; `Ready` once it is out (or cannot be).
    fn poll_write_timeout(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some((bytes, written)) = &mut self.timing_out else {
            return Poll::Ready(());
        };
        while *written < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.timing_out.is_some() {
            std::task::ready!(self.poll_write_timeout(cx));
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time",
            )));
        }
        if self.calming() {
            std::task::ready!(self.poll_calm(cx));
            return Poll::Ready(Err(calmed()));
        }
        if let Some(replay) = &mut self.replay {
            // Read and scanned before the connection was parked.
            let n = replay.len().min(buf.remaining());
            buf.put_slice(&replay.split_to(n));
            if replay.is_empty() {
                self.replay = None;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let this = &mut *self;
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.info.touch();
                if this.preface.is_some() {
                    this.sniff(new)?;
                } else if this.h2.is_some() {
                    this.guard_h2(new);
                }
                if this.calming() {
                    // The frames that tripped the guard are not handed to
                    // hyper: nothing more from this client is processed.
                    buf.set_filled(before);
                    return match this.poll_calm(cx) {
                        Poll::Ready(()) => Poll::Ready(Err(calmed())),
                        Poll::Pending => Poll::Pending,
                    };
                }
                if let Some(scanner) = &mut this.scanner {
                    let info = &this.info;
                    scanner.feed(new, &mut |i, f| {
                        info.findings
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((i, f))
                    });
                    info.scanned_heads.store(scanner.heads(), Ordering::Relaxed);
                    if scanner.lost() {
                        info.scan_lost_at
                            .fetch_min(scanner.heads(), Ordering::Relaxed);
                    }
                }
            }
        }
        let this = &mut *self;
        match &this.scanner {
            Some(s) if s.mid_head() => {
                if this.head_deadline.is_none() {
                    this.head_deadline = Some(Box::pin(tokio::time::sleep(this.header_timeout)));
                }
            }
            _ => this.head_deadline = None,
        }
        if r.is_pending()
            && let Some(deadline) = &mut this.head_deadline
            && deadline.as_mut().poll(cx).is_ready()
            && this.info.in_flight.load(Ordering::Relaxed) == 0
        {
            this.head_deadline = None;
            this.timing_out = Some((request_timeout_response(), 0));
            this.info.head_timed_out();
            return Pin::new(this).poll_read(cx, buf);
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
        let this = &mut *self;
        let Some(h2) = &mut this.h2 else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        let mut limit = buf.len();
        if let Some(calm) = &mut h2.calm {
            if calm.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(calmed()));
            }
            // Only the rest of the frame in progress, then the GOAWAY.
            limit = h2.outbound.until_boundary(buf);
            if limit == 0 {
                std::task::ready!(this.poll_calm(cx));
                return Poll::Ready(Err(calmed()));
            }
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, &buf[..limit]);
        if let (Poll::Ready(Ok(n)), Some(h2)) = (&r, &mut this.h2) {
            h2.outbound.feed(&buf[..*n]);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.info.touch();
        if self.calming() {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            return self.poll_write(cx, first);
        }
        let this = &mut *self;
        match &this.h2 {
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            Some(_) => {
                let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
                if let (Poll::Ready(Ok(n)), Some(h2)) = (&r, &mut this.h2) {
                    let mut left = *n;
                    for b in bufs {
                        let take = left.min(b.len());
                        h2.outbound.feed(&b[..take]);
                        left -= take;
                        if left == 0 {
                            break;
                        }
                    }
                }
                r
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.calming() {
            // A client that does not read keeps hyper flushing: the grace
            // deadline is checked here too.
            if let Some(H2State {
                calm: Some(calm), ..
            }) = self.h2.as_deref_mut()
                && calm.deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(calmed()));
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.info.parking.load(Ordering::Relaxed) {
            // Parked, not closed: the socket stays open for the next request.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
