//! Where escalations go: the XDP maps (blocklist, or a per-source rate
//! override for throttling), behind a trait so the escalation logic is
//! testable without the kernel.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use gateway_common::{
    acl::{BLOCK_FLAG_CLUSTER, BlockEntry, BlockSource},
    config::Limit,
    ratelimit::LimitOverride,
};

use super::config::ThrottleSpec;
use crate::{
    clock,
    cluster::Cluster,
    net::Net,
    xdp::{XdpMaps, maps::MapsError},
};

/// Where escalations land: the XDP maps in production ([`XdpSink`]), a recorder in tests. Errors
/// are reported by the escalator, which then blocks at L7 only.
pub trait BlockSink: Send + Sync {
    /// Blocks `net` for `ttl`.
    fn block(&self, net: &Net, ttl: Duration, reason: &str, offences: u32)
    -> Result<(), MapsError>;
    /// Tightens the packet-rate override of `net` for `ttl`.
    fn throttle(
        &self,
        net: &Net,
        ttl: Duration,
        spec: &ThrottleSpec,
        reason: &str,
        offences: u32,
    ) -> Result<(), MapsError>;
    /// Whether `ip` is on the runtime allowlist (never escalated).
    fn allowlisted(&self, ip: &std::net::IpAddr) -> bool;
    /// Removes throttles whose TTL passed.
    fn expire_throttles(&self, now_ns: u64);
    /// The escalation throttles in force, with their `CLOCK_MONOTONIC`
    /// expiry in ns (saved across restarts: the override map has no expiry
    /// of its own, so a throttle nobody remembers would never end).
    fn throttles(&self) -> Vec<(Net, u64)> {
        Vec::new()
    }
    /// Takes over throttles a previous run set, with their monotonic
    /// expiry; those already due are removed at the next `expire_throttles`.
    fn adopt_throttles(&self, _throttles: &[(Net, u64)]) {}
}

/// The XDP maps as an escalation target.
pub struct XdpSink {
    maps: Arc<Mutex<XdpMaps>>,
    /// In cluster mode, blocks are also published to every node.
    cluster: Option<Arc<Cluster>>,
    /// Throttle overrides we set, with their monotonic expiry, so they can
    /// be removed (the override map has no expiry of its own).
    throttles: Mutex<HashMap<Net, u64>>,
}

impl XdpSink {
    /// A sink writing into `maps`, with no throttles yet and no cluster.
    pub fn new(maps: Arc<Mutex<XdpMaps>>) -> Self {
        Self {
            maps,
            cluster: None,
            throttles: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes escalated blocks to the cluster too.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }
}

impl BlockSink for XdpSink {
    fn block(
        &self,
        net: &Net,
        ttl: Duration,
        reason: &str,
        offences: u32,
    ) -> Result<(), MapsError> {
        let flag = if self.cluster.is_some() {
            BLOCK_FLAG_CLUSTER
        } else {
            0
        };
        let entry = BlockEntry {
            expires_ns: clock::deadline_ns(ttl),
            created_unix: clock::unix_now(),
            source: BlockSource::Escalation as u32 | flag,
            offences,
            reason: gateway_common::acl::encode_reason(reason),
        };
        {
            let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
            // An operator's permanent block is stronger than any TTL: keep it.
            if let Some(existing) = maps.block_get(net)?
                && BlockSource::from_u32(existing.source) != BlockSource::Escalation
                && existing.expires_ns == 0
            {
                return Ok(());
            }
            maps.block_add(net, entry)?;
        }
        // In this node's kernel now; the other nodes' within milliseconds.
        if let Some(c) = &self.cluster {
            c.publish_block(*net, Some(ttl), reason, offences, true);
        }
        Ok(())
    }

    fn throttle(
        &self,
        net: &Net,
        ttl: Duration,
        spec: &ThrottleSpec,
        _reason: &str,
        _offences: u32,
    ) -> Result<(), MapsError> {
        let o = LimitOverride {
            pps: Limit {
                rate: spec.pps.rate,
                burst: spec.pps.burst,
            },
            syn: Limit {
                rate: spec.syn.rate,
                burst: spec.syn.burst,
            },
        };
        self.maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .limit_set(net, o)?;
        self.throttles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*net, clock::deadline_ns(ttl));
        Ok(())
    }

    fn allowlisted(&self, ip: &std::net::IpAddr) -> bool {
        let maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        maps.allow_list()
            .map(|l| l.iter().any(|(n, _)| n.contains(ip)))
            .unwrap_or(true)
    }

    fn throttles(&self) -> Vec<(Net, u64)> {
        let t = self.throttles.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().map(|(n, e)| (*n, *e)).collect()
    }

    fn adopt_throttles(&self, throttles: &[(Net, u64)]) {
        let mut t = self.throttles.lock().unwrap_or_else(|p| p.into_inner());
        for (net, expires) in throttles {
            // A throttle set since (this run) is newer: keep it.
            t.entry(*net).or_insert(*expires);
        }
    }

    fn expire_throttles(&self, now_ns: u64) {
        let due: Vec<Net> = {
            let mut t = self.throttles.lock().unwrap_or_else(|p| p.into_inner());
            let due: Vec<Net> = t
                .iter()
                .filter(|(_, exp)| **exp <= now_ns)
                .map(|(n, _)| *n)
                .collect();
            for n in &due {
                t.remove(n);
            }
            due
        };
        for net in due {
            let removed = self
                .maps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .limit_del(&net);
            match removed {
                Ok(_) => {
                    tracing::info!(source = %net, "escalation throttle expired; default limits apply again")
                }
                Err(e) => {
                    tracing::warn!(source = %net, error = %e, "removing an expired throttle failed")
                }
            }
        }
    }
}
