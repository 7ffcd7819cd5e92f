//! DNS service discovery for upstream targets given by name. One
//! background task per pool that has names looks each name up (hickory's
//! resolver: A, then AAAA if there is no A record, as Envoy's
//! `V4_PREFERRED`; SRV for `srv:` targets, then the addresses of each SRV
//! target) and looks it up again when the answer's TTL, clamped to
//! `[dns] min_ttl..=max_ttl`, runs out. Nothing is resolved on the request
//! path: requests pick from the pool's current set.
//!
//! A failed lookup (timeout, SERVFAIL, refused, NXDOMAIN, an answer with no
//! address) keeps the name's last good addresses, is logged and counted,
//! and is retried after `min_ttl`. Every change of a pool's set is logged
//! with the addresses added and removed and counted (`pool.rs` keeps the
//! `Target` of an address that stays, with its health).
//!
//! A fresh start waits up to `[dns] timeout` for the first answers
//! ([`super::Pools::settle`]); a reload starts each unchanged name with the
//! previous generation's last good answer ([`Names::adopt`]).

#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hickory_resolver::{
    TokioResolver,
    config::{LookupIpStrategy, NameServerConfig, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    proto::rr::RData,
};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use super::pool::{Changes, Member, Pool};
use crate::proxy::config::{DnsSection, TargetSpec};

/// The resolver every pool of a generation shares, or why it could not
/// be made (then each lookup fails with that reason, logged and counted).
#[derive(Clone)]
pub struct Resolver {
    inner: Result<TokioResolver, Arc<str>>,
    min_ttl: Duration,
    max_ttl: Duration,
    /// Longest one entry's lookup may take in all (a guard against a
    /// resolver that never answers; its own timeouts normally end it).
    bound: Duration,
}

impl Resolver {
    /// A resolver for `[dns]`: its nameservers (UDP, TCP for truncated
    /// answers) or else `/etc/resolv.conf`'s, with its query timeout, and
    /// hickory's cache capped at `max_ttl` so a re-lookup is never answered
    /// from an older cache entry.
    pub fn new(cfg: &DnsSection) -> Self {
        let builder = if cfg.nameservers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| format!("reading /etc/resolv.conf: {e}; set [dns] nameservers"))
        } else {
            let servers = cfg
                .nameservers
                .iter()
                .map(|a| {
                    let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                    for c in &mut ns.connections {
                        c.port = a.port();
                    }
                    ns
                })
                .collect();
            Ok(TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            ))
        };
        let inner = builder.and_then(|mut b| {
            let o = b.options_mut();
            o.timeout = cfg.timeout.get();
            o.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
            o.positive_max_ttl = Some(cfg.max_ttl.get());
            o.negative_max_ttl = Some(cfg.min_ttl.get());
            b.build()
                .map_err(|e| format!("building the DNS resolver: {e}"))
        });
        if let Err(e) = &inner {
            tracing::error!(error = %e, "no DNS resolver: upstream targets given by name will not resolve");
        }
        Self {
            inner: inner.map_err(Into::into),
            min_ttl: cfg.min_ttl.get(),
            max_ttl: cfg.max_ttl.get(),
            bound: cfg.timeout.get() * 10,
        }
    }

    /// How long an answer valid until `until` is used.
    fn ttl(&self, until: std::time::Instant) -> Duration {
        until
            .saturating_duration_since(std::time::Instant::now())
            .clamp(self.min_ttl, self.max_ttl)
    }

    /// The addresses of `name` at `port`, and how long to use them.
    async fn addresses(
        &self,
        name: &str,
        host: &Arc<str>,
        port: u16,
    ) -> Result<(Vec<Member>, Duration), String> {
        let r = self.inner.as_ref().map_err(|e| e.to_string())?;
        let found = r.lookup_ip(name).await.map_err(|e| e.to_string())?;
        let mut members: Vec<Member> = found
            .iter()
            .map(|ip| Member {
                addr: SocketAddr::new(ip, port),
                host: Some(host.clone()),
                weight: 1,
                priority: 0,
            })
            .collect();
        if members.is_empty() {
            return Err("the answer has no address".into());
        }
        members.sort_by_key(|m| m.addr);
        members.dedup_by_key(|m| m.addr);
        Ok((members, self.ttl(found.valid_until())))
    }

    /// The SRV records of `name` and the addresses of their targets. A
    /// target whose own lookup fails keeps its addresses from `previous`
    /// (its error is returned beside the answer, to be logged and
    /// counted); the whole lookup fails when no target has an address.
    async fn srv(
        &self,
        name: &str,
        previous: &[Member],
    ) -> (Result<(Vec<Member>, Duration), String>, Vec<String>) {
        let r = match &self.inner {
            Ok(r) => r,
            Err(e) => return (Err(e.to_string()), Vec::new()),
        };
        let answer = match r.srv_lookup(name).await {
            Ok(a) => a,
            Err(e) => return (Err(e.to_string()), Vec::new()),
        };
        let mut ttl = self.ttl(answer.valid_until());
        // "." as the target: the service is decidedly not available at
        // this name (RFC 2782).
        let records = answer.answers().iter().filter_map(|r| match &r.data {
            RData::SRV(srv) if !srv.target.is_root() => Some(srv),
            _ => None,
        });
        // The targets' addresses, looked up concurrently.
        let found = futures_util::future::join_all(records.map(|srv| async move {
            let target = srv.target.to_ascii();
            let host: Arc<str> = target
                .strip_suffix('.')
                .unwrap_or(&target)
                .to_ascii_lowercase()
                .into();
            let found = self.addresses(&target, &host, srv.port).await;
            (srv, host, found)
        }))
        .await;
        let mut members = Vec::new();
        let mut errors = Vec::new();
        for (srv, host, found) in found {
            match found {
                Ok((found, t)) => {
                    ttl = ttl.min(t);
                    members.extend(found.into_iter().map(|m| Member {
                        weight: srv.weight,
                        priority: srv.priority,
                        ..m
                    }));
                }
                Err(e) => {
                    errors.push(format!("SRV target {host}: {e}"));
                    members.extend(
                        previous
                            .iter()
                            .filter(|m| m.host.as_ref() == Some(&host) && m.addr.port() == srv.port)
                            .cloned(),
                    );
                }
            }
        }
        if members.is_empty() {
            let why = if errors.is_empty() {
                "the SRV answer has no usable target".to_owned()
            } else {
                errors.join("; ")
            };
            return (Err(why), Vec::new());
        }
        members.sort_by_key(|m| m.addr);
        members.dedup_by_key(|m| m.addr);
        (Ok((members, ttl)), errors)
    }
}

