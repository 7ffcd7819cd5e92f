//! Requests and responses of the admin socket, as JSON. Addresses travel as
//! strings and are validated by the server too, so a hand-written request
//! gets the same errors as the CLI.

use serde::{Deserialize, Serialize};

/// A rate and burst as sent by the CLI; `burst` defaults to `rate`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitArg {
    pub rate: u32,
    pub burst: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    BlockAdd {
        net: String,
        ttl_secs: Option<u64>,
        reason: Option<String>,
        /// Also block on every node of the cluster.
        #[serde(default)]
        cluster: bool,
    },
    BlockDel {
        net: String,
        /// Also unblock on every node of the cluster.
        #[serde(default)]
        cluster: bool,
    },
    BlockList,
    AllowAdd {
        net: String,
    },
    AllowDel {
        net: String,
    },
    AllowList,
    /// `target` is `default` or an IP/CIDR.
    LimitSet {
        target: String,
        pps: Option<LimitArg>,
        syn: Option<LimitArg>,
    },
    LimitGet {
        target: String,
    },
    LimitList,
    /// Without a target: every override.
    LimitClear {
        target: Option<String>,
    },
    Stats {
        top: usize,
    },
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
        consumer: String,
    },
    /// Forgets a consumer's counts (of one quota, e.g. `plan:gold`, if
    /// given), on this node and, in cluster mode, in Redis.
    QuotaReset {
        consumer: String,
        #[serde(default)]
        quota: Option<String>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Self {
        Self {
            ok: true,
            error: None,
            data,
        }
    }

    pub fn err(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            data: serde_json::Value::Null,
        }
    }
}
