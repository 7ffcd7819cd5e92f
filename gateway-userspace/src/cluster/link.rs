//! The link task: keeps this node connected to Redis, reconciles the
//! blocklist on every (re)connect and every `sync_interval`, delivers this
//! node's changes, applies the other nodes' events, and notices when Redis
//! goes away (the subscription drops, a PING fails, or a request-path
//! command failed) to fall back and reconnect with backoff.

#![forbid(unsafe_code)]

use std::{collections::HashSet, sync::Arc, sync::atomic::Ordering, time::Duration};

use futures_util::StreamExt as _;
use redis::{AsyncConnectionConfig, aio::MultiplexedConnection};
use tokio::sync::mpsc;

use super::{
    Cluster, Op,
    blocks::{BlockRecord, Event},
    scripts,
};
use crate::net::Net;

/// Budget of link-task commands (reconciliation can be large).
const LINK_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const PING_EVERY: Duration = Duration::from_secs(1);

/// Why a connected stretch ended or a connection failed: Redis's (it is
/// away, slow, or answered oddly) unless it says otherwise. Logged and
/// shown in `gateway cluster status`; the link reconnects with backoff.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// A Redis command or connection failed (redis-rs's error).
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The command connection was not established within [`LINK_TIMEOUT`].
    #[error("connecting timed out")]
    ConnectTimedOut,
    /// The subscription connection was not established within
    /// [`LINK_TIMEOUT`].
    #[error("connecting the subscription timed out")]
    SubscribeConnectTimedOut,
    /// `SUBSCRIBE` to the cluster channel failed.
    #[error("subscribing to the cluster channel")]
    Subscribe(#[source] redis::RedisError),
    /// `TIME` (the cluster clock) failed.
    #[error("reading the Redis clock")]
    Clock(#[source] redis::RedisError),
    /// The reconciliation on (re)connect failed.
    #[error("reconciling the blocklist")]
    Reconcile(#[source] Box<LinkError>),
    /// The reconciliation every `sync_interval` failed.
    #[error("periodic reconciliation")]
    PeriodicReconcile(#[source] Box<LinkError>),
    /// Redis closed the subscription connection.
    #[error("the subscription connection closed")]
    SubscriptionClosed,
    /// The gateway is stopping (this node's own doing).
    #[error("shutting down")]
    ShuttingDown,
    /// `PING` got no answer within 2 s.
    #[error("PING timed out")]
    PingTimedOut,
    /// `PING` got something other than `PONG`.
    #[error("PING answered {0:?}")]
    PingAnswer(String),
    /// A link command got no answer within [`LINK_TIMEOUT`].
    #[error("Redis did not answer within {LINK_TIMEOUT:?}")]
    TimedOut,
    /// A block record could not be encoded as JSON (this gateway's bug).
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
}

type Result<T, E = LinkError> = std::result::Result<T, E>;

pub(crate) async fn run(cluster: Arc<Cluster>, mut ops: mpsc::UnboundedReceiver<Op>) {
    let mut backoff = cluster.cfg.retry_interval.get();
    let mut was_up = false;
    let mut last_complaint: Option<std::time::Instant> = None;
    loop {
        match connect(&cluster).await {
            Ok((conn, pubsub)) => {
                backoff = cluster.cfg.retry_interval.get();
                let reason = session(&cluster, conn, pubsub, &mut ops).await;
                cluster.up.store(false, Ordering::Release);
                cluster.conn.store(None);
                let reason = cluster.scrub(describe(&reason));
                tracing::warn!(
                    redis = %cluster.cfg.redacted_url(),
                    error = %reason,
                    "cluster: lost Redis; rate limits fall back to this node's own buckets, \
                     blocks stay in the kernel and are re-published when it returns"
                );
                cluster.set_error(Some(reason));
                was_up = true;
                last_complaint = Some(std::time::Instant::now());
            }
            Err(e) => {
                let text = cluster.scrub(describe(&e));
                cluster.stats.errors.fetch_add(1, Ordering::Relaxed);
                // Say it the first time and then every 30 s, not every retry.
                if last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    tracing::warn!(
                        redis = %cluster.cfg.redacted_url(),
                        error = %text,
                        retry_in_ms = backoff.as_millis() as u64,
                        "cluster: cannot reach Redis; serving with local limits{}",
                        if was_up { "" } else { " until it answers" }
                    );
                    last_complaint = Some(std::time::Instant::now());
                }
                cluster.set_error(Some(text));
            }
        }
        // Changes made meanwhile are in the registry; reconciliation on the
        // next connect delivers them.
        while ops.try_recv().is_ok() {}
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// An error and its causes, without the repeats redis-rs errors carry
/// ("Connection refused: Connection refused").
fn describe(e: &LinkError) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.iter().any(|o| o.contains(&text)) {
            out.push(text);
        }
        cause = c.source();
    }
    out.join(": ")
}

async fn connect(cluster: &Cluster) -> Result<(MultiplexedConnection, redis::aio::PubSub)> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(LINK_TIMEOUT))
        .set_response_timeout(None);
    let mut conn = tokio::time::timeout(
        LINK_TIMEOUT,
        cluster
            .client
            .get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| LinkError::ConnectTimedOut)??;
    let mut pubsub = tokio::time::timeout(LINK_TIMEOUT, cluster.client.get_async_pubsub())
        .await
        .map_err(|_| LinkError::SubscribeConnectTimedOut)??;
    pubsub
        .subscribe(&cluster.keys.channel)
        .await
        .map_err(LinkError::Subscribe)?;
    // The cluster clock: Redis TIME against ours (half the round trip is
    // noise we accept: TTLs are whole seconds).
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .map_err(LinkError::Clock)?;
    let local = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    cluster
        .skew_ms
        .store(secs * 1000 + micros / 1000 - local, Ordering::Relaxed);
    Ok((conn, pubsub))
}

