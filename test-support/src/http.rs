//! A raw HTTP/1.1 client for loopback tests: the request goes out byte for
//! byte as the test wrote it (smuggling and malformed-input tests need
//! that), the response is read until the server closes and split into
//! status, head and body. [`tokio`] is the async transport for tests
//! that run the proxy in-process on their own runtime; [`blocking`] the
//! thread-blocking one for tests that talk to a gateway process.

use std::net::SocketAddr;

/// A response read to the end: the status code (0 when the first line has
/// none), the head without its final CRLF CRLF, and the body as text.
#[derive(Debug)]
pub struct Reply {
    /// The status code, 0 when the status line is missing or malformed.
    pub status: u16,
    /// The status line and header lines.
    pub head: String,
    /// Everything after the blank line, decoded lossily as UTF-8.
    pub body: String,
}

impl Reply {
    /// Splits a response at the first blank line; without one the whole
    /// text is the head.
    pub fn parse(buf: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Reply {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    /// [`Reply::parse`] for a response that must be complete HTTP: `None`
    /// without a blank line after the head or without a status code.
    pub fn parse_complete(buf: &[u8]) -> Option<Reply> {
        let reply = Reply::parse(buf);
        (reply.status != 0 && buf.windows(4).any(|w| w == b"\r\n\r\n")).then_some(reply)
    }

    /// The first header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// A `GET` with `Connection: close`: `Host: <host>`, then `extra` header
/// lines (each ending in CRLF) and the blank line.
pub fn get_request(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

/// `name: value` header lines, each ending in CRLF.
pub fn header_lines(headers: &[(&str, &str)]) -> String {
    headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect()
}

/// The async transport (Tokio), for tests whose proxy runs on the same
/// runtime.
pub mod tokio {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpStream,
    };

    use super::{Reply, SocketAddr, get_request};

    /// Sends raw bytes, reads until the server closes (10 s bound).
    pub async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        read_all(&mut s).await
    }

    /// Reads until the server closes or 10 s pass, whichever is first.
    pub async fn read_all(s: &mut TcpStream) -> Reply {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        Reply::parse(&buf)
    }

    /// A GET for `test.local` with `Connection: close` and extra header
    /// lines (each ending in CRLF).
    pub async fn get(addr: SocketAddr, path: &str, extra: &str) -> Reply {
        raw(addr, get_request(path, "test.local", extra).as_bytes()).await
    }
}

/// The thread-blocking transport, for tests that talk to a gateway
/// process (or to a server in another network namespace).
pub mod blocking {
    use std::{
        io::{Read as _, Write as _},
        net::TcpStream,
        time::Duration,
    };

    use super::{Reply, SocketAddr, get_request, header_lines};

    /// Connects (within `connect`), sends `request`, reads until the
    /// server closes (each read within `read`): the raw response.
    pub fn exchange(
        addr: SocketAddr,
        request: &[u8],
        connect: Duration,
        read: Duration,
    ) -> std::io::Result<Vec<u8>> {
        exchange_on(TcpStream::connect_timeout(&addr, connect)?, request, read)
    }

    /// [`exchange`] on a stream the caller connected (from a chosen
    /// source address, or inside a network namespace).
    pub fn exchange_on(
        mut s: TcpStream,
        request: &[u8],
        read: Duration,
    ) -> std::io::Result<Vec<u8>> {
        s.set_read_timeout(Some(read))?;
        s.write_all(request)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// A GET for host `test` with `headers`: the complete response, or
    /// `None` when the server cannot be reached (2 s) or answers no HTTP.
    pub fn try_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<Reply> {
        let req = get_request(path, "test", &header_lines(headers));
        let buf = exchange(
            addr,
            req.as_bytes(),
            Duration::from_secs(2),
            Duration::from_secs(10),
        )
        .ok()?;
        Reply::parse_complete(&buf)
    }

    /// [`try_get`] that must succeed.
    pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
        try_get(addr, path, headers).unwrap_or_else(|| panic!("GET {path} on {addr} failed"))
    }

    /// One request with `method`, `headers` (a `Host: <addr>` unless one is
    /// given) and `body` (with its Content-Length); panics when the server
    /// does not answer complete HTTP.
    pub fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: {addr}\r\n"));
        }
        req.push_str(&header_lines(headers));
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let buf = exchange(
            addr,
            req.as_bytes(),
            Duration::from_secs(2),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
        Reply::parse_complete(&buf)
            .unwrap_or_else(|| panic!("{method} {path} on {addr}: not HTTP: {buf:?}"))
    }

    /// Sends `GET <path>` (with extra `headers` lines, each ending in CRLF)
    /// on a connected stream: the response status, or the error.
    pub fn get_status_on(s: TcpStream, path: &str, headers: &str) -> Result<u16, String> {
        let req = get_request(path, "gw", headers);
        let buf =
            exchange_on(s, req.as_bytes(), Duration::from_secs(5)).map_err(|e| e.to_string())?;
        match Reply::parse(&buf).status {
            0 => Err(format!("bad response: {:?}", String::from_utf8_lossy(&buf))),
            status => Ok(status),
        }
    }
}
