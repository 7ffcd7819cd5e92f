//! Two gateway nodes behind which one client sits: the network namespaces
//! and veth pairs of the cluster tests, removed on drop.
//!
//! ```text
//!   nsC (client)                          nsA (node a)
//!   lo: CLIENT_IP/32, OTHER_IP/32         gA: GA_IP/24
//!   GA_IP/32 dev cA src CLIENT_IP  cA ── gA  CLIENT_IP/32, OTHER_IP/32 dev gA
//!   GB_IP/32 dev cB src CLIENT_IP  cB ── gB  CLIENT_IP/32, OTHER_IP/32 dev gB
//!                                         nsB (node b)
//!                                         gB: GB_IP/24
//! ```
//!
//! The client's addresses live on nsC's `lo`, not on `cA`/`cB`, so the same
//! source address reaches both nodes, as one real client reaches every node
//! of a cluster. This works with the kernel defaults of a fresh namespace:
//! ARP answers for any local address on any interface (`arp_ignore=0`), an
//! ARP request from `cA` carries the packet's source (`arp_announce=0`),
//! and each side has a /32 route back through the link a packet came in on,
//! so reverse-path filtering (strict or loose) passes. The test namespaces
//! set `rp_filter=0` all the same, in case `devconf_inherit_init_net` copies
//! a host's stricter settings into new namespaces.
//!
//! All addresses exist only inside the three namespaces, so they cannot
//! meet another test's; they still vary with the pid (198.18.0.0/15, the
//! benchmarking range) to keep logs of concurrent runs apart.

use crate::guard::{Netns, sh};

/// The three namespaces and two veth pairs; dropping it deletes the
/// namespaces, and with nsC both pairs (a veth pair dies with either end).
pub struct TwoNodeLink {
    // Declared first, dropped first: deleting nsC destroys cA and cB and so
    // gA and gB, even if a process still holds nsA or nsB open.
    /// nsC, the client's namespace.
    pub client: Netns,
    /// nsA, node a's namespace.
    pub a: Netns,
    /// nsB, node b's namespace.
    pub b: Netns,
    /// cA, nsC's end towards node a (the interface names: client ends in
    /// nsC, gateway ends gA in nsA and gB in nsB).
    pub ca: String,
    /// cB, nsC's end towards node b.
    pub cb: String,
    /// gA, node a's end (in nsA).
    pub ga: String,
    /// gB, node b's end (in nsB).
    pub gb: String,
    /// The client's address (on nsC's `lo`).
    pub client_ip: String,
    /// A bystander client in nsC, routed like `client_ip`.
    pub other_ip: String,
    /// Node a's address on gA.
    pub ga_ip: String,
    /// Node b's address on gB.
    pub gb_ip: String,
}

impl TwoNodeLink {
    /// Creates the three namespaces, both pairs, the addresses and routes.
    pub fn new() -> Self {
        let s = (std::process::id() % 100) as u8 * 2;
        let (client, a, b) = (Netns::new(), Netns::new(), Netns::new());
        let link = Self {
            ca: crate::unique_name("gwca"),
            cb: crate::unique_name("gwcb"),
            ga: crate::unique_name("gwga"),
            gb: crate::unique_name("gwgb"),
            client_ip: format!("198.19.{s}.2"),
            other_ip: format!("198.19.{s}.3"),
            ga_ip: format!("198.18.{s}.1"),
            gb_ip: format!("198.18.{}.1", s + 1),
            client,
            a,
            b,
        };
        for ns in [&link.client, &link.a, &link.b] {
            ns.sh(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
            ns.sh(&["sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"]);
            ns.sh(&["ip", "link", "set", "lo", "up"]);
        }
        // Each pair is created with its ends already in their namespaces
        // (one command), so nothing is ever left in the host namespace.
        for (c, g, node) in [(&link.ca, &link.ga, &link.a), (&link.cb, &link.gb, &link.b)] {
            sh(&[
                "ip",
                "link",
                "add",
                c,
                "netns",
                &link.client.name,
                "type",
                "veth",
                "peer",
                "name",
                g,
                "netns",
                &node.name,
            ]);
        }
        let lo32 = |ip: &str| format!("{ip}/32");
        let nsc = &link.client;
        nsc.sh(&["ip", "addr", "add", &lo32(&link.client_ip), "dev", "lo"]);
        nsc.sh(&["ip", "addr", "add", &lo32(&link.other_ip), "dev", "lo"]);
        for (c, g, node, node_ip) in [
            (&link.ca, &link.ga, &link.a, &link.ga_ip),
            (&link.cb, &link.gb, &link.b, &link.gb_ip),
        ] {
            nsc.sh(&["sysctl", "-qw", &format!("net.ipv4.conf.{c}.rp_filter=0")]);
            nsc.sh(&["ip", "link", "set", c, "up"]);
            nsc.sh(&[
                "ip",
                "route",
                "add",
                &lo32(node_ip),
                "dev",
                c,
                "src",
                &link.client_ip,
            ]);
            node.sh(&["sysctl", "-qw", &format!("net.ipv4.conf.{g}.rp_filter=0")]);
            node.sh(&["ip", "addr", "add", &format!("{node_ip}/24"), "dev", g]);
            node.sh(&["ip", "link", "set", g, "up"]);
            for ip in [&link.client_ip, &link.other_ip] {
                node.sh(&["ip", "route", "add", &lo32(ip), "dev", g]);
            }
        }
        link
    }
}

impl Default for TwoNodeLink {
    fn default() -> Self {
        Self::new()
    }
}
