//! Escalation from L7 into the kernel: every source earns penalty points
//! for what the proxy sees (rate-limit rejections, auth failures,
//! validation failures, malformed HTTP, limit violations). Over the
//! threshold within the window, the source goes into the XDP blocklist with
//! a TTL that grows with repeat offences, so its next packet is dropped in
//! the kernel; or, with `action = "throttle"`, its XDP packet-rate override
//! is tightened for the TTL. Allowlisted and trusted-proxy addresses are
//! never escalated. A client seen through a trusted proxy cannot be dropped
//! by packet source, so it is blocked at L7 instead ([`Escalator::l7_blocked`]).

#![forbid(unsafe_code)]

pub mod config;
pub mod persist;
mod sink;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{
        Arc, OnceLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

pub use config::{Action, EscalationSection};
use parking_lot::Mutex;
pub use sink::{BlockSink, XdpSink};

use crate::{
    clock,
    net::{Net, group_ip},
};

/// Added to `CLOCK_MONOTONIC` for the escalator's own timestamps (2^60 ns,
/// about 36 years), so a time before this boot (restored from the state
/// file after a reboot) is still a valid, nonzero instant.
const EPOCH_NS: u64 = 1 << 60;

/// Now, in the escalator's time base (see [`EPOCH_NS`]).
fn now_ns() -> u64 {
    clock::monotonic_ns() + EPOCH_NS
}

/// An L7 signal that earns penalty points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offence {
    /// A 429 from an L7 rate limit.
    RateLimited,
    /// A failed authentication: a bad credential (401), a malformed or
    /// repeated one (400), or 429 for too many failures. A missing
    /// credential is not an offence.
    AuthFailure,
    /// A request rejected by request validation (400, 415).
    ValidationFailure,
    /// A request the HTTP parser or the request checks refused (bad path,
    /// host or header name, bad framing, a body cut short).
    MalformedHttp,
    /// A size or time limit broken (URI, headers or body too large, slow headers or body) or an
    /// unknown method.
    LimitViolation,
}

impl Offence {
    /// Every offence, in counter-index order (`offences_total`, the weights).
    pub const ALL: [Offence; 5] = [
        Offence::RateLimited,
        Offence::AuthFailure,
        Offence::ValidationFailure,
        Offence::MalformedHttp,
        Offence::LimitViolation,
    ];

    /// Stable snake_case name (logs, metrics, block reasons).
    pub fn name(self) -> &'static str {
        match self {
            Offence::RateLimited => "rate_limited",
            Offence::AuthFailure => "auth_failure",
            Offence::ValidationFailure => "validation_failure",
            Offence::MalformedHttp => "malformed_http",
            Offence::LimitViolation => "limit_violation",
        }
    }
}

/// Where the proxy got the client address from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The TCP peer: the kernel can drop its packets.
    Socket,
    /// A forwarded header or PROXY protocol from a trusted proxy: packets
    /// come from the proxy, so only an L7 block works.
    Forwarded,
}

/// What an escalation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escalation {
    /// The source escalated: a host, or the IPv6 prefix of `ipv6_prefix_len`.
    pub source: Net,
    /// How long the block or throttle lasts: the `ttl_ladder` step for `offences`.
    pub ttl: Duration,
    /// How many times this source has been escalated (within `forget_after`).
    pub offences: u32,
    /// Written into the kernel (false: L7 block only).
    pub in_kernel: bool,
    /// Whether the source was blocked or throttled.
    pub action: Action,
    /// The points per offence that crossed the threshold (`auth_failure 60, rate_limited 40`),
    /// stored as the block's reason.
    pub reason: String,
}

/// How many escalations [`Escalator::recent`] keeps (the dashboard's
/// timeline); older ones are forgotten first.
pub const RECENT_ESCALATIONS: usize = 256;

/// One entry of the recent-escalations timeline.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Escalated {
    /// When it happened, Unix seconds.
    pub at_unix: u64,
    /// The source blocked (a host, or an IPv6 prefix).
    pub source: String,
    /// The offence that crossed the threshold (`auth_failure`...).
    pub kind: &'static str,
    /// Points the source had when it crossed (the threshold, for a
    /// cluster-wide crossing).
    pub points: u32,
    /// What earned them ("auth_failure 60, rate_limited 40").
    pub reason: String,
    /// Escalations of this source within `forget_after` (the TTL-ladder step).
    pub offences: u32,
    /// The block's (or throttle's) TTL, seconds.
    pub ttl_secs: u64,
    /// `block` or `throttle`.
    pub action: &'static str,
    /// Written into the XDP maps (false: blocked at L7 only).
    pub in_kernel: bool,
}

