//! The gateway side of the admin socket: validates each request and applies
//! it to the XDP maps. A change takes effect on the next packet, because the
//! XDP program reads the maps on every packet.

#![forbid(unsafe_code)]

use std::{
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use gateway_common::{
    acl::{BLOCK_FLAG_CLUSTER, BlockEntry, BlockSource, encode_reason},
    config::Limit,
    ratelimit::LimitOverride,
    stats::Reason,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};

use super::protocol::{
    AllowAdded, AllowEntry, AllowRemoved, Block, BlockAdded, ClusterStatus, DroppedSource,
    EntrySource, Envelope, LimitArg, LimitPair, LimitTable, LimitView, Limits, LimitsCleared,
    ListedBlock, PROTOCOL_VERSION, Reloaded, Request, Response, Stats, Status, Unblocked,
    VerdictCount, version_mismatch,
};
use crate::{
    clock,
    cluster::Cluster,
    config::LimitSpec,
    error_chain::chain,
    net::Net,
    xdp::{
        XdpMaps,
        maps::{ALLOW_FROM_OPERATOR, MapsError},
    },
};

/// What the admin server can reach.
pub struct AdminState {
    /// `None` when the config turned the XDP fast path off.
    pub maps: Option<Arc<Mutex<XdpMaps>>>,
    /// A second handle on the same pinned maps for the read-only requests
    /// (lists, stats, the dashboard): their walks never wait for, nor hold
    /// up, escalation's writes through `maps` (`Loader::open_maps`). `None`:
    /// reads use `maps`.
    pub readers: Option<Arc<Mutex<XdpMaps>>>,
    /// Shown by `status`.
    pub interface: String,
    /// The XDP attach mode shown by `status` (`native`, `skb`; `off`
    /// without XDP).
    pub mode: String,
    /// The cluster link, when `[cluster]` is configured.
    pub cluster: Option<Arc<Cluster>>,
    /// The quota counts (`gateway quota get|reset`).
    pub quotas: Option<Arc<crate::ratelimit::quota_store::QuotaStore>>,
    /// The L7 escalation state: `gateway block del` forgets the sources it
    /// unblocks there too. `None` in tests that do not need it.
    pub escalation: Option<Arc<crate::escalate::Escalator>>,
    /// Asks the run loop to reload the config file; answers with the outcome.
    pub reload: tokio::sync::mpsc::Sender<
        tokio::sync::oneshot::Sender<Result<(), crate::reload::ReloadError>>,
    >,
    /// Asks the run loop to hand over to a new process (`gateway upgrade`).
    pub upgrade: tokio::sync::mpsc::Sender<
        tokio::sync::oneshot::Sender<
            Result<crate::upgrade::Upgraded, crate::upgrade::UpgradeError>,
        >,
    >,
}

/// Why the admin socket could not be bound or moved.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another gateway answers on the socket (the operator's: stop it, or
    /// give this one another `[admin] socket`).
    #[error(
        "another gateway is already running with admin socket {}; stop it or set [admin] socket",
        .0.display()
    )]
    InUse(PathBuf),
    /// A file system step failed (`what` says which, with the path).
    #[error("{what}")]
    Io {
        /// The step that failed.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Setting the socket's mode or reading its identity failed.
    #[error(transparent)]
    Sys(#[from] std::io::Error),
}

type Result<T, E = SocketError> = std::result::Result<T, E>;

/// Adds `what` to an I/O error.
fn step(what: String) -> impl FnOnce(std::io::Error) -> SocketError {
    move |source| SocketError::Io { what, source }
}

/// A bound admin socket; removes its file on drop, unless the file at that
/// path is no longer this socket (a successor's, after `gateway upgrade`).
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    /// [`file_id`] of the socket file this process bound.
    file: (u64, u64, i64, i64),
}

