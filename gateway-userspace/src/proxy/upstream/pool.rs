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

use tokio::time::Instant;

use super::client::{Connector, TargetConns};
use crate::proxy::{
    config::{Balance, Upstream as UpstreamConfig},
    tls::TlsError,
};

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
    /// Kept-alive connections to this target.
    pub conns: TargetConns,
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
            conns: TargetConns::default(),
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

impl InFlight {
    /// The target the request went to.
    pub fn target(&self) -> &Arc<Target> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named pool of targets with its connections and settings.
pub struct Pool {
    pub name: Arc<str>,
    pub targets: Vec<Arc<Target>>,
    pub connector: Connector,
    pub config: UpstreamConfig,
    next: AtomicUsize,
}

impl Pool {
    /// Builds a pool; its connector reads the TLS files.
    ///
    /// # Errors
    /// A [`TlsError`] when the upstream's TLS settings cannot be used.
    pub fn new(config: &UpstreamConfig) -> Result<Self, TlsError> {
        let connector = Connector::new(config)?;
        Ok(Self {
            name: config.name.get_ref().as_str().into(),
            targets: config
                .targets
                .iter()
                .map(|a| Arc::new(Target::new(*a)))
                .collect(),
            connector,
            config: config.clone(),
            next: AtomicUsize::new(0),
        })
    }

    /// Picks an available target not in `tried`, and counts the request on
    /// it. Allocation-free: the candidates are filtered again instead of
    /// collected.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<(Arc<Target>, InFlight)> {
        let open = |t: &&Arc<Target>| !tried.contains(&t.addr) && t.available();
        let candidates = self.targets.iter().filter(open).count();
        if candidates == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let chosen = match self.config.balance {
            Balance::RoundRobin => self.targets.iter().filter(open).nth(turn % candidates),
            Balance::LeastConnections => {
                let least = self
                    .targets
                    .iter()
                    .filter(open)
                    .map(|t| t.in_flight())
                    .min()
                    .unwrap_or(0);
                let tied = |t: &&Arc<Target>| open(t) && t.in_flight() == least;
                let n = self.targets.iter().filter(tied).count().max(1);
                self.targets.iter().filter(tied).nth(turn % n)
            }
        }?;
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
