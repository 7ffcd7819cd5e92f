//! The new process's side of an upgrade: takes the offered sockets, says
//! when it is ready, waits for the go, reports that it serves.

#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    os::fd::{AsFd as _, OwnedFd},
    time::Duration,
};

use super::{
    ENV, Message, Offered, Role,
    channel::{Channel, ChannelError},
};
use crate::proxy::listeners::Inherited;

/// How long the running gateway may take to stop accepting and save its
/// state after [`Message::Ready`].
const GO_TIMEOUT: Duration = Duration::from_secs(30);

/// Why this process cannot take over from the running gateway (which then
/// goes on serving).
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// The handover variable holds something `gateway upgrade` never sets
    /// (whoever started this process set it).
    #[error("{ENV}={0:?}: only 0 (standard input) is used by gateway upgrade")]
    BadVariable(std::ffi::OsString),
    /// Standard input is not the handover socket, or cannot be used (`what`
    /// says which).
    #[error("{what}")]
    Stdin {
        /// The step that failed.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// No valid offer arrived.
    #[error("reading the sockets offered by the running gateway")]
    Offer(#[source] ChannelError),
    /// The running gateway sent something out of order (its side).
    #[error("{0}")]
    Protocol(String),
    /// An offered socket is not a listening TCP socket (`what` names it).
    #[error("{what}")]
    Socket {
        /// The offered socket.
        what: String,
        /// What it is instead.
        #[source]
        source: NotAListener,
    },
    /// The channel to the running gateway failed after the offer.
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// Why an offered descriptor is not a listening TCP socket.
#[derive(Debug, thiserror::Error)]
pub enum NotAListener {
    /// Its type could not be read.
    #[error(transparent)]
    Sys(#[from] rustix::io::Errno),
    /// Not a stream socket, or not listening.
    #[error("not a listening stream socket")]
    NotListening,
    /// A listening stream socket of another family (a Unix socket).
    #[error("not a TCP socket")]
    NotTcp(#[source] std::io::Error),
}

type Result<T, E = TakeoverError> = std::result::Result<T, E>;

/// A takeover in progress: this process was started by `gateway upgrade`.
pub struct Takeover {
    channel: Channel,
    /// The process handing over (from its `Offer`).
    pub from_pid: u32,
    proxy: Vec<(String, SocketAddr, std::net::TcpListener)>,
    observability: Option<(SocketAddr, std::net::TcpListener)>,
    demo: Option<(SocketAddr, std::net::TcpListener)>,
}

/// The handover channel on standard input, when [`ENV`] says there is one.
fn inherited_channel() -> Result<Option<Channel>> {
    let Some(v) = std::env::var_os(ENV) else {
        return Ok(None);
    };
    if v != "0" {
        return Err(TakeoverError::BadVariable(v));
    }
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| TakeoverError::Stdin {
            what: "duplicating standard input".into(),
            source,
        })?;
    let channel = Channel::from_fd(fd).map_err(|source| TakeoverError::Stdin {
        what: format!(
            "{ENV} is set but standard input is not the handover socket of `gateway upgrade`"
        ),
        source,
    })?;
    Ok(Some(channel))
}

impl Takeover {
    /// Reads the offer when this process was started by `gateway upgrade`
    /// (`None` otherwise).
    ///
    /// # Errors
    /// The variable is set but standard input is not the handover socket,
    /// or no valid offer arrives within 10 s.
    pub fn from_env() -> Result<Option<Takeover>> {
        let Some(channel) = inherited_channel()? else {
            return Ok(None);
        };
        let (msg, fds) = channel
            .recv::<Message>(Duration::from_secs(10))
            .map_err(TakeoverError::Offer)?;
        let Message::Offer { from_pid, sockets } = msg else {
            return Err(TakeoverError::Protocol(format!(
                "the running gateway sent {msg:?} instead of its sockets"
            )));
        };
        if sockets.len() != fds.len() {
            return Err(TakeoverError::Protocol(format!(
                "the running gateway named {} sockets but sent {}",
                sockets.len(),
                fds.len()
            )));
        }
        let mut t = Takeover {
            channel,
            from_pid,
            proxy: Vec::new(),
            observability: None,
            demo: None,
        };
        for (
            Offered {
                role,
                name,
                configured,
            },
            fd,
        ) in sockets.into_iter().zip(fds)
        {
            let socket = listening_tcp(fd).map_err(|source| TakeoverError::Socket {
                what: format!("the offered {role:?} socket {name} {configured}"),
                source,
            })?;
            match role {
                Role::Proxy => t.proxy.push((name, configured, socket)),
                Role::Observability => t.observability = Some((configured, socket)),
                Role::Demo => t.demo = Some((configured, socket)),
            }
        }
        tracing::info!(
            from_pid,
            listeners = t.proxy.len(),
            "upgrade: took the listening sockets of the running gateway"
        );
        Ok(Some(t))
    }

    /// The proxy listeners' sockets, matched to the config by `plan`.
    pub fn proxy_sockets(&mut self) -> Inherited {
        Inherited::new(std::mem::take(&mut self.proxy))
    }

    /// The observability socket, if it served `addr` (else it is closed).
    pub fn observability_socket(&mut self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        self.observability
            .take()
            .filter(|(a, _)| *a == addr)
            .map(|(_, s)| s)
    }

    /// The demo upstream's socket, if it served `addr`.
    pub fn demo_socket(&mut self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        self.demo.take().filter(|(a, _)| *a == addr).map(|(_, s)| s)
    }

    /// Built and bound: asks the running gateway to stop accepting and save
    /// its state, and waits until it has (blocking; at most 30 s).
    ///
    /// # Errors
    /// The running gateway went away or did not answer.
    pub fn ready(&self) -> Result<()> {
        self.channel.send(&Message::Ready, &[])?;
        match self.channel.recv::<Message>(GO_TIMEOUT)? {
            (Message::Go, _) => Ok(()),
            (other, _) => Err(TakeoverError::Protocol(format!(
                "the running gateway sent {other:?} instead of the go"
            ))),
        }
    }

    /// Accepting: the running gateway may answer `gateway upgrade` and exit.
    pub fn serving(self) {
        let pid = std::process::id();
        let version = format!(
            "gateway {} (eBPF build {})",
            env!("CARGO_PKG_VERSION"),
            crate::xdp::build_id()
        );
        if let Err(e) = self.channel.send(&Message::Serving { pid, version }, &[]) {
            tracing::warn!(error = %e, "upgrade: could not tell the previous process that this one serves; it exits after its timeout");
        }
        drop(self.channel);
        // Standard input was the channel: /dev/null from now on.
        if let Ok(null) = std::fs::File::open("/dev/null") {
            let _ = rustix::stdio::dup2_stdin(&null);
        }
    }
}

/// Tells the running gateway that this successor cannot take over (a
/// no-op when this process was not started by `gateway upgrade`).
pub fn report_failure(error: &str) {
    if let Ok(Some(channel)) = inherited_channel() {
        let _ = channel.send(
            &Message::Failed {
                error: error.to_owned(),
            },
            &[],
        );
        // An offer not read yet (a config error comes before it is) would
        // make our exit reset the channel before the running gateway reads
        // the failure.
        channel.drain();
    }
}

/// `fd` as a listening TCP socket, or why it is not one.
fn listening_tcp(fd: OwnedFd) -> Result<std::net::TcpListener, NotAListener> {
    if rustix::net::sockopt::socket_type(&fd)? != rustix::net::SocketType::STREAM
        || !rustix::net::sockopt::socket_acceptconn(&fd)?
    {
        return Err(NotAListener::NotListening);
    }
    let socket = std::net::TcpListener::from(fd);
    socket.local_addr().map_err(NotAListener::NotTcp)?;
    Ok(socket)
}
