//! Cluster mode: several gateway nodes behind one load balancer share rate
//! limits and blocklists through Redis.
//!
//! - **Shared limits** (`shared = true` on a `[[rate_limit.limits]]`) are one
//!   GCRA bucket per key in Redis, updated by a Lua script. A node leases a
//!   few tokens at a time ([`limit`]) so a busy key costs one round trip per
//!   lease, not per request; a key over its limit is refused locally until
//!   Redis says it may try again.
//! - **Cluster blocks** (escalations, and `gateway block add --cluster`) are
//!   stored in Redis and announced on a pub/sub channel; every node writes
//!   them into its XDP maps. A node that starts or reconnects reconciles
//!   with Redis ([`link`]): it loads every live block and hands back the
//!   ones Redis lost (a restarted Redis without persistence loses none).
//! - **Quotas** (`quota = "10000/day"` on a limit or a plan) are one exact
//!   counter per consumer and window in Redis ([`quota`]): every counted
//!   request is one `INCRBY`, the key expires after its window.
//! - **Redis down**: requests never wait for it: limits fall back to each
//!   node's local bucket (fail-open, counted in
//!   `gateway_cluster_local_decisions_total`), blocks stay in the kernel
//!   and queue for publication, authentication does not depend on Redis at
//!   all. `/readyz` and `gateway cluster status` show the state.

#![forbid(unsafe_code)]

pub mod blocks;
pub mod config;
mod limit;
mod link;
mod quota;
mod scripts;

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use redis::{IntoConnectionInfo as _, aio::MultiplexedConnection};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

pub use blocks::{BlockRecord, KernelBlocks, PERMANENT};
pub use config::ClusterSection;
pub use limit::SharedLimit;
pub use quota::RedisQuotaError;

use crate::net::Net;

/// The Redis link's state, as `gateway cluster status` and the dashboard
/// show it (beside `"configured": true`: `admin::protocol::ClusterStatus`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkStatus {
    /// Whether Redis answers now.
    pub connected: bool,
    /// This node's id.
    pub node_id: String,
    /// The Redis URL with its password replaced.
    pub redis: String,
    /// The prefix of every key this cluster writes.
    pub key_prefix: String,
    /// The last link error (`null` once connected).
    pub error: Option<String>,
    /// Cluster-wide blocks this node knows.
    pub cluster_blocks: usize,
    /// Whether cluster blocks reach this node's kernel (XDP on).
    pub kernel_blocks: bool,
    /// Redis clock minus this node's, in milliseconds.
    pub clock_skew_ms: i64,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Stats {
    /// Shared-limit requests decided by this node alone because Redis was unavailable
    /// (`gateway_cluster_local_decisions_total`).
    pub local_decisions: AtomicU64,
    /// Token leases asked of Redis for shared limits (`gateway_cluster_lease_requests_total`).
    pub lease_requests: AtomicU64,
    /// Blocks and unblocks this node delivered to the cluster
    /// (`gateway_cluster_blocks_published_total`).
    pub published: AtomicU64,
    /// Blocks and unblocks applied from other nodes (`gateway_cluster_blocks_received_total`).
    pub received: AtomicU64,
    /// Full blocklist reconciliations with Redis (`gateway_cluster_resyncs_total`).
    pub resyncs: AtomicU64,
    /// Failed Redis connections and commands (`gateway_cluster_redis_errors_total`).
    pub errors: AtomicU64,
}

/// A change for the link task to deliver to Redis.
pub(crate) enum Op {
    Add {
        net: Net,
        record: BlockRecord,
        keep_longer: bool,
    },
    Del {
        net: Net,
        at_ms: u64,
    },
}

/// Redis key names.
pub(crate) struct Keys {
    pub prefix: String,
    pub blocks: String,
    pub expiry: String,
    pub unblocks: String,
    pub channel: String,
}

/// This node's handle on the cluster, shared by the proxy, the escalator,
/// the admin socket and the link task.
pub struct Cluster {
    cfg: ClusterSection,
    client: redis::Client,
    conn: ArcSwapOption<MultiplexedConnection>,
    up: AtomicBool,
    /// Redis clock minus ours, in ms.
    skew_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// Lock order: the XDP maps first, then this (the admin socket holds
    /// the maps while it publishes); never take the maps while holding it.
    registry: Mutex<blocks::Registry>,
    kernel: Option<KernelBlocks>,
    ops: mpsc::UnboundedSender<Op>,
    /// Poked by the request path when Redis fails, so the link task
    /// checks the connection at once.
    trouble: Notify,
    /// The Redis password, to scrub from error texts.
    secret: Option<String>,
    keys: Keys,
    /// Counters for `/metrics`, updated without locks.
    pub stats: Stats,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.cfg.redacted_url())
            .field("node_id", &self.cfg.node_id)
            .finish_non_exhaustive()
    }
}

