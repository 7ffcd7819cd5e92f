//! The HTTP/2 server side of a client connection, on the `h2` crate.
//!
//! hyper's HTTP/2 server keeps each stream's `h2::server::SendResponse` to
//! itself, so a service cannot send an interim response: a client that
//! sends `Expect: 100-continue` never gets its `100` and waits for its own
//! expect timeout before sending the body (curl: 1 s per upload;
//! hyperium/hyper#2743). This module drives `h2` directly, as hyper does
//! (same settings, same per-stream task, connection-specific response
//! fields removed, `Content-Length` from an exact body size, `Date` when
//! missing, a client `RST_STREAM` cancels the request) and adds what hyper
//! lacks: `100 Continue` the first time the request body is read, as
//! hyper does over HTTP/1.1 (RFC 9110 §10.1.1: a server that will read the
//! body sends it; one that refuses first, e.g. a 401, answers without it).
//!
//! Everything below the frames (the flood guard, idle accounting) is in the
//! connection's IO (`conn::ConnIo`), unchanged.

#![forbid(unsafe_code)]

use std::{
    future::{Future, poll_fn},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use h2::{
    RecvStream, SendStream,
    server::{Builder, SendResponse},
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{oneshot, watch},
};

use super::{
    body::{BoxError, ProxyBody},
    config::Limits,
    conn::ConnInfo,
    server::Handler,
};

/// hyper's defaults (`proto/h2/server.rs`) for the receive side: 1 MiB
/// stream and connection windows, 16 KiB frames.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONN_WINDOW: u32 = 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
/// Response bytes buffered per stream ahead of the client's window. hyper
/// uses 400 KiB; with 100 streams of a client that never reads that was
/// 40 MiB held per connection. 64 KiB (6.4 MiB at 100 streams) still keeps
/// a fast client's window full.
const MAX_SEND_BUFFER: usize = 64 * 1024;
/// After GOAWAY for idleness: how long the client has to finish before the
/// connection is dropped (no stream is open then; h2 waits for the PING
/// of its graceful shutdown to be answered, which a client may never do).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The `h2` server settings of one config generation, from `[limits]`:
/// `h2_max_concurrent_streams` (SETTINGS_MAX_CONCURRENT_STREAMS),
/// `h2_max_pending_accept_reset_streams` and
/// `h2_max_local_error_reset_streams` (rapid-reset guards), and
/// `max_header_bytes` as SETTINGS_MAX_HEADER_LIST_SIZE.
pub fn builder(l: &Limits) -> Builder {
    let mut b = Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(l.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(l.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(l.h2_max_local_error_reset_streams))
        .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX));
    b
}

/// Serves one HTTP/2 connection until the client closes it, it has been
/// idle (no stream open, no bytes) for `idle`, or `shutdown` says draining;
/// the last two send GOAWAY and let open streams finish (`shutdown` saying
/// closed drops the connection). `handshake` bounds
/// the wait for the client's preface and SETTINGS.
pub async fn serve<I, H>(
    io: I,
    builder: &Builder,
    handler: H,
    info: &ConnInfo,
    handshake: Duration,
    idle: Duration,
    mut shutdown: watch::Receiver<super::listeners::Lifecycle>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut conn = match tokio::time::timeout(handshake, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return tracing::debug!(peer = %info.peer, error = %e, "HTTP/2 handshake failed");
        }
        Err(_) => return tracing::debug!(peer = %info.peer, "HTTP/2 handshake timed out"),
    };
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(50)));
    let mut closing = false;
    // Set when the connection is closed for idleness: dropped at this
    // instant even if the client never acknowledges the GOAWAY.
    let drop_at = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drop_at);
    let mut dropping = false;
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    tokio::spawn(stream(req, respond, handler.clone(), idle));
                }
                Some(Err(e)) => {
                    return tracing::debug!(peer = %info.peer, error = %e, "HTTP/2 connection ended with an error");
                }
                None => return,
            },
            r = shutdown.changed() => {
                // Closed (the grace period is over): drop the connection.
                if r.is_err() || *shutdown.borrow() == super::listeners::Lifecycle::Closed {
                    return;
                }
                if !closing {
                    closing = true;
                    conn.graceful_shutdown();
                }
            }
            _ = tick.tick(), if !closing => {
                if info.idle_for(idle) {
                    closing = true;
                    conn.graceful_shutdown();
                    dropping = true;
                    drop_at.as_mut().reset(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                }
            }
            _ = &mut drop_at, if dropping => {
                return tracing::debug!(peer = %info.peer, "idle HTTP/2 connection dropped after GOAWAY");
            }
        }
    }
}

