//! The running process's side of an upgrade: starts the successor, offers
//! it the sockets, and stops it again if it cannot take over. Blocking:
//! run on the blocking pool.

#![forbid(unsafe_code)]

use std::{
    os::{
        fd::{AsFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use super::{
    ENV, Message, Offered,
    channel::{Channel, ChannelError},
    command,
};

/// Why a successor could not take over; in every case it is no longer
/// running and this gateway goes on serving.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// This process is PID 1: the deployment's to change (run under an init).
    #[error(
        "this gateway is PID 1 (a container's init): the kernel stops every process of the namespace when it exits, its successor included; restart the container instead, or run the gateway under an init (docker run --init, tini)"
    )]
    Pid1,
    /// The command line was not recorded at start (not started by `gateway
    /// run`): nothing to start again.
    #[error("the command line of this process was not recorded")]
    NoCommand,
    /// The binary is gone: the operator's to install.
    #[error(
        "{0} (the binary this gateway was started as) does not exist any more: install the new binary at that path"
    )]
    BinaryMissing(String),
    /// A system call of this process failed (`what` says which).
    #[error("{what}")]
    Io {
        /// The step that failed.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The handover channel failed (`what` says at which step and how the
    /// successor ended).
    #[error("{what}")]
    Channel {
        /// The step that failed.
        what: String,
        /// The channel's error.
        #[source]
        source: ChannelError,
    },
    /// The successor refused, failed, exited or did not answer in time (its
    /// side: its log says why).
    #[error("{0}")]
    Successor(String),
}

type Result<T, E = HandoverError> = std::result::Result<T, E>;

/// A successor that was started and offered the sockets.
pub struct Successor {
    channel: Channel,
    child: Child,
    /// The successor's process id.
    pub pid: u32,
    /// The binary it was started from.
    pub program: String,
    /// The admin socket the successor binds beside the running one until
    /// it takes over (removed here if it never does).
    temp_socket: PathBuf,
}

/// Starts the successor (this process's binary path and arguments, with
/// the handover channel as standard input, in a process group of its own
/// so that stopping it also stops anything it started, such as the
/// binary a wrapper script runs) and offers it `sockets`. `admin_socket`
/// is the running gateway's admin socket.
///
/// # Errors
/// This process is PID 1 (its successor would die with it), the binary
/// cannot be started, or the offer cannot be sent (the child is then
/// stopped).
pub fn spawn(sockets: Vec<(Offered, OwnedFd)>, admin_socket: &Path) -> Result<Successor> {
    if std::process::id() == 1 {
        return Err(HandoverError::Pid1);
    }
    let cmd = command().ok_or(HandoverError::NoCommand)?;
    let program = cmd.program.display().to_string();
    if !cmd.program.is_file() {
        return Err(HandoverError::BinaryMissing(program));
    }
    let (ours, theirs) = Channel::pair().map_err(|source| HandoverError::Io {
        what: "creating the handover channel".into(),
        source,
    })?;
    let child = std::process::Command::new(&cmd.program)
        .args(&cmd.args)
        .env(ENV, "0")
        .stdin(Stdio::from(theirs))
        .process_group(0)
        .spawn()
        .map_err(|source| HandoverError::Io {
            what: format!("starting {program}"),
            source,
        })?;
    let pid = child.id();
    let mut name = admin_socket.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".new-{pid}"));
    let mut s = Successor {
        channel: ours,
        child,
        pid,
        program,
        temp_socket: admin_socket.with_file_name(name),
    };
    let (offered, fds): (Vec<Offered>, Vec<OwnedFd>) = sockets.into_iter().unzip();
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let offer = Message::Offer {
        from_pid: std::process::id(),
        sockets: offered,
    };
    if let Err(e) = s.channel.send(&offer, &borrowed) {
        let status = s.stop();
        return Err(HandoverError::Channel {
            what: format!("offering the sockets to the new process ({status})"),
            source: e,
        });
    }
    Ok(s)
}

impl Successor {
    /// Waits until the successor is built and bound ([`Message::Ready`]).
    ///
    /// # Errors
    /// It failed (its error), exited, or was not ready within `timeout`;
    /// in every case it is no longer running.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        // The channel is watched in short steps, and the child between
        // them: a wrapper that exits while something it started keeps the
        // channel open must not make us wait out the whole timeout.
        let deadline = Instant::now() + timeout;
        let step = Duration::from_millis(200);
        let answer = loop {
            match self.channel.recv::<Message>(step) {
                Err(ChannelError::Timeout(_)) => {}
                other => break other,
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.cleanup();
                return Err(HandoverError::Successor(format!(
                    "the new process {} before it was ready; its log says why",
                    describe(Ok(status))
                )));
            }
            if Instant::now() >= deadline {
                break Err(ChannelError::Timeout(timeout));
            }
        };
        match answer {
            Ok((Message::Ready, _)) => Ok(()),
            Ok((Message::Failed { error }, _)) => {
                let status = self.reap(Duration::from_secs(5));
                Err(HandoverError::Successor(format!(
                    "the new process cannot take over ({status}): {error}"
                )))
            }
            Ok((other, _)) => {
                let status = self.stop();
                Err(HandoverError::Successor(format!(
                    "the new process sent {other:?} instead of ready ({status})"
                )))
            }
            Err(ChannelError::Closed) => {
                let status = self.reap(Duration::from_secs(5));
                Err(HandoverError::Successor(format!(
                    "the new process {status} before it was ready; its log says why"
                )))
            }
            Err(ChannelError::Timeout(t)) => {
                let status = self.stop();
                Err(HandoverError::Successor(format!(
                    "the new process was not ready within {t:?}; it was stopped ({status})"
                )))
            }
            Err(e) => {
                let status = self.stop();
                Err(HandoverError::Channel {
                    what: format!("waiting for the new process ({status})"),
                    source: e,
                })
            }
        }
    }

    /// Tells the successor to take over and waits until it accepts; returns
    /// its pid and version.
    ///
    /// # Errors
    /// It did not confirm within `timeout` (it is then stopped).
    pub fn go(&mut self, timeout: Duration) -> Result<(u32, String)> {
        let answer = self
            .channel
            .send(&Message::Go, &[])
            .and_then(|()| self.channel.recv::<Message>(timeout));
        match answer {
            Ok((Message::Serving { pid, version }, _)) => Ok((pid, version)),
            Ok((other, _)) => {
                let status = self.stop();
                Err(HandoverError::Successor(format!(
                    "the new process sent {other:?} instead of serving ({status})"
                )))
            }
            Err(e) => {
                let status = self.stop();
                Err(HandoverError::Channel {
                    what: format!("the new process did not take over ({status})"),
                    source: e,
                })
            }
        }
    }

    /// Stops the successor and its process group (our own child, by its
    /// handle and the group it leads), reaps it, and removes the admin
    /// socket it bound beside ours.
    fn stop(&mut self) -> String {
        self.cleanup();
        let _ = self.child.kill();
        describe(self.child.wait())
    }

    /// Stops the successor's process group (the successor itself and
    /// anything it started) and removes the admin socket it bound.
    fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.temp_socket);
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            // Anything it started and left running (a wrapper's child)
            // would hold the offered sockets.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }

    /// Waits up to `within` for the successor to exit by itself, then
    /// stops it.
    fn reap(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.cleanup();
                    return describe(Ok(status));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return describe(Err(e)),
            }
        }
        self.stop()
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => format!("exited with {s}"),
        Err(e) => format!("not reaped: {e}"),
    }
}