/// Device, inode and change time of `path` (an inode number can be
/// reused by a later socket file; its change time then differs).
fn file_id(path: &Path) -> std::io::Result<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::symlink_metadata(path)?;
    Ok((m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

impl AdminSocket {
    /// Binds `path` with mode 0600, refusing if another gateway answers there.
    pub fn bind(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(step(format!("creating {}", dir.display())))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path)
                .map_err(step(format!("removing stale socket {}", path.display())))?;
        }
        Self::bind_at(path)
    }

    fn bind_at(path: &Path) -> Result<Self> {
        let listener = UnixListener::bind(path)
            .map_err(step(format!("binding admin socket {}", path.display())))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            file: file_id(path)?,
        })
    }

    /// Binds a socket beside `path` (`<path>.new-<pid>`) for a successor
    /// during `gateway upgrade`: the running gateway keeps answering at
    /// `path` until [`AdminSocket::move_into_place`].
    pub fn bind_beside(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(step(format!("creating {}", dir.display())))?;
        }
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".new-{}", std::process::id()));
        let temp = path.with_file_name(name);
        let _ = std::fs::remove_file(&temp);
        Self::bind_at(&temp)
    }

    /// Renames the socket over `path` (atomic: a CLI reaches either the
    /// old gateway or this one, never nothing).
    pub fn move_into_place(&mut self, path: &Path) -> Result<()> {
        std::fs::rename(&self.path, path).map_err(step(format!(
            "moving the admin socket {} to {}",
            self.path.display(),
            path.display()
        )))?;
        self.path = path.to_owned();
        // rename(2) changes the inode's change time: this is the file now.
        self.file = file_id(path)?;
        Ok(())
    }

    /// Serves requests until the task is dropped.
    pub async fn serve(self, state: Arc<AdminState>) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_one(stream, &state).await {
                            tracing::debug!(error = %e, "admin connection failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        if file_id(&self.path).is_ok_and(|id| id == self.file) {
            std::fs::remove_file(&self.path).ok();
        }
    }
}

/// Largest request accepted, in bytes.
const MAX_REQUEST: u64 = 64 * 1024;

async fn serve_one(stream: UnixStream, state: &Arc<AdminState>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line),
    )
    .await;
    let response = match read {
        Ok(Ok(_)) => match serde_json::from_str::<Envelope>(&line) {
            // `upgrade` is served whatever the client's version: the CLI of
            // a new release replaces a gateway of an older one with it.
            Ok(Envelope { version, request })
                if version != PROTOCOL_VERSION && request != Request::Upgrade =>
            {
                Response::err(version_mismatch("the client", version, "this gateway"))
            }
            Ok(Envelope { request, .. }) => serve_request(state, request, &line).await,
            Err(e) => Response::err(format!("invalid request: {e}")),
        },
        Ok(Err(e)) => Response::err(format!("reading request: {e}")),
        Err(_) => Response::err("timed out reading the request"),
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

use tokio::io::AsyncReadExt as _;

/// Serves one request of the current protocol version (`line` is its text,
/// for the log).
async fn serve_request(state: &Arc<AdminState>, request: Request, line: &str) -> Response {
    match request {
        Request::Reload | Request::Upgrade if crate::upgrade::in_progress() => {
            Response::err("an upgrade is in progress; try again once it has finished")
        }
        Request::Reload => {
            tracing::info!("admin request: reload");
            reload(state).await
        }
        Request::Upgrade => {
            tracing::info!("admin request: upgrade");
            upgrade(state).await
        }
        req @ (Request::QuotaGet { .. } | Request::QuotaReset { .. }) => {
            tracing::info!(request = %line.trim(), "admin request");
            super::quota::handle(state, req).await
        }
        req => {
            tracing::info!(request = %line.trim(), "admin request");
            // Map walks (block list, stats) make system calls per entry:
            // run them on the blocking pool, never on a request worker.
            let state = state.clone();
            tokio::task::spawn_blocking(move || handle(&state, req))
                .await
                .unwrap_or_else(|e| Response::err(format!("admin request failed: {e}")))
        }
    }
}

/// Asks the run loop to reload and waits for the outcome.
async fn reload(state: &AdminState) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if state.reload.send(tx).await.is_err() {
        return Response::err("the gateway is shutting down");
    }
    match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(Ok(()))) => Response::ok(Reloaded { reloaded: true }),
        Ok(Ok(Err(e))) => Response::err(format!(
            "reload rejected, the running config is unchanged: {e}"
        )),
        _ => Response::err("the reload did not finish within 30 s"),
    }
}

