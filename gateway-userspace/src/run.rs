//! `gateway run`: load and validate the config before touching the kernel,
//! load the XDP program (maps pinned, reused across restarts), write the
//! config into the maps, attach, serve the admin socket, sweep expired
//! blocks, start the proxy listeners, reload on SIGHUP (the proxy state is
//! swapped atomically and listeners are added, changed or removed; a bad
//! config, or a listener that cannot bind, keeps the old one), and on SIGINT/SIGTERM
//! stop accepting, let in-flight requests finish (up to
//! `[limits] shutdown_grace`) and detach cleanly. The escalation state is
//! loaded at start and saved in the background and at shutdown.
//! `gateway upgrade` hands the sockets to a successor (`crate::upgrade`);
//! started as one, `run` takes them over instead of binding.

#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
};

use crate::{
    admin::server::{AdminSocket, AdminState, SocketError},
    admin_http::{
        self, Readiness,
        collect::{
            ClusterCollector, EscalationCollector, ProxyCollector, QuotaCollector, XdpCollector,
        },
    },
    cluster::{Cluster, ClusterStartError, KernelBlocks},
    config::Config,
    error_chain::chain,
    escalate::{self, Escalator, XdpSink},
    observe::{AccessLog, Metrics, Observe, config::AccessLogTarget},
    phases::{self, PhasesError},
    proxy::{Proxy, ProxyError},
    ratelimit::quota_store::{QuotaStore, system_clock},
    reload::{ReloadError, reloaded, try_reload},
    upgrade::{
        self, Offered, Role, UpgradeError, Upgraded,
        successor::{Takeover, TakeoverError},
    },
    xdp::{self, Loader, XdpMaps, loader::XdpError, maps::MapsError},
};

