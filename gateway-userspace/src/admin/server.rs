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

use anyhow::{Context as _, Result, bail};
use gateway_common::{
    acl::{BLOCK_FLAG_CLUSTER, BlockEntry, BlockSource, encode_reason},
    config::Limit,
    ratelimit::LimitOverride,
    stats::Reason,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};

use super::protocol::{LimitArg, Request, Response};
use crate::{
    clock,
    cluster::Cluster,
    config::LimitSpec,
    net::Net,
    xdp::{XdpMaps, maps::ALLOW_FROM_OPERATOR},
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
    /// Asks the run loop to reload the config file; answers with the outcome.
    pub reload: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<(), String>>>,
    /// Asks the run loop to hand over to a new process (`gateway upgrade`).
    pub upgrade: tokio::sync::mpsc::Sender<
        tokio::sync::oneshot::Sender<Result<crate::upgrade::Upgraded, String>>,
    >,
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
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another gateway is already running with admin socket {}; stop it or set [admin] socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Self::bind_at(path)
    }

    fn bind_at(path: &Path) -> Result<Self> {
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding admin socket {}", path.display()))?;
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
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
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
        std::fs::rename(&self.path, path).with_context(|| {
            format!(
                "moving the admin socket {} to {}",
                self.path.display(),
                path.display()
            )
        })?;
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

async fn serve_one(stream: UnixStream, state: &Arc<AdminState>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line),
    )
    .await;
    let response = match read {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(Request::Reload | Request::Upgrade) if crate::upgrade::in_progress() => {
                Response::err("an upgrade is in progress; try again once it has finished")
            }
            Ok(Request::Reload) => {
                tracing::info!("admin request: reload");
                reload(state).await
            }
            Ok(Request::Upgrade) => {
                tracing::info!("admin request: upgrade");
                upgrade(state).await
            }
            Ok(req @ (Request::QuotaGet { .. } | Request::QuotaReset { .. })) => {
                tracing::info!(request = %line.trim(), "admin request");
                super::quota::handle(state, req).await
            }
            Ok(req) => {
                tracing::info!(request = %line.trim(), "admin request");
                // Map walks (block list, stats) make system calls per entry:
                // run them on the blocking pool, never on a request worker.
                let state = state.clone();
                tokio::task::spawn_blocking(move || handle(&state, req))
                    .await
                    .unwrap_or_else(|e| Response::err(format!("admin request failed: {e}")))
            }
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

/// Asks the run loop to reload and waits for the outcome.
async fn reload(state: &AdminState) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if state.reload.send(tx).await.is_err() {
        return Response::err("the gateway is shutting down");
    }
    match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(Ok(()))) => Response::ok(json!({ "reloaded": true })),
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
        Ok(Ok(u)) => Response::ok(serde_json::to_value(u).unwrap_or_default()),
        Ok(Err(e)) => Response::err(format!("upgrade failed, this gateway goes on serving: {e}")),
        Err(_) => Response::err("the gateway stopped during the upgrade"),
    }
}

/// The first `max` blocks as `gateway block list --json` shows them, and
/// whether there are more (a bounded walk, for views that poll: the
/// dashboard). `None` when XDP is off. Blocking: map walks.
pub fn block_list_first(state: &AdminState, max: usize) -> Option<Result<(Value, bool)>> {
    let maps = state.readers.as_ref().or(state.maps.as_ref())?;
    let maps = maps.lock().unwrap_or_else(|p| p.into_inner());
    let now = clock::monotonic_ns();
    let cluster_link = state.cluster.as_deref();
    Some(
        maps.block_list_first(max)
            .map(|(list, more)| (blocks_json(&list, now, cluster_link), more)),
    )
}

/// Blocks as `gateway block list --json` shows them: [`block_json`] plus
/// the node a cluster-wide block came from.
fn blocks_json(list: &[(Net, BlockEntry)], now_ns: u64, cluster: Option<&Cluster>) -> Value {
    list.iter()
        .map(|(n, e)| {
            let mut v = block_json(n, e, now_ns);
            v["origin"] = json!(cluster.and_then(|c| c.origin_of(n)));
            v
        })
        .collect()
}

