//! The upstream read timeout on response bodies (Envoy's stream idle
//! timeout, NGINX's `proxy_read_timeout` between reads). hyper's client has
//! no timeout once the headers arrived: an upstream that sends the headers
//! and part of the body and then stalls would keep the client waiting
//! forever. [`ReadTimeout`] fails the body after `timeout` without a frame;
//! hyper's server then aborts the client's response (HTTP/1: the connection
//! is closed before the body is complete; HTTP/2: RST_STREAM), and the
//! upstream connection is closed, never reused. A body read to its end
//! gives its connection back to the target's idle connections.

#![forbid(unsafe_code)]

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::proxy::body::BoxError;

/// Why an upstream response body ended early.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    /// No frame arrived for the pool's `read_timeout`.
    #[error("the upstream response body stalled for {0:?}")]
    Stalled(Duration),
    /// The upstream connection failed mid-body.
    #[error("the upstream response body broke off: {0}")]
    Broken(BoxError),
}

pin_project_lite::pin_project! {
    /// An upstream response body with a deadline between frames.
    pub struct ReadTimeout<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        #[pin]
        deadline: Sleep,
        // Until the body ends: released (reused) at a clean end, dropped
        // (closed) on an error or a stall.
        lease: Option<super::Lease>,
        done: bool,
    }
}

impl<B> ReadTimeout<B> {
    /// `connection` is poisoned when the body fails.
    pub fn new(inner: B, timeout: Duration, lease: super::Lease) -> Self {
        Self {
            inner,
            timeout,
            deadline: tokio::time::sleep(timeout),
            lease: Some(lease),
            done: false,
        }
    }
}

impl<B> Body for ReadTimeout<B>
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
        if *this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    // The last frame: the server may not poll again.
                    *this.done = true;
                    if let Some(lease) = this.lease.take() {
                        lease.release();
                    }
                } else {
                    let next = Instant::now() + *this.timeout;
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                this.lease.take();
                Poll::Ready(Some(Err(UpstreamBodyError::Broken(e.into()).into())))
            }
            Poll::Ready(None) => {
                *this.done = true;
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.deadline.poll(cx).is_ready() {
                    *this.done = true;
                    this.lease.take();
                    tracing::info!(timeout = ?this.timeout, "upstream response body stalled; aborting the response");
                    return Poll::Ready(Some(
                        Err(UpstreamBodyError::Stalled(*this.timeout).into()),
                    ));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