/// Why the gateway could not start; `main` prints it with its causes
/// (`gateway: error: ...`). The variants say whose it is: the config's
/// files, the kernel's, the machine's.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The signal handlers could not be installed (the runtime's).
    #[error(transparent)]
    Signals(std::io::Error),
    /// A successor could not take the running gateway's sockets over, or
    /// tell it that it is ready.
    #[error("taking over from the running gateway")]
    Takeover(#[source] TakeoverError),
    /// The dashboard's `token_file` is unreadable or too short (the
    /// config's).
    #[error(transparent)]
    DashboardToken(#[from] crate::admin_http::dashboard::TokenFileError),
    /// The XDP program could not be loaded or attached (the kernel's).
    #[error(transparent)]
    Xdp(#[from] XdpError),
    /// The config could not be written into the XDP maps (the kernel's).
    #[error("writing the config into the XDP maps")]
    XdpConfig(#[source] MapsError),
    /// The cluster link could not be set up from `[cluster]`.
    #[error(transparent)]
    Cluster(#[from] ClusterStartError),
    /// The admin socket could not be bound (its directory, or another
    /// gateway holding it).
    #[error(transparent)]
    AdminSocket(#[from] SocketError),
    /// The access log file could not be opened (the config's path or its
    /// permissions).
    #[error("opening the access log {target:?}")]
    AccessLog {
        /// `[log] access_log`.
        target: AccessLogTarget,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The request phases could not be built: a key file, schema or
    /// OpenAPI document the config names is unusable.
    #[error("building the request phases: {0}")]
    Phases(PhasesError),
    /// A proxy listener could not bind or load its certificates.
    #[error("starting the proxy listeners")]
    Proxy(#[source] ProxyError),
    /// The `[observability]` listener could not bind (the address is taken
    /// or not this machine's).
    #[error("binding the [observability] listener {addr}")]
    Observability {
        /// `[observability] listen`.
        addr: SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The bound `[observability]` socket could not be inspected or
    /// duplicated (the process's file descriptors).
    #[error(transparent)]
    ObservabilitySocket(std::io::Error),
}

/// Starts the gateway and runs until SIGINT or SIGTERM.
pub async fn run(config_path: Option<PathBuf>, config: Config) -> Result<(), RunError> {
    let origin = config_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "embedded default".into());
    tracing::info!(config = %origin, "starting gateway {}", env!("CARGO_PKG_VERSION"));
    // Signals are taken from the start: one that arrives while starting
    // (`systemctl kill` signals every process of the unit, a successor
    // still starting included) is handled once the loop runs, instead of
    // ending the process by its default action.
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(RunError::Signals)?;
    // Started by `gateway upgrade`: the running gateway's sockets are ours
    // to take (it keeps accepting on them until we are ready).
    let mut takeover = Takeover::from_env().map_err(RunError::Takeover)?;
    let started_unix = crate::clock::unix_now();
    // The dashboard token is read before anything starts: a missing or
    // short file is a start-up error naming the file.
    let dashboard_token = match config.observability.dashboard_token_file() {
        Some(p) => Some(admin_http::dashboard::read_token(&resolve(
            &base_dir(config_path.as_ref()),
            p,
        ))?),
        None => None,
    };

    let mut attached = None;
    let mut maps: Option<Arc<Mutex<XdpMaps>>> = None;
    let (mut interface, mut mode) = ("-".to_owned(), "off".to_owned());
    if config.xdp.enabled {
        let loader = Loader::new(&config.xdp.pin_dir);
        let (loaded, mut m) = loader.load()?;
        xdp::apply::apply(&mut m, &config.xdp).map_err(RunError::XdpConfig)?;
        let mut a = loaded.attach(&config.xdp.interface, config.xdp.mode, &config.xdp.pin_dir)?;
        a.detach_on_exit = config.xdp.detach_on_exit;
        tracing::info!(
            interface = %a.interface,
            mode = %a.mode,
            pin_dir = %loader.pin_path().display(),
            protected_ports = ?config.xdp.protected_ports,
            adopted = a.adopted,
            detach_on_exit = a.detach_on_exit,
            "{}",
            match (a.adopted, a.detach_on_exit) {
                (true, _) => {
                    "XDP fast path attached: adopted the pinned link and replaced its program atomically"
                }
                (false, false) => {
                    "XDP fast path attached (link pinned: the filter stays when the gateway exits)"
                }
                (false, true) => "XDP fast path attached (detached when the gateway exits)",
            }
        );
        interface = a.interface.clone();
        mode = a.mode.to_string();
        attached = Some(a);
        maps = Some(Arc::new(Mutex::new(m)));
    } else {
        tracing::warn!(
            "XDP fast path disabled by config ([xdp] enabled = false): no kernel-level blocking"
        );
    }

    let cluster = match &config.cluster {
        Some(c) => {
            let kernel = maps.clone().map(|maps| KernelBlocks { maps });
            let cluster = Cluster::start(c.clone(), &base_dir(config_path.as_ref()), kernel)?;
            tracing::info!(
                redis = %c.redacted_url(),
                node_id = %c.node_id,
                "cluster mode: shared limits and blocklists through Redis"
            );
            Some(cluster)
        }
        None => None,
    };

    // Quota counts outlive reloads; restored from and persisted to a file
    // by a background task (never on the request path), saved at shutdown.
    let quota_path = resolve(
        &base_dir(config_path.as_ref()),
        &config.rate_limit.quota_state,
    );
    let quotas = Arc::new(QuotaStore::open(
        quota_path,
        system_clock(),
        config.rate_limit.quota_max_consumers,
    ));
    let mut persister = Some(spawn_persister(&quotas));

    // A successor binds its admin socket beside the running gateway's and
    // moves it into place when it takes over.
    let admin = match &takeover {
        None => AdminSocket::bind(&config.admin.socket)?,
        Some(_) => AdminSocket::bind_beside(&config.admin.socket)?,
    };
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(4);
    let (upgrade_tx, mut upgrade_rx) = tokio::sync::mpsc::channel(1);
    // Readers (lists, stats, the dashboard) walk maps on a handle of their
    // own, never holding the lock escalation writes through.
    let readers = maps.as_ref().and_then(|_| {
        match Loader::new(&config.xdp.pin_dir).open_maps() {
            Ok(r) => Some(Arc::new(Mutex::new(r))),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "a second handle on the XDP maps could not be opened; reads share the writers' lock");
                None
            }
        }
    });
    let never: Vec<crate::net::Net> = config
        .xdp
        .allow
        .iter()
        .chain(config.trusted_proxies.iter())
        .copied()
        .collect();
    let sink = maps.clone().map(|m| {
        Box::new(XdpSink::new(m).with_cluster(cluster.clone()))
            as Box<dyn crate::escalate::BlockSink>
    });
    let escalator = Arc::new(Escalator::new(config.escalation.clone(), never, sink));
    if let Some(c) = &cluster {
        // Offences count across the nodes too (docs/cluster.md).
        escalator.attach_cluster(c.clone());
    }
    let state = Arc::new(AdminState {
        reload: reload_tx,
        upgrade: upgrade_tx,
        maps: maps.clone(),
        readers,
        interface,
        mode,
        cluster: cluster.clone(),
        quotas: Some(quotas.clone()),
        escalation: Some(escalator.clone()),
    });
    // Served once the proxy listens (below): a CLI that gets an answer
    // talks to a gateway that serves.
    let mut admin = Some(admin);
    let mut admin_task = None;
    let sweeper = maps
        .clone()
        .map(|m| tokio::spawn(xdp::sweeper::run(m, config.xdp.sweep_interval.get())));

    let state_file = config.escalation.state_path(&config.admin.socket);
    if let (None, Some(path)) = (&takeover, &state_file) {
        // A successor loads it once the running gateway saved it last.
        restore_escalations(&escalator, path);
    }
    let mut saver = spawn_saver(&escalator, state_file.as_deref());
    let expire = tokio::spawn({
        let e = escalator.clone();
        async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                e.expire();
            }
        }
    });
    let observe = Observe {
        metrics: Arc::new(Metrics::new()),
        access_log: Arc::new(
            AccessLog::open(&config.log, &credential_params(&config)).map_err(|source| {
                RunError::AccessLog {
                    target: config.log.access_log.clone(),
                    source,
                }
            })?,
        ),
    };
    let mut engines = phases::build_engines_with_quotas(
        &config,
        &base_dir(config_path.as_ref()),
        Some(escalator.clone()),
        cluster.clone(),
        quotas.clone(),
    )
    .map_err(RunError::Phases)?;
    engines.observe = observe.clone();
    let proxy = match takeover.as_mut() {
        None => Proxy::start(&config, engines).await,
        Some(t) => {
            let demo = t.demo_socket(config.demo.address);
            Proxy::bind(&config, engines, t.proxy_sockets(), demo).await
        }
    }
    .map_err(RunError::Proxy)?;
    // Shared with the blocking thread a reload runs on (reload_off_thread).
    let proxy = Arc::new(proxy);
    if config_path.is_none() {
        print_try_it();
    }

    let metrics = &observe.metrics;
    metrics.register_collector(Box::new(ProxyCollector {
        state: proxy.watch(),
    }));
    metrics.register_collector(Box::new(EscalationCollector {
        escalator: escalator.clone(),
    }));
    if let Some(m) = &maps {
        metrics.register_collector(Box::new(XdpCollector { maps: m.clone() }));
    }
    if let Some(c) = &cluster {
        metrics.register_collector(Box::new(ClusterCollector { cluster: c.clone() }));
    }
    metrics.register_collector(Box::new(QuotaCollector {
        store: quotas.clone(),
    }));
    let mut observability_fd: Option<(SocketAddr, OwnedFd)> = None;
    let observability = if config.observability.enabled {
        let addr = config.observability.listen;
        let listener = match takeover.as_mut().and_then(|t| t.observability_socket(addr)) {
            Some(l) => l
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l)),
            None => admin_http::bind(addr).await,
        }
        .map_err(|source| RunError::Observability { addr, source })?;
        observability_fd = Some((
            addr,
            listener
                .as_fd()
                .try_clone_to_owned()
                .map_err(RunError::ObservabilitySocket)?,
        ));
        let dash = &config.observability.dashboard;
        tracing::info!(
            address = %listener.local_addr().map_err(RunError::ObservabilitySocket)?,
            dashboard = dash.enabled,
            dashboard_write = dash.enabled && dash.write,
            "admin HTTP listening (/metrics, /healthz, /readyz{})",
            if dash.enabled { ", /dashboard/" } else { "" }
        );
        let readiness = Arc::new(Readiness {
            xdp: if attached.is_some() {
                "attached"
            } else {
                "off"
            },
            state: proxy.watch(),
            cluster: cluster.clone(),
        });
        let dashboard = dash.enabled.then(|| {
            Arc::new(admin_http::dashboard::Dashboard::new(
                admin_http::dashboard::state::Sources {
                    admin: state.clone(),
                    escalator: escalator.clone(),
                    proxy: proxy.watch(),
                    metrics: metrics.clone(),
                    xdp: if attached.is_some() {
                        "attached"
                    } else {
                        "off"
                    },
                    started_unix,
                },
                dash,
                config.observability.listen,
                dashboard_token.clone(),
            ))
        });
        Some(admin_http::serve(
            listener,
            metrics.clone(),
            readiness,
            dashboard,
        ))
    } else {
        None
    };

    match takeover.take() {
        None => {
            tracing::info!(socket = %config.admin.socket.display(), "admin socket ready (root only)");
            admin_task = admin.take().map(|a| tokio::spawn(a.serve(state.clone())));
            notify_systemd(&[sd_notify::NotifyState::Ready]);
        }
        Some(t) => {
            // Built and bound: the running gateway stops accepting (what
            // arrives waits in the shared queues) and saves its state.
            crate::runtime::block_in_place(|| t.ready()).map_err(RunError::Takeover)?;
            // The previous process has stopped writing the XDP maps: count
            // what they hold now (it may have swept or added ranges while
            // this one started) and write the lookup settings from that.
            if let Some(m) = &maps
                && let Err(e) = m.lock().unwrap_or_else(|p| p.into_inner()).recount()
            {
                tracing::error!(error = %e, "upgrade: recounting the XDP maps failed; CIDR blocks added by the previous process during the upgrade may not drop until the next change");
            }
            if let Some(path) = &state_file {
                restore_escalations(&escalator, path);
            }
            quotas.reload_file();
            if let Some(mut a) = admin.take() {
                match a.move_into_place(&config.admin.socket) {
                    Ok(()) => {
                        tracing::info!(socket = %config.admin.socket.display(), "admin socket ready (root only)")
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "the CLI cannot reach this gateway")
                    }
                }
                admin_task = Some(tokio::spawn(a.serve(state.clone())));
            }
            proxy.serve();
            notify_systemd(&[
                sd_notify::NotifyState::MainPid(std::process::id()),
                sd_notify::NotifyState::Ready,
            ]);
            tracing::info!(
                from_pid = t.from_pid,
                "upgrade: serving; the previous process finishes its requests in flight and exits"
            );
            t.serving();
        }
    }

    let mut current = config;
    let mut handed_over = false;
    loop {
        tokio::select! {
            Some(reply) = upgrade_rx.recv() => {
                upgrade::set_in_progress(true);
                let r = hand_over(&proxy, maps.as_ref(), observability_fd.as_ref(), &mut saver, &mut persister, &escalator, state_file.as_deref(), &quotas, &current.admin.socket).await;
                upgrade::set_in_progress(false);
                match r {
                    Ok(u) => {
                        tracing::info!(new_pid = u.new_pid, program = %u.program, version = %u.version, "upgrade: the new process serves; finishing the requests in flight, then exiting");
                        let _ = reply.send(Ok(u));
                        handed_over = true;
                        // The successor owns the XDP maps (hand_over retired
                        // this process's handle: escalation, cluster and
                        // admin writes are refused); the sweeper stops.
                        if let Some(s) = &sweeper {
                            s.abort();
                        }
                        // /metrics and the dashboard are the new process's.
                        if let Some(t) = &observability {
                            t.abort();
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %chain(&e), "upgrade failed; this gateway goes on serving");
                        let _ = reply.send(Err(e));
                    }
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                let r = reload_off_thread(&config_path, &current, &maps, &proxy, &escalator, &cluster, &observe, &quotas).await;
                current = reloaded(current, r).0;
            }
            Some(reply) = reload_rx.recv() => {
                let r = reload_off_thread(&config_path, &current, &maps, &proxy, &escalator, &cluster, &observe, &quotas).await;
                let (c, outcome) = reloaded(current, r);
                current = c;
                let _ = reply.send(outcome);
            }
            _ = sigusr1.recv() => match observe.access_log.reopen() {
                Ok(()) => tracing::info!("SIGUSR1: access log reopened"),
                Err(e) => tracing::error!(error = %e, "SIGUSR1: reopening the access log failed; still writing to the old file"),
            },
        }
    }
    tracing::info!(
        grace_secs = current.limits.shutdown_grace.as_secs(),
        "shutting down: no new connections, finishing in-flight requests"
    );
    if !handed_over {
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
    }
    // Every reload has finished (each is awaited in its arm), so this is
    // the last handle.
    let proxy = Arc::into_inner(proxy).expect("no reload holds the proxy after the loop");
    proxy.shutdown(current.limits.shutdown_grace.get()).await;
    match attached.as_mut() {
        Some(a) if handed_over => {
            // The successor adopted the pinned link: never detach it.
            a.detach_on_exit = false;
            tracing::info!("shutting down: the XDP filter is the new process's now")
        }
        Some(a) if a.detach_on_exit => {
            tracing::info!("shutting down: detaching XDP (pinned maps keep blocks and limits)")
        }
        Some(_) => tracing::info!(
            "shutting down: the XDP filter stays attached (pinned link) and keeps enforcing the pinned maps"
        ),
        None => tracing::info!("shutting down"),
    }
    if let Some(t) = &admin_task {
        t.abort();
    }
    expire.abort();
    if let (Some(t), Some(path)) = (saver, &state_file) {
        t.abort();
        let _ = t.await;
        match escalate::persist::save(path, &escalator.snapshot()) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "shutting down: escalation state saved")
            }
            Err(e) => {
                tracing::warn!(error = %e, "shutting down: saving the escalation state failed")
            }
        }
    }
    if let Some(p) = persister {
        p.abort();
        let _ = p.await;
    }
    // After a handover the successor owns the state files: the counts of
    // the requests that finished here since are not written over them.
    if !handed_over && let Err(e) = quotas.save_if_changed() {
        tracing::error!(error = %e, "saving the quota counts at shutdown failed");
    }
    if let Some(t) = observability {
        t.abort();
    }
    if let Some(s) = sweeper {
        s.abort();
    }
    // Let the aborted admin task drop its socket before we return.
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    drop(admin);
    drop(attached);
    observe.access_log.close();
    Ok(())
}

