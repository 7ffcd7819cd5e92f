//! Cluster-wide blocks: the record stored in Redis, the node's registry of
//! the cluster blocks it knows, and writing them into this node's XDP maps.
//!
//! Times in records are milliseconds of the cluster clock (Redis `TIME`,
//! see [`super::Clock`]), so TTLs agree across nodes whose own clocks
//! drift; each node turns the absolute expiry into its own monotonic
//! deadline when it writes the kernel entry.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use gateway_common::acl::{BLOCK_FLAG_CLUSTER, BlockEntry, BlockSource};
use serde::{Deserialize, Serialize};

use crate::{
    clock,
    net::Net,
    xdp::{XdpMaps, maps::MapsError},
};

/// Expiry score of a permanent block (2^53 - 1 ms: exact in a double).
pub const PERMANENT: u64 = (1 << 53) - 1;

/// One cluster block as stored in Redis and sent in events.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockRecord {
    /// Cluster-clock ms after which the block no longer applies;
    /// [`PERMANENT`] for never.
    pub expires_ms: u64,
    /// Cluster-clock ms when the block was made (shown as its age).
    pub created_ms: u64,
    /// Free text, as for a local block (the kernel entry keeps its first 48 bytes).
    pub reason: String,
    /// `operator` or `escalation`.
    pub kind: String,
    /// How many times the source has been blocked (the escalation TTL-ladder step).
    pub offences: u32,
    /// The node that made the block.
    pub origin: String,
}

impl BlockRecord {
    /// Whether the block never expires (`expires_ms` is [`PERMANENT`]).
    pub fn is_permanent(&self) -> bool {
        self.expires_ms >= PERMANENT
    }

    fn source(&self) -> BlockSource {
        if self.kind == "escalation" {
            BlockSource::Escalation
        } else {
            BlockSource::Operator
        }
    }

    /// The kernel entry for this record, at cluster time `now_ms`; `None`
    /// when it has expired.
    pub fn entry(&self, now_ms: u64) -> Option<BlockEntry> {
        let expires_ns = if self.is_permanent() {
            0
        } else if self.expires_ms <= now_ms {
            return None;
        } else {
            clock::deadline_ns(Duration::from_millis(self.expires_ms - now_ms))
        };
        Some(BlockEntry {
            expires_ns,
            created_unix: self.created_ms / 1000,
            source: self.source() as u32 | BLOCK_FLAG_CLUSTER,
            offences: self.offences,
            reason: gateway_common::acl::encode_reason(&self.reason),
        })
    }

    /// A record for a kernel entry this node holds with the cluster flag
    /// (after a restart, before the registry knew it).
    pub fn from_entry(e: &BlockEntry, now_ms: u64, now_ns: u64, origin: &str) -> Option<Self> {
        let expires_ms = if e.expires_ns == 0 {
            PERMANENT
        } else if e.expires_ns <= now_ns {
            return None;
        } else {
            now_ms + (e.expires_ns - now_ns) / 1_000_000
        };
        Some(Self {
            expires_ms,
            created_ms: e.created_unix * 1000,
            reason: String::from_utf8_lossy(e.reason_bytes()).into_owned(),
            kind: match BlockSource::from_u32(e.source) {
                BlockSource::Escalation => "escalation",
                _ => "operator",
            }
            .into(),
            offences: e.offences,
            origin: origin.to_owned(),
        })
    }
}

/// An event on the cluster channel.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    /// A block was added or changed by a node: apply it here.
    Add {
        /// The blocked address or CIDR, as text (`Net`'s display form).
        net: String,
        /// The block as stored in Redis.
        record: BlockRecord,
    },
    /// A block was removed cluster-wide: remove it here.
    Del {
        /// The unblocked address or CIDR, as text.
        net: String,
        /// The node id that removed it (a node ignores its own events).
        origin: String,
    },
}

/// The cluster blocks this node knows, and the unblocks it has not yet
/// delivered to Redis.
#[derive(Default)]
pub struct Registry {
    /// Every cluster block known, by network.
    pub blocks: HashMap<Net, BlockRecord>,
    /// net → cluster ms when it was unblocked here.
    pub pending_unblocks: HashMap<Net, u64>,
}

/// The kernel side: where cluster blocks land.
#[derive(Clone)]
pub struct KernelBlocks {
    /// The XDP maps the blocks are written into.
    pub maps: Arc<Mutex<XdpMaps>>,
}

impl KernelBlocks {
    /// Writes a cluster block unless a stronger local one is there: a
    /// permanent block of this node's own (operator or config) stays.
    pub fn apply(&self, net: &Net, record: &BlockRecord, now_ms: u64) -> Result<bool, MapsError> {
        let Some(entry) = record.entry(now_ms) else {
            return Ok(false);
        };
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = maps.block_get(net)?
            && !existing.is_cluster()
            && existing.expires_ns == 0
        {
            return Ok(false);
        }
        maps.block_add(net, entry)?;
        Ok(true)
    }

    /// Removes a cluster block (a local block of the same net stays).
    pub fn remove(&self, net: &Net) -> Result<bool, MapsError> {
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        match maps.block_get(net)? {
            Some(e) if e.is_cluster() => maps.block_del(net),
            _ => Ok(false),
        }
    }

    /// The cluster-flagged entries in the kernel maps.
    pub fn cluster_entries(&self) -> Result<Vec<(Net, BlockEntry)>, MapsError> {
        let maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        Ok(maps
            .block_list()?
            .into_iter()
            .filter(|(_, e)| e.is_cluster())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(expires_ms: u64) -> BlockRecord {
        BlockRecord {
            expires_ms,
            created_ms: 1_000,
            reason: "auth_failure 50".into(),
            kind: "escalation".into(),
            offences: 2,
            origin: "a".into(),
        }
    }

    #[test]
    fn entry_carries_the_remaining_ttl_and_the_cluster_flag() {
        let now_ns = clock::monotonic_ns();
        let e = rec(10_000 + 60_000).entry(10_000).unwrap();
        assert!(e.is_cluster());
        assert_eq!(BlockSource::from_u32(e.source), BlockSource::Escalation);
        let left = e.expires_ns - now_ns;
        assert!((59_000_000_000..=60_500_000_000).contains(&left), "{left}");
        assert_eq!(e.reason_bytes(), b"auth_failure 50");
        assert!(rec(9_000).entry(10_000).is_none(), "expired record");
        assert_eq!(rec(PERMANENT).entry(10_000).unwrap().expires_ns, 0);
    }

    #[test]
    fn entry_round_trips_through_a_record() {
        let now_ns = clock::monotonic_ns();
        let e = rec(70_000).entry(10_000).unwrap();
        let back = BlockRecord::from_entry(&e, 10_000, now_ns, "a").unwrap();
        assert!((69_000..=70_000).contains(&back.expires_ms), "{back:?}");
        assert_eq!(back.kind, "escalation");
        assert_eq!(back.offences, 2);
    }

    #[test]
    fn events_parse() {
        let add: Event = serde_json::from_str(
            r#"{"op":"add","net":"192.0.2.7","record":{"expires_ms":5,"created_ms":1,"reason":"r","kind":"operator","offences":1,"origin":"b"}}"#,
        )
        .unwrap();
        assert!(matches!(add, Event::Add { ref net, .. } if net == "192.0.2.7"));
        let del: Event =
            serde_json::from_str(r#"{"op":"del","net":"192.0.2.0/24","origin":"a"}"#).unwrap();
        assert!(matches!(del, Event::Del { ref origin, .. } if origin == "a"));
    }
}