/// One `targets` entry and its last good answer.
struct Slot {
    spec: TargetSpec,
    /// The literal address, or the name's last good answer (`None` before
    /// the first one).
    members: Option<Vec<Member>>,
    /// Failed lookups of this entry (metrics).
    failures: u64,
}

/// A pool's targets entries with the last good answer of each name.
pub struct Names {
    slots: Mutex<Vec<Slot>>,
    /// True once every name was looked up at least once (or never needed).
    settled: watch::Sender<bool>,
}

impl Names {
    /// The entries of one pool, in config order.
    pub fn new(specs: &[TargetSpec]) -> Self {
        let slots: Vec<Slot> = specs
            .iter()
            .map(|s| Slot {
                spec: s.clone(),
                members: s.addr().map(|a| vec![Member::literal(a)]),
                failures: 0,
            })
            .collect();
        let settled = !slots.iter().any(|s| s.spec.is_dns());
        Self {
            slots: Mutex::new(slots),
            settled: watch::Sender::new(settled),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any entry needs DNS.
    pub fn has_names(&self) -> bool {
        self.lock().iter().any(|s| s.spec.is_dns())
    }

    /// The addresses of every entry, in config order (a name without an
    /// answer yet has none).
    pub fn members(&self) -> Vec<Member> {
        members_of(&self.lock())
    }

    /// Failed lookups per name entry, e.g. `("api.internal:8080", 3)`.
    pub fn failures(&self) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .filter(|s| s.spec.is_dns())
            .map(|s| (s.spec.to_string(), s.failures))
            .collect()
    }

    /// Resolves once every name was looked up once (answered or failed).
    pub async fn settled(&self) {
        let mut rx = self.settled.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Starts each name that has no answer yet with `old`'s last good
    /// answer for the same entry (a reload: the new generation serves the
    /// addresses the old one had until its own lookups answer). Returns
    /// whether anything was taken over.
    pub fn adopt(&self, old: &Names) -> bool {
        let old = old.lock();
        let mut slots = self.lock();
        let mut taken = false;
        for slot in slots.iter_mut().filter(|s| s.members.is_none()) {
            if let Some(m) = old
                .iter()
                .find(|o| o.spec == slot.spec)
                .and_then(|o| o.members.clone())
            {
                slot.members = Some(m);
                taken = true;
            }
        }
        taken
    }
}

fn members_of(slots: &[Slot]) -> Vec<Member> {
    slots
        .iter()
        .filter_map(|s| s.members.as_deref())
        .flatten()
        .cloned()
        .collect()
}

/// Why a pool's set is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A DNS answer: logged and counted as a membership change.
    Answer,
    /// A reload took over the previous generation's answers: not counted.
    Reload,
}

/// Publishes the entries' current addresses as the pool's target set and
/// logs what changed. The slots stay locked meanwhile, so two updates of
/// one pool (its task, a reload's [`Names::adopt`]) apply in order.
pub fn publish(pool: &Pool, cause: Cause) -> Changes {
    let slots = pool.dns.lock();
    let changes = pool.set_members(&members_of(&slots));
    drop(slots);
    if cause == Cause::Reload {
        tracing::debug!(upstream = %pool.name, targets = pool.targets().len(), "upstream took over the previous generation's DNS answers");
    } else if !changes.is_empty() {
        pool.count_changes(&changes);
        // The first addresses of each side, and how many: one bounded line
        // however large the answer.
        const SHOWN: usize = 16;
        let list = |v: &[std::net::SocketAddr]| {
            let mut s: Vec<String> = v.iter().take(SHOWN).map(ToString::to_string).collect();
            if v.len() > SHOWN {
                s.push(format!("… {} more", v.len() - SHOWN));
            }
            s.join(",")
        };
        tracing::info!(
            upstream = %pool.name,
            added = %list(&changes.added),
            removed = %list(&changes.removed),
            added_count = changes.added.len(),
            removed_count = changes.removed.len(),
            targets = pool.targets().len(),
            "upstream membership changed"
        );
    }
    changes
}

/// Starts the lookups of one pool (nothing when it has no names).
pub fn spawn(pool: &Arc<Pool>, resolver: &Resolver) -> Option<JoinHandle<()>> {
    if !pool.dns.has_names() {
        return None;
    }
    Some(tokio::spawn(run(pool.clone(), resolver.clone())))
}

/// The pool's lookup loop: every name whose answer ran out is looked up
/// (concurrently), the set is published, and the task sleeps until the
/// next answer runs out. Ends when the pool's generation is dropped
/// (aborted by [`super::Pools`]).
async fn run(pool: Arc<Pool>, resolver: Resolver) {
    let specs: Vec<TargetSpec> = pool.dns.lock().iter().map(|s| s.spec.clone()).collect();
    // When each entry is looked up next; literal addresses never.
    let mut due: Vec<Option<Instant>> = specs
        .iter()
        .map(|s| s.is_dns().then(Instant::now))
        .collect();
    loop {
        let now = Instant::now();
        let lookups = specs.iter().enumerate().filter_map(|(i, spec)| {
            if due[i].is_none_or(|d| d > now) {
                return None;
            }
            let previous = pool.dns.lock()[i].members.clone().unwrap_or_default();
            let resolver = &resolver;
            Some(async move {
                let answer = lookup(resolver, spec, &previous);
                match tokio::time::timeout(resolver.bound, answer).await {
                    Ok(answer) => (i, answer),
                    Err(_) => (
                        i,
                        (Err("no answer in 10 x [dns] timeout".into()), Vec::new()),
                    ),
                }
            })
        });
        let results = futures_util::future::join_all(lookups).await;
        {
            let mut slots = pool.dns.lock();
            for (i, (answer, partial)) in results {
                let slot = &mut slots[i];
                for e in &partial {
                    slot.failures += 1;
                    tracing::warn!(upstream = %pool.name, target = %slot.spec, error = %e, "DNS lookup failed; keeping that target's last good addresses");
                }
                match answer {
                    Ok((members, ttl)) => {
                        slot.members = Some(members);
                        due[i] = Some(Instant::now() + ttl);
                    }
                    Err(e) => {
                        slot.failures += 1;
                        let kept = slot.members.as_ref().map_or(0, Vec::len);
                        tracing::warn!(upstream = %pool.name, target = %slot.spec, error = %e, kept, "DNS lookup failed; keeping the last good addresses");
                        due[i] = Some(Instant::now() + resolver.min_ttl);
                    }
                }
            }
        }
        publish(&pool, Cause::Answer);
        pool.dns.settled.send_replace(true);
        let Some(next) = due.iter().flatten().min().copied() else {
            return;
        };
        tokio::time::sleep_until(next).await;
    }
}

/// Looks one entry up: its addresses and how long to use them, plus the
/// errors of SRV targets that kept their previous addresses.
async fn lookup(
    resolver: &Resolver,
    spec: &TargetSpec,
    previous: &[Member],
) -> (Result<(Vec<Member>, Duration), String>, Vec<String>) {
    match spec {
        TargetSpec::Addr(a) => (
            Ok((vec![Member::literal(*a)], resolver.max_ttl)),
            Vec::new(),
        ),
        TargetSpec::Name { host, port } => {
            let bare: Arc<str> = host.strip_suffix('.').unwrap_or(host).into();
            (resolver.addresses(host, &bare, *port).await, Vec::new())
        }
        TargetSpec::Srv { name } => resolver.srv(name, previous).await,
    }
}