/// Saves the escalation state in the background ([`escalate::persist`]).
fn spawn_saver(escalator: &Arc<Escalator>, path: Option<&Path>) -> Option<JoinHandle<()>> {
    path.map(|path| {
        tokio::spawn(escalate::persist::keep_saved(
            escalator.clone(),
            path.to_owned(),
            escalate::persist::SAVE_EVERY,
        ))
    })
}

/// Saves the quota counts in the background.
fn spawn_persister(quotas: &Arc<QuotaStore>) -> JoinHandle<()> {
    tokio::spawn(
        quotas
            .clone()
            .run_persister(std::time::Duration::from_secs(1)),
    )
}

/// Tells systemd (`Type=notify`, `NotifyAccess=all`) the service's state;
/// does nothing when not started by systemd (no `NOTIFY_SOCKET`).
fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// `gateway upgrade`, the running side: starts the successor and offers it
/// every listening socket; once it is built, stops accepting, saves the
/// escalation and quota state (the successor loads them) and lets it
/// take over. On any failure the successor is stopped and this gateway
/// goes on as before (accepting again if it had stopped).
#[allow(
    clippy::too_many_arguments,
    reason = "the long-lived pieces of `run` a handover stops, saves or restarts"
)]
async fn hand_over(
    proxy: &Proxy,
    maps: Option<&Arc<Mutex<XdpMaps>>>,
    observability: Option<&(SocketAddr, OwnedFd)>,
    saver: &mut Option<JoinHandle<()>>,
    persister: &mut Option<JoinHandle<()>>,
    escalator: &Arc<Escalator>,
    state_file: Option<&Path>,
    quotas: &Arc<QuotaStore>,
    admin_socket: &Path,
) -> Result<Upgraded, UpgradeError> {
    let mut sockets = Vec::new();
    for (name, configured, fd) in proxy.listening_sockets().map_err(UpgradeError::Sockets)? {
        let role = Role::Proxy;
        sockets.push((
            Offered {
                role,
                name,
                configured,
            },
            fd,
        ));
    }
    if let Some((configured, fd)) = observability {
        let (role, name) = (Role::Observability, String::new());
        sockets.push((
            Offered {
                role,
                name,
                configured: *configured,
            },
            fd.try_clone().map_err(UpgradeError::Sockets)?,
        ));
    }
    if let Some((configured, fd)) = proxy.demo_socket() {
        let (role, name) = (Role::Demo, String::new());
        sockets.push((
            Offered {
                role,
                name,
                configured,
            },
            fd.try_clone_to_owned().map_err(UpgradeError::Sockets)?,
        ));
    }
    let count = sockets.len();
    let admin_socket = admin_socket.to_owned();
    let mut successor = tokio::task::spawn_blocking(move || {
        let mut s = upgrade::handover::spawn(sockets, &admin_socket)?;
        tracing::info!(pid = s.pid, program = %s.program, sockets = count, "upgrade: new process started; waiting until it is ready");
        s.wait_ready(upgrade::READY_TIMEOUT)?;
        Ok::<_, UpgradeError>(s)
    })
    .await??;
    proxy.stop_accepting();
    // From here the successor owns the XDP maps: it recounts what they
    // hold once told to go, so nothing this process would write after that
    // may be missing from its count (every write here is refused).
    let retire = |on: bool| {
        if let Some(m) = maps {
            let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
            if on { m.retire() } else { m.resume_writing() }
        }
    };
    retire(true);
    if let Some(t) = saver.take() {
        t.abort();
        let _ = t.await;
    }
    if let Some(p) = persister.take() {
        p.abort();
        let _ = p.await;
    }
    if let Some(path) = state_file
        && let Err(e) = escalate::persist::save(path, &escalator.snapshot())
    {
        tracing::warn!(error = %e, "upgrade: saving the escalation state failed; the new process starts without the latest");
    }
    if let Err(e) = quotas.save() {
        tracing::warn!(error = %e, "upgrade: saving the quota counts failed; the new process starts without the latest");
    }
    let (successor, taken) = tokio::task::spawn_blocking(move || {
        let r = successor.go(upgrade::SERVING_TIMEOUT);
        (successor, r)
    })
    .await?;
    match taken {
        Ok((new_pid, version)) => Ok(Upgraded {
            old_pid: std::process::id(),
            new_pid,
            program: successor.program,
            version,
            sockets: count,
        }),
        Err(e) => {
            retire(false);
            proxy.resume_accepting();
            *saver = spawn_saver(escalator, state_file);
            *persister = Some(spawn_persister(quotas));
            Err(e.into())
        }
    }
}

