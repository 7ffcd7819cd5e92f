//! One generation of proxy state built from a validated config: routes,
//! pools (with their health checks), limits, TLS certificates, engines and
//! the HTTP server settings, and the listeners' settings. A reload builds a new generation and swaps it
//! in atomically; requests in flight finish on the generation they started.

#![forbid(unsafe_code)]

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio_rustls::TlsAcceptor;

use super::{
    client_ip::Trusted,
    config::{Limits, SecurityHeaders},
    listeners::Settings,
    phase::Engines,
    router::Router,
    tls::{self, TlsError},
    upstream::Pools,
};
use crate::config::Config;

/// Everything a request needs, for one config generation.
pub struct ProxyState {
    /// Picks the route for a request (host, path, method).
    pub router: Router,
    /// The upstream pools by name, with their connections and health.
    pub pools: Pools,
    /// The `[limits]` section: sizes, timeouts, concurrency.
    pub limits: Limits,
    /// The `[security_headers]` added to responses.
    pub security: SecurityHeaders,
    /// The `trusted_proxies` and which forwarding header to believe from them.
    pub trusted: Trusted,
    /// The request phases (authenticate, validate, rate limit) and the escalation, observability
    /// and authenticator handles.
    pub engines: Engines,
    /// `None` when no listener uses TLS.
    pub tls: Option<TlsAcceptor>,
    /// hyper's HTTP/1 server settings.
    pub http1: http1::Builder,
    /// The HTTP/2 server settings (`h2_server`).
    pub http2: h2::server::Builder,
    /// The listeners' settings in this generation (filled in by
    /// `Proxy::start` and `Proxy::prepare`, which know the running sockets).
    pub listeners: Settings,
}

impl ProxyState {
    /// Builds a generation; fails only on certificate files (the rest was
    /// validated with the config). Must run inside the tokio runtime.
    pub fn build(config: &Config, engines: Engines) -> Result<Self, TlsError> {
        let tls = if config.listeners.iter().any(|l| l.tls) {
            Some(tls::acceptor(&config.tls)?)
        } else {
            None
        };
        Ok(Self {
            router: Router::new(&config.routes, &config.security_headers),
            pools: Pools::new(&config.upstreams, &config.dns)?,
            limits: config.limits.clone(),
            security: config.security_headers.clone(),
            trusted: Trusted::new(config.trusted_proxies.clone())
                .with_header(config.client_ip_header),
            engines,
            tls,
            http1: http1_builder(&config.limits),
            http2: super::h2_server::builder(&config.limits),
            listeners: Settings::default(),
        })
    }
}

/// hyper's HTTP/1 server settings from `[limits]`.
fn http1_builder(l: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    // hyper counts the request line and headers in one buffer; leave room
    // for both so our own 414 and 431 checks see the request.
    let head = (l.max_request_line + l.max_header_bytes + 4096).max(8192);
    b.timer(TokioTimer::new())
        // hyper's timer runs from the moment it waits for a head, idle time
        // included, and closes without answering: it is only the backstop.
        // `conn::ConnIo` answers 408 `header_read_timeout` after a head's
        // first byte.
        .header_read_timeout(l.idle_timeout.get() + l.header_read_timeout.get())
        .keep_alive(true)
        .max_buf_size(head)
        .max_headers(l.max_headers);
    b
}