/// Why the cluster link could not be set up from `[cluster]` (the config's
/// or its files' to fix; the texts never carry the password).
#[derive(Debug, thiserror::Error)]
pub enum ClusterStartError {
    /// A password, certificate or key file cannot be read.
    #[error("[cluster] reading {}", .path.display())]
    Read {
        /// The file, resolved against the config's directory.
        path: std::path::PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// `redis_url` does not parse as a Redis URL.
    #[error("[cluster] redis_url {url} is not usable: {error}")]
    Url {
        /// The URL, password replaced.
        url: String,
        /// redis-rs's reason.
        error: redis::RedisError,
    },
    /// The password file is not UTF-8.
    #[error("[cluster] password_file is not UTF-8")]
    PasswordNotUtf8(#[source] std::string::FromUtf8Error),
    /// The client could not be built (TLS material redis-rs refuses).
    #[error("[cluster] Redis client for {url}: {error}")]
    Client {
        /// The URL, password replaced.
        url: String,
        /// redis-rs's reason.
        error: redis::RedisError,
    },
}

impl Cluster {
    /// Prepares the Redis client (reading the password and TLS files
    /// relative to `base_dir`) and starts the link task. Returns at once:
    /// connecting happens in the background, the gateway serves meanwhile.
    pub fn start(
        cfg: ClusterSection,
        base_dir: &Path,
        kernel: Option<KernelBlocks>,
    ) -> Result<Arc<Self>, ClusterStartError> {
        let read = |p: &Path| {
            let path = base_dir.join(p);
            std::fs::read(&path).map_err(|source| ClusterStartError::Read { path, source })
        };
        let mut info = cfg
            .redis_url
            .as_str()
            .into_connection_info()
            .map_err(|error| ClusterStartError::Url {
                url: cfg.redacted_url(),
                error,
            })?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &cfg.username {
            settings = settings.set_username(user);
        }
        if let Some(p) = &cfg.password_file {
            let text = String::from_utf8(read(p)?).map_err(ClusterStartError::PasswordNotUtf8)?;
            let pw = text.strip_suffix('\n').unwrap_or(&text);
            let pw = pw.strip_suffix('\r').unwrap_or(pw);
            settings = settings.set_password(pw);
        }
        let secret = settings
            .password()
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        info = info.set_redis_settings(settings);
        let client = if cfg.tls_ca_file.is_some() || cfg.tls_cert_file.is_some() {
            let client_tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
                (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                    client_cert: read(c)?,
                    client_key: read(k)?,
                }),
                _ => None,
            };
            let root_cert = cfg.tls_ca_file.as_deref().map(read).transpose()?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )
        } else {
            redis::Client::open(info)
        }
        .map_err(|error| ClusterStartError::Client {
            url: cfg.redacted_url(),
            error,
        })?;

