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
}

/// Rate limiting on protected ports is on. Off: only the ACLs apply.
pub const FLAG_RATE_LIMIT: u32 = 1;

crate::pod!(XdpConfig, Limit);
