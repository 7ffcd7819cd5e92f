//! Body types. Bodies stream frame by frame, never buffered whole. A
//! request body is wrapped in [`Limited`], which counts bytes against
//! `max_body_bytes` (so a chunked body is cut off as it streams) and allows
//! at most `body_read_timeout` between frames; when it trips it records
//! why, so the proxy answers 413 or 408 rather than a generic 502.

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

/// An empty body.
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// Why a [`Limited`] body stopped, shared with the code awaiting the upstream.
#[derive(Clone, Default)]
pub struct Tripped(Arc<Mutex<Option<Reason>>>);

impl Tripped {
    pub fn get(&self) -> Option<Reason> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, r: Reason) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }
}

/// The limit that stopped a body.
#[derive(Debug, thiserror::Error)]
#[error("request body stopped: {0:?}")]
pub struct LimitError(pub Reason);

pin_project_lite::pin_project! {
    /// A request body with a size limit and a per-frame read deadline.
    pub struct Limited<B> {
        #[pin]
        inner: B,
        remaining: u64,
        timeout: Duration,
        #[pin]
        deadline: Sleep,
        tripped: Tripped,
    }
}

impl<B> Limited<B> {
    pub fn new(inner: B, max: u64, timeout: Duration, tripped: Tripped) -> Self {
        Self {
            inner,
            remaining: max,
            timeout,
            deadline: tokio::time::sleep(timeout),
            tripped,
        }
    }
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
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > *this.remaining {
                        this.tripped.set(Reason::BodyTooLarge);
                        return Poll::Ready(Some(Err(LimitError(Reason::BodyTooLarge).into())));
                    }
                    *this.remaining -= n;
                }
                let next = Instant::now() + *this.timeout;
                this.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The client broke off its body: its fault, not the upstream's.
                this.tripped.set(Reason::BodyIncomplete);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
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
