//! Body types. A request body is wrapped in [`Limited`], which counts bytes
//! against `max_body_bytes` (so a chunked body is cut off as it streams),
//! allows at most `body_read_timeout` between frames and, past that, needs
//! an average of `body_min_rate` bytes per second; when it trips it records
//! why, so the proxy answers 413 or 408 rather than a generic 502. With
//! request buffering (the default) [`buffer`] reads the body whole before
//! the upstream is contacted; otherwise it streams frame by frame.

#![forbid(unsafe_code)]

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use tokio::time::{Instant, Sleep};

use super::reject::Reason;

/// Error type of all proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type used everywhere in the proxy.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body with the given bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// An empty body (a zero-sized one: boxing it allocates nothing).
pub fn empty() -> ProxyBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|e| match e {})
        .boxed()
}

/// Reads a request body whole (request buffering). The body is a
/// [`Limited`] one: its size, read deadline and minimum rate apply while it
/// is read, and a limit that trips is returned as its [`Reason`] (413 or
/// 408); a client that breaks off its body is `BodyIncomplete` (400).
/// Trailers are dropped: a buffered body is forwarded with `Content-Length`.
pub async fn buffer(mut body: ProxyBody, tripped: &Tripped) -> Result<Bytes, Reason> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| tripped.get().unwrap_or(Reason::BodyIncomplete))?;
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            len += data.len();
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.remove(0),
        _ => {
            let mut all = bytes::BytesMut::with_capacity(len);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    })
}

/// Why a [`Limited`] body stopped, shared with the code awaiting the upstream.
/// A request without a body shares nothing ([`Tripped::no_body`]: nothing
/// to allocate, never tripped, always ended).
#[derive(Clone)]
pub struct Tripped(Option<Arc<TrippedState>>);

impl Default for Tripped {
    fn default() -> Self {
        Self(Some(Arc::default()))
    }
}

#[derive(Default)]
struct TrippedState {
    reason: Mutex<Option<Reason>>,
    /// The client's body was read to its end.
    ended: std::sync::atomic::AtomicBool,
}

impl Tripped {
    /// For a request that has no body (its end of stream came with the
    /// head): no wrapper can trip, and the body has ended.
    pub fn no_body() -> Self {
        Self(None)
    }

    /// The reason the body was stopped (`BodyTooLarge`, `BodyTimeout`...), if it was.
    pub fn get(&self) -> Option<Reason> {
        let state = self.0.as_ref()?;
        *state.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records who stopped the body (the first reason a wrapper saw).
    pub(crate) fn set(&self, r: Reason) {
        if let Some(state) = &self.0 {
            *state.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        }
    }

    /// Whether the client's body was read to its end (a streamed body the
    /// upstream is still waiting for makes its silence the client's doing).
    pub fn ended(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|s| s.ended.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn end(&self) {
        if let Some(state) = &self.0 {
            state
                .ended
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The error a [`Limited`] body yields when it stops the request: the [`Reason`] becomes the
/// client's 413 or 408.
#[derive(Debug, thiserror::Error)]
#[error("request body stopped: {0:?}")]
pub struct LimitError(pub Reason);

pin_project_lite::pin_project! {
    /// A request body with a size limit, a per-frame read deadline and a
    /// minimum average rate.
    pub struct Limited<B> {
        #[pin]
        inner: B,
        remaining: u64,
        timeout: Duration,
        #[pin]
        deadline: Sleep,
        tripped: Tripped,
        // Bytes per second; 0: no rate.
        min_rate: u64,
        // When the body was first read (the clocks start then, not while
        // earlier phases run).
        started: Option<Instant>,
        received: u64,
    }
}

impl<B> Limited<B> {
    /// `max`: bytes (413 beyond); `timeout`: longest wait for a frame (408).
    pub fn new(inner: B, max: u64, timeout: Duration, tripped: Tripped) -> Self {
        Self {
            inner,
            remaining: max,
            timeout,
            deadline: tokio::time::sleep(timeout),
            tripped,
            min_rate: 0,
            started: None,
            received: 0,
        }
    }

    /// Also requires the whole body within `timeout + received / rate`
    /// seconds of its first read (`rate` in bytes per second; 0: off).
    pub fn min_rate(mut self, rate: u64) -> Self {
        self.min_rate = rate;
        self
    }
}

/// The latest instant the body may still be incomplete: `timeout` after
/// `started`, plus one second per `min_rate` bytes received.
fn total_deadline(started: Instant, timeout: Duration, received: u64, min_rate: u64) -> Instant {
    if min_rate == 0 {
        return started + Duration::from_secs(u64::from(u32::MAX));
    }
    let earned = Duration::from_secs_f64(received as f64 / min_rate as f64);
    started + timeout + earned
}

impl<B> Body for Limited<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let started = match *this.started {
            Some(t) => t,
            None => {
                let now = Instant::now();
                *this.started = Some(now);
                this.deadline.as_mut().reset(now + *this.timeout);
                now
            }
        };
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > *this.remaining {
                        this.tripped.set(Reason::BodyTooLarge);
                        return Poll::Ready(Some(Err(LimitError(Reason::BodyTooLarge).into())));
                    }
                    *this.remaining -= n;
                    *this.received += n;
                }
                let now = Instant::now();
                let total = total_deadline(started, *this.timeout, *this.received, *this.min_rate);
                if now >= total && !frame.is_trailers() && !this.inner.is_end_stream() {
                    this.tripped.set(Reason::BodyTimeout);
                    return Poll::Ready(Some(Err(LimitError(Reason::BodyTimeout).into())));
                }
                this.deadline
                    .as_mut()
                    .reset((now + *this.timeout).min(total));
                if this.inner.is_end_stream() {
                    this.tripped.end();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The client broke off its body: its fault, not the upstream's.
                this.tripped.set(Reason::BodyIncomplete);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.tripped.end();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.deadline.poll(cx).is_ready() {
                    this.tripped.set(Reason::BodyTimeout);
                    return Poll::Ready(Some(Err(LimitError(Reason::BodyTimeout).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A body that keeps a value alive until it is finished or dropped
    /// (e.g. an in-flight count for least-connections balancing).
    pub struct Guarded<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> Guarded<B, G> {
    /// Wraps `inner`, keeping `guard` alive until the body is finished or dropped.
    pub fn new(inner: B, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: Body, G> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = r {
            this.guard.take();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
