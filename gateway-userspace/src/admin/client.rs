//! The CLI side of the admin socket.

#![forbid(unsafe_code)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;

use super::protocol::{Envelope, PROTOCOL_VERSION, Request, Response, version_mismatch};

/// Why a call to the running gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: no gateway runs (or another socket
    /// path is configured).
    #[error("no gateway is running (nothing listens on {}); start one with `gateway run`", .0.display())]
    NotRunning(PathBuf),
    /// The socket is root-only and this user is not root.
    #[error("permission denied on {}: the admin socket is root-only, run with sudo", .0.display())]
    PermissionDenied(PathBuf),
    /// Connecting failed otherwise.
    #[error("cannot reach the gateway at {}: {source}", .path.display())]
    Unreachable {
        /// The admin socket.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// Sending the request or reading the answer failed (`what` says which).
    #[error("{what}")]
    Io {
        /// The step that failed.
        what: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not JSON of the expected shape (another release's
    /// gateway, or a bug).
    #[error("the gateway sent an answer this CLI does not understand")]
    Garbled(#[source] serde_json::Error),
    /// The gateway speaks another admin protocol version.
    #[error("{0}")]
    Version(String),
    /// The gateway refused the request; its message says why (the
    /// operator's input, or the gateway's state).
    #[error("{0}")]
    Refused(String),
}

/// Sends one request to the running gateway and returns its reply payload
/// (`T`, the `admin::protocol` type of that request), or the gateway's
/// error as an error. Waits at most 10 s for the answer.
pub fn call<T: DeserializeOwned>(socket: &Path, request: &Request) -> Result<T, ClientError> {
    call_with_timeout(socket, request, Duration::from_secs(10))
}

/// [`call`], waiting at most `timeout` for the answer.
pub fn call_with_timeout<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(socket.to_owned())
        }
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(socket.to_owned()),
        _ => ClientError::Unreachable {
            path: socket.to_owned(),
            source: e,
        },
    })?;
    let io = |what| move |source| ClientError::Io { what, source };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(io("setting the answer's timeout"))?;
    // Serializing a `Request` cannot fail: plain strings, numbers, options.
    let mut line =
        serde_json::to_string(&Envelope::new(request.clone())).expect("a request serializes");
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(io("sending the request"))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(io("reading the gateway's answer"))?;
    let response: Response = serde_json::from_str(&reply).map_err(ClientError::Garbled)?;
    if response.version != PROTOCOL_VERSION {
        return Err(ClientError::Version(version_mismatch(
            &format!("the gateway at {}", socket.display()),
            response.version,
            "this CLI",
        )));
    }
    if !response.ok {
        return Err(ClientError::Refused(
            response
                .error
                .unwrap_or_else(|| "the gateway refused the request".into()),
        ));
    }
    serde_json::from_value(response.data).map_err(ClientError::Garbled)
}