/// One connected stretch; returns why it ended.
async fn session(
    cluster: &Arc<Cluster>,
    mut conn: MultiplexedConnection,
    pubsub: redis::aio::PubSub,
    ops: &mut mpsc::UnboundedReceiver<Op>,
) -> LinkError {
    let mut events = pubsub.into_on_message();
    // Subscribed first, then reconciled: an event racing the reconciliation
    // is applied after it, never lost.
    let (live, pushed) = match reconcile(cluster, &mut conn).await {
        Ok(r) => r,
        Err(e) => return LinkError::Reconcile(Box::new(e)),
    };
    cluster.conn.store(Some(Arc::new(conn.clone())));
    cluster.up.store(true, Ordering::Release);
    cluster.set_error(None);
    tracing::info!(
        redis = %cluster.cfg.redacted_url(),
        node_id = %cluster.cfg.node_id,
        cluster_blocks = live,
        republished = pushed,
        skew_ms = cluster.skew_ms.load(Ordering::Relaxed),
        "cluster: connected to Redis; blocklist in step"
    );
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut sync = tokio::time::interval(cluster.cfg.sync_interval.get());
    sync.tick().await;
    ping.tick().await;
    loop {
        tokio::select! {
            msg = events.next() => match msg {
                Some(m) => match m.get_payload::<String>() {
                    Ok(text) => on_event(cluster, &text),
                    Err(e) => tracing::warn!(error = %e, "cluster: unreadable event"),
                },
                None => return LinkError::SubscriptionClosed,
            },
            op = ops.recv() => {
                let Some(op) = op else { return LinkError::ShuttingDown };
                if let Err(e) = deliver(cluster, &mut conn, op).await {
                    return e;
                }
            }
            _ = ping.tick() => {
                if let Err(e) = ping_once(&mut conn).await {
                    return e;
                }
            }
            _ = cluster.trouble.notified() => {
                if let Err(e) = ping_once(&mut conn).await {
                    return e;
                }
            }
            _ = sync.tick() => {
                if let Err(e) = reconcile(cluster, &mut conn).await {
                    return LinkError::PeriodicReconcile(Box::new(e));
                }
            }
        }
    }
}

