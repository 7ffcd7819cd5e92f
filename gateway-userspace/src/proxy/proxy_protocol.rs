//! PROXY protocol v1 (text) and v2 (binary) headers, read from the start of
//! a connection on listeners with `proxy_protocol = true`. The header is
//! read exactly (never past its end) so the bytes after it go to TLS or
//! HTTP untouched. The caller only believes the result when the socket peer
//! is a trusted proxy.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Why a PROXY header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection failed or closed while reading.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a PROXY protocol header.
    #[error("not a PROXY protocol header")]
    Malformed,
}

/// Reads a PROXY header. `Ok(None)` means `UNKNOWN`/`LOCAL`: keep the peer.
/// An IPv4-mapped IPv6 source (`::ffff:a.b.c.d`) is returned as IPv4, so
/// it meets the same limits, blocks and trusted-proxy checks as the plain
/// address.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    Ok(read_raw(io)
        .await?
        .map(|a| SocketAddr::new(super::client_ip::canonical(a.ip()), a.port())))
}

async fn read_raw<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut start = [0u8; 12];
    io.read_exact(&mut start).await?;
    if start == V2_SIGNATURE {
        return read_v2(io).await;
    }
    if !start.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::Malformed);
    }
    let mut line = start.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= 107 {
            return Err(ProxyHeaderError::Malformed);
        }
        line.push(io.read_u8().await?);
    }
    parse_v1(&line[..line.len() - 2])
}

fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyHeaderError::Malformed)?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| ProxyHeaderError::Malformed)?;
            if ip.is_ipv4() != (*fam == "TCP4") {
                return Err(ProxyHeaderError::Malformed);
            }
            let port: u16 = sport.parse().map_err(|_| ProxyHeaderError::Malformed)?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(ProxyHeaderError::Malformed),
    }
}

async fn read_v2<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut head = [0u8; 4];
    io.read_exact(&mut head).await?;
    let (ver_cmd, fam, len) = (head[0], head[1], u16::from_be_bytes([head[2], head[3]]));
    // Version 2; command LOCAL (0) or PROXY (1), nothing else (spec §2.2).
    if ver_cmd >> 4 != 2 || ver_cmd & 0x0f > 1 {
        return Err(ProxyHeaderError::Malformed);
    }
    let mut body = vec![0u8; len as usize];
    io.read_exact(&mut body).await?;
    if ver_cmd & 0x0f == 0 {
        // LOCAL: a health check from the proxy itself.
        return Ok(None);
    }
    match fam >> 4 {
        1 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Ok(Some(SocketAddr::new(ip.into(), port)))
        }
        2 if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Ok(Some(SocketAddr::new(Ipv6Addr::from(a).into(), port)))
        }
        0 => Ok(None),
        _ => Err(ProxyHeaderError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn v1_and_v2() {
        let mut v1: &[u8] = b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 443\r\nGET /";
        let a = read_header(&mut v1).await.unwrap().unwrap();
        assert_eq!(a, "192.0.2.7:5555".parse().unwrap());
        assert_eq!(v1, b"GET /");

        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 9, 10, 0, 0, 1, 0x15, 0xb3, 1, 187,
        ]);
        v2.extend_from_slice(b"rest");
        let mut r: &[u8] = &v2;
        let a = read_header(&mut r).await.unwrap().unwrap();
        assert_eq!(a, "192.0.2.9:5555".parse().unwrap());
        assert_eq!(r, b"rest");

        let mut bad: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        assert!(read_header(&mut bad).await.is_err());

        // A mapped source is the plain IPv4 address.
        let mut v1: &[u8] = b"PROXY TCP6 ::ffff:192.0.2.7 ::1 5555 443\r\n";
        let a = read_header(&mut v1).await.unwrap().unwrap();
        assert_eq!(a, "192.0.2.7:5555".parse().unwrap());
        // v2 with command 2 (undefined) is refused.
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x22, 0x11, 0, 12, 192, 0, 2, 9, 10, 0, 0, 1, 0, 1, 0, 1]);
        let mut r: &[u8] = &v2;
        assert!(read_header(&mut r).await.is_err());
    }
}