#[derive(Clone, Copy, Default)]
struct SourceState {
    points: u32,
    window_start: u64,
    offences: u32,
    last_escalation: u64,
    blocked_until: u64,
    /// Points per offence in the current window, for the reason text.
    by_offence: [u32; 5],
}

const SHARDS: usize = 32;

impl std::fmt::Debug for Escalator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escalator")
            .field("enabled", &self.cfg.enabled)
            .field("threshold", &self.cfg.threshold)
            .field("kernel", &self.sink.is_some())
            .finish_non_exhaustive()
    }
}

/// Scores L7 offences per source and escalates a source over the threshold
/// into the XDP maps (or an L7 block). The per-source state is split over 32
/// mutex-guarded shards by address, so recording an offence takes one short
/// lock.
pub struct Escalator {
    cfg: EscalationSection,
    never: Vec<Net>,
    /// `None` when the XDP fast path is off: escalations block at L7 only.
    sink: Option<Box<dyn BlockSink>>,
    shards: Box<[Mutex<HashMap<IpAddr, SourceState>>]>,
    /// Offences recorded, by [`Offence`] index.
    pub offences_total: [AtomicU64; 5],
    /// Escalations made (`gateway_escalations_total`).
    pub escalations_total: AtomicU64,
    /// Escalations whose write into the XDP maps failed (the L7 block still applies).
    pub escalation_errors_total: AtomicU64,
    /// Cluster mode: the Redis link for cluster-wide scores, and a handle
    /// on this escalator for the callback when one crosses.
    cluster: OnceLock<(Arc<crate::cluster::Cluster>, Weak<Escalator>)>,
    /// Bumped by every change of the tracked state: the state file is
    /// rewritten only when it moved ([`persist`]).
    changes: AtomicU64,
    /// The last [`RECENT_ESCALATIONS`] escalations, oldest first.
    recent: Mutex<VecDeque<Escalated>>,
}

