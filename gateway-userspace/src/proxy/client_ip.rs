//! Who the client is. The socket peer, unless the peer is in
//! `trusted_proxies`: then the PROXY protocol source (if the listener uses
//! it) and the `X-Forwarded-For` chain are believed, walking the chain from
//! the right and skipping trusted hops (what NGINX's `real_ip_recursive on`
//! does). Nothing a client writes is believed otherwise.

#![forbid(unsafe_code)]

use std::net::IpAddr;

use http::HeaderMap;

use crate::net::Net;

/// The set of trusted proxy networks.
#[derive(Debug, Clone, Default)]
pub struct Trusted(Vec<Net>);

impl Trusted {
    pub fn new(nets: Vec<Net>) -> Self {
        Self(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client IP for a request that arrived from `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let chain: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .map(|s| s.parse::<IpAddr>().map(canonical))
            .collect::<Result<_, _>>()
            // A malformed chain is not believed at all.
            .unwrap_or_default();
        let mut client = peer;
        for ip in chain.into_iter().rev() {
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let t = Trusted::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let ip = t.client_ip("192.0.2.1".parse().unwrap(), &headers("1.2.3.4"));
        assert_eq!(ip, "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let t = Trusted::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let h = headers("6.6.6.6, 1.2.3.4, 10.1.1.1");
        let ip = t.client_ip("10.0.0.1".parse().unwrap(), &h);
        assert_eq!(ip, "1.2.3.4".parse::<IpAddr>().unwrap());
        let ip = t.client_ip("10.0.0.1".parse().unwrap(), &headers("garbage, 1.2.3.4"));
        assert_eq!(ip, "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
