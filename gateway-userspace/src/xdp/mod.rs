//! The kernel fast path from userspace: loading and attaching the XDP
//! program (`loader`), typed access to its maps (`maps`), bpffs handling
//! (`bpffs`) and the sweeper that
//! removes expired blocks (`sweeper`). This is the only module with `unsafe`.

pub mod apply;
pub mod bpffs;
pub mod config;
mod expiry;
pub mod layout;
pub mod loader;
pub mod maps;
pub mod migrate;
pub mod sweeper;

pub use loader::{AttachedXdp, Loader, detach_pinned, pinned_links};
pub use maps::XdpMaps;

/// The compiled XDP program, embedded at build time.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway"));

/// A short identifier of the embedded eBPF object (FNV-1a 64 of its bytes),
/// printed by `gateway version` so operators can tell builds apart.
pub fn build_id() -> String {
    let hash = PROGRAM.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}
