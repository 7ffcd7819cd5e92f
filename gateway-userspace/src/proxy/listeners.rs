//! The proxy's running listeners and how a reload changes them.
//!
//! A listener's identity is its name (`display_name`: the `name`, or the
//! address when unnamed). A reload diffs the new `[[listeners]]` against
//! the running ones and first binds every socket it needs (all of them: a
//! failure fails the reload with the listener's name, address and the OS
//! error, and nothing changes); only then are the new settings swapped in
//! (with the proxy state, atomically), the new accept loops started and the
//! listeners that left the config retired: they stop accepting at once and
//! their connections finish within `shutdown_grace` (HTTP/1 closes after
//! the current response, HTTP/2 sends GOAWAY), then the rest are closed.
//!
//! A running socket is kept (no re-bind, no refused connection) when the
//! new config has a listener with the same name and address, or, for a
//! fixed port, any listener with the same address (a rename): it takes that
//! listener's TLS, PROXY protocol and redirect settings for its new
//! connections; connections already open finish with the settings they
//! were accepted with. The `listen(2)` backlog of a kept socket cannot
//! change (a changed `backlog` is logged and waits for a restart).
//!
//! At start after `gateway upgrade`, the sockets the previous process
//! handed over ([`Inherited`]) are matched the same way before anything is
//! bound, so a listener that stays keeps its socket (and the connections
//! waiting in its accept queue) across the upgrade.

#![forbid(unsafe_code)]

use std::{
    collections::HashSet,
    net::SocketAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use super::config::Listener;

/// What a listener's accept loop and connections are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Accept and serve.
    Serving,
    /// Stop accepting; finish the requests in flight, then close
    /// (HTTP/1 `Connection: close` after the current response, HTTP/2
    /// GOAWAY); an HTTP/1 connection idle for `DRAIN_IDLE` is closed.
    Draining,
    /// Another process accepts now (`gateway upgrade`): as `Draining`, but
    /// an idle HTTP/1 keep-alive connection stays open until its next
    /// request (answered with `Connection: close`) or the grace period
    /// ends, so that a client idle for a while does not meet a connection
    /// closed under its next request (HAProxy's `idle-close-on-response`).
    HandedOver,
    /// The grace period is over: close now.
    Closed,
}

/// One listener's settings as the accept loop uses them.
#[derive(Debug)]
pub struct ListenerCfg {
    /// The listener's section of the config.
    pub listener: Listener,
    /// `display_name`, shared by every connection's `ConnInfo`.
    pub name: Arc<str>,
}

impl ListenerCfg {
    /// The accept loop's copy of `listener`, named by its `display_name`.
    pub fn new(listener: &Listener) -> Arc<Self> {
        Arc::new(Self {
            name: listener.display_name().into(),
            listener: listener.clone(),
        })
    }
}

/// The listener settings of one proxy generation, by slot id: swapped with
/// the rest of the state, so a connection's TLS acceptor and its listener's
/// `tls` flag always come from the same config.
#[derive(Debug, Default)]
pub struct Settings(Vec<(u64, Arc<ListenerCfg>)>);

impl Settings {
    /// The settings of slot `id` in this generation (`None`: retired).
    pub fn get(&self, id: u64) -> Option<&Arc<ListenerCfg>> {
        self.0.iter().find(|(i, _)| *i == id).map(|(_, c)| c)
    }
}

/// A running listener: one bound socket and its accept loop.
pub struct Slot {
    /// Stable across reloads: the key of [`Settings`] and of [`Table::slot_mut`].
    pub id: u64,
    /// The listener's `display_name`; follows a rename on reload.
    pub name: String,
    /// The address as configured (port 0 stays 0).
    pub configured: SocketAddr,
    /// The address actually bound.
    pub local: SocketAddr,
    /// The `listen(2)` backlog the socket got.
    pub backlog: NonZeroU32,
    /// The socket, shared with its accept loop (kept here to hand it to a
    /// successor, or to accept again after a failed handover).
    pub socket: Option<Arc<TcpListener>>,
    /// Moves the accept loop and its connections through serving, draining and closed.
    pub stop: watch::Sender<Lifecycle>,
    /// Connections accepted here and still open.
    pub open: Arc<AtomicUsize>,
    /// The accept loop, once started.
    pub task: Option<JoinHandle<()>>,
}