/// One request: runs the handler (sending `100 Continue` when it first
/// reads a body the client is holding back), then sends its response. A
/// response the client does not take for `stall` is reset.
async fn stream<H: Handler>(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    handler: H,
    stall: Duration,
) {
    let (parts, recv) = req.into_parts();
    let head_only = parts.method == http::Method::HEAD;
    // As hyper over HTTP/1.1: the last `Expect` field counts, and only a
    // request with a body to come gets a 100.
    let expects_continue = !recv.is_end_stream()
        && parts
            .headers
            .get_all(header::EXPECT)
            .iter()
            .next_back()
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (read_tx, mut read_rx) = if expects_continue {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let body = RequestBody {
        size: content_length(&parts.headers),
        recv,
        first_read: read_tx,
        data_done: false,
    };
    let fut = handler.call(Request::from_parts(parts, body));
    tokio::pin!(fut);
    // Until the response is ready: a client RST_STREAM cancels the request
    // (dropping the handler's future closes its upstream exchange).
    let resp = poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        if let Some(rx) = &mut read_rx
            && Pin::new(rx).poll(cx).is_ready()
        {
            read_rx = None;
            // A stream the client already reset fails here; the reset is
            // then seen below.
            let _ = respond.send_informational(continue_response());
        }
        if respond.poll_reset(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    let Some(resp) = resp else {
        return;
    };
    let (mut head, body) = resp.into_parts();
    strip_connection_fields(&mut head.headers);
    head.headers
        .entry(header::DATE)
        .or_insert_with(super::date::now);
    let empty = body.is_end_stream();
    if !empty && let Some(len) = body.size_hint().exact() {
        head.headers
            .entry(header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(len));
    }
    // A response to HEAD has no content (RFC 9110 §9.3.2): the head only,
    // with the Content-Length a GET would have had; the body is dropped.
    let end = empty || head_only;
    match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(send) if !end => pipe(body, send, stall).await,
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "HTTP/2 response not sent"),
    }
}

fn continue_response() -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = StatusCode::CONTINUE;
    r
}

/// Sends a response body: DATA as the peer's flow control allows, then
/// trailers or an empty DATA with END_STREAM. A body error resets the
/// stream (INTERNAL_ERROR), a client reset stops reading the body, and a
/// client that grants no window for `stall` gets RST_STREAM(CANCEL) (as
/// NGINX's `send_timeout`), which also closes the upstream exchange.
async fn pipe(mut body: ProxyBody, mut send: SendStream<Bytes>, stall: Duration) {
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = poll_fn(|cx| send.poll_reset(cx)) => return,
        };
        let frame = match frame {
            None => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; resetting the HTTP/2 stream");
                return send.send_reset(h2::Reason::INTERNAL_ERROR);
            }
            Some(Ok(f)) => f,
        };
        let mut data = match frame.into_data() {
            Ok(d) => d,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = send.send_trailers(trailers);
                    return;
                }
                continue;
            }
        };
        let last = body.is_end_stream();
        if data.is_empty() {
            if last {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            continue;
        }
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let granted = poll_fn(|cx| {
                if send.poll_reset(cx).is_ready() {
                    return Poll::Ready(None);
                }
                send.poll_capacity(cx)
            });
            let n = match tokio::time::timeout(stall, granted).await {
                Ok(Some(Ok(n))) => n.min(data.len()),
                // The stream or connection is gone.
                Ok(Some(Err(_)) | None) => return,
                Err(_) => {
                    tracing::debug!(
                        ?stall,
                        "HTTP/2 client took no response data; resetting the stream"
                    );
                    return send.send_reset(h2::Reason::CANCEL);
                }
            };
            if n == 0 {
                continue;
            }
            let chunk = data.split_to(n);
            if send.send_data(chunk, last && data.is_empty()).is_err() {
                return;
            }
        }
        if last {
            return;
        }
    }
}

/// Fields that are connection-specific in HTTP/1.1 and malformed in
/// HTTP/2 (RFC 9113 §8.2.2); `TE` only as `trailers`.
fn strip_connection_fields(h: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
    ] {
        h.remove(name);
    }
    if h.get(header::TE).is_some_and(|v| v != "trailers") {
        h.remove(header::TE);
    }
}

/// A valid, single `Content-Length` of the request (h2 checks the DATA
/// against it and resets the stream on a mismatch).
fn content_length(h: &HeaderMap) -> Option<u64> {
    let mut values = h.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.parse().ok()
}

/// An HTTP/2 request body: DATA frames, then trailers. Each DATA frame's
/// flow-control window is given back as the proxy takes it, so the client
/// sends no faster than the body is forwarded. The first read wakes the
/// stream task to send `100 Continue` when the client asked for one.
pub struct RequestBody {
    recv: RecvStream,
    /// Bytes still to come by `Content-Length`.
    size: Option<u64>,
    first_read: Option<oneshot::Sender<()>>,
    data_done: bool,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(tx) = self.first_read.take() {
            let _ = tx.send(());
        }
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut self.size {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(t))) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.size {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
