//! Upstream pools and their targets: which target a request goes to
//! (round robin or least connections among the available ones), and each
//! target's health as seen by active checks and by real requests (passive
//! ejection after consecutive failures, for `ejection_time`).

#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use tokio::time::Instant;

use crate::proxy::{
    body::ProxyBody,
    config::{Balance, Upstream as UpstreamConfig},
};

/// The HTTP/1.1 client with its connection pool, one per upstream pool.
pub type HttpClient = Client<HttpConnector, ProxyBody>;

/// One upstream target and what we know about its health.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    in_flight: AtomicUsize,
    /// Result of active health checks (true until a check says otherwise).
    healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Passive ejections so far (metrics).
    ejections: AtomicU64,
    ejected_until: Mutex<Option<Instant>>,
}

impl Target {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
            ejected_until: Mutex::new(None),
        }
    }

    /// Healthy per active checks and not passively ejected.
    pub fn available(&self) -> bool {
        if !self.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let mut ejected = self.ejected_until.lock().unwrap_or_else(|p| p.into_inner());
        match *ejected {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                *ejected = None;
                true
            }
            None => true,
        }
    }

    pub(super) fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            tracing::warn!(target = %self.addr, healthy, "upstream target health changed (active check)");
        }
    }

    /// Passive ejections of this target so far.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Counts a request against its target until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Target>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named pool of targets with its client and settings.
pub struct Pool {
    pub name: Arc<str>,
    pub targets: Vec<Arc<Target>>,
    pub client: HttpClient,
    pub config: UpstreamConfig,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(config: &UpstreamConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            // hyper fails a response whose head does not fit its buffer
            // ("message head is too large"): the forward phase answers 502.
            .http1_max_buf_size(config.max_response_header_bytes)
            .build(connector);
        Self {
            name: config.name.get_ref().as_str().into(),
            targets: config
                .targets
                .iter()
                .map(|a| Arc::new(Target::new(*a)))
                .collect(),
            client,
            config: config.clone(),
            next: AtomicUsize::new(0),
        }
    }

    /// Picks an available target not in `tried`, and counts the request on it.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<(Arc<Target>, InFlight)> {
        let candidates: Vec<&Arc<Target>> = self
            .targets
            .iter()
            .filter(|t| !tried.contains(&t.addr) && t.available())
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let chosen = match self.config.balance {
            Balance::RoundRobin => candidates[turn % candidates.len()],
            Balance::LeastConnections => {
                let least = candidates.iter().map(|t| t.in_flight()).min().unwrap_or(0);
                let tied: Vec<_> = candidates
                    .iter()
                    .filter(|t| t.in_flight() == least)
                    .collect();
                tied[turn % tied.len()]
            }
        };
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Some((chosen.clone(), InFlight(chosen.clone())))
    }

    /// A request to `t` succeeded (got response headers).
    pub fn record_success(&self, t: &Target) {
        t.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// A request to `t` failed to connect or timed out.
    pub fn record_failure(&self, t: &Target) {
        let limit = self.config.passive.consecutive_failures;
        let n = t.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if limit > 0 && n >= limit {
            t.consecutive_failures.store(0, Ordering::Relaxed);
            t.ejections.fetch_add(1, Ordering::Relaxed);
            let until = Instant::now() + self.config.passive.ejection_time;
            *t.ejected_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
            tracing::warn!(
                upstream = %self.name,
                target = %t.addr,
                failures = n,
                for_secs = self.config.passive.ejection_time.as_secs(),
                "upstream target ejected after consecutive failures"
            );
        }
    }

    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }
}