impl Escalator {
    /// `never`: allowlisted networks and trusted proxies.
    pub fn new(cfg: EscalationSection, never: Vec<Net>, sink: Option<Box<dyn BlockSink>>) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Self {
            cfg,
            never,
            sink,
            shards,
            offences_total: Default::default(),
            escalations_total: AtomicU64::new(0),
            escalation_errors_total: AtomicU64::new(0),
            cluster: OnceLock::new(),
            changes: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_ESCALATIONS)),
        }
    }

    /// The most recent escalations (at most [`RECENT_ESCALATIONS`]), oldest
    /// first: the dashboard's timeline. Kept in memory only.
    pub fn recent(&self) -> Vec<Escalated> {
        self.recent.lock().iter().cloned().collect()
    }

    fn weight(&self, o: Offence) -> u32 {
        let w = &self.cfg.weights;
        match o {
            Offence::RateLimited => w.rate_limited,
            Offence::AuthFailure => w.auth_failure,
            Offence::ValidationFailure => w.validation_failure,
            Offence::MalformedHttp => w.malformed_http,
            Offence::LimitViolation => w.limit_violation,
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, SourceState>> {
        let h = match ip {
            IpAddr::V4(a) => u32::from(*a) as usize,
            IpAddr::V6(a) => (u128::from(*a) >> 64) as usize ^ (u128::from(*a) as usize),
        };
        &self.shards[h % SHARDS]
    }

    /// Records one offence by `ip`; escalates it when it crosses the threshold.
    pub fn record(&self, ip: IpAddr, offence: Offence, seen: Seen) -> Option<Escalation> {
        self.offences_total[offence as usize].fetch_add(1, Ordering::Relaxed);
        if !self.cfg.enabled || self.never.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        let key = group_ip(ip, self.cfg.ipv6_prefix_len);
        let now = now_ns();
        self.changes.fetch_add(1, Ordering::Relaxed);
        let window = self.cfg.window.as_nanos() as u64;
        let w = self.weight(offence);
        let (offences, points, by_offence) = {
            let mut shard = self.shard(&key).lock();
            if !shard.contains_key(&key) && shard.len() >= (self.cfg.max_sources / SHARDS).max(1) {
                evict(&mut shard, now, window);
            }
            let st = shard.entry(key).or_default();
            if now.saturating_sub(st.window_start) > window {
                st.points = 0;
                st.by_offence = [0; 5];
                st.window_start = now;
            }
            if st.blocked_until > now {
                // Already escalated: its packets are being dropped; anything
                // still arriving (in flight, or via a proxy) adds nothing.
                return None;
            }
            st.points = st.points.saturating_add(w);
            st.by_offence[offence as usize] = st.by_offence[offence as usize].saturating_add(w);
            if st.points < self.cfg.threshold {
                drop(shard);
                self.score_in_cluster(key, ip, offence, w, seen);
                return None;
            }
            let points = st.points;
            let offences = self.mark_escalated(st, now);
            (offences, points, std::mem::take(&mut st.by_offence))
        };
        let crossing = (offence, points);
        self.escalate(key, ip, seen, offences, reason_text(&by_offence), crossing)
    }

    /// Lets offences count across the cluster: a source whose points cross
    /// the threshold summed over every node is escalated by the node that
    /// saw the crossing offence, even if no node alone saw enough.
    pub fn attach_cluster(self: &Arc<Self>, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set((cluster, Arc::downgrade(self)));
    }

    /// Adds the points to the source's cluster-wide score (in the
    /// background; nothing waits for Redis, and without it only the local
    /// score counts). Only sources the kernel can drop are scored.
    fn score_in_cluster(&self, key: IpAddr, ip: IpAddr, offence: Offence, points: u32, seen: Seen) {
        let Some((cluster, me)) = self.cluster.get() else {
            return;
        };
        if seen != Seen::Socket {
            return;
        }
        let me = me.clone();
        cluster.score(
            key,
            points,
            self.cfg.threshold,
            self.cfg.window.get(),
            move || {
                if let Some(e) = me.upgrade() {
                    e.escalate_from_cluster(key, ip, offence);
                }
            },
        );
    }

    /// The cluster-wide score of `key` crossed the threshold with an
    /// offence seen here.
    fn escalate_from_cluster(&self, key: IpAddr, ip: IpAddr, offence: Offence) {
        let now = now_ns();
        self.changes.fetch_add(1, Ordering::Relaxed);
        let offences = {
            let mut shard = self.shard(&key).lock();
            let st = shard.entry(key).or_default();
            if st.blocked_until > now {
                return;
            }
            st.by_offence = [0; 5];
            self.mark_escalated(st, now)
        };
        let reason = format!("cluster-wide {}", offence.name());
        let crossing = (offence, self.cfg.threshold);
        self.escalate(key, ip, Seen::Socket, offences, reason, crossing);
    }

    /// Counts an escalation of `st` at `now` (the TTL ladder's step) and
    /// marks it blocked; returns its offence count.
    fn mark_escalated(&self, st: &mut SourceState, now: u64) -> u32 {
        let forget = self.cfg.forget_after.as_nanos() as u64;
        if st.last_escalation != 0 && now.saturating_sub(st.last_escalation) > forget {
            st.offences = 0;
        }
        st.offences += 1;
        st.last_escalation = now;
        st.points = 0;
        st.blocked_until = now + self.ttl_for(st.offences).as_nanos() as u64;
        st.offences
    }

    /// Writes an escalation into the kernel (or keeps it at L7), logs it,
    /// counts it and adds it to the timeline. `crossing`: the offence that
    /// crossed the threshold and the points the source had then.
    fn escalate(
        &self,
        key: IpAddr,
        ip: IpAddr,
        seen: Seen,
        offences: u32,
        reason: String,
        crossing: (Offence, u32),
    ) -> Option<Escalation> {
        let ttl = self.ttl_for(offences);
        let source = source_net(key, self.cfg.ipv6_prefix_len);
        if self.sink.as_ref().is_some_and(|s| s.allowlisted(&ip)) {
            // On the runtime allowlist: never escalated.
            self.forgive(key);
            return None;
        }
        let in_kernel = let_kernel(seen, self.sink.as_deref()).is_some_and(|sink| {
            let r = match self.cfg.action {
                Action::Block => sink.block(&source, ttl, &reason, offences),
                Action::Throttle => sink.throttle(&source, ttl, &self.cfg.throttle, &reason, offences),
            };
            match r {
                Ok(()) => true,
                // After `gateway upgrade` the maps are the new process's;
                // this one only finishes its requests.
                Err(crate::xdp::maps::MapsError::HandedOver) => {
                    tracing::info!(source = %source, "escalation kept at L7 in this draining process: the XDP maps belong to the new process since the upgrade");
                    false
                }
                Err(e) => {
                    self.escalation_errors_total.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(source = %source, error = %e, "escalation could not be written into the XDP maps; blocking at L7 only");
                    false
                }
            }
        });
        self.escalations_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            source = %source,
            reason = %reason,
            offences,
            ttl = %crate::duration::format(ttl),
            action = ?self.cfg.action,
            in_kernel,
            "source escalated"
        );
        {
            let mut recent = self.recent.lock();
            if recent.len() >= RECENT_ESCALATIONS {
                recent.pop_front();
            }
            recent.push_back(Escalated {
                at_unix: clock::unix_now(),
                source: source.to_string(),
                kind: crossing.0.name(),
                points: crossing.1,
                reason: reason.clone(),
                offences,
                ttl_secs: ttl.as_secs(),
                action: match self.cfg.action {
                    Action::Block => "block",
                    Action::Throttle => "throttle",
                },
                in_kernel,
            });
        }
        Some(Escalation {
            source,
            ttl,
            offences,
            in_kernel,
            action: self.cfg.action,
            reason,
        })
    }

    fn ttl_for(&self, offences: u32) -> Duration {
        let i = (offences.max(1) as usize - 1).min(self.cfg.ttl_ladder.len() - 1);
        self.cfg.ttl_ladder[i]
    }

    fn forgive(&self, key: IpAddr) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.shard(&key).lock().remove(&key);
    }

    /// Lifts the escalation of the source `net` names (an operator's
    /// `gateway block del`): if it is blocked now, its offences and its
    /// block are forgotten, so the proxy stops answering it 429 at once
    /// instead of at the end of the TTL and its next offence starts the
    /// ladder again (fail2ban's `unbanip` does the same). As for kernel
    /// entries, `net` is the exact source that was escalated: an address
    /// (an IPv6 one names the `ipv6_prefix_len` group it is counted in) or
    /// an IPv6 prefix of exactly that length; a wider range lifts nothing.
    /// A source that is tracked but not blocked is left as it is. Returns
    /// whether a block was lifted.
    pub fn lift_block(&self, net: &Net) -> bool {
        let prefix = self.cfg.ipv6_prefix_len;
        let exact_group = !net.is_ipv4() && net.prefix_len() == prefix;
        if !net.is_host() && !exact_group {
            return false;
        }
        let key = group_ip(net.addr(), prefix);
        let now = now_ns();
        let mut sources = self.shard(&key).lock();
        if sources.get(&key).is_none_or(|s| s.blocked_until <= now) {
            return false;
        }
        sources.remove(&key);
        drop(sources);
        self.changes.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Time left of an escalation of `ip`, for sources the kernel cannot
    /// drop (seen through a trusted proxy, or XDP off): the proxy answers
    /// them 429 (or closes) without further work.
    pub fn l7_blocked(&self, ip: IpAddr) -> Option<Duration> {
        if !self.cfg.enabled {
            return None;
        }
        let key = group_ip(ip, self.cfg.ipv6_prefix_len);
        let now = now_ns();
        let shard = self.shard(&key).lock();
        shard
            .get(&key)
            .filter(|s| s.blocked_until > now)
            .map(|s| Duration::from_nanos(s.blocked_until - now))
    }

    /// Sources whose escalation (block or throttle) has not expired.
    pub fn active_blocks(&self) -> usize {
        let now = now_ns();
        self.shards
            .iter()
            .map(|s| s.lock().values().filter(|v| v.blocked_until > now).count())
            .sum()
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Ends throttles whose TTL passed (blocks expire in the kernel).
    pub fn expire(&self) {
        if let Some(sink) = &self.sink {
            sink.expire_throttles(clock::monotonic_ns());
        }
    }
}

/// The kernel sink, when the source's packets can be dropped by address.
fn let_kernel(seen: Seen, sink: Option<&dyn BlockSink>) -> Option<&dyn BlockSink> {
    sink.filter(|_| seen == Seen::Socket)
}

fn evict(shard: &mut HashMap<IpAddr, SourceState>, now: u64, window: u64) {
    // Sources with no live points and no active block carry nothing but the
    // offence count; drop those first, then the least recently active.
    shard.retain(|_, s| s.blocked_until > now || now.saturating_sub(s.window_start) <= window);
    if shard.len() > 1
        && let Some(k) = shard
            .iter()
            .min_by_key(|(_, s)| s.window_start)
            .map(|(k, _)| *k)
    {
        shard.remove(&k);
    }
}

fn source_net(ip: IpAddr, v6_prefix: u8) -> Net {
    match ip {
        IpAddr::V4(_) => Net::host(ip),
        IpAddr::V6(_) => Net::new(ip, v6_prefix).unwrap_or(Net::host(ip)),
    }
}

/// "auth_failure 60, rate_limited 40": what earned the points.
fn reason_text(by: &[u32; 5]) -> String {
    let mut parts: Vec<(u32, &str)> = Offence::ALL
        .iter()
        .map(|o| (by[*o as usize], o.name()))
        .filter(|(p, _)| *p > 0)
        .collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.0));
    parts
        .iter()
        .map(|(p, n)| format!("{n} {p}"))
        .collect::<Vec<_>>()
        .join(", ")
}
