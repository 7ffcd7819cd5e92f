//! The handover channel between the running gateway and its successor: a
//! `SOCK_SEQPACKET` Unix socket pair (one message per send, boundaries
//! kept), JSON messages, and listening sockets passed as `SCM_RIGHTS`
//! ancillary data (unix(7)) with the message that names them.
//!
//! Blocking calls with a receive timeout: both sides run them on a thread
//! of their own (or the blocking pool), never on a request worker.

#![forbid(unsafe_code)]

use std::{
    io::{IoSlice, IoSliceMut},
    mem::MaybeUninit,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    time::Duration,
};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType, sockopt,
};
use serde::{Serialize, de::DeserializeOwned};

/// Most sockets passed in one message: Linux's `SCM_MAX_FD`.
pub const MAX_FDS: usize = 253;

/// Largest message, in bytes (the JSON of a few hundred listeners).
const MAX_MESSAGE: usize = 256 * 1024;

/// Why the channel failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Reading or writing the socket pair failed (`sendmsg`/`recvmsg`).
    #[error("handover channel")]
    Io(#[from] std::io::Error),
    /// The other process closed the channel (it exited or gave up).
    #[error("handover channel: the other process closed it")]
    Closed,
    /// No message arrived within the given time.
    #[error("handover channel: no message within {0:?}")]
    Timeout(Duration),
    /// A message is not the JSON of a [`super::Message`].
    #[error("handover channel: message not understood: {0}")]
    Decode(#[from] serde_json::Error),
    /// A message carried more file descriptors than [`MAX_FDS`].
    #[error("handover channel: {0} sockets in one message, at most {MAX_FDS}")]
    TooManyFds(usize),
    /// A message reached 256 KiB without ending.
    #[error("handover channel: message of {0} bytes or more, at most {MAX_MESSAGE}")]
    TooLarge(usize),
}

/// One end of the channel.
pub struct Channel(OwnedFd);

impl Channel {
    /// A connected pair (both ends close-on-exec: the end given to the
    /// successor becomes its standard input, which `exec` keeps).
    pub fn pair() -> std::io::Result<(Channel, OwnedFd)> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Channel(a), b))
    }

    /// Wraps an inherited end (the successor's standard input).
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Channel> {
        // Refuse anything that is not a seqpacket socket, so a stray
        // `GATEWAY_UPGRADE_FD` on an interactive shell fails clearly.
        let kind = sockopt::socket_type(&fd)?;
        if kind != SocketType::SEQPACKET {
            return Err(std::io::Error::other(
                "the inherited descriptor is not the handover socket",
            ));
        }
        Ok(Channel(fd))
    }

    /// Sends `msg` with `fds` attached.
    pub fn send<T: Serialize>(&self, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        if fds.len() > MAX_FDS {
            return Err(ChannelError::TooManyFds(fds.len()));
        }
        let bytes = serde_json::to_vec(msg)?;
        if bytes.len() >= MAX_MESSAGE {
            return Err(ChannelError::TooLarge(bytes.len()));
        }
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(fds));
        }
        rustix::net::sendmsg(
            &self.0,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(std::io::Error::from)?;
        Ok(())
    }

    /// Reads and drops every message already queued, without waiting (so
    /// that closing this end does not reset the peer's connection while it
    /// still has our last message to read).
    pub fn drain(&self) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        loop {
            let mut control = RecvAncillaryBuffer::new(&mut space);
            match rustix::net::recvmsg(
                &self.0,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(r) if r.bytes > 0 => {
                    // Received descriptors are closed here.
                    control.drain().for_each(drop);
                }
                Err(rustix::io::Errno::INTR) => {}
                _ => return,
            }
        }
    }

    /// Receives one message and the sockets attached to it (close-on-exec),
    /// waiting at most `timeout`.
    pub fn recv<T: DeserializeOwned>(
        &self,
        timeout: Duration,
    ) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        sockopt::set_socket_timeout(&self.0, sockopt::Timeout::Recv, Some(timeout))
            .map_err(std::io::Error::from)?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = loop {
            match rustix::net::recvmsg(
                &self.0,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(r) => break r,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return Err(ChannelError::Timeout(timeout)),
                // The peer closed with our message unread: it is gone.
                Err(rustix::io::Errno::CONNRESET) => return Err(ChannelError::Closed),
                Err(e) => return Err(ChannelError::Io(e.into())),
            }
        };
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = m {
                fds.extend(received);
            }
        }
        if got.bytes == 0 {
            return Err(ChannelError::Closed);
        }
        if got.bytes >= MAX_MESSAGE {
            return Err(ChannelError::TooLarge(got.bytes));
        }
        Ok((serde_json::from_slice(&buf[..got.bytes])?, fds))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        os::unix::net::UnixStream,
    };

    use super::*;

    #[test]
    fn messages_and_sockets_cross_the_channel() {
        let (a, b) = Channel::pair().unwrap();
        let b = Channel::from_fd(b).unwrap();
        let (mut x, y) = UnixStream::pair().unwrap();
        a.send(&vec!["one".to_owned()], &[y.as_fd()]).unwrap();
        drop(y);
        let (msg, fds): (Vec<String>, _) = b.recv(Duration::from_secs(1)).unwrap();
        assert_eq!(msg, ["one"]);
        assert_eq!(fds.len(), 1);
        // The received descriptor is the same socket.
        let mut y = UnixStream::from(fds.into_iter().next().unwrap());
        x.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        y.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn a_closed_peer_and_silence_are_errors() {
        let (a, b) = Channel::pair().unwrap();
        let b = Channel::from_fd(b).unwrap();
        assert!(matches!(
            b.recv::<String>(Duration::from_millis(50)),
            Err(ChannelError::Timeout(_))
        ));
        drop(a);
        assert!(matches!(
            b.recv::<String>(Duration::from_millis(50)),
            Err(ChannelError::Closed)
        ));
    }

    #[test]
    fn only_the_handover_socket_is_accepted() {
        let (s, _) = UnixStream::pair().unwrap();
        assert!(Channel::from_fd(OwnedFd::from(s)).is_err());
    }
}
