//! gRPC-Web (grpc/grpc `PROTOCOL-WEB.md`), the gRPC that browsers can
//! speak over HTTP/1.1 or HTTP/2 fetch, translated to gRPC for the upstream
//! (Envoy's `grpc_web` filter):
//!
//! - request: `application/grpc-web[+proto|+json]` becomes
//!   `application/grpc[+proto|+json]`; the `-text` variants also have their
//!   base64 body decoded as it streams (each chunk may be padded);
//! - response: the content type goes back to the request's gRPC-Web type,
//!   DATA passes unchanged (base64-encoded for `-text`, padded per chunk),
//!   and the trailers become a final message with flag `0x80` whose payload
//!   is the trailer fields as `name: value\r\n` lines, since a browser
//!   cannot read HTTP trailers. A trailers-only response (status in the
//!   headers) needs no change.

#![forbid(unsafe_code)]

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::{
    body::{BoxError, ProxyBody, Tripped},
    reject::Reason,
};

/// A gRPC-Web call being translated.
pub struct Call {
    /// `-text`: bodies are base64 in both directions.
    text: bool,
    /// The content type the client sent, used for the response.
    content_type: HeaderValue,
}

impl Call {
    /// The call, if the request is a gRPC-Web one: a `POST` whose
    /// content type is `application/grpc-web[-text]` with nothing after it
    /// but a `+codec` or `;params` suffix. No allocation for other requests.
    pub fn of(method: &http::Method, headers: &HeaderMap) -> Option<Self> {
        const WEB: &[u8] = b"application/grpc-web";
        if method != http::Method::POST {
            return None;
        }
        let ct = headers.get(header::CONTENT_TYPE)?;
        let v = ct.as_bytes();
        if v.len() < WEB.len() || !v[..WEB.len()].eq_ignore_ascii_case(WEB) {
            return None;
        }
        let rest = &v[WEB.len()..];
        let (text, rest) = match rest.get(..5) {
            Some(t) if t.eq_ignore_ascii_case(b"-text") => (true, &rest[5..]),
            _ => (false, rest),
        };
        if !matches!(rest.first(), None | Some(b'+' | b';')) {
            return None;
        }
        Some(Self {
            text,
            content_type: ct.clone(),
        })
    }

    /// Rewrites the request's headers into gRPC (content type; the body
    /// length changes for `-text`, so `Content-Length` goes) and wraps its
    /// body.
    /// A `-text` body that is not base64 fails as the client's fault
    /// (`tripped` says 400 `bad_request`, never an upstream failure).
    pub fn to_grpc(
        &self,
        headers: &mut HeaderMap,
        body: ProxyBody,
        tripped: &Tripped,
    ) -> ProxyBody {
        let lower = self
            .content_type
            .to_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let suffix = lower
            .trim_start_matches("application/grpc-web")
            .trim_start_matches("-text");
        if let Ok(v) = HeaderValue::from_str(&format!("application/grpc{suffix}")) {
            headers.insert(header::CONTENT_TYPE, v);
        }
        if !self.text {
            return body;
        }
        headers.remove(header::CONTENT_LENGTH);
        DecodeText {
            inner: body,
            pending: BytesMut::new(),
            tripped: tripped.clone(),
        }
        .boxed()
    }

    /// Translates the upstream's gRPC response back to gRPC-Web.
    pub fn to_web(&self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        let (mut head, body) = resp.into_parts();
        head.headers
            .insert(header::CONTENT_TYPE, self.content_type.clone());
        head.headers.remove(header::CONTENT_LENGTH);
        let body = EncodeWeb {
            inner: body,
            text: self.text,
            done: false,
        }
        .boxed();
        Response::from_parts(head, body)
    }
}

/// The trailer message: flag `0x80`, a 4-byte big-endian length, then the
/// fields as `name: value\r\n` (names are lowercase already).
fn trailer_message(trailers: &HeaderMap) -> Bytes {
    let mut fields = Vec::new();
    for (name, value) in trailers {
        fields.extend_from_slice(name.as_str().as_bytes());
        fields.extend_from_slice(b": ");
        fields.extend_from_slice(value.as_bytes());
        fields.extend_from_slice(b"\r\n");
    }
    let mut out = BytesMut::with_capacity(5 + fields.len());
    out.put_u8(0x80);
    out.put_u32(u32::try_from(fields.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&fields);
    out.freeze()
}

/// The upstream's gRPC response body as gRPC-Web.
struct EncodeWeb {
    inner: ProxyBody,
    text: bool,
    done: bool,
}

impl EncodeWeb {
    fn encode(&self, b: Bytes) -> Bytes {
        if self.text {
            Bytes::from(STANDARD.encode(&b))
        } else {
            b
        }
    }
}

impl Body for EncodeWeb {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => Poll::Ready(Some(Ok(Frame::data(self.encode(d))))),
                Err(frame) => {
                    let Ok(trailers) = frame.into_trailers() else {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::new()))));
                    };
                    self.done = true;
                    let msg = trailer_message(&trailers);
                    Poll::Ready(Some(Ok(Frame::data(self.encode(msg)))))
                }
            },
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
}

