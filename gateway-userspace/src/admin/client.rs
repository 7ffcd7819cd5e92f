//! The CLI side of the admin socket.

#![forbid(unsafe_code)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use serde::de::DeserializeOwned;

use super::protocol::{Envelope, PROTOCOL_VERSION, Request, Response, version_mismatch};

/// Sends one request to the running gateway and returns its reply payload
/// (`T`, the `admin::protocol` type of that request), or the gateway's
/// error as an error. Waits at most 10 s for the answer.
pub fn call<T: DeserializeOwned>(socket: &Path, request: &Request) -> Result<T> {
    call_with_timeout(socket, request, Duration::from_secs(10))
}

/// [`call`], waiting at most `timeout` for the answer.
pub fn call_with_timeout<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T> {
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "no gateway is running (nothing listens on {}); start one with `gateway run`",
            socket.display()
        ),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "permission denied on {}: the admin socket is root-only, run with sudo",
            socket.display()
        ),
        _ => anyhow::anyhow!("cannot reach the gateway at {}: {e}", socket.display()),
    })?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(&Envelope::new(request.clone()))?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .context("sending the request")?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .context("reading the gateway's answer")?;
    let response: Response = serde_json::from_str(&reply)
        .context("the gateway sent an answer this CLI does not understand")?;
    if response.version != PROTOCOL_VERSION {
        bail!(
            "{}",
            version_mismatch(
                &format!("the gateway at {}", socket.display()),
                response.version,
                "this CLI"
            )
        );
    }
    if !response.ok {
        bail!(
            "{}",
            response
                .error
                .unwrap_or_else(|| "the gateway refused the request".into())
        );
    }
    serde_json::from_value(response.data)
        .context("the gateway sent an answer this CLI does not understand")
}
