//! Upstream pools and their targets: which target a request goes to
//! (round robin or least connections among the available ones, weighted by
//! SRV weights, within the lowest SRV priority that has one), and each
//! target's health as seen by active checks and by real requests (passive
//! ejection after consecutive failures, for `ejection_time`).
//!
//! A pool's target set can change while it serves (DNS answers, see
//! `dns.rs`): the set is swapped atomically, and an address that stays
//! keeps its `Target` (health, ejection, in-flight count and idle
//! connections); requests already sent to a removed address finish there.

#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{sync::watch, time::Instant};

use super::client::{Connector, TargetConns};
use crate::proxy::{
    config::{Balance, Upstream as UpstreamConfig},
    tls::TlsError,
};

/// One upstream target and what we know about its health.
#[derive(Debug)]
pub struct Target {
    /// The address connections go to.
    pub addr: SocketAddr,
    /// The DNS name the address came from (the `name` of `name:port`, or
    /// the target name of an SRV record), lowercase without a trailing
    /// dot; `None` for a literal `ip:port`.
    pub host: Option<Arc<str>>,
    /// SRV weight (RFC 2782); 1 for literal and A/AAAA targets.
    weight: AtomicU32,
    /// SRV priority, lower first (RFC 2782); 0 for literal and A/AAAA targets.
    priority: AtomicU32,
    in_flight: AtomicUsize,
    /// Result of active health checks (true until a check says otherwise).
    healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Failed requests (connect errors, timeouts) so far (dashboard).
    failures: AtomicU64,
    /// Passive ejections so far (metrics).
    ejections: AtomicU64,
    ejected_until: Mutex<Option<Instant>>,
    /// Kept-alive connections to this target.
    pub conns: TargetConns,
}

impl Target {
    fn new(m: &Member) -> Self {
        Self {
            addr: m.addr,
            host: m.host.clone(),
            weight: AtomicU32::new(u32::from(m.weight)),
            priority: AtomicU32::new(u32::from(m.priority)),
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            ejected_until: Mutex::new(None),
            conns: TargetConns::default(),
        }
    }

    /// The target as `Host` names it: `name:port` for a target found by
    /// DNS, `ip:port` (IPv6 in brackets) otherwise.
    pub fn authority(&self) -> String {
        match &self.host {
            Some(h) => format!("{h}:{}", self.addr.port()),
            None => self.addr.to_string(),
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

    /// The last active health check's verdict (true before the first
    /// check and when active checks are off).
    pub fn active_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Time left of a passive ejection (`None`: not ejected).
    pub fn ejected_for(&self) -> Option<Duration> {
        let ejected = self.ejected_until.lock().unwrap_or_else(|p| p.into_inner());
        ejected.and_then(|until| until.checked_duration_since(Instant::now()))
    }

    /// Failed requests to this target so far (connect errors and timeouts).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Failures since the last success (ejection at the passive threshold).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Passive ejections of this target so far.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Requests sent to this target and not yet finished (what `least_connections` compares).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// SRV weight (1 unless the target came from an SRV record).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// SRV priority (0 unless the target came from an SRV record).
    pub fn priority(&self) -> u32 {
        self.priority.load(Ordering::Relaxed)
    }
}

/// One address a pool should hold: a literal target or one address of a
/// DNS answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// The name it was resolved from (`None` for a literal address).
    pub host: Option<Arc<str>>,
    /// SRV weight; 1 otherwise.
    pub weight: u16,
    /// SRV priority; 0 otherwise.
    pub priority: u16,
}

impl Member {
    /// A literal `ip:port` target.
    pub fn literal(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: None,
            weight: 1,
            priority: 0,
        }
    }
}

/// What a membership update changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Addresses that joined the pool.
    pub added: Vec<SocketAddr>,
    /// Addresses that left the pool; requests already sent there finish.
    pub removed: Vec<SocketAddr>,
    /// Addresses beyond [`MAX_TARGETS`], not used.
    pub dropped: usize,
}

/// Most targets one upstream takes from its answers (DNS may return any
/// number; each target costs per-request scans and health checks). The
/// first ones in answer order are kept, the rest logged and not used.
pub const MAX_TARGETS: usize = 1024;

