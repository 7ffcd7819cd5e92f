//! Allow and block lists: exact addresses (hash maps) and CIDRs (LPM tries),
//! one map per family. A block entry carries an optional expiry.

/// Exact-address block entries, per family.
pub const BLOCK_EXACT_MAX: u32 = 1 << 20;
/// CIDR block entries, per family.
pub const BLOCK_CIDR_MAX: u32 = 1 << 16;
/// Allowlist CIDR entries, per family.
pub const ALLOW_MAX: u32 = 1 << 14;

/// Length of the free-text reason stored with a block.
pub const REASON_LEN: usize = 48;

/// Why an address is blocked. Stored as `u32` in [`BlockEntry::source`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockSource {
    /// An operator (`gateway block add`).
    Operator = 0,
    /// The static `block` list of the config file.
    Config = 1,
    /// Escalated from L7 offences.
    Escalation = 2,
}

/// Set in [`BlockEntry::source`] (over the [`BlockSource`]) when the block
/// is cluster-wide: published to, or received from, the other gateway
/// nodes. The kernel ignores `source`; userspace uses the flag to keep the
/// node in step with the cluster.
pub const BLOCK_FLAG_CLUSTER: u32 = 1 << 8;

impl BlockSource {
    /// The source kind of a stored `source` field (flags ignored).
    pub fn from_u32(v: u32) -> Self {
        match v & !BLOCK_FLAG_CLUSTER {
            1 => Self::Config,
            2 => Self::Escalation,
            _ => Self::Operator,
        }
    }
}

/// The value of every blocklist map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEntry {
    /// `CLOCK_MONOTONIC` (= `bpf_ktime_get_ns`) time after which the entry no
    /// longer drops; 0 means never.
    pub expires_ns: u64,
    /// Wall-clock creation time, seconds since the Unix epoch (for display).
    pub created_unix: u64,
    /// A [`BlockSource`] as `u32`.
    pub source: u32,
    /// How many times this source has been blocked (escalation grows the TTL).
    pub offences: u32,
    /// UTF-8 reason, NUL-padded.
    pub reason: [u8; REASON_LEN],
}

impl BlockEntry {
    /// Whether the entry still drops at monotonic time `now_ns`.
    #[inline(always)]
    pub fn is_active(&self, now_ns: u64) -> bool {
        self.expires_ns == 0 || now_ns < self.expires_ns
    }

    /// Whether the block is cluster-wide ([`BLOCK_FLAG_CLUSTER`]).
    #[inline(always)]
    pub fn is_cluster(&self) -> bool {
        self.source & BLOCK_FLAG_CLUSTER != 0
    }

    /// The stored reason: the bytes of [`BlockEntry::reason`] before the
    /// first NUL (all of them when it is full). UTF-8 when written by
    /// [`encode_reason`]; show it with a lossy conversion.
    pub fn reason_bytes(&self) -> &[u8] {
        let end = self
            .reason
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(REASON_LEN);
        &self.reason[..end]
    }
}

/// `reason` as the NUL-padded [`BlockEntry::reason`] field: cut to
/// [`REASON_LEN`] bytes at a char boundary, so the stored bytes stay UTF-8.
pub fn encode_reason(reason: &str) -> [u8; REASON_LEN] {
    let mut out = [0u8; REASON_LEN];
    let mut end = reason.len().min(REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&reason.as_bytes()[..end]);
    out
}

/// The value of the allowlist tries: a `u32` marker (1), present = allowed.
pub type AllowValue = u32;

/// Most distinct prefix lengths per family for which the program looks CIDR
/// blocks up by hash, one exact lookup per length ([`PrefixLens`]); with more,
/// it walks the LPM trie. A hash lookup costs about what one trie node does,
/// and a trie lookup walks about one node per bit that tells its entries
/// apart (16 or more with 65,536 entries), so up to this many lengths the
/// hashes are cheaper on both the drop and the pass path. The same idea as
/// Cilium's prefix-length loop over hash maps (`LPM_LOOKUP_FN`).
pub const HASHED_PREFIX_LENS_MAX: usize = 4;

/// Key of the per-prefix-length CIDR block hash maps (`GW_BLOCK_NET_V4`):
/// the prefix length, then the network address with its host bits zero.
/// The same bytes as an LPM trie key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetKeyV4 {
    /// 0..=32.
    pub prefix_len: u32,
    /// Network byte order, host bits zero.
    pub addr: [u8; 4],
}

/// Key of `GW_BLOCK_NET_V6`, as [`NetKeyV4`] for IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetKeyV6 {
    /// 0..=128.
    pub prefix_len: u32,
    /// Network byte order, host bits zero.
    pub addr: [u8; 16],
}

/// The distinct prefix lengths of one family's CIDR blocks, as the program
/// looks them up (a field of the config map). `count == 0` with CIDR blocks
/// present means "more than [`HASHED_PREFIX_LENS_MAX`] lengths: walk the
/// trie"; `1..=HASHED_PREFIX_LENS_MAX` means "look up `lens[..count]` in the
/// per-length hash map", longest first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixLens {
    /// How many of `lens` are in use; 0 = use the trie.
    pub count: u8,
    /// Prefix lengths, longest first; unused ones are 0.
    pub lens: [u8; HASHED_PREFIX_LENS_MAX],
    /// Padding, always 0 (keeps the struct free of implicit padding).
    pub pad: [u8; 3],
}

crate::pod!(BlockEntry, NetKeyV4, NetKeyV6, PrefixLens);
