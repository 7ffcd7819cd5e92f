//! Requests and responses of the admin socket, as JSON. Addresses travel as
//! strings and are validated by the server too, so a hand-written request
//! gets the same errors as the CLI.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// A rate and burst as sent by the CLI; `burst` defaults to `rate`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitArg {
    /// Sustained rate: packets (or new connections, for `syn`) per second per source.
    pub rate: u32,
    /// Events allowed back to back above the rate; `None` means the same as
    /// `rate` (one second's worth).
    pub burst: Option<u32>,
}

/// One admin operation, tagged by `"op"` in snake_case (`{"op":"block_add",...}`). Networks are
/// `IP` or `IP/prefix` strings, parsed and checked by the server, which answers a bad one with an
/// error `Response`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Blocks a network in the XDP blocklist (`gateway block add`).
    BlockAdd {
        /// The address or CIDR to block.
        net: String,
        /// Seconds until the block expires; `None` is permanent, `Some(0)` is refused.
        ttl_secs: Option<u64>,
        /// Free text stored with the entry (truncated to the map's reason field); `"operator"` when
        /// absent.
        reason: Option<String>,
        /// Also block on every node of the cluster.
        #[serde(default)]
        cluster: bool,
    },
    /// Removes a block (`gateway block del`); an error if the network is not blocked.
    BlockDel {
        /// The exact network the block was added for.
        net: String,
        /// Also unblock on every node of the cluster.
        #[serde(default)]
        cluster: bool,
    },
    /// Lists every block with its TTL left, reason, source and offence count.
    BlockList,
    /// Adds a network to the allowlist, which XDP passes before any other check.
    AllowAdd {
        /// The address or CIDR to allow.
        net: String,
    },
    /// Removes an allowlist entry (operator or config); an error if the
    /// network is not on it.
    AllowDel {
        /// The exact network the entry was added for.
        net: String,
    },
    /// Lists the allowlist, each entry marked `operator` or `config`.
    AllowList,
    /// `target` is `default` or an IP/CIDR.
    /// Sets the XDP packet and SYN budgets (`gateway limit set`); at least one of `pps` and `syn`
    /// must be given, the other keeps its current value.
    LimitSet {
        /// `default`, or the IP/CIDR the override applies to.
        target: String,
        /// Packets per second per source.
        pps: Option<LimitArg>,
        /// New TCP connections (SYNs) per second per source.
        syn: Option<LimitArg>,
    },
    /// The budget that applies to a target: its most specific override (longest prefix, as the
    /// kernel's LPM lookup picks it) or the default.
    LimitGet {
        /// `default`, or an IP/CIDR.
        target: String,
    },
    /// Lists every per-network override.
    LimitList,
    /// Removes overrides, returning their sources to the default budget.
    /// Without a target: every override.
    LimitClear {
        /// The override's network; `None` clears them all.
        target: Option<String>,
    },
    /// XDP counters per drop reason and the sources dropped most.
    Stats {
        /// How many of the most-dropped sources to return (at most 1000).
        top: usize,
    },
    /// Whether XDP is on, the interface and XDP mode, and the gateway version.
    Status,
    /// The Redis link of cluster mode.
    ClusterStatus,
    /// Re-read the config file, as SIGHUP does.
    Reload,
    /// Hand the listeners to a new process started from this one's binary
    /// path and arguments (`gateway upgrade`, `docs/operations.md`).
    Upgrade,
    /// A consumer's usage of every quota it has a count for.
    QuotaGet {
        /// The consumer identity (as the authenticate phase names it).
        consumer: String,
    },
    /// Forgets a consumer's counts (of one quota, e.g. `plan:gold`, if
    /// given), on this node and, in cluster mode, in Redis.
    QuotaReset {
        /// The consumer identity whose counts are forgotten.
        consumer: String,
        /// One quota's name; `None` forgets every quota of the consumer.
        #[serde(default)]
        quota: Option<String>,
    },
}

/// The server's answer to one `Request`: `ok` with `data`, or an `error` message for the operator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What went wrong, for the operator; present only when `ok` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The result, shaped per request (`null` on error).
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    /// A success carrying `data`.
    pub fn ok(data: serde_json::Value) -> Self {
        Self {
            ok: true,
            error: None,
            data,
        }
    }

    /// A failure with `message` and `null` data.
    pub fn err(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            data: serde_json::Value::Null,
        }
    }
}
