//! Requests and responses of the admin socket, as JSON: one [`Request`] line
//! from the client, one [`Response`] line back. Every reply payload is a type
//! here, serialized by the gateway (`admin::server`, `admin::quota`, the
//! dashboard's actions) and deserialized by the CLI (`cli.rs`), so a renamed
//! field fails to compile instead of printing `?`. Addresses travel as
//! strings and are validated by the server too, so a hand-written request
//! gets the same errors as the CLI.
//!
//! Both directions carry [`PROTOCOL_VERSION`] as `"version"`; a side that
//! sees another version (or none: a release from before versioning) stops
//! with an error naming both versions, instead of misreading the other's
//! fields. One exception: `upgrade` (`{"op":"upgrade"}`, answered with
//! [`Upgraded`]) keeps its shape in every release and is served across
//! versions, so the CLI of a newly installed release can replace a running
//! gateway of an older one (`systemctl reload gateway`). `gateway ... --json` prints a reply's payload as the gateway sent
//! it (keys in alphabetical order).

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

pub use crate::{cluster::LinkStatus, upgrade::Upgraded};

/// The admin protocol version this build speaks. Bump it when a request or
/// reply changes shape in a way the other side would misread (a renamed or
/// retyped field, a new required field); both sides refuse another version
/// (except for `upgrade`, whose request and [`Upgraded`] reply must never
/// change incompatibly).
/// Replies from before versioning carry no version and read as 0.
pub const PROTOCOL_VERSION: u32 = 1;

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
    /// Removes a block (`gateway block del`) from the kernel maps and lifts
    /// the source's L7 block (the 429 the proxy answers a source it cannot
    /// drop in the kernel), forgetting its offences; an error if the
    /// network is blocked in neither.
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

/// A request as sent on the socket: [`Request`] with `"version"` beside `"op"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    /// The sender's [`PROTOCOL_VERSION`]; 0 when absent (a client from before
    /// versioning).
    #[serde(default)]
    pub version: u32,
    /// The operation.
    #[serde(flatten)]
    pub request: Request,
}

impl Envelope {
    /// `request` stamped with this build's [`PROTOCOL_VERSION`].
    pub fn new(request: Request) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            request,
        }
    }
}

/// The text both sides give when the other speaks another protocol version.
/// `peer` names the other side ("the gateway at ...", "the client"), `me`
/// this one ("this CLI", "this gateway").
pub fn version_mismatch(peer: &str, theirs: u32, me: &str) -> String {
    let theirs = if theirs == 0 {
        "none (a release from before versioned admin requests)".to_owned()
    } else {
        theirs.to_string()
    };
    format!(
        "admin protocol mismatch: {peer} speaks version {theirs}, {me} speaks version {PROTOCOL_VERSION}; use the `gateway` CLI of the same release as the running gateway"
    )
}

/// The server's answer to one `Request`: `ok` with `data`, or an `error`
/// message for the operator. `data` is one of the payload types below,
/// chosen by the request (the client names the type it expects:
/// `admin::client::call`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// The gateway's [`PROTOCOL_VERSION`]; 0 when absent (a gateway from
    /// before versioning).
    #[serde(default)]
    pub version: u32,
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
    /// A success carrying `data` (a payload type of this module).
    pub fn ok(data: impl Serialize) -> Self {
        match serde_json::to_value(data) {
            Ok(data) => Self {
                version: PROTOCOL_VERSION,
                ok: true,
                error: None,
                data,
            },
            // Only a map with non-string keys fails; none of ours has one.
            Err(e) => Self::err(format!("encoding the answer: {e}")),
        }
    }

    /// A failure with `message` and `null` data.
    pub fn err(message: impl Into<String>) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            ok: false,
            error: Some(message.into()),
            data: serde_json::Value::Null,
        }
    }

    /// [`Response::ok`] or [`Response::err`] with the error's text.
    pub fn from_result<T: Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Self {
        match r {
            Ok(data) => Self::ok(data),
            Err(e) => Self::err(e.to_string()),
        }
    }
}

/// Who put an entry in the block or allow list.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EntrySource {
    /// `gateway block|allow add`, or the dashboard.
    Operator,
    /// The config file (`[xdp] blocklist`, `allowlist`).
    Config,
    /// The escalation engine (blocks only).
    Escalation,
}