/// Loads the escalation state a previous run saved (a missing file is a
/// first start; an unusable one is logged and replaced at the next save).
fn restore_escalations(escalator: &Escalator, path: &std::path::Path) {
    match escalate::persist::load(path) {
        Ok(Some(snapshot)) => {
            let r = escalator.restore(snapshot);
            tracing::info!(
                path = %path.display(),
                sources = r.sources,
                blocked = r.blocked,
                throttles = r.throttles,
                "escalation state restored (offence counts, TTL-ladder positions, L7 blocks)"
            );
        }
        Ok(None) => {
            tracing::info!(path = %path.display(), "no saved escalation state; starting afresh")
        }
        Err(e) => tracing::warn!(error = %e, "saved escalation state not used; starting afresh"),
    }
}

/// Runs [`try_reload`] on tokio's blocking pool and waits for it. Loading
/// the file, compiling schemas, reading certificates and binding new
/// listeners take milliseconds; with one worker (`worker_threads = 1`, the
/// single-threaded scheduler) doing them on the serving thread would stall
/// every connection for that long. The swap itself is an atomic store, so
/// requests never wait for a reload. A panic in the reload is re-raised
/// here, as it would have been on this thread.
#[allow(
    clippy::too_many_arguments,
    reason = "the handles try_reload needs, cloned for the blocking thread"
)]
async fn reload_off_thread(
    config_path: &Option<PathBuf>,
    current: &Config,
    maps: &Option<Arc<Mutex<XdpMaps>>>,
    proxy: &Arc<Proxy>,
    escalator: &Arc<Escalator>,
    cluster: &Option<Arc<Cluster>>,
    observe: &Observe,
    quotas: &Arc<QuotaStore>,
) -> Result<Config, ReloadError> {
    let (config_path, current, maps, proxy, escalator, cluster, observe, quotas) = (
        config_path.clone(),
        current.clone(),
        maps.clone(),
        proxy.clone(),
        escalator.clone(),
        cluster.clone(),
        observe.clone(),
        quotas.clone(),
    );
    tokio::task::spawn_blocking(move || {
        try_reload(
            config_path.as_deref(),
            &base_dir(config_path.as_ref()),
            &current,
            maps.as_ref(),
            &proxy,
            &escalator,
            cluster.as_ref(),
            &observe,
            &quotas,
        )
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Where relative paths in the config file are resolved: its directory
/// (the working directory for the embedded default).
fn base_dir(config_path: Option<&PathBuf>) -> PathBuf {
    config_path
        .and_then(|p| p.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `path` as given when absolute, else under `base`.
fn resolve(base: &std::path::Path, path: &std::path::Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// What to try against the embedded default config, printed at start.
fn print_try_it() {
    eprintln!(
        "\n  gateway is running on its embedded default config. Try:\n\
         \n    curl -i http://127.0.0.1:8080/api/v1/hello                        # 401: the API needs a key\
         \n    curl -H 'X-Api-Key: demo-key' http://127.0.0.1:8080/api/v1/hello  # 200 from the demo upstream\
         \n    curl -k -H 'X-Api-Key: demo-key' https://127.0.0.1:8443/api/v2/hello\
         \n    curl http://127.0.0.1:8080/public/hello                           # no key needed\
         \n    gateway block add 127.0.0.2 --ttl 1m && curl --interface 127.0.0.2 --max-time 2 http://127.0.0.1:8080/public/x\
         \n    gateway stats\n"
    );
}

/// Query parameters that carry API keys in this config: never logged.
fn credential_params(config: &Config) -> Vec<String> {
    config
        .auth
        .api_keys
        .values()
        .filter_map(|k| k.query.clone())
        .collect()
}