        let p = cfg.key_prefix.clone();
        let keys = Keys {
            blocks: format!("{p}:blocks"),
            expiry: format!("{p}:block-expiry"),
            unblocks: format!("{p}:unblocks"),
            channel: format!("{p}:events"),
            prefix: p,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self {
            client,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            skew_ms: AtomicI64::new(0),
            last_error: Mutex::new(Some("not connected yet".into())),
            registry: Mutex::new(blocks::Registry::default()),
            kernel,
            ops: tx,
            trouble: Notify::new(),
            secret,
            keys,
            stats: Stats::default(),
            cfg,
        });
        cluster.adopt_kernel_blocks();
        tokio::spawn(link::run(cluster.clone(), rx));
        Ok(cluster)
    }

    /// This node's id (`[cluster] node_id`), the `origin` of the blocks it makes.
    pub fn node_id(&self) -> &str {
        &self.cfg.node_id
    }

    /// The `[cluster]` section this handle was built from.
    pub fn config(&self) -> &ClusterSection {
        &self.cfg
    }

    /// Whether Redis is reachable right now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Milliseconds on the cluster clock (Redis time).
    pub fn now_ms(&self) -> u64 {
        let local = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        (local + self.skew_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    /// An error text with the Redis password removed.
    fn scrub(&self, e: impl std::fmt::Display) -> String {
        let text = e.to_string();
        match &self.secret {
            Some(s) => text.replace(s.as_str(), "***"),
            None => text,
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, blocks::Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Publishes a block made on this node (escalation or operator). It is
    /// in this node's kernel already; other nodes get it within
    /// milliseconds, or when Redis returns.
    pub fn publish_block(
        &self,
        net: Net,
        ttl: Option<Duration>,
        reason: &str,
        offences: u32,
        escalation: bool,
    ) {
        let now = self.now_ms();
        let record = BlockRecord {
            expires_ms: ttl.map(|t| now + t.as_millis() as u64).unwrap_or(PERMANENT),
            created_ms: now,
            reason: reason.to_owned(),
            kind: if escalation { "escalation" } else { "operator" }.into(),
            offences,
            origin: self.cfg.node_id.clone(),
        };
        {
            let mut reg = self.registry();
            reg.pending_unblocks.remove(&net);
            reg.blocks.insert(net, record.clone());
        }
        let _ = self.ops.send(Op::Add {
            net,
            record,
            keep_longer: escalation,
        });
    }

    /// Removes a cluster block on every node.
    pub fn publish_unblock(&self, net: Net) {
        let at_ms = self.now_ms();
        {
            let mut reg = self.registry();
            reg.blocks.remove(&net);
            reg.pending_unblocks.insert(net, at_ms);
        }
        let _ = self.ops.send(Op::Del { net, at_ms });
    }

    /// Adds `points` to `source`'s cluster-wide escalation score, in the
    /// background; calls `on_cross` if this addition took the total over
    /// `threshold` (exactly one node sees that). Without Redis nothing is
    /// scored here: each node's own score still escalates.
    pub fn score(
        &self,
        source: std::net::IpAddr,
        points: u32,
        threshold: u32,
        window: Duration,
        on_cross: impl FnOnce() + Send + 'static,
    ) {
        let Some(mut conn) = self.connection() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let key = format!("{}:esc:{source}", self.keys.prefix);
        let budget = self.cfg.command_timeout.get();
        let window_ms = window.as_millis().max(1) as u64;
        runtime.spawn(async move {
            let mut call = scripts::SCORE.key(key);
            call.arg(points).arg(window_ms).arg(threshold);
            match tokio::time::timeout(budget, call.invoke_async::<i64>(&mut conn)).await {
                Ok(Ok(total)) if total > 0 => on_cross(),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "cluster: scoring an offence failed"),
                Err(_) => tracing::debug!("cluster: scoring an offence timed out"),
            }
        });
    }

    /// The node a cluster block came from, if this node knows it.
    pub fn origin_of(&self, net: &Net) -> Option<String> {
        self.registry().blocks.get(net).map(|r| r.origin.clone())
    }

    /// What `gateway cluster status` shows.
    pub fn status(&self) -> LinkStatus {
        let blocks = self.registry().blocks.len();
        LinkStatus {
            connected: self.is_up(),
            node_id: self.cfg.node_id.clone(),
            redis: self.cfg.redacted_url(),
            key_prefix: self.keys.prefix.clone(),
            error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            cluster_blocks: blocks,
            kernel_blocks: self.kernel.is_some(),
            clock_skew_ms: self.skew_ms.load(Ordering::Relaxed),
        }
    }

    /// Blocks this node holds in its kernel with the cluster flag (from
    /// before a restart) join the registry, so the first reconciliation
    /// either confirms them or removes them.
    fn adopt_kernel_blocks(&self) {
        let Some(kernel) = &self.kernel else {
            return;
        };
        let entries = match kernel.cluster_entries() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: reading pinned cluster blocks failed");
                return;
            }
        };
        let (now_ms, now_ns) = (self.now_ms(), crate::clock::monotonic_ns());
        let mut reg = self.registry();
        for (net, e) in entries {
            if let Some(r) = BlockRecord::from_entry(&e, now_ms, now_ns, &self.cfg.node_id) {
                reg.blocks.insert(net, r);
            }
        }
    }

    /// The shared connection, when Redis is up.
    fn connection(&self) -> Option<MultiplexedConnection> {
        if !self.is_up() {
            return None;
        }
        self.conn.load_full().map(|c| (*c).clone())
    }

    /// Notes a failed request-path command and has the link task check
    /// the connection at once.
    fn request_failed(&self, e: Option<&redis::RedisError>) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        match e {
            Some(e) => {
                tracing::debug!(error = %self.scrub(e), "cluster: Redis command failed; deciding locally")
            }
            None => tracing::debug!(
                "cluster: Redis did not answer within command_timeout; deciding locally"
            ),
        }
        self.trouble.notify_one();
    }
}
