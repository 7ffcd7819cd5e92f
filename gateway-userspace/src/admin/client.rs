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
    // `upgrade` works across versions (its request and reply keep their
    // shape in every release): the new release's CLI replaces an older
    // gateway with it.
    if response.version != PROTOCOL_VERSION && *request != Request::Upgrade {
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

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::admin::protocol::{Reloaded, Upgraded};

    /// Serves one connection at a fresh socket with `answer`; returns its path.
    fn gateway_answering(answer: &'static str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "gw-client-test-{}-{}.sock",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            s.write_all(answer.as_bytes()).unwrap();
        });
        path
    }

    #[test]
    fn a_gateway_of_another_version_is_a_clear_error() {
        let path = gateway_answering("{\"ok\":true,\"data\":{\"reloaded\":true}}\n");
        let e = call::<Reloaded>(&path, &Request::Reload).unwrap_err();
        let _ = std::fs::remove_file(&path);
        let text = e.to_string();
        assert!(matches!(e, ClientError::Version(_)), "{e:?}");
        assert!(
            text.contains("speaks version none")
                && text.contains(&format!("this CLI speaks version {PROTOCOL_VERSION}")),
            "{text}"
        );
    }

    #[test]
    fn upgrade_answers_of_any_version_are_read() {
        let path = gateway_answering(
            "{\"ok\":true,\"data\":{\"old_pid\":1,\"new_pid\":2,\"program\":\"/g\",\"version\":\"v\",\"sockets\":3}}\n",
        );
        let u = call::<Upgraded>(&path, &Request::Upgrade);
        let _ = std::fs::remove_file(&path);
        assert_eq!(u.unwrap().new_pid, 2);
    }

    #[test]
    fn a_renamed_field_is_an_error_not_a_question_mark() {
        let path =
            gateway_answering("{\"version\":1,\"ok\":true,\"data\":{\"reloaded_ok\":true}}\n");
        let e = call::<Reloaded>(&path, &Request::Reload).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(matches!(e, ClientError::Garbled(_)), "{e:?}");
    }
}
