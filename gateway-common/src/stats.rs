//! Per-CPU verdict counters and the bounded per-source drop counter.

/// Why the program returned what it returned. Index into `GW_COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// IP packet that no rule dropped.
    Passed = 0,
    /// Source matched the allowlist.
    Allowlisted = 1,
    /// Source matched the blocklist (exact or CIDR).
    DroppedBlocklist = 2,
    /// Source over its packets-per-second budget.
    DroppedPps = 3,
    /// Source over its new-connection (SYN) budget.
    DroppedSyn = 4,
    /// Not IP, or truncated/unparsable: passed untouched.
    ParsePass = 5,
    /// A fragment or IPv6 header chain that hides the transport header
    /// from the filter (RFC 1858 tiny fragment, RFC 3128 overlapping
    /// fragment, RFC 7112 incomplete header chain, or an IPv6 chain longer
    /// than any RFC 8200 order allows).
    DroppedFragment = 6,
}

/// Number of [`Reason`] variants (size of the counter array).
pub const REASONS: u32 = 7;

impl Reason {
    /// Every reason, in counter-index order.
    pub const ALL: [Reason; REASONS as usize] = [
        Reason::Passed,
        Reason::Allowlisted,
        Reason::DroppedBlocklist,
        Reason::DroppedPps,
        Reason::DroppedSyn,
        Reason::ParsePass,
        Reason::DroppedFragment,
    ];

    /// A stable snake_case name (CLI, JSON, metrics label).
    pub fn name(self) -> &'static str {
        match self {
            Reason::Passed => "passed",
            Reason::Allowlisted => "allowlisted",
            Reason::DroppedBlocklist => "dropped_blocklist",
            Reason::DroppedPps => "dropped_pps",
            Reason::DroppedSyn => "dropped_syn",
            Reason::ParsePass => "parse_pass",
            Reason::DroppedFragment => "dropped_fragment",
        }
    }

    /// Whether the verdict was `XDP_DROP` (every `Dropped*` reason).
    pub fn is_drop(self) -> bool {
        matches!(
            self,
            Reason::DroppedBlocklist
                | Reason::DroppedPps
                | Reason::DroppedSyn
                | Reason::DroppedFragment
        )
    }
}

/// Value of the per-CPU counter array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets counted under this reason on this CPU.
    pub packets: u64,
    /// Their bytes, from the Ethernet header on (the XDP frame length).
    pub bytes: u64,
}

/// Sources tracked by the per-source drop counter (an LRU: the least
/// recently dropping source is evicted first).
pub const DROP_SOURCES_MAX: u32 = 4096;

/// Value of the per-source drop counter (per CPU), keyed by
/// [`crate::ratelimit::SourceKey`] with the full source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceDrops {
    /// Packets dropped from this source on this CPU.
    pub packets: u64,
    /// Monotonic ns of the last drop.
    pub last_ns: u64,
    /// [`Reason`] of the last drop.
    pub last_reason: u32,
    /// Explicit padding to 8-byte alignment; always 0.
    pub _pad: u32,
}

crate::pod!(Counter, SourceDrops);
