//! `gateway upgrade`: replace the running process by a new one (a new
//! binary, or the same one) without refusing a connection or dropping a
//! request, and without a moment without the kernel filter.
//!
//! The running gateway starts its successor itself, the way NGINX's binary
//! upgrade (`USR2`) and Cloudflare's `tableflip` do: the successor is its
//! child, so it runs in the same service cgroup, with the same command
//! line, environment and working directory. The listening sockets go over
//! a Unix socket pair as `SCM_RIGHTS` (HAProxy's `-x` socket transfer,
//! Envoy's hot restart): the same kernel sockets, so connections waiting in
//! an accept queue are never refused, and nothing depends on
//! `SO_REUSEPORT` (which, in Linux, drops what waits in the queue of a
//! socket that closes).
//!
//! The steps (`handover` is the running side, `successor` the new one):
//! 1. `gateway upgrade` asks the running gateway over the admin socket.
//! 2. It starts `<its binary> <its arguments>` with `GATEWAY_UPGRADE_FD=0`
//!    and one end of a `SOCK_SEQPACKET` pair as standard input, and sends
//!    the proxy listeners, the `[observability]` listener and the demo
//!    upstream's socket ([`Message::Offer`]).
//! 3. The successor loads its config, adopts the pinned XDP link (the
//!    program is replaced atomically: packets are filtered throughout),
//!    builds everything on the sockets it got, and says [`Message::Ready`]
//!    without accepting yet. Any failure is sent back
//!    ([`Message::Failed`]) and the running gateway goes on as before.
//! 4. The running gateway stops accepting (the sockets stay open: what
//!    arrives waits in their queues), saves the escalation and quota state,
//!    and says [`Message::Go`].
//! 5. The successor loads that state, moves its admin socket into place,
//!    accepts, tells systemd it is the main process (`MAINPID`, `READY=1`)
//!    and says [`Message::Serving`].
//! 6. The old process answers the CLI, finishes its requests in flight
//!    within `[limits] shutdown_grace` (HTTP/1 `Connection: close` after the
//!    current response, HTTP/2 GOAWAY) and exits, leaving the XDP filter,
//!    the admin socket and the state files to the successor.

#![forbid(unsafe_code)]

pub mod channel;
pub mod handover;
pub mod successor;

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, sync::OnceLock, time::Duration};

use serde::{Deserialize, Serialize};

/// The environment variable that marks a successor: the number of the
/// descriptor holding the handover channel (always `0`, standard input).
pub const ENV: &str = "GATEWAY_UPGRADE_FD";

/// How long the successor may take from its start to [`Message::Ready`]
/// (config, XDP load, certificates, one DNS round): past it, it is
/// stopped and the running gateway goes on.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the successor may take from [`Message::Go`] to
/// [`Message::Serving`] (loading two state files): no process accepts
/// meanwhile (connections wait in the queues), so it is short.
pub const SERVING_TIMEOUT: Duration = Duration::from_secs(5);

static IN_PROGRESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks an upgrade as running (or over): reloads and further upgrades are
/// refused meanwhile, instead of waiting behind it.
pub fn set_in_progress(on: bool) {
    IN_PROGRESS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this process is handing over to a successor right now.
pub fn in_progress() -> bool {
    IN_PROGRESS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The messages of the handover channel, in the order they are sent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "snake_case")]
pub enum Message {
    /// Running → successor: the sockets, attached in this order.
    Offer {
        /// The running (old) process's id.
        from_pid: u32,
        /// What each passed file descriptor served, in the order of the `SCM_RIGHTS` descriptors.
        sockets: Vec<Offered>,
    },
    /// Successor → running: built and bound, not accepting.
    Ready,
    /// Successor → running: it cannot take over, and exits.
    Failed {
        /// Why, as the successor's log says it (a config error with file:line:column, a bind
        /// error...).
        error: String,
    },
    /// Running → successor: stopped accepting, state saved; take over.
    Go,
    /// Successor → running: accepting.
    Serving {
        /// The successor's process id.
        pid: u32,
        /// The successor's version (`CARGO_PKG_VERSION` and eBPF build id).
        version: String,
    },
}

/// One socket of an [`Message::Offer`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Offered {
    /// What the socket served.
    pub role: Role,
    /// The listener's name (`display_name`); empty for the other roles.
    pub name: String,
    /// The address as configured (port 0 stays 0).
    pub configured: SocketAddr,
}

/// What a handed-over socket served.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A `[[listeners]]` entry.
    Proxy,
    /// The `[observability]` listener (`/metrics`, `/healthz`, `/readyz`).
    Observability,
    /// The `[demo]` upstream.
    Demo,
}

/// How this process was started, kept at start so that an upgrade runs
/// the binary now at that path, with the same arguments.
#[derive(Clone, Debug)]
pub struct Command {
    /// The absolute path of the binary to start (see [`remember_command`]).
    pub program: PathBuf,
    /// The arguments after `argv[0]`, as this process got them.
    pub args: Vec<OsString>,
}

static COMMAND: OnceLock<Command> = OnceLock::new();

/// Records how this process was started. The program is `argv[0]` made
/// absolute when it names a path (as NGINX does, so a symlink that now
/// points at a new build is followed), else the executable found through
/// `PATH` (`/proc/self/exe`). Call once, before the working directory
/// could change.
pub fn remember_command() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let program = if std::path::Path::new(&argv0).components().count() > 1 {
        std::path::absolute(&argv0).unwrap_or_else(|_| PathBuf::from(&argv0))
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&argv0))
    };
    let _ = COMMAND.set(Command {
        program,
        args: args.collect(),
    });
}

/// What [`remember_command`] recorded.
pub fn command() -> Option<&'static Command> {
    COMMAND.get()
}

/// What `gateway upgrade` reports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Upgraded {
    /// The process that handed over (and exits once its requests are done).
    pub old_pid: u32,
    /// The successor now serving.
    pub new_pid: u32,
    /// The binary the successor was started from.
    pub program: String,
    /// The successor's version (`CARGO_PKG_VERSION` and eBPF build id).
    pub version: String,
    /// Sockets handed over (proxy listeners, observability, demo).
    pub sockets: usize,
}

/// Why `gateway upgrade` failed on the running side; this gateway goes on
/// serving in every case. Each variant shows its cause's text unchanged.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// A listening socket could not be duplicated to offer it (this
    /// process's: out of file descriptors, most often).
    #[error(transparent)]
    Sockets(std::io::Error),
    /// The successor could not be started, did not get ready, or did not
    /// take over ([`handover::HandoverError`]).
    #[error(transparent)]
    Successor(#[from] handover::HandoverError),
    /// The task that waited for the successor panicked or was cancelled
    /// (this gateway's bug or its shutdown).
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}
