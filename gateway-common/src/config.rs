//! The single-entry config map the XDP program reads on every packet.

/// One token bucket's parameters. `rate == 0` means unlimited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    /// Sustained rate, events per second; 0 = unlimited.
    pub rate: u32,
    /// Events allowed back to back above the rate (at least 1 when rate > 0).
    pub burst: u32,
}

/// The XDP program's settings. Index 0 of the `GW_CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// Packets per second per source, to protected ports.
    pub pps: Limit,
    /// New TCP connections (SYN without ACK) per second per source, to
    /// protected ports.
    pub syn: Limit,
    /// IPv6 sources share one bucket per prefix of this length (0..=128).
    pub v6_prefix_len: u32,
    /// Bit flags, see the `FLAG_*` constants.
    pub flags: u32,
    /// Which lookup maps hold entries (`PRESENT_*` bits), maintained by
    /// userspace so the program skips lookups in empty maps: an LPM trie
    /// lookup costs tens of nanoseconds even when the trie is empty.
    pub present: u32,
    /// How the program looks up CIDR blocks, IPv4 then IPv6: which prefix
    /// lengths to hash, or the trie. Maintained by userspace with `present`.
    pub block_prefix_lens: [crate::acl::PrefixLens; 2],
}

/// Words of the protected-port bitmap `GW_PORTS` (an array of `u64`): port
/// `p` (host byte order) is protected when bit `p % 64` of word `p / 64` is
/// set. An array lookup is inlined by the verifier (a bounds check and an
/// add), where a hash lookup of the port costs a hash and a bucket walk.
pub const PORT_WORDS: u32 = 65536 / 64;

/// Rate limiting on protected ports is on. Off: only the ACLs apply.
pub const FLAG_RATE_LIMIT: u32 = 1;

/// `GW_ALLOW_V4` holds at least one entry.
pub const PRESENT_ALLOW_V4: u32 = 1 << 0;
/// `GW_ALLOW_V6` holds at least one entry.
pub const PRESENT_ALLOW_V6: u32 = 1 << 1;
/// `GW_BLOCK_V4` holds at least one entry.
pub const PRESENT_BLOCK_V4: u32 = 1 << 2;
/// `GW_BLOCK_V6` holds at least one entry.
pub const PRESENT_BLOCK_V6: u32 = 1 << 3;
/// `GW_BLOCK_CIDR_V4` (and its hashed twin `GW_BLOCK_NET_V4`) holds at
/// least one entry.
pub const PRESENT_BLOCK_CIDR_V4: u32 = 1 << 4;
/// `GW_BLOCK_CIDR_V6` (and `GW_BLOCK_NET_V6`) holds at least one entry.
pub const PRESENT_BLOCK_CIDR_V6: u32 = 1 << 5;
/// `GW_LIMIT_V4` holds at least one entry.
pub const PRESENT_LIMIT_V4: u32 = 1 << 6;
/// `GW_LIMIT_V6` holds at least one entry.
pub const PRESENT_LIMIT_V6: u32 = 1 << 7;

crate::pod!(XdpConfig, Limit);