/// Hands over to a new process; answers once it serves (or why not: the
/// running gateway then goes on unchanged).
async fn upgrade(state: &AdminState) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if state.upgrade.send(tx).await.is_err() {
        return Response::err("the gateway is shutting down");
    }
    match rx.await {
        Ok(Ok(u)) => Response::ok(u),
        Ok(Err(e)) => Response::err(format!(
            "upgrade failed, this gateway goes on serving: {}",
            chain(&e)
        )),
        Err(_) => Response::err("the gateway stopped during the upgrade"),
    }
}

/// Why an admin request was refused. The text is the operator's answer
/// (the CLI prints it, the dashboard sends it as a problem's detail).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request itself is wrong (a bad network or limit, a TTL of 0, a
    /// network that is not on the list, a change that needs `--cluster`):
    /// the operator's to fix.
    #[error("{0}")]
    Request(String),
    /// This gateway's config lacks what the request needs (XDP off, no
    /// `[cluster]` section).
    #[error("{0}")]
    NotConfigured(&'static str),
    /// Reading or writing the kernel maps failed (the gateway's side).
    #[error("{}", chain(.0))]
    Maps(#[from] MapsError),
}

/// What a request needs and this gateway's config turned off.
const XDP_OFF: &str =
    "the XDP fast path is disabled in this gateway's config ([xdp] enabled = false)";
const NO_CLUSTER: &str =
    "--cluster needs cluster mode: add a [cluster] section with redis_url to the config";

/// The first `max` blocks as `gateway block list --json` shows them, and
/// whether there are more (a bounded walk, for views that poll: the
/// dashboard). `None` when XDP is off. Blocking: map walks.
pub fn block_list_first(
    state: &AdminState,
    max: usize,
) -> Option<Result<(Vec<ListedBlock>, bool), AdminError>> {
    let maps = state.readers.as_ref().or(state.maps.as_ref())?;
    let maps = maps.lock().unwrap_or_else(|p| p.into_inner());
    let now = clock::monotonic_ns();
    let cluster_link = state.cluster.as_deref();
    Some(
        maps.block_list_first(max)
            .map(|(list, more)| (listed_blocks(&list, now, cluster_link), more))
            .map_err(AdminError::from),
    )
}

/// The XDP counters and the `top` sources dropped most, as `gateway stats`
/// shows them. `None` when XDP is off. Blocking: map walks.
pub fn read_stats(state: &AdminState, top: usize) -> Option<Result<Stats, AdminError>> {
    let maps = state.readers.as_ref().or(state.maps.as_ref())?;
    let maps = maps.lock().unwrap_or_else(|p| p.into_inner());
    Some(stats(&maps, top))
}

/// Blocks as `gateway block list --json` shows them: [`block_view`] plus
/// the node a cluster-wide block came from.
fn listed_blocks(
    list: &[(Net, BlockEntry)],
    now_ns: u64,
    cluster: Option<&Cluster>,
) -> Vec<ListedBlock> {
    list.iter()
        .map(|(n, e)| ListedBlock {
            block: block_view(n, e, now_ns),
            origin: cluster.and_then(|c| c.origin_of(n)),
        })
        .collect()
}

/// Applies one request. Every input is validated before anything changes.
pub fn handle(state: &AdminState, req: Request) -> Response {
    match req {
        Request::Status => {
            return Response::ok(Status {
                xdp: state.maps.is_some(),
                interface: state.interface.clone(),
                mode: state.mode.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            });
        }
        // Quota requests may wait for Redis: the socket loop serves them
        // (`admin::quota`), never this blocking path.
        Request::QuotaGet { .. } | Request::QuotaReset { .. } => {
            return Response::err("quota requests are served asynchronously by the admin socket");
        }
        Request::ClusterStatus => {
            return Response::ok(ClusterStatus {
                configured: state.cluster.is_some(),
                link: state.cluster.as_ref().map(|c| c.status()),
            });
        }
        _ => {}
    }
    let Some(writer) = &state.maps else {
        // With XDP off an unblock can still lift an L7 block (the proxy's
        // 429 for an escalated source).
        if let (
            Request::BlockDel {
                net,
                cluster: false,
            },
            Some(escalation),
        ) = (&req, &state.escalation)
            && let Ok(net) = parse_net(net)
            && escalation.lift_block(&net)
        {
            return Response::ok(Unblocked {
                net: net.to_string(),
                removed: true,
                removed_here: None,
                published: None,
            });
        }
        return Response::err(XDP_OFF);
    };
    let read_only = matches!(
        req,
        Request::BlockList
            | Request::AllowList
            | Request::LimitList
            | Request::LimitGet { .. }
            | Request::Stats { .. }
    );
    let maps = match &state.readers {
        Some(readers) if read_only => readers,
        _ => writer,
    };
    let mut maps = maps.lock().unwrap_or_else(|p| p.into_inner());
    apply(
        &mut maps,
        req,
        state.cluster.as_deref(),
        state.escalation.as_deref(),
    )
}

fn parse_net(s: &str) -> Result<Net, AdminError> {
    s.parse::<Net>()
        .map_err(|e| AdminError::Request(e.to_string()))
}

fn limit(arg: LimitArg) -> Result<Limit, AdminError> {
    let spec = LimitSpec::new(arg.rate, arg.burst.unwrap_or(arg.rate))
        .map_err(|e| AdminError::Request(e.to_string()))?;
    Ok(Limit {
        rate: spec.rate,
        burst: spec.burst,
    })
}

fn limit_view(l: Limit) -> LimitView {
    LimitView {
        rate: l.rate,
        burst: l.burst,
        unlimited: l.rate == 0,
    }
}

fn pair(pps: Limit, syn: Limit) -> LimitPair {
    LimitPair {
        pps: limit_view(pps),
        syn: limit_view(syn),
    }
}

fn override_view(target: String, o: &LimitOverride) -> Limits {
    Limits {
        target,
        limits: pair(o.pps, o.syn),
        matched: None,
    }
}

/// Block entry as shown to operators.
pub fn block_view(net: &Net, e: &BlockEntry, now_ns: u64) -> Block {
    let ttl_left = (e.expires_ns != 0).then(|| e.expires_ns.saturating_sub(now_ns) / 1_000_000_000);
    Block {
        net: net.to_string(),
        source: match BlockSource::from_u32(e.source) {
            BlockSource::Operator => EntrySource::Operator,
            BlockSource::Config => EntrySource::Config,
            BlockSource::Escalation => EntrySource::Escalation,
        },
        reason: String::from_utf8_lossy(e.reason_bytes()).into_owned(),
        offences: e.offences,
        created_unix: e.created_unix,
        ttl_secs_left: ttl_left,
        expired: !e.is_active(now_ns),
        cluster: e.is_cluster(),
    }
}

/// The cluster link a `--cluster` request needs.
fn need_cluster(cluster: Option<&Cluster>) -> Result<&Cluster, AdminError> {
    cluster.ok_or(AdminError::NotConfigured(NO_CLUSTER))
}

/// Runs one map request and encodes its typed reply.
/// `escalation`: where a `block_del` also lifts the source's L7 block.
fn apply(
    maps: &mut XdpMaps,
    req: Request,
    cluster_link: Option<&Cluster>,
    escalation: Option<&crate::escalate::Escalator>,
) -> Response {
    match req {
        Request::BlockAdd {
            net,
            ttl_secs,
            reason,
            cluster,
        } => Response::from_result(block_add(
            maps,
            &net,
            ttl_secs,
            reason.as_deref(),
            cluster.then_some(cluster_link).map(need_cluster),
        )),
        Request::BlockDel { net, cluster } => Response::from_result(block_del(
            maps,
            &net,
            cluster.then_some(cluster_link).map(need_cluster),
            escalation,
        )),
        Request::BlockList => Response::from_result(
            maps.block_list()
                .map(|l| listed_blocks(&l, clock::monotonic_ns(), cluster_link))
                .map_err(AdminError::from),
        ),
        Request::AllowAdd { net } => Response::from_result(allow_add(maps, &net)),
        Request::AllowDel { net } => Response::from_result(allow_del(maps, &net)),
        Request::AllowList => Response::from_result(allow_list(maps)),
        Request::LimitSet { target, pps, syn } => {
            Response::from_result(limit_set(maps, target, pps, syn))
        }
        Request::LimitGet { target } => Response::from_result(limit_get(maps, target)),
        Request::LimitList => Response::from_result(limit_list(maps)),
        Request::LimitClear { target } => Response::from_result(limit_clear(maps, target)),
        Request::Stats { top } => Response::from_result(stats(maps, top)),
        Request::Status
        | Request::Reload
        | Request::Upgrade
        | Request::ClusterStatus
        | Request::QuotaGet { .. }
        | Request::QuotaReset { .. } => {
            unreachable!("handled above")
        }
    }
}

/// `block_add`; `cluster` is `Some` for `--cluster` (an error without
/// `[cluster]`).
fn block_add(
    maps: &mut XdpMaps,
    net: &str,
    ttl_secs: Option<u64>,
    reason: Option<&str>,
    cluster: Option<Result<&Cluster, AdminError>>,
) -> Result<BlockAdded, AdminError> {
    let now = clock::monotonic_ns();
    let net = parse_net(net)?;
    if ttl_secs == Some(0) {
        return Err(AdminError::Request(
            "a TTL of 0 would expire at once; omit --ttl for a permanent block".into(),
        ));
    }
    let link = cluster.transpose()?;
    let previous = maps.block_get(&net)?;
    if link.is_none() && previous.is_some_and(|p| p.is_cluster()) {
        return Err(AdminError::Request(format!(
            "{net} is blocked cluster-wide; change it with `gateway block add --cluster {net}` \
             so every node agrees"
        )));
    }
    let reason = reason.unwrap_or("operator");
    let entry = BlockEntry {
        expires_ns: ttl_secs
            .map(|s| clock::deadline_ns(Duration::from_secs(s)))
            .unwrap_or(0),
        created_unix: clock::unix_now(),
        source: BlockSource::Operator as u32
            | if link.is_some() {
                BLOCK_FLAG_CLUSTER
            } else {
                0
            },
        offences: previous.map(|p| p.offences).unwrap_or(0) + 1,
        reason: encode_reason(reason),
    };
    maps.block_add(&net, entry)?;
    let mut added = BlockAdded {
        block: block_view(&net, &entry, now),
        origin: None,
        published: None,
    };
    if let Some(link) = link {
        link.publish_block(
            net,
            ttl_secs.map(Duration::from_secs),
            reason,
            entry.offences,
            false,
        );
        added.origin = Some(link.node_id().to_owned());
        added.published = Some(link.is_up());
    }
    Ok(added)
}

/// `block_del`; `cluster` as for [`block_add`]. Once the request is
/// valid, the kernel entry is removed and the source's L7 block lifted
/// ([`crate::escalate::Escalator::lift_block`]): an unblock succeeds when
/// either was there (an L7-only block is a block too).
fn block_del(
    maps: &mut XdpMaps,
    net: &str,
    cluster: Option<Result<&Cluster, AdminError>>,
    escalation: Option<&crate::escalate::Escalator>,
) -> Result<Unblocked, AdminError> {
    let net = parse_net(net)?;
    let existing = maps.block_get(&net)?;
    if cluster.is_none() && existing.is_some_and(|e| e.is_cluster()) {
        return Err(AdminError::Request(format!(
            "{net} is blocked cluster-wide; remove it from every node with \
             `gateway block del --cluster {net}`"
        )));
    }
    if let Some(link) = cluster {
        let link = link?;
        let here = existing.is_some() && maps.block_del(&net)?;
        let lifted = escalation.is_some_and(|e| e.lift_block(&net));
        // Other nodes may hold it even where this one does not.
        link.publish_unblock(net);
        return Ok(Unblocked {
            net: net.to_string(),
            removed: true,
            removed_here: Some(here || lifted),
            published: Some(link.is_up()),
        });
    }
    let removed = maps.block_del(&net)?;
    let lifted = escalation.is_some_and(|e| e.lift_block(&net));
    if !removed && !lifted {
        return Err(AdminError::Request(format!("{net} is not blocked")));
    }
    Ok(Unblocked {
        net: net.to_string(),
        removed: true,
        removed_here: None,
        published: None,
    })
}

fn allow_add(maps: &mut XdpMaps, net: &str) -> Result<AllowAdded, AdminError> {
    let net = parse_net(net)?;
    maps.allow_add(&net, ALLOW_FROM_OPERATOR)?;
    Ok(AllowAdded {
        net: net.to_string(),
    })
}

fn allow_del(maps: &mut XdpMaps, net: &str) -> Result<AllowRemoved, AdminError> {
    let net = parse_net(net)?;
    if !maps.allow_del(&net)? {
        return Err(AdminError::Request(format!(
            "{net} is not on the allowlist"
        )));
    }
    Ok(AllowRemoved {
        net: net.to_string(),
        removed: true,
    })
}

fn allow_list(maps: &XdpMaps) -> Result<Vec<AllowEntry>, AdminError> {
    Ok(maps
        .allow_list()?
        .iter()
        .map(|(n, origin)| AllowEntry {
            net: n.to_string(),
            source: if *origin == ALLOW_FROM_OPERATOR {
                EntrySource::Operator
            } else {
                EntrySource::Config
            },
        })
        .collect())
}

fn limit_set(
    maps: &mut XdpMaps,
    target: String,
    pps: Option<LimitArg>,
    syn: Option<LimitArg>,
) -> Result<Limits, AdminError> {
    if pps.is_none() && syn.is_none() {
        return Err(AdminError::Request("give --pps and/or --syn-rate".into()));
    }
    let pps = pps.map(limit).transpose()?;
    let syn = syn.map(limit).transpose()?;
    if target == "default" {
        let mut cfg = maps.config()?;
        cfg.pps = pps.unwrap_or(cfg.pps);
        cfg.syn = syn.unwrap_or(cfg.syn);
        maps.set_config(cfg)?;
        return Ok(Limits {
            target,
            limits: pair(cfg.pps, cfg.syn),
            matched: None,
        });
    }
    let net = parse_net(&target)?;
    let base = match maps.limit_list()?.into_iter().find(|(n, _)| *n == net) {
        Some((_, o)) => o,
        None => {
            let cfg = maps.config()?;
            LimitOverride {
                pps: cfg.pps,
                syn: cfg.syn,
            }
        }
    };
    let o = LimitOverride {
        pps: pps.unwrap_or(base.pps),
        syn: syn.unwrap_or(base.syn),
    };
    maps.limit_set(&net, o)?;
    Ok(override_view(net.to_string(), &o))
}

fn limit_get(maps: &XdpMaps, target: String) -> Result<Limits, AdminError> {
    let cfg = maps.config()?;
    if target == "default" {
        return Ok(Limits {
            target,
            limits: pair(cfg.pps, cfg.syn),
            matched: None,
        });
    }
    let net = parse_net(&target)?;
    let addr: IpAddr = net.addr();
    // The most specific override covering the target, as the kernel's
    // longest-prefix match would pick it.
    let best = maps
        .limit_list()?
        .into_iter()
        .filter(|(n, _)| n.contains(&addr) && n.prefix_len() <= net.prefix_len())
        .max_by_key(|(n, _)| n.prefix_len());
    Ok(match best {
        Some((n, o)) => Limits {
            target,
            limits: pair(o.pps, o.syn),
            matched: Some(n.to_string()),
        },
        None => Limits {
            target,
            limits: pair(cfg.pps, cfg.syn),
            matched: Some("default".into()),
        },
    })
}

fn limit_list(maps: &XdpMaps) -> Result<LimitTable, AdminError> {
    let cfg = maps.config()?;
    Ok(LimitTable {
        default: pair(cfg.pps, cfg.syn),
        overrides: maps
            .limit_list()?
            .iter()
            .map(|(n, o)| override_view(n.to_string(), o))
            .collect(),
    })
}

fn limit_clear(maps: &mut XdpMaps, target: Option<String>) -> Result<LimitsCleared, AdminError> {
    match target {
        None => Ok(LimitsCleared {
            removed: maps.limit_clear()?,
        }),
        Some(t) => {
            let net = parse_net(&t)?;
            if !maps.limit_del(&net)? {
                return Err(AdminError::Request(format!("{net} has no limit override")));
            }
            Ok(LimitsCleared { removed: 1 })
        }
    }
}

fn stats(maps: &XdpMaps, top: usize) -> Result<Stats, AdminError> {
    let now = clock::monotonic_ns();
    let counters = maps
        .counters()?
        .iter()
        .map(|(r, c)| VerdictCount {
            reason: r.name().to_owned(),
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect();
    let top_dropped = maps
        .top_dropped(top.min(1000))?
        .iter()
        .map(|(addr, d)| DroppedSource {
            source: addr.to_string(),
            packets: d.packets,
            last_reason: Reason::ALL
                .iter()
                .find(|r| **r as u32 == d.last_reason)
                .map(|r| r.name())
                .unwrap_or("unknown")
                .to_owned(),
            last_drop_secs_ago: now.saturating_sub(d.last_ns) / 1_000_000_000,
        })
        .collect();
    Ok(Stats {
        counters,
        top_dropped,
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

    use super::*;

    /// A state without XDP or cluster; upgrade requests are answered by a
    /// task that refuses them with "test refusal".
    fn state() -> Arc<AdminState> {
        let (reload, _) = tokio::sync::mpsc::channel(1);
        let (upgrade, mut upgrades) = tokio::sync::mpsc::channel::<
            tokio::sync::oneshot::Sender<
                std::result::Result<crate::upgrade::Upgraded, crate::upgrade::UpgradeError>,
            >,
        >(1);
        tokio::spawn(async move {
            while let Some(reply) = upgrades.recv().await {
                let _ = reply.send(Err(crate::upgrade::UpgradeError::Sockets(
                    std::io::Error::other("test refusal"),
                )));
            }
        });
        Arc::new(AdminState {
            maps: None,
            readers: None,
            interface: "-".into(),
            mode: "off".into(),
            cluster: None,
            quotas: None,
            escalation: None,
            reload,
            upgrade,
        })
    }

    /// Sends `line` to a served connection and reads the answer.
    async fn ask(state: &Arc<AdminState>, line: &str) -> Response {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let state = state.clone();
        tokio::spawn(async move { serve_one(theirs, &state).await });
        let (read, mut write) = ours.into_split();
        write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        BufReader::new(read).read_line(&mut answer).await.unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    #[tokio::test]
    async fn another_protocol_version_is_refused_naming_both() {
        let state = state();
        let ok = ask(
            &state,
            &format!(r#"{{"version":{PROTOCOL_VERSION},"op":"status"}}"#),
        )
        .await;
        assert!(ok.ok, "{ok:?}");
        assert_eq!(ok.version, PROTOCOL_VERSION);
        let status: Status = serde_json::from_value(ok.data).unwrap();
        assert_eq!((status.xdp, status.mode.as_str()), (false, "off"));

        for (line, theirs) in [
            (r#"{"op":"status"}"#.to_owned(), "version none"),
            (
                r#"{"version":99,"op":"block_list"}"#.to_owned(),
                "version 99",
            ),
            (
                format!(
                    r#"{{"version":{},"op":"stats","top":1}}"#,
                    PROTOCOL_VERSION + 1
                ),
                "speaks version",
            ),
        ] {
            let r = ask(&state, &line).await;
            let e = r.error.unwrap_or_default();
            assert!(!r.ok, "{line}");
            assert!(
                e.contains("admin protocol mismatch: the client speaks ")
                    && e.contains(theirs)
                    && e.contains(&format!("this gateway speaks version {PROTOCOL_VERSION}")),
                "{line}: {e}"
            );
        }
    }

    /// `gateway block del` on a source escalated at L7 only (seen through
    /// a trusted proxy, here with XDP off too): the proxy stops answering
    /// it 429 at once; a second unblock finds nothing to remove.
    #[tokio::test]
    async fn block_del_forgets_an_l7_escalation_even_without_xdp() {
        use crate::escalate::{Escalator, Offence, Seen, config::EscalationSection};
        let escalation = Arc::new(Escalator::new(
            EscalationSection::default(),
            Vec::new(),
            None,
        ));
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let neighbour: IpAddr = "203.0.113.8".parse().unwrap();
        for who in [ip, neighbour] {
            let escalated = (0..100).any(|_| {
                escalation
                    .record(who, Offence::MalformedHttp, Seen::Forwarded)
                    .is_some()
            });
            assert!(escalated, "{who} was not escalated");
            assert!(escalation.l7_blocked(who).is_some());
        }
        let mut state = Arc::into_inner(state()).unwrap();
        state.escalation = Some(escalation.clone());
        let state = Arc::new(state);
        let del = format!(r#"{{"version":{PROTOCOL_VERSION},"op":"block_del","net":"{ip}"}}"#);
        let r = ask(&state, &del).await;
        assert!(r.ok, "{r:?}");
        let unblocked: Unblocked = serde_json::from_value(r.data).unwrap();
        assert_eq!(unblocked.net, ip.to_string());
        assert_eq!(escalation.l7_blocked(ip), None);
        assert!(
            escalation.l7_blocked(neighbour).is_some(),
            "only the unblocked address is forgotten"
        );
        let again = ask(&state, &del).await;
        assert_eq!(again.error.as_deref(), Some(XDP_OFF), "{again:?}");
        // A range is not the source that was escalated: it lifts nothing,
        // and a refused unblock changes nothing.
        let range =
            format!(r#"{{"version":{PROTOCOL_VERSION},"op":"block_del","net":"203.0.113.0/24"}}"#);
        let r = ask(&state, &range).await;
        assert_eq!(r.error.as_deref(), Some(XDP_OFF), "{r:?}");
        assert!(escalation.l7_blocked(neighbour).is_some());
        // A source with offences but no block is not "blocked": refused,
        // and its offences stay.
        let tracked = escalation.tracked();
        assert!(
            escalation
                .record(
                    "203.0.113.9".parse().unwrap(),
                    Offence::MalformedHttp,
                    Seen::Forwarded
                )
                .is_none()
        );
        let r = ask(
            &state,
            &format!(r#"{{"version":{PROTOCOL_VERSION},"op":"block_del","net":"203.0.113.9"}}"#),
        )
        .await;
        assert_eq!(r.error.as_deref(), Some(XDP_OFF), "{r:?}");
        assert_eq!(escalation.tracked(), tracked + 1);
    }

    #[tokio::test]
    async fn upgrade_is_served_whatever_the_clients_version() {
        let state = state();
        for line in [r#"{"op":"upgrade"}"#, r#"{"version":99,"op":"upgrade"}"#] {
            let r = ask(&state, line).await;
            assert_eq!(
                r.error.as_deref(),
                Some("upgrade failed, this gateway goes on serving: test refusal"),
                "{line}"
            );
        }
    }
}