impl EntrySource {
    /// The name shown in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Config => "config",
            Self::Escalation => "escalation",
        }
    }
}

/// One blocklist entry as shown to operators.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Block {
    /// The blocked network, `IP/prefix`.
    pub net: String,
    /// Who added it.
    pub source: EntrySource,
    /// Free text stored with the entry.
    pub reason: String,
    /// Times this source has been blocked.
    pub offences: u32,
    /// When the entry was written, Unix seconds.
    pub created_unix: u64,
    /// Whole seconds until it expires; `None` is permanent.
    pub ttl_secs_left: Option<u64>,
    /// The TTL passed (the kernel no longer drops; the entry awaits removal).
    pub expired: bool,
    /// A cluster-wide block (`--cluster`).
    pub cluster: bool,
}

/// The reply to `block_add`: the entry written, and for `--cluster` where
/// it came from and whether it reached Redis.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockAdded {
    /// The entry as written.
    #[serde(flatten)]
    pub block: Block,
    /// This node's id (`--cluster` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Whether the block was published to Redis now (`--cluster` only;
    /// false: it is queued until Redis returns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<bool>,
}

/// One entry of `block_list`: the block and, for cluster blocks, the node
/// it came from (`null` when unknown or local).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListedBlock {
    /// The entry.
    #[serde(flatten)]
    pub block: Block,
    /// The node a cluster-wide block came from.
    pub origin: Option<String>,
}

/// The reply to `block_del`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Unblocked {
    /// The network unblocked, `IP/prefix`.
    pub net: String,
    /// Always true (a network that was not blocked is an error).
    pub removed: bool,
    /// `--cluster`: whether this node held the block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_here: Option<bool>,
    /// `--cluster`: whether the removal reached Redis now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<bool>,
}

/// The reply to `allow_add`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllowAdded {
    /// The network allowlisted, `IP/prefix`.
    pub net: String,
}

/// The reply to `allow_del`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllowRemoved {
    /// The network removed, `IP/prefix`.
    pub net: String,
    /// Always true (a network not on the list is an error).
    pub removed: bool,
}

/// One entry of `allow_list`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllowEntry {
    /// The allowlisted network, `IP/prefix`.
    pub net: String,
    /// `operator` or `config`.
    pub source: EntrySource,
}

/// A rate limit as the kernel applies it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitView {
    /// Per second per source; 0 is unlimited.
    pub rate: u32,
    /// Events allowed back to back above the rate.
    pub burst: u32,
    /// `rate == 0`.
    pub unlimited: bool,
}

/// The packet and SYN budgets of one target.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitPair {
    /// Packets per second per source.
    pub pps: LimitView,
    /// New TCP connections (SYNs) per second per source.
    pub syn: LimitView,
}

/// The reply to `limit_set` and `limit_get`, and one override of
/// `limit_list`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Limits {
    /// `default`, or the IP/CIDR (for `limit_get`, as asked).
    pub target: String,
    /// The budgets.
    #[serde(flatten)]
    pub limits: LimitPair,
    /// `limit_get` of a network only: the override that applies (`default`
    /// when none covers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
}

/// The reply to `limit_list`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitTable {
    /// The budgets of sources without an override.
    pub default: LimitPair,
    /// Every per-network override.
    pub overrides: Vec<Limits>,
}

/// The reply to `limit_clear`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitsCleared {
    /// Overrides removed.
    pub removed: usize,
}

/// The XDP counters of one verdict.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerdictCount {
    /// The verdict (`passed`, `dropped_blocklist`, ...).
    pub reason: String,
    /// Packets, summed over CPUs.
    pub packets: u64,
    /// Their bytes (from the Ethernet header on).
    pub bytes: u64,
}

/// One of the sources dropped most.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DroppedSource {
    /// The source address.
    pub source: String,
    /// Packets dropped from it.
    pub packets: u64,
    /// The verdict of its last drop.
    pub last_reason: String,
    /// Whole seconds since its last drop.
    pub last_drop_secs_ago: u64,
}

