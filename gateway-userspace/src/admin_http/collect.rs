//! Collectors read at scrape time: the XDP per-CPU counters summed over
//! CPUs (straight from the pinned maps, so they include packets dropped
//! while no scrape was running and survive gateway restarts), the number of
//! sources in the bounded drop map, upstream target health and ejections,
//! escalation counters and JWKS fetches. Nothing here is cached.

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::{escalate::Escalator, proxy::server::StateWatch, xdp::XdpMaps};

fn counter<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// One unlabelled sample (no `{}` in the output).
fn single(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => ConstCounter::new(v).encode(m),
        _ => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m),
    }
}

type Labels = Vec<(&'static str, String)>;

/// The XDP program's counters, read from its maps at every scrape.
pub struct XdpCollector {
    /// The pinned maps, locked for the length of one scrape's reads.
    pub maps: Arc<Mutex<XdpMaps>>,
}

impl std::fmt::Debug for XdpCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XdpCollector")
    }
}

impl Collector for XdpCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (counters, sources) = {
            let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
            (m.counters(), m.top_dropped(usize::MAX).map(|v| v.len()))
        };
        let counters = match counters {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the XDP counters for /metrics failed");
                return Ok(());
            }
        };
        let packets: Vec<(Labels, u64)> = counters
            .iter()
            .map(|(r, c)| (vec![("reason", r.name().to_owned())], c.packets))
            .collect();
        let bytes: Vec<(Labels, u64)> = counters
            .iter()
            .map(|(r, c)| (vec![("reason", r.name().to_owned())], c.bytes))
            .collect();
        counter(
            &mut enc,
            "xdp_packets",
            "Packets seen by the XDP program, by verdict reason (summed over CPUs)",
            &packets,
        )?;
        counter(
            &mut enc,
            "xdp_bytes",
            "Bytes seen by the XDP program, by verdict reason (summed over CPUs)",
            &bytes,
        )?;
        if let Ok(n) = sources {
            single(
                &mut enc,
                "xdp_dropped_sources",
                "Source addresses in the (bounded) per-source drop table",
                MetricType::Gauge,
                n as u64,
            )?;
        }
        Ok(())
    }
}

/// Escalation counters and active blocks.
pub struct EscalationCollector {
    /// The escalator whose counters and active blocks are reported.
    pub escalator: Arc<Escalator>,
}

impl std::fmt::Debug for EscalationCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EscalationCollector")
    }
}

impl Collector for EscalationCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let e = &self.escalator;
        let offences: Vec<(Labels, u64)> = crate::escalate::Offence::ALL
            .iter()
            .enumerate()
            .map(|(i, o)| {
                (
                    vec![("kind", o.name().to_owned())],
                    e.offences_total[i].load(Relaxed),
                )
            })
            .collect();
        counter(
            &mut enc,
            "escalation_offences",
            "L7 offences scored towards escalation, by kind",
            &offences,
        )?;
        single(
            &mut enc,
            "escalations",
            "Sources escalated into a block or throttle",
            MetricType::Counter,
            e.escalations_total.load(Relaxed),
        )?;
        single(
            &mut enc,
            "escalation_errors",
            "Escalations that could not be written into the XDP maps",
            MetricType::Counter,
            e.escalation_errors_total.load(Relaxed),
        )?;
        single(
            &mut enc,
            "escalation_active_blocks",
            "Sources currently blocked or throttled by escalation",
            MetricType::Gauge,
            e.active_blocks() as u64,
        )
    }
}

/// Upstream health, membership and DNS lookups, and JWKS fetches of the
/// current config generation. Ejection, membership, lookup-failure and
/// fetch counters start from zero when a reload rebuilds the pools or the
/// authenticator (Prometheus treats that as a counter reset).
pub struct ProxyCollector {
    /// The current proxy generation, read at each scrape.
    pub state: StateWatch,
}

impl std::fmt::Debug for ProxyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyCollector")
    }
}