/// A `-text` request body: base64 decoded as it arrives. Each 4-character
/// quantum is decoded once complete; a padded quantum ends a chunk (the
/// client may pad each chunk), so decoding restarts after it.
struct DecodeText {
    inner: ProxyBody,
    pending: BytesMut,
    tripped: Tripped,
}

impl DecodeText {
    /// Decodes every complete quantum in `pending`.
    fn drain(&mut self) -> Result<Bytes, BoxError> {
        let whole = self.pending.len() / 4 * 4;
        let quanta = self.pending.split_to(whole);
        let mut out = Vec::with_capacity(whole / 4 * 3);
        let mut start = 0;
        for i in (0..whole).step_by(4) {
            if quanta[i..i + 4].contains(&b'=') {
                STANDARD.decode_vec(&quanta[start..i + 4], &mut out)?;
                start = i + 4;
            }
        }
        if start < whole {
            STANDARD.decode_vec(&quanta[start..whole], &mut out)?;
        }
        Ok(Bytes::from(out))
    }
}

impl Body for DecodeText {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => {
                        self.pending
                            .extend(d.iter().copied().filter(|b| !b.is_ascii_whitespace()));
                        let decoded = match self.drain() {
                            Ok(d) => d,
                            Err(e) => {
                                self.tripped.set(Reason::BadRequest);
                                return Poll::Ready(Some(Err(e)));
                            }
                        };
                        if !decoded.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(decoded))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                None if !self.pending.is_empty() => {
                    self.tripped.set(Reason::BadRequest);
                    return Poll::Ready(Some(Err(
                        "gRPC-Web text body ends inside a base64 quantum".into(),
                    )));
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[tokio::test]
    async fn text_request_chunks_padded_or_not_decode_to_the_same_bytes() {
        let call = Call::of(
            &http::Method::POST,
            &headers("application/grpc-web-text+proto"),
        )
        .unwrap();
        let mut h = headers("application/grpc-web-text+proto");
        // "hello" then "world!" as separately padded chunks, split oddly.
        let chunks = ["aGVs", "bG8=d29y", "bGQh"];
        let stream = data_frames(chunks.iter().map(|c| Bytes::from(*c)).collect());
        let decoded = call
            .to_grpc(&mut h, stream, &Tripped::default())
            .collect()
            .await
            .unwrap();
        assert_eq!(decoded.to_bytes(), "helloworld!");
        assert_eq!(h[header::CONTENT_TYPE], "application/grpc+proto");
    }

    #[test]
    fn only_grpc_web_types_are_calls() {
        let post = |ct: &str| Call::of(&http::Method::POST, &headers(ct));
        assert!(post("application/grpc-web").is_some());
        assert!(post("application/grpc-web+proto").is_some());
        assert!(post("Application/GRPC-Web-Text;x=1").is_some());
        assert!(post("application/grpc").is_none());
        assert!(post("application/grpc-webx").is_none());
        assert!(Call::of(&http::Method::GET, &headers("application/grpc-web")).is_none());
    }

    #[test]
    fn trailers_become_a_flagged_message() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        let m = trailer_message(&t);
        assert_eq!(&m[..5], &[0x80, 0, 0, 0, 16]);
        assert_eq!(&m[5..], b"grpc-status: 0\r\n");
    }

    /// A body of several DATA frames.
    fn data_frames(chunks: Vec<Bytes>) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }
}

#[cfg(test)]
mod garbage {
    use super::*;

    #[tokio::test]
    async fn text_that_is_not_base64_is_the_clients_fault() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web-text"),
        );
        let call = Call::of(&http::Method::POST, &h).unwrap();
        let tripped = Tripped::default();
        let body = call.to_grpc(&mut h, crate::proxy::body::full("!!!!"), &tripped);
        assert!(body.collect().await.is_err());
        assert_eq!(tripped.get(), Some(Reason::BadRequest));
    }
}
