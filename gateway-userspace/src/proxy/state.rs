//! One generation of proxy state built from a validated config: routes,
//! pools (with their health checks), limits, TLS certificates, hooks and
//! the HTTP server settings. A reload builds a new generation and swaps it
//! in atomically; requests in flight finish on the generation they started.

#![forbid(unsafe_code)]

use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use tokio_rustls::TlsAcceptor;

use super::{
    client_ip::Trusted,
    config::{Limits, SecurityHeaders},
    hooks::Hooks,
    router::Router,
    tls::{self, TlsError},
    upstream::Pools,
};
use crate::config::Config;

/// Everything a request needs, for one config generation.
pub struct ProxyState {
    pub router: Router,
    pub pools: Pools,
    pub limits: Limits,
    pub security: SecurityHeaders,
    pub trusted: Trusted,
    pub hooks: Hooks,
    /// `None` when no listener uses TLS.
    pub tls: Option<TlsAcceptor>,
    pub http: auto::Builder<TokioExecutor>,
}

impl ProxyState {
    /// Builds a generation; fails only on certificate files (the rest was
    /// validated with the config). Must run inside the tokio runtime.
    pub fn build(config: &Config, hooks: Hooks) -> Result<Self, TlsError> {
        let tls = if config.listeners.iter().any(|l| l.tls) {
            Some(tls::acceptor(&config.tls)?)
        } else {
            None
        };
        Ok(Self {
            router: Router::new(&config.routes, &config.security_headers),
            pools: Pools::new(&config.upstreams),
            limits: config.limits.clone(),
            security: config.security_headers.clone(),
            trusted: Trusted::new(config.trusted_proxies.clone())
                .with_header(config.client_ip_header),
            hooks,
            tls,
            http: http_builder(&config.limits),
        })
    }
}

/// hyper's server settings from `[limits]`.
fn http_builder(l: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper counts the request line and headers in one buffer; leave room
    // for both so our own 414 and 431 checks see the request.
    let head = (l.max_request_line + l.max_header_bytes + 4096).max(8192);
    b.http1()
        .timer(TokioTimer::new())
        // hyper's timer runs from the moment it waits for a head, idle time
        // included, and closes without answering: it is only the backstop.
        // `conn::ConnIo` answers 408 `header_read_timeout` after a head's
        // first byte.
        .header_read_timeout(l.idle_timeout + l.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(head)
        .max_headers(l.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(l.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(l.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(l.h2_max_local_error_reset_streams)
        .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX));
    b
}
