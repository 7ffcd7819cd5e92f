//! What the XDP program and userspace must agree on: map names and sizes, and
//! the `#[repr(C)]` keys and values stored in them. Every type here is `Copy`,
//! has no implicit padding (flags are `u32`, never `bool`), and implements
//! `aya::Pod` behind the `user` feature.
//!
//! Addresses are stored in network byte order. IPv4 addresses in the shared
//! rate-limit and drop-counter maps are IPv4-mapped IPv6 (`::ffff:a.b.c.d`),
//! so one map serves both families.
#![no_std]

pub mod acl;
pub mod config;
pub mod ratelimit;
pub mod stats;

/// Bumped whenever a map's key, value or size changes. Userspace pins maps
/// under `<pin_dir>/v<LAYOUT_VERSION>`, so a new layout never reuses (and
/// misreads) maps pinned by an older gateway.
pub const LAYOUT_VERSION: u32 = 4;

/// Names of the maps, as pinned under the pin directory.
pub mod maps {
    /// Array of one [`config::XdpConfig`]: the program's settings.
    pub const CONFIG: &str = "GW_CONFIG";
    /// Array of [`config::PORT_WORDS`] `u64` words: the protected-port bitmap.
    pub const PROTECTED_PORTS: &str = "GW_PORTS";
    /// LPM trie, IPv4 prefix to [`acl::AllowValue`]: the allowlist.
    pub const ALLOW_V4: &str = "GW_ALLOW_V4";
    /// LPM trie, IPv6 prefix to [`acl::AllowValue`]: the allowlist.
    pub const ALLOW_V6: &str = "GW_ALLOW_V6";
    /// Hash map, exact IPv4 address to [`acl::BlockEntry`].
    pub const BLOCK_V4: &str = "GW_BLOCK_V4";
    /// Hash map, exact IPv6 address to [`acl::BlockEntry`].
    pub const BLOCK_V6: &str = "GW_BLOCK_V6";
    /// LPM trie, IPv4 prefix to [`acl::BlockEntry`].
    pub const BLOCK_CIDR_V4: &str = "GW_BLOCK_CIDR_V4";
    /// LPM trie, IPv6 prefix to [`acl::BlockEntry`].
    pub const BLOCK_CIDR_V6: &str = "GW_BLOCK_CIDR_V6";
    /// Hash map, [`acl::NetKeyV4`] (prefix length and network) to
    /// [`acl::BlockEntry`]: the same entries as `BLOCK_CIDR_V4`, looked up
    /// one prefix length at a time while there are few lengths
    /// ([`acl::PrefixLens`]).
    pub const BLOCK_NET_V4: &str = "GW_BLOCK_NET_V4";
    /// Hash map, [`acl::NetKeyV6`] to [`acl::BlockEntry`]: the same entries
    /// as `BLOCK_CIDR_V6`.
    pub const BLOCK_NET_V6: &str = "GW_BLOCK_NET_V6";
    /// LPM trie, IPv4 prefix to [`ratelimit::LimitOverride`].
    pub const LIMIT_V4: &str = "GW_LIMIT_V4";
    /// LPM trie, IPv6 prefix to [`ratelimit::LimitOverride`].
    pub const LIMIT_V6: &str = "GW_LIMIT_V6";
    /// LRU hash, [`ratelimit::SourceKey`] to [`ratelimit::Buckets`]: the token buckets.
    pub const BUCKETS: &str = "GW_BUCKETS";
    /// Per-CPU array of [`stats::Counter`], indexed by [`stats::Reason`].
    pub const COUNTERS: &str = "GW_COUNTERS";
    /// Per-CPU LRU hash, [`ratelimit::SourceKey`] to [`stats::SourceDrops`].
    pub const DROPS_BY_SOURCE: &str = "GW_DROP_SRC";
}

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "gateway_xdp";

/// Name of the empty baseline program (benchmarks only, never attached).
pub const BASELINE_PROGRAM_NAME: &str = "gateway_xdp_baseline";

/// Implements `aya::Pod` for plain-old-data map types.
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, has no padding and
            // every bit pattern is a valid value.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use pod;
