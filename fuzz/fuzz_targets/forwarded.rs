//! Client address from `X-Forwarded-For` / `Forwarded`
//! (`proxy::client_ip::Trusted::client_ip`). Input: the first byte picks the
//! socket peer (trusted or not, IPv4, IPv6 or IPv4-mapped); the rest is
//! lines, each `x:VALUE` (an `X-Forwarded-For` field), `f:VALUE` (a
//! `Forwarded` field) or `r:VALUE` (`X-Real-IP`). Checked beyond "no panic":
//! an untrusted peer is always the client, and the client is either the
//! peer or an address written in one of the fields.

#![no_main]

use std::{net::IpAddr, sync::LazyLock};

use gateway::proxy::client_ip::{ClientIpHeader, Trusted, canonical};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn trusted(header: ClientIpHeader) -> Trusted {
    Trusted::new(vec![
        "10.0.0.0/8".parse().unwrap(),
        "2001:db8:ffff::/48".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
    ])
    .with_header(header)
}

/// The same trusted networks, reading `X-Forwarded-For` or `Forwarded`.
static TRUSTED: LazyLock<[Trusted; 2]> = LazyLock::new(|| {
    [
        trusted(ClientIpHeader::XForwardedFor),
        trusted(ClientIpHeader::Forwarded),
    ]
});

const PEERS: [&str; 6] = [
    "10.0.0.1",
    "2001:db8:ffff::1",
    "::ffff:10.1.2.3",
    "127.0.0.1",
    "192.0.2.1",
    "2001:db8::1",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let peer: IpAddr = PEERS[first as usize % PEERS.len()].parse().unwrap();
    // The high bit picks the header the gateway reads the chain from.
    let trusted = &TRUSTED[usize::from(first >> 7)];
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let (name, value) = match line {
            [b'x', b':', v @ ..] => ("x-forwarded-for", v),
            [b'f', b':', v @ ..] => ("forwarded", v),
            [b'r', b':', v @ ..] => ("x-real-ip", v),
            _ => continue,
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), v);
        }
    }
    // An Err is a rejected request (400): the properties hold for answers.
    let Ok(client) = trusted.client_ip(peer, &headers) else {
        assert!(
            trusted.contains(canonical(peer)),
            "an untrusted peer's request was refused for its headers"
        );
        return;
    };
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        assert_eq!(client, peer, "an untrusted peer's headers were believed");
        return;
    }
    if client != peer {
        let written = headers.values().any(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
                .flat_map(|s| {
                    // The address alone, or with a `:port` after it.
                    let without_port = s.rsplit_once(':').map(|(a, _)| a);
                    [Some(s), without_port]
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.parse::<IpAddr>().ok())
                })
                .any(|ip| canonical(ip) == client)
        });
        assert!(written, "client {client} appears in no header: {headers:?}");
    }
});
