//! The authenticate phase: runs the route's auth policy; on success puts the
//! identity in the request extras and rewrites the identity headers; on
//! failure answers with the auth module's status, challenge and problem.
//! Routes without a policy still lose client-sent identity headers.

#![forbid(unsafe_code)]

use std::{collections::HashMap, sync::Arc};

use http::{HeaderValue, Request, header};

use crate::{
    auth::{AuthFailure, Authenticator},
    config::Config,
    proxy::{
        Phase, PhaseFuture, Reason, Rejection, RequestContext,
        body::{self, ProxyBody},
    },
};

/// The authenticate phase: runs each route's auth policy (`docs/auth.md`),
/// stores the identity in the request context, and turns a failure into 401,
/// 400, 403, 429 or 503 (500 for an unknown policy) with its RFC 7235 /
/// RFC 6750 challenge.
pub struct AuthPhase {
    auth: Arc<Authenticator>,
    /// route id → policy name (shared: it labels the failure metrics
    /// without a copy per failure)
    policies: HashMap<String, Arc<str>>,
}

impl AuthPhase {
    /// The phase for `config`'s routes, checking credentials with `auth`.
    pub fn new(auth: Arc<Authenticator>, config: &Config) -> Self {
        let policies = config
            .routes
            .iter()
            .filter_map(|r| {
                r.auth
                    .as_ref()
                    .map(|p| (r.id.get_ref().clone(), Arc::from(p.get_ref().as_str())))
            })
            .collect();
        Self { auth, policies }
    }
}

fn rejection(f: &AuthFailure) -> Rejection {
    let reason = match f {
        AuthFailure::Missing { .. } => Reason::AuthMissing,
        AuthFailure::InvalidToken { .. } | AuthFailure::InvalidCredentials { .. } => {
            Reason::Unauthenticated
        }
        AuthFailure::InvalidRequest { .. } => Reason::AuthInvalidRequest,
        AuthFailure::InsufficientScope { .. } => Reason::Forbidden,
        AuthFailure::ProviderUnavailable => Reason::AuthUnavailable,
        AuthFailure::TooManyFailures { .. } => Reason::TooManyAuthFailures,
        AuthFailure::UnknownPolicy => Reason::Internal,
    };
    let mut r = Rejection::new(reason, f.reason()).with_problem(f.problem_json());
    if let Some(v) = f.www_authenticate() {
        r = r.with_header(header::WWW_AUTHENTICATE, v);
    }
    if let Some(d) = f.retry_after() {
        r = r.with_header(header::RETRY_AFTER, HeaderValue::from(d.as_secs().max(1)));
    }
    r
}

impl Phase for AuthPhase {
    fn name(&self) -> &'static str {
        "authenticate"
    }

    fn run<'a>(
        &'a self,
        ctx: &'a mut RequestContext<'_>,
        req: &'a mut Request<ProxyBody>,
    ) -> PhaseFuture<'a> {
        Box::pin(async move {
            let Some(policy) = self.policies.get(ctx.route_id) else {
                // No policy: only forged identity headers go, in place
                // (no request taken apart, no placeholder body boxed).
                self.auth.strip_identity_headers(req.headers_mut());
                return Ok(());
            };
            let (mut parts, b) = std::mem::replace(req, Request::new(body::empty())).into_parts();
            let result = match self.auth.authenticate(policy, &parts, ctx.client_ip).await {
                Ok(identity) => {
                    self.auth.apply_identity(&identity, &mut parts);
                    ctx.extras.identity = Some(identity);
                    Ok(())
                }
                Err(f) => {
                    ctx.extras.auth_failure = Some(f.reason());
                    ctx.extras.auth_policy = Some(Arc::clone(policy));
                    Err(rejection(&f))
                }
            };
            *req = Request::from_parts(parts, b);
            result
        })
    }
}
