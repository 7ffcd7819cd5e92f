//! The validate phase: the route's rules (for `HEAD`, the `GET` rules) for
//! path parameters (read from `RequestContext::forward_path`, the path the
//! upstream gets), query and headers, then — for routes with a body schema —
//! the Content-Type, and the body, collected within the route's limit (the
//! one feature that buffers a body). A valid body is forwarded as the exact
//! bytes that were validated; a rejected request never reaches the upstream.

#![forbid(unsafe_code)]

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;

use crate::{
    proxy::{
        Phase, PhaseFuture, Reason, Rejection, RequestContext,
        body::{self, ProxyBody},
    },
    validate::{self, Validators},
};

/// The validate phase: checks a request against its route's rules (JSON Schema, OpenAPI) and
/// answers a violation 400, 413 or 415 with problem+json (`docs/validation.md`).
pub struct ValidatePhase {
    validators: Validators,
}

impl ValidatePhase {
    /// The phase for the compiled `validators`.
    pub fn new(validators: Validators) -> Self {
        Self { validators }
    }
}

fn rejection(r: &validate::Rejection) -> Rejection {
    let reason = match r.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Reason::UnsupportedMediaType,
        StatusCode::PAYLOAD_TOO_LARGE => Reason::BodyTooLarge,
        _ => Reason::Invalid,
    };
    Rejection::new(reason, r.reason()).with_problem(r.problem_json())
}

/// Reads the whole body, refusing it as soon as it passes `limit` bytes.
async fn collect(mut b: ProxyBody, limit: usize) -> Result<Bytes, Rejection> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = b.frame().await {
        let frame = frame.map_err(|_| {
            Rejection::new(Reason::BodyIncomplete, "the request body could not be read")
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(Rejection::new(
                    Reason::BodyTooLarge,
                    format!("the body is larger than {limit} bytes"),
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

impl Phase for ValidatePhase {
    fn name(&self) -> &'static str {
        "validate"
    }

    fn run<'a>(
        &'a self,
        ctx: &'a mut RequestContext<'_>,
        req: &'a mut Request<ProxyBody>,
    ) -> PhaseFuture<'a> {
        Box::pin(async move {
            let Some(v) = self.validators.for_route(ctx.route_id, req.method()) else {
                return Ok(());
            };
            let (parts, b) = std::mem::replace(req, Request::new(body::empty())).into_parts();
            let result = self.check(v, ctx.forward_path, parts, b, req).await;
            ctx.extras.validation = Some(match &result {
                Ok(()) => "passed",
                Err(r) => r.reason.code(),
            });
            result
        })
    }
}

impl ValidatePhase {
    async fn check(
        &self,
        v: &validate::RouteValidator,
        forward_path: &str,
        parts: http::request::Parts,
        b: ProxyBody,
        req: &mut Request<ProxyBody>,
    ) -> Result<(), Rejection> {
        {
            // The forwarded (normalized, rewritten) path, not the raw URI:
            // the rules must see what the upstream will act on.
            let head = v
                .path_params(forward_path)
                .and_then(|params| v.check_head(&parts, &params));
            let Some(limit) = v.body_limit() else {
                *req = Request::from_parts(parts, b);
                return head.map_err(|r| rejection(&r));
            };
            head.map_err(|r| rejection(&r))?;
            let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
            // A wrong media type is refused before any of the body is read.
            v.check_content_type(content_type.as_ref())
                .map_err(|r| rejection(&r))?;
            let bytes = collect(b, limit).await?;
            v.check_body(content_type.as_ref(), &bytes)
                .map_err(|r| rejection(&r))?;
            *req = Request::from_parts(parts, body::full(bytes));
            Ok(())
        }
    }
}