/// The running listeners.
#[derive(Default)]
pub struct Table {
    /// The running slots, in config order after each reload.
    pub slots: Vec<Slot>,
    next_id: u64,
}

/// Where one listener of a new config will run.
pub enum Target {
    /// On a running slot's socket.
    Keep(u64),
    /// On a socket bound for it by [`plan`].
    Fresh(TcpListener, SocketAddr),
}

/// Why a listener could not be bound.
#[derive(Debug)]
pub struct BindError {
    /// The listener's `display_name`.
    pub listener: String,
    /// The address it was to listen on.
    pub addr: SocketAddr,
    /// Why `bind(2)`/`listen(2)` (or taking an inherited socket) failed.
    pub source: std::io::Error,
}

/// Listening sockets handed over by the previous process (`gateway
/// upgrade`), each with the name and configured address of the listener it
/// served there.
#[derive(Default)]
pub struct Inherited(Vec<(String, SocketAddr, std::net::TcpListener)>);

impl Inherited {
    /// The sockets received from the predecessor: (listener name, configured address, socket).
    pub fn new(sockets: Vec<(String, SocketAddr, std::net::TcpListener)>) -> Self {
        Self(sockets)
    }

    /// The socket for `l`: the one of the same name and address, else (for
    /// a fixed port) one at the same address, as [`plan`] keeps running
    /// sockets.
    fn take(&mut self, l: &Listener) -> Option<std::io::Result<TcpListener>> {
        let name = l.display_name();
        let i = self
            .0
            .iter()
            .position(|(n, a, _)| *n == name && *a == l.address)
            .or_else(|| {
                (l.address.port() != 0)
                    .then(|| self.0.iter().position(|(_, a, _)| *a == l.address))
                    .flatten()
            })?;
        let (_, _, socket) = self.0.swap_remove(i);
        // listen(2) again on a listening socket sets its backlog: the
        // configured one applies across upgrades too.
        let backlog = i32::try_from(l.backlog.get()).unwrap_or(i32::MAX);
        Some(
            rustix::net::listen(&socket, backlog)
                .map_err(std::io::Error::from)
                .and_then(|()| socket.set_nonblocking(true))
                .and_then(|()| TcpListener::from_std(socket)),
        )
    }

    /// Sockets no listener of the new config took (closed when dropped;
    /// the previous process finishes what it accepted on them).
    pub fn unused(&self) -> impl Iterator<Item = (&str, SocketAddr)> {
        self.0.iter().map(|(n, a, _)| (n.as_str(), *a))
    }
}

/// Decides, for each listener of `wanted` in order, which running socket
/// it keeps, which inherited one it takes, or binds its new one. Binds
/// every new socket before returning; on the first failure the sockets
/// bound so far are closed and nothing running is touched.
pub fn plan(
    table: &Table,
    wanted: &[Listener],
    inherited: &mut Inherited,
) -> Result<Vec<(Arc<ListenerCfg>, Target)>, BindError> {
    let mut claimed = HashSet::new();
    let mut targets: Vec<Option<Target>> = wanted.iter().map(|_| None).collect();
    // The same name at the same address keeps its socket.
    for (i, l) in wanted.iter().enumerate() {
        let name = l.display_name();
        if let Some(s) = table
            .slots
            .iter()
            .find(|s| s.name == name && s.configured == l.address)
        {
            claimed.insert(s.id);
            targets[i] = Some(Target::Keep(s.id));
        }
    }
    // A fixed address another (renamed, or moved) listener held.
    for (i, l) in wanted.iter().enumerate() {
        if targets[i].is_some() || l.address.port() == 0 {
            continue;
        }
        if let Some(s) = table
            .slots
            .iter()
            .find(|s| !claimed.contains(&s.id) && s.configured == l.address)
        {
            claimed.insert(s.id);
            targets[i] = Some(Target::Keep(s.id));
        }
    }
    let mut out = Vec::with_capacity(wanted.len());
    for (l, target) in wanted.iter().zip(targets) {
        let target = match target {
            Some(t) => t,
            None => {
                let err = |source| BindError {
                    listener: l.display_name(),
                    addr: l.address,
                    source,
                };
                let socket = match inherited.take(l) {
                    Some(socket) => socket.map_err(err)?,
                    None => l.bind().map_err(err)?,
                };
                let local = socket.local_addr().map_err(err)?;
                Target::Fresh(socket, local)
            }
        };
        out.push((ListenerCfg::new(l), target));
    }
    Ok(out)
}