impl Changes {
    /// Whether the set stayed the same (weights and priorities may have
    /// changed in place).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
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
    /// The upstream's name from the config (routes refer to it; a metrics label).
    pub name: Arc<str>,
    /// The pool's upstream latency series, resolved at its first request.
    pub series: crate::observe::metrics::UpstreamSeries,
    /// The current targets; swapped whole by [`Pool::set_members`].
    targets: ArcSwap<Vec<Arc<Target>>>,
    /// Bumped at every membership change (the health checks follow it).
    generation: watch::Sender<u64>,
    /// Addresses added and removed by membership changes (metrics).
    added_total: AtomicU64,
    removed_total: AtomicU64,
    /// Opens and pools the connections to the targets (TCP or TLS, HTTP/1.1 or HTTP/2).
    pub connector: Connector,
    /// The `[[upstreams]]` entry this pool was built from.
    pub config: UpstreamConfig,
    /// The pool's DNS names and their last good answers.
    pub dns: super::dns::Names,
    next: AtomicUsize,
}

impl Pool {
    /// Builds a pool; its connector reads the TLS files.
    ///
    /// # Errors
    /// A [`TlsError`] when the upstream's TLS settings cannot be used.
    pub fn new(config: &UpstreamConfig) -> Result<Self, TlsError> {
        let connector = Connector::new(config)?;
        let pool = Self {
            name: config.name.get_ref().as_str().into(),
            series: Default::default(),
            targets: ArcSwap::from_pointee(Vec::new()),
            generation: watch::Sender::new(0),
            added_total: AtomicU64::new(0),
            removed_total: AtomicU64::new(0),
            connector,
            config: config.clone(),
            dns: super::dns::Names::new(&config.targets),
            next: AtomicUsize::new(0),
        };
        // The literal targets; names join when they resolve.
        pool.set_members(&pool.dns.members());
        Ok(pool)
    }

    /// The current targets (a snapshot; membership may change after).
    pub fn targets(&self) -> Arc<Vec<Arc<Target>>> {
        self.targets.load_full()
    }

    /// Replaces the target set with `members` (the first of duplicate
    /// addresses wins): an address that stays keeps its [`Target`], so its
    /// health, ejection, in-flight count and idle connections carry over;
    /// its weight and priority are updated in place. Returns what was
    /// added and removed; the health checks are told when that is not empty.
    /// Not counted in [`Pool::membership_changes`]: see
    /// [`Pool::count_changes`].
    pub fn set_members(&self, members: &[Member]) -> Changes {
        let old = self.targets.load_full();
        // Hash lookups, not scans: a large answer (thousands of addresses)
        // costs linear time, not quadratic.
        let by_addr: std::collections::HashMap<SocketAddr, &Arc<Target>> =
            old.iter().map(|t| (t.addr, t)).collect();
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        let mut next: Vec<Arc<Target>> = Vec::with_capacity(members.len().min(MAX_TARGETS));
        let mut changes = Changes::default();
        for m in members {
            if !seen.insert(m.addr) {
                continue;
            }
            if next.len() == MAX_TARGETS {
                changes.dropped += 1;
                continue;
            }
            let kept = by_addr.get(&m.addr).filter(|t| t.host == m.host);
            let target = match kept {
                Some(t) => {
                    t.weight.store(u32::from(m.weight), Ordering::Relaxed);
                    t.priority.store(u32::from(m.priority), Ordering::Relaxed);
                    (*t).clone()
                }
                None => {
                    changes.added.push(m.addr);
                    Arc::new(Target::new(m))
                }
            };
            next.push(target);
        }
        let kept: std::collections::HashSet<*const Target> = next.iter().map(Arc::as_ptr).collect();
        changes.removed = old
            .iter()
            .filter(|t| !kept.contains(&Arc::as_ptr(t)))
            .map(|t| t.addr)
            .collect();
        if changes.dropped > 0 {
            tracing::warn!(
                upstream = %self.name,
                dropped = changes.dropped,
                kept = MAX_TARGETS,
                "more addresses than an upstream takes; the rest are not used"
            );
        }
        if !changes.is_empty() {
            self.targets.store(Arc::new(next));
            self.generation.send_modify(|g| *g += 1);
        }
        changes
    }