async fn ping_once(conn: &mut MultiplexedConnection) -> Result<()> {
    let pong: String =
        tokio::time::timeout(Duration::from_secs(2), redis::cmd("PING").query_async(conn))
            .await
            .map_err(|_| LinkError::PingTimedOut)??;
    if pong != "PONG" {
        return Err(LinkError::PingAnswer(pong));
    }
    Ok(())
}

async fn deliver(cluster: &Cluster, conn: &mut MultiplexedConnection, op: Op) -> Result<()> {
    let k = &cluster.keys;
    match op {
        Op::Add {
            net,
            record,
            keep_longer,
        } => {
            let json = serde_json::to_string(&record)?;
            let mut call = scripts::ADD.key(&k.blocks);
            call.key(&k.expiry)
                .key(&k.unblocks)
                .arg(net.to_string())
                .arg(json)
                .arg(record.expires_ms)
                .arg(&k.channel)
                .arg(if keep_longer { "1" } else { "0" });
            let _: i64 = timeout(call.invoke_async(conn)).await?;
            cluster.stats.published.fetch_add(1, Ordering::Relaxed);
        }
        Op::Del { net, at_ms } => {
            let mut call = scripts::DEL.key(&k.blocks);
            call.key(&k.expiry)
                .key(&k.unblocks)
                .arg(net.to_string())
                .arg(at_ms)
                .arg(&k.channel)
                .arg(&cluster.cfg.node_id);
            let _: i64 = timeout(call.invoke_async(conn)).await?;
            let mut reg = cluster.registry();
            if reg.pending_unblocks.get(&net) == Some(&at_ms) {
                reg.pending_unblocks.remove(&net);
            }
            cluster.stats.published.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

async fn timeout<T>(f: impl Future<Output = redis::RedisResult<T>>) -> Result<T> {
    Ok(tokio::time::timeout(LINK_TIMEOUT, f)
        .await
        .map_err(|_| LinkError::TimedOut)??)
}

/// Reconciles with Redis (see [`scripts::MERGE`]): hands over this node's
/// blocks and unblocks, then makes the kernel hold exactly the cluster's
/// live blocks. Returns (live cluster blocks, blocks this node re-published).
async fn reconcile(cluster: &Cluster, conn: &mut MultiplexedConnection) -> Result<(usize, usize)> {
    let now = cluster.now_ms();
    let (sent, unblocks) = {
        let reg = cluster.registry();
        let sent: Vec<(Net, BlockRecord)> =
            reg.blocks.iter().map(|(n, r)| (*n, r.clone())).collect();
        let unblocks: Vec<(Net, u64)> =
            reg.pending_unblocks.iter().map(|(n, t)| (*n, *t)).collect();
        (sent, unblocks)
    };
    let k = &cluster.keys;
    let mut call = scripts::MERGE.key(&k.blocks);
    call.key(&k.expiry)
        .key(&k.unblocks)
        .arg(now)
        .arg(&k.channel)
        .arg(&cluster.cfg.node_id)
        .arg(unblocks.len());
    for (net, at) in &unblocks {
        call.arg(net.to_string()).arg(*at);
    }
    for (net, r) in &sent {
        call.arg(net.to_string())
            .arg(r.created_ms)
            .arg(r.expires_ms)
            .arg(serde_json::to_string(r)?);
    }
    let flat: Vec<String> = timeout(call.invoke_async(conn)).await?;
    let mut live: Vec<(Net, BlockRecord)> = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks_exact(2) {
        match (
            pair[0].parse::<Net>(),
            serde_json::from_str::<BlockRecord>(&pair[1]),
        ) {
            (Ok(net), Ok(r)) => live.push((net, r)),
            _ => {
                tracing::warn!(net = %pair[0], "cluster: skipping an unreadable block record in Redis")
            }
        }
    }
    let live_nets: HashSet<Net> = live.iter().map(|(n, _)| *n).collect();
    let gone: Vec<&(Net, BlockRecord)> = sent
        .iter()
        .filter(|(n, _)| !live_nets.contains(n))
        .collect();
    let republished = sent
        .iter()
        .filter(|(n, r)| {
            r.origin == cluster.cfg.node_id && live_nets.contains(n) && r.expires_ms > now
        })
        .count();
    {
        let mut reg = cluster.registry();
        for (net, at) in &unblocks {
            if reg.pending_unblocks.get(net) == Some(at) {
                reg.pending_unblocks.remove(net);
            }
        }
        // What we sent and the cluster no longer has was unblocked
        // elsewhere (or expired): it goes. What was added since the
        // snapshot stays; its own delivery is queued.
        for (net, _) in &gone {
            reg.blocks.remove(net);
        }
        for (net, r) in &live {
            reg.blocks.insert(*net, r.clone());
        }
    }
    // The kernel maps after the registry lock is released: the admin
    // socket takes the maps lock first, then the registry's.
    if let Some(kernel) = &cluster.kernel {
        // After `gateway upgrade` the maps are the new process's: this
        // draining one writes nothing and says nothing per block.
        use crate::xdp::maps::MapsError::HandedOver;
        for (net, _) in &gone {
            match kernel.remove(net) {
                Ok(_) | Err(HandedOver) => {}
                Err(e) => {
                    tracing::warn!(net = %net, error = %e, "cluster: removing an unblocked source failed")
                }
            }
        }
        let now = cluster.now_ms();
        for (net, r) in &live {
            match kernel.apply(net, r, now) {
                Ok(_) | Err(HandedOver) => {}
                Err(e) => {
                    tracing::warn!(net = %net, error = %e, "cluster: writing a cluster block into the XDP maps failed")
                }
            }
        }
    }
    cluster.stats.resyncs.fetch_add(1, Ordering::Relaxed);
    Ok((live.len(), republished))
}

fn on_event(cluster: &Cluster, text: &str) {
    let event = match serde_json::from_str::<Event>(text) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cluster: ignoring a malformed event");
            return;
        }
    };
    match event {
        Event::Add { net, record } => {
            if record.origin == cluster.cfg.node_id {
                return;
            }
            let Ok(net) = net.parse::<Net>() else {
                tracing::warn!(net = %net, "cluster: ignoring a block of an unreadable net");
                return;
            };
            cluster.stats.received.fetch_add(1, Ordering::Relaxed);
            cluster.registry().blocks.insert(net, record.clone());
            if let Some(kernel) = &cluster.kernel {
                match kernel.apply(&net, &record, cluster.now_ms()) {
                    Ok(true) => tracing::info!(
                        source = %net,
                        origin = %record.origin,
                        reason = %record.reason,
                        "cluster: block from another node is in the kernel"
                    ),
                    Ok(false) | Err(crate::xdp::maps::MapsError::HandedOver) => {}
                    Err(e) => {
                        tracing::warn!(net = %net, error = %e, "cluster: writing a cluster block into the XDP maps failed")
                    }
                }
            }
        }
        Event::Del { net, origin } => {
            if origin == cluster.cfg.node_id {
                return;
            }
            let Ok(net) = net.parse::<Net>() else {
                return;
            };
            cluster.stats.received.fetch_add(1, Ordering::Relaxed);
            cluster.registry().blocks.remove(&net);
            if let Some(kernel) = &cluster.kernel
                && let Ok(true) = kernel.remove(&net)
            {
                tracing::info!(source = %net, origin = %origin, "cluster: block removed by another node");
            }
        }
    }
}