/// Applies one request. Every input is validated before anything changes.
pub fn handle(state: &AdminState, req: Request) -> Response {
    if let Request::Status = req {
        return Response::ok(json!({
            "xdp": state.maps.is_some(),
            "interface": state.interface,
            "mode": state.mode,
            "version": env!("CARGO_PKG_VERSION"),
        }));
    }
    if let Request::QuotaGet { .. } | Request::QuotaReset { .. } = req {
        // Quota requests may wait for Redis: the socket loop serves them
        // (`admin::quota`), never this blocking path.
        return Response::err("quota requests are served asynchronously by the admin socket");
    }
    if let Request::ClusterStatus = req {
        return Response::ok(match &state.cluster {
            Some(c) => c.status_json(),
            None => json!({ "configured": false }),
        });
    }
    let Some(writer) = &state.maps else {
        return Response::err(
            "the XDP fast path is disabled in this gateway's config ([xdp] enabled = false)",
        );
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
    match apply(&mut maps, req, state.cluster.as_deref()) {
        Ok(data) => Response::ok(data),
        Err(e) => Response::err(format!("{e:#}")),
    }
}

fn parse_net(s: &str) -> Result<Net> {
    s.parse::<Net>().map_err(|e| anyhow::anyhow!("{e}"))
}

fn limit(arg: LimitArg) -> Result<Limit> {
    let spec =
        LimitSpec::new(arg.rate, arg.burst.unwrap_or(arg.rate)).map_err(anyhow::Error::msg)?;
    Ok(Limit {
        rate: spec.rate,
        burst: spec.burst,
    })
}

fn limit_json(l: Limit) -> Value {
    json!({ "rate": l.rate, "burst": l.burst, "unlimited": l.rate == 0 })
}

fn override_json(o: &LimitOverride) -> Value {
    json!({ "pps": limit_json(o.pps), "syn": limit_json(o.syn) })
}

/// Block entry as shown to operators.
pub fn block_json(net: &Net, e: &BlockEntry, now_ns: u64) -> Value {
    let ttl_left = (e.expires_ns != 0).then(|| e.expires_ns.saturating_sub(now_ns) / 1_000_000_000);
    json!({
        "net": net.to_string(),
        "source": match BlockSource::from_u32(e.source) {
            BlockSource::Operator => "operator",
            BlockSource::Config => "config",
            BlockSource::Escalation => "escalation",
        },
        "reason": String::from_utf8_lossy(e.reason_bytes()),
        "offences": e.offences,
        "created_unix": e.created_unix,
        "ttl_secs_left": ttl_left,
        "expired": !e.is_active(now_ns),
        "cluster": e.is_cluster(),
    })
}

/// The cluster link a `--cluster` request needs.
fn need_cluster(cluster: Option<&Cluster>) -> Result<&Cluster> {
    cluster.ok_or_else(|| {
        anyhow::anyhow!(
            "--cluster needs cluster mode: add a [cluster] section with redis_url to the config"
        )
    })
}

fn apply(maps: &mut XdpMaps, req: Request, cluster_link: Option<&Cluster>) -> Result<Value> {
    let now = clock::monotonic_ns();
    match req {
        Request::BlockAdd { net, ttl_secs, reason, cluster } => {
            let net = parse_net(&net)?;
            if ttl_secs == Some(0) {
                bail!("a TTL of 0 would expire at once; omit --ttl for a permanent block");
            }
            let link = if cluster { Some(need_cluster(cluster_link)?) } else { None };
            let previous = maps.block_get(&net)?;
            if !cluster && previous.is_some_and(|p| p.is_cluster()) {
                bail!(
                    "{net} is blocked cluster-wide; change it with `gateway block add --cluster {net}` \
                     so every node agrees"
                );
            }
            let reason = reason.as_deref().unwrap_or("operator");
            let entry = BlockEntry {
                expires_ns: ttl_secs.map(|s| clock::deadline_ns(Duration::from_secs(s))).unwrap_or(0),
                created_unix: clock::unix_now(),
                source: BlockSource::Operator as u32 | if cluster { BLOCK_FLAG_CLUSTER } else { 0 },
                offences: previous.map(|p| p.offences).unwrap_or(0) + 1,
                reason: encode_reason(reason),
            };
            maps.block_add(&net, entry)?;
            let mut v = block_json(&net, &entry, now);
            if let Some(link) = link {
                link.publish_block(net, ttl_secs.map(Duration::from_secs), reason, entry.offences, false);
                v["origin"] = json!(link.node_id());
                v["published"] = json!(link.is_up());
            }
            Ok(v)
        }
        Request::BlockDel { net, cluster } => {
            let net = parse_net(&net)?;
            let existing = maps.block_get(&net)?;
            if !cluster && existing.is_some_and(|e| e.is_cluster()) {
                bail!(
                    "{net} is blocked cluster-wide; remove it from every node with \
                     `gateway block del --cluster {net}`"
                );
            }
            if cluster {
                let link = need_cluster(cluster_link)?;
                let here = existing.is_some() && maps.block_del(&net)?;
                // Other nodes may hold it even where this one does not.
                link.publish_unblock(net);
                return Ok(json!({
                    "net": net.to_string(),
                    "removed": true,
                    "removed_here": here,
                    "published": link.is_up(),
                }));
            }
            if !maps.block_del(&net)? {
                bail!("{net} is not blocked");
            }
            Ok(json!({ "net": net.to_string(), "removed": true }))
        }
        Request::BlockList => Ok(blocks_json(&maps.block_list()?, now, cluster_link)),
        Request::AllowAdd { net } => {
            let net = parse_net(&net)?;
            maps.allow_add(&net, ALLOW_FROM_OPERATOR)?;
            Ok(json!({ "net": net.to_string() }))
        }
        Request::AllowDel { net } => {
            let net = parse_net(&net)?;
            if !maps.allow_del(&net)? {
                bail!("{net} is not on the allowlist");
            }
            Ok(json!({ "net": net.to_string(), "removed": true }))
        }
        Request::AllowList => Ok(Value::Array(
            maps.allow_list()?
                .iter()
                .map(|(n, origin)| {
                    json!({
                        "net": n.to_string(),
                        "source": if *origin == ALLOW_FROM_OPERATOR { "operator" } else { "config" },
                    })
                })
                .collect(),
        )),
        Request::LimitSet { target, pps, syn } => {
            if pps.is_none() && syn.is_none() {
                bail!("give --pps and/or --syn-rate");
            }
            let pps = pps.map(limit).transpose()?;
            let syn = syn.map(limit).transpose()?;
            if target == "default" {
                let mut cfg = maps.config()?;
                cfg.pps = pps.unwrap_or(cfg.pps);
                cfg.syn = syn.unwrap_or(cfg.syn);
                maps.set_config(cfg)?;
                return Ok(json!({ "target": "default", "pps": limit_json(cfg.pps), "syn": limit_json(cfg.syn) }));
            }
            let net = parse_net(&target)?;
            let base = match maps.limit_list()?.into_iter().find(|(n, _)| *n == net) {
                Some((_, o)) => o,
                None => {
                    let cfg = maps.config()?;
                    LimitOverride { pps: cfg.pps, syn: cfg.syn }
                }
            };
            let o = LimitOverride { pps: pps.unwrap_or(base.pps), syn: syn.unwrap_or(base.syn) };
            maps.limit_set(&net, o)?;
            let mut v = override_json(&o);
            v["target"] = json!(net.to_string());
            Ok(v)
        }
        Request::LimitGet { target } => {
            let cfg = maps.config()?;
            let default = json!({ "target": "default", "pps": limit_json(cfg.pps), "syn": limit_json(cfg.syn) });
            if target == "default" {
                return Ok(default);
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
                Some((n, o)) => {
                    let mut v = override_json(&o);
                    v["target"] = json!(target);
                    v["matched"] = json!(n.to_string());
                    v
                }
                None => {
                    let mut v = default;
                    v["target"] = json!(target);
                    v["matched"] = json!("default");
                    v
                }
            })
        }
        Request::LimitList => {
            let cfg = maps.config()?;
            let overrides: Vec<Value> = maps
                .limit_list()?
                .iter()
                .map(|(n, o)| {
                    let mut v = override_json(o);
                    v["target"] = json!(n.to_string());
                    v
                })
                .collect();
            Ok(json!({
                "default": { "pps": limit_json(cfg.pps), "syn": limit_json(cfg.syn) },
                "overrides": overrides,
            }))
        }
        Request::LimitClear { target } => match target {
            None => Ok(json!({ "removed": maps.limit_clear()? })),
            Some(t) => {
                let net = parse_net(&t)?;
                if !maps.limit_del(&net)? {
                    bail!("{net} has no limit override");
                }
                Ok(json!({ "removed": 1 }))
            }
        },
        Request::Stats { top } => {
            let counters: Vec<Value> = maps
                .counters()?
                .iter()
                .map(|(r, c)| json!({ "reason": r.name(), "packets": c.packets, "bytes": c.bytes }))
                .collect();
            let top: Vec<Value> = maps
                .top_dropped(top.min(1000))?
                .iter()
                .map(|(addr, d)| {
                    let reason = Reason::ALL
                        .iter()
                        .find(|r| **r as u32 == d.last_reason)
                        .map(|r| r.name())
                        .unwrap_or("unknown");
                    json!({
                        "source": addr.to_string(),
                        "packets": d.packets,
                        "last_reason": reason,
                        "last_drop_secs_ago": now.saturating_sub(d.last_ns) / 1_000_000_000,
                    })
                })
                .collect();
            Ok(json!({ "counters": counters, "top_dropped": top }))
        }
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