impl Collector for ProxyCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.state.load();
        let (mut healthy, mut ejections, mut in_flight) = (Vec::new(), Vec::new(), Vec::new());
        let (mut sizes, mut changes, mut failures) = (Vec::new(), Vec::new(), Vec::new());
        for pool in state.pools.iter() {
            let targets = pool.targets();
            let upstream = || vec![("upstream", pool.name.to_string())];
            sizes.push((upstream(), targets.len() as i64));
            let (added, removed) = pool.membership_changes();
            for (change, n) in [("added", added), ("removed", removed)] {
                let mut l = upstream();
                l.push(("change", change.to_owned()));
                changes.push((l, n));
            }
            for (target, n) in pool.dns.failures() {
                let mut l = upstream();
                l.push(("target", target));
                failures.push((l, n));
            }
            for t in targets.iter() {
                let l: Labels = vec![
                    ("upstream", pool.name.to_string()),
                    ("target", t.addr.to_string()),
                ];
                healthy.push((l.clone(), i64::from(t.available())));
                in_flight.push((l.clone(), t.in_flight() as i64));
                ejections.push((l, t.ejections()));
            }
        }
        gauge(
            &mut enc,
            "upstream_target_healthy",
            "1 if the target takes requests (active checks pass and not ejected)",
            &healthy,
        )?;
        gauge(
            &mut enc,
            "upstream_target_in_flight",
            "Requests in flight to the target",
            &in_flight,
        )?;
        counter(
            &mut enc,
            "upstream_target_ejections",
            "Passive ejections after consecutive failures",
            &ejections,
        )?;
        gauge(
            &mut enc,
            "upstream_targets",
            "Targets in the upstream now (literal addresses plus resolved names)",
            &sizes,
        )?;
        counter(
            &mut enc,
            "upstream_membership_changes",
            "Target addresses added to or removed from the upstream by DNS answers",
            &changes,
        )?;
        counter(
            &mut enc,
            "upstream_dns_lookup_failures",
            "Failed DNS lookups of a target name (the last good addresses were kept)",
            &failures,
        )?;
        if let Some(auth) = &state.engines.authenticator {
            let rows: Vec<(Labels, u64)> = auth
                .jwks_fetch_counts()
                .into_iter()
                .map(|(issuer, n)| (vec![("issuer", issuer)], n))
                .collect();
            counter(
                &mut enc,
                "jwks_fetches",
                "JWK Set fetch attempts, by configured issuer",
                &rows,
            )?;
        }
        Ok(())
    }
}

/// Cluster mode: the Redis link and what went through it.
pub struct ClusterCollector {
    /// The cluster handle whose link state and counters are reported.
    pub cluster: Arc<crate::cluster::Cluster>,
}

impl std::fmt::Debug for ClusterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCollector")
    }
}

impl Collector for ClusterCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.cluster;
        let s = &c.stats;
        single(
            &mut enc,
            "cluster_redis_up",
            "1 while the cluster's Redis is reachable; 0: limits are local, blocks queue",
            MetricType::Gauge,
            u64::from(c.is_up()),
        )?;
        for (name, help, v) in [
            (
                "cluster_local_decisions",
                "Shared-limit requests decided by this node alone because Redis was unavailable",
                &s.local_decisions,
            ),
            (
                "cluster_lease_requests",
                "Token leases asked of Redis for shared limits",
                &s.lease_requests,
            ),
            (
                "cluster_blocks_published",
                "Blocks and unblocks this node delivered to the cluster",
                &s.published,
            ),
            (
                "cluster_blocks_received",
                "Blocks and unblocks applied from other nodes",
                &s.received,
            ),
            (
                "cluster_resyncs",
                "Full blocklist reconciliations with Redis",
                &s.resyncs,
            ),
            (
                "cluster_redis_errors",
                "Failed Redis connections and commands",
                &s.errors,
            ),
        ] {
            single(&mut enc, name, help, MetricType::Counter, v.load(Relaxed))?;
        }
        Ok(())
    }
}

/// Quota usage per plan and per quota-carrying limit, read from the quota
/// store at each scrape. Labels: `kind` (`plan` or `limit`) and `name`;
/// never a consumer (identities would make the series unbounded).
pub struct QuotaCollector {
    /// The quota counts, shared with the rate-limit phase.
    pub store: Arc<crate::ratelimit::quota_store::QuotaStore>,
}

impl std::fmt::Debug for QuotaCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuotaCollector")
    }
}

impl Collector for QuotaCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.store.usage_by_quota();
        let labels = |q: &str| -> Labels {
            let (kind, name) = q.split_once(':').unwrap_or(("limit", q));
            vec![("kind", kind.to_owned()), ("name", name.to_owned())]
        };
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            &mut enc,
            "quota_consumers",
            "Consumers with requests counted in their current quota window",
            &rows
                .iter()
                .map(|(q, consumers, _, _)| (labels(q), as_i64(*consumers)))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            &mut enc,
            "quota_used",
            "Requests counted in the current quota windows, summed over consumers",
            &rows
                .iter()
                .map(|(q, _, used, _)| (labels(q), as_i64(*used)))
                .collect::<Vec<_>>(),
        )?;
        let mut outcomes = Vec::new();
        for (q, _, _, o) in &rows {
            for (outcome, v) in [("allowed", o.allowed), ("rejected", o.rejected)] {
                let mut l = labels(q);
                l.push(("outcome", outcome.to_owned()));
                outcomes.push((l, v));
            }
        }
        counter(
            &mut enc,
            "quota_requests",
            "Requests checked against a quota on this node, by outcome",
            &outcomes,
        )
    }
}