/// The reply to `stats`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// Every verdict, in the kernel's order.
    pub counters: Vec<VerdictCount>,
    /// The sources dropped most, most first.
    pub top_dropped: Vec<DroppedSource>,
}

/// The reply to `status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Whether the XDP fast path is on.
    pub xdp: bool,
    /// The interface XDP is attached to.
    pub interface: String,
    /// The attach mode (`native`, `skb`, `off`).
    pub mode: String,
    /// The gateway's version.
    pub version: String,
}

/// The reply to `cluster_status`: `{"configured": false}` without
/// `[cluster]`, else the link's state beside `"configured": true`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Whether `[cluster]` is configured.
    pub configured: bool,
    /// The Redis link, when configured.
    #[serde(flatten)]
    pub link: Option<LinkStatus>,
}

/// The reply to `reload`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reloaded {
    /// Always true (a rejected reload is an error).
    pub reloaded: bool,
}

/// One quota's count for a consumer (`quota_get`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuotaRow {
    /// `plan:<name>` or `limit:<name>`.
    pub quota: String,
    /// Requests counted in the current window.
    pub used: u64,
    /// The quota's count per window; `None` when it is no longer configured.
    pub limit: Option<u64>,
    /// `limit - used`, at least 0.
    pub remaining: Option<u64>,
    /// The current window's start, Unix seconds.
    pub window_start_unix: i64,
    /// Its end (exclusive), Unix seconds.
    pub window_end_unix: i64,
    /// Seconds until the window ends.
    pub resets_in_secs: i64,
    /// `node` (this node's count) or `cluster` (Redis).
    pub source: String,
}

/// The reply to `quota_get`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuotaUsage {
    /// The consumer asked about.
    pub consumer: String,
    /// Its counts, by quota name.
    pub quotas: Vec<QuotaRow>,
    /// Why Redis could not be read (the rows are then this node's).
    pub cluster_error: Option<String>,
}

/// The reply to `quota_reset`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuotaCleared {
    /// The consumer whose counts were forgotten.
    pub consumer: String,
    /// Counts removed on this node.
    pub removed: usize,
    /// Counts removed in Redis.
    pub cluster_removed: usize,
    /// Whether cluster mode is on (Redis was reset too).
    pub cluster: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_carries_the_version_beside_the_op() {
        let line = serde_json::to_string(&Envelope::new(Request::BlockList)).unwrap();
        assert_eq!(
            line,
            format!(r#"{{"version":{PROTOCOL_VERSION},"op":"block_list"}}"#)
        );
        let old: Envelope = serde_json::from_str(r#"{"op":"stats","top":3}"#).unwrap();
        assert_eq!((old.version, old.request), (0, Request::Stats { top: 3 }));
    }

    #[test]
    fn payloads_keep_their_wire_shape() {
        let b = Block {
            net: "10.0.0.0/8".into(),
            source: EntrySource::Escalation,
            reason: "r".into(),
            offences: 2,
            created_unix: 5,
            ttl_secs_left: None,
            expired: false,
            cluster: false,
        };
        let listed = serde_json::to_value(ListedBlock {
            block: b.clone(),
            origin: None,
        })
        .unwrap();
        assert_eq!(
            listed,
            serde_json::json!({"net": "10.0.0.0/8", "source": "escalation", "reason": "r",
                "offences": 2, "created_unix": 5, "ttl_secs_left": null, "expired": false,
                "cluster": false, "origin": null})
        );
        let added = serde_json::to_value(BlockAdded {
            block: b,
            origin: None,
            published: None,
        })
        .unwrap();
        assert!(added.get("origin").is_none() && added.get("published").is_none());
        let off: ClusterStatus = serde_json::from_str(r#"{"configured":false}"#).unwrap();
        assert_eq!(off.link, None);
        assert_eq!(
            serde_json::to_string(&off).unwrap(),
            r#"{"configured":false}"#
        );
    }

    #[test]
    fn a_mismatch_names_both_versions() {
        let e = version_mismatch("the gateway", 0, "this CLI");
        assert!(
            e.contains("none")
                && e.contains(&format!("this CLI speaks version {PROTOCOL_VERSION}")),
            "{e}"
        );
        assert!(version_mismatch("the client", 7, "this gateway").contains("speaks version 7"));
    }
}