    /// Counts a membership change made by a DNS answer (metrics).
    pub fn count_changes(&self, changes: &Changes) {
        self.added_total
            .fetch_add(changes.added.len() as u64, Ordering::Relaxed);
        self.removed_total
            .fetch_add(changes.removed.len() as u64, Ordering::Relaxed);
    }

    /// Follows membership changes (the health checks use it).
    pub fn watch_members(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Addresses added and removed by DNS answers so far (metrics).
    pub fn membership_changes(&self) -> (u64, u64) {
        (
            self.added_total.load(Ordering::Relaxed),
            self.removed_total.load(Ordering::Relaxed),
        )
    }

    /// Picks an available target not in `tried`, and counts the request on
    /// it. Only targets of the lowest SRV priority among the available ones
    /// are candidates (RFC 2782; every non-SRV target has priority 0).
    ///
    /// `round_robin` is weighted round robin: over every cycle of
    /// (sum of candidate weights) picks, each candidate is chosen exactly
    /// its weight times, interleaved rather than in runs. A weight-0
    /// target is chosen only when every candidate has weight 0 (then all
    /// count as 1). `least_connections` takes the fewest in-flight
    /// requests per unit of weight (NGINX `least_conn` with weights), ties
    /// in round-robin order.
    ///
    /// Allocation-free: the candidates are filtered again instead of
    /// collected.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<(Arc<Target>, InFlight)> {
        let targets = self.targets.load();
        let open = |t: &&Arc<Target>| !tried.contains(&t.addr) && t.available();
        let priority = targets.iter().filter(open).map(|t| t.priority()).min()?;
        let in_tier = |t: &&Arc<Target>| t.priority() == priority && open(t);
        // Weight-0 targets count only when the whole tier is weight 0.
        let all_zero = targets.iter().filter(in_tier).all(|t| t.weight() == 0);
        let weight = |t: &Arc<Target>| if all_zero { 1 } else { t.weight() };
        let candidate = |t: &&Arc<Target>| in_tier(t) && weight(t) > 0;
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let chosen = match self.config.balance {
            Balance::RoundRobin => {
                let total: u64 = targets
                    .iter()
                    .filter(candidate)
                    .map(|t| u64::from(weight(t)))
                    .sum();
                if total == 0 {
                    return None;
                }
                let slot = spread(turn as u64 % total, total);
                let mut end = 0;
                targets.iter().filter(candidate).find(|t| {
                    end += u64::from(weight(t));
                    slot < end
                })
            }
            Balance::LeastConnections => {
                // Smallest in_flight / weight, compared without division.
                let load = |t: &Arc<Target>| (t.in_flight() as u64, u64::from(weight(t)));
                let (least_n, least_w) = targets
                    .iter()
                    .filter(candidate)
                    .map(load)
                    .min_by(|(a, aw), (b, bw)| (a * bw).cmp(&(b * aw)))?;
                let tied = |t: &&Arc<Target>| {
                    candidate(t) && {
                        let (n, w) = load(t);
                        n * least_w == least_n * w
                    }
                };
                let n = targets.iter().filter(tied).count().max(1);
                targets.iter().filter(tied).nth(turn % n)
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
        t.failures.fetch_add(1, Ordering::Relaxed);
        let n = t.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if limit > 0 && n >= limit {
            t.consecutive_failures.store(0, Ordering::Relaxed);
            t.ejections.fetch_add(1, Ordering::Relaxed);
            let until = Instant::now() + self.config.passive.ejection_time.get();
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

    /// Time allowed from sending a request to its response head (`request_timeout`; 504 after it).
    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout.get()
    }
}

/// Maps slot `i` of a round-robin cycle of `total` to another slot of the
/// same cycle, so that consecutive turns land on different targets
/// (weights 3:1 give a, b, a, a rather than a, a, a, b). Multiplying by a
/// prime that does not divide `total` permutes `0..total`.
fn spread(i: u64, total: u64) -> u64 {
    /// Knuth's multiplicative hashing constant, a prime.
    const K: u64 = 2_654_435_761;
    if total.is_multiple_of(K) {
        return i;
    }
    ((u128::from(i) * u128::from(K)) % u128::from(total)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn pool(extra: &str) -> Pool {
        let c = Config::parse(
            &format!("[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n{extra}\n"),
            "t",
        )
        .unwrap();
        Pool::new(&c.upstreams[0]).unwrap()
    }

    fn member(port: u16, weight: u16, priority: u16) -> Member {
        Member {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            host: Some("srv.test".into()),
            weight,
            priority,
        }
    }

    /// Ports picked by `n` picks in a row (each released at once).
    fn picks(p: &Pool, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| p.pick(&[]).map(|(t, _)| t.addr.port()).unwrap())
            .collect()
    }

    fn count(v: &[u16], port: u16) -> usize {
        v.iter().filter(|p| **p == port).count()
    }

    #[tokio::test]
    async fn a_huge_answer_is_capped_and_deduplicated() {
        let p = pool("");
        let many: Vec<Member> = (1..=5000u16)
            .chain(1..=10)
            .map(|port| member(port, 1, 0))
            .collect();
        let changes = p.set_members(&many);
        assert_eq!(p.targets().len(), MAX_TARGETS);
        assert_eq!(changes.added.len(), MAX_TARGETS);
        assert_eq!(changes.dropped, 5000 - MAX_TARGETS);
        // The same answer again changes nothing.
        assert!(p.set_members(&many).is_empty());
    }

    #[tokio::test]
    async fn weighted_round_robin_is_exact_per_cycle_and_interleaved() {
        let p = pool("");
        p.set_members(&[member(1, 3, 0), member(2, 1, 0)]);
        for cycle in picks(&p, 40).chunks(4) {
            assert_eq!(count(cycle, 1), 3, "{cycle:?}");
            assert_eq!(count(cycle, 2), 1, "{cycle:?}");
        }
        // Not three in a row then one: runs of the heavy target are short.
        let v = picks(&p, 8);
        assert!(v.windows(4).all(|w| w.contains(&1)), "{v:?}");
    }

    #[tokio::test]
    async fn lower_priority_wins_and_the_backup_takes_over() {
        let p = pool("");
        p.set_members(&[member(1, 1, 10), member(2, 1, 10), member(3, 9, 20)]);
        let v = picks(&p, 10);
        assert_eq!(count(&v, 3), 0, "{v:?}");
        // Tried targets are excluded: the backup tier is next.
        let tried = [
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
        ];
        assert_eq!(p.pick(&tried).unwrap().0.addr.port(), 3);
    }

    #[tokio::test]
    async fn weight_zero_only_when_all_are_zero() {
        let p = pool("");
        p.set_members(&[member(1, 0, 0), member(2, 5, 0)]);
        assert_eq!(count(&picks(&p, 10), 1), 0);
        p.set_members(&[member(1, 0, 0), member(2, 0, 0)]);
        let v = picks(&p, 10);
        assert_eq!(count(&v, 1), 5, "{v:?}");
    }

    #[tokio::test]
    async fn least_connections_divides_by_weight() {
        let p = pool("balance = \"least_connections\"");
        p.set_members(&[member(1, 3, 0), member(2, 1, 0)]);
        // Keep every request in flight: 3 of 4 go to the weight-3 target.
        let held: Vec<_> = (0..8).map(|_| p.pick(&[]).unwrap()).collect();
        let on_1 = held.iter().filter(|(t, _)| t.addr.port() == 1).count();
        assert_eq!(on_1, 6);
    }

    #[tokio::test]
    async fn members_that_stay_keep_their_target() {
        let p = pool("");
        let first = p.targets();
        assert_eq!(first.len(), 1);
        assert!(first[0].host.is_none());
        let changes = p.set_members(&[Member::literal(first[0].addr), member(2, 1, 0)]);
        assert_eq!(changes.added, [member(2, 1, 0).addr]);
        assert!(changes.removed.is_empty());
        let second = p.targets();
        assert!(Arc::ptr_eq(&first[0], &second[0]));
        // The same set in another order, with a new weight: no change.
        let changes = p.set_members(&[member(2, 7, 0), Member::literal(first[0].addr)]);
        assert!(changes.is_empty());
        assert_eq!(second[1].weight(), 7);
        let changes = p.set_members(&[member(2, 7, 0)]);
        assert_eq!(changes.removed, [first[0].addr]);
        assert!(Arc::ptr_eq(&p.targets()[0], &second[1]));
    }
}