/// A planned change applied to the table: the settings of the new
/// generation, the slots to start, and the slots that left the config.
pub struct Applied {
    /// The listener settings of the new generation.
    pub settings: Settings,
    /// New slots (already in the table) with their socket, to be started.
    pub start: Vec<(u64, TcpListener, Arc<ListenerCfg>)>,
    /// Slots no listener of the new config kept, taken out of the table; the caller hands them to
    /// [`retire`].
    pub retired: Vec<Slot>,
}

impl Table {
    /// Records `plan` in the table (slot names, new slots) and takes out the
    /// slots no listener kept. Starts nothing.
    pub fn apply(&mut self, plan: Vec<(Arc<ListenerCfg>, Target)>) -> Applied {
        let mut settings = Vec::with_capacity(plan.len());
        let mut start = Vec::new();
        let mut kept = HashSet::new();
        let mut fresh = Vec::new();
        for (cfg, target) in plan {
            let l = &cfg.listener;
            let id = match target {
                Target::Keep(id) => {
                    let slot = self
                        .slots
                        .iter_mut()
                        .find(|s| s.id == id)
                        .expect("planned against this table");
                    if slot.name != *cfg.name {
                        tracing::info!(listener = %cfg.name, was = %slot.name, address = %slot.local, "listener renamed; socket kept");
                        slot.name = cfg.name.to_string();
                    }
                    if slot.backlog != l.backlog {
                        tracing::warn!(
                            listener = %cfg.name,
                            backlog = slot.backlog,
                            configured = l.backlog,
                            "a running socket's backlog cannot change; the new value takes effect after a restart"
                        );
                    }
                    id
                }
                Target::Fresh(socket, local) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    tracing::info!(
                        listener = %cfg.name,
                        address = %local,
                        tls = l.tls,
                        proxy_protocol = l.proxy_protocol,
                        backlog = l.backlog,
                        redirect_https_port = ?l.redirect_https_port,
                        "proxy listening"
                    );
                    fresh.push(Slot {
                        id,
                        name: cfg.name.to_string(),
                        configured: l.address,
                        local,
                        backlog: l.backlog,
                        socket: None,
                        stop: watch::channel(Lifecycle::Serving).0,
                        open: Arc::default(),
                        task: None,
                    });
                    start.push((id, socket, cfg.clone()));
                    id
                }
            };
            kept.insert(id);
            settings.push((id, cfg));
        }
        let (keep, retired): (Vec<Slot>, Vec<Slot>) = std::mem::take(&mut self.slots)
            .into_iter()
            .partition(|s| kept.contains(&s.id));
        self.slots = keep;
        self.slots.extend(fresh);
        Applied {
            settings: Settings(settings),
            start,
            retired,
        }
    }

    /// The running slot with this id, if it is still in the table.
    pub fn slot_mut(&mut self, id: u64) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.id == id)
    }
}

/// Retires a listener that left the config: stops its accept loop at once,
/// lets its connections finish for up to `grace`, then closes the rest.
pub fn retire(mut slot: Slot, grace: Duration) {
    tracing::info!(listener = %slot.name, address = %slot.local, open = slot.open.load(Ordering::Relaxed), "listener removed by reload; no longer accepting, finishing its connections");
    let _ = slot.stop.send(Lifecycle::Draining);
    tokio::spawn(async move {
        let wait = async {
            while slot.open.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(listener = %slot.name, open = slot.open.load(Ordering::Relaxed), "removed listener's grace period over; closing its remaining connections");
        }
        let _ = slot.stop.send(Lifecycle::Closed);
        if let Some(t) = slot.task.take() {
            // Already returned after `Draining`; this only reaps it.
            let _ = t.await;
        }
    });
}

/// Counts one open connection of a slot; released on drop.
pub struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    /// Counts one more open connection on `open` until the guard drops.
    pub fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
