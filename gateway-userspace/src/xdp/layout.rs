//! What every pinned map must look like. Maps pinned by an earlier run are
//! reused by name; before that, each pin is checked against this table so a
//! map with another layout (a different gateway build) is reported instead
//! of being silently misread.

use std::{mem::size_of, path::Path};

use aya::maps::MapInfo;
use gateway_common::{
    acl::{ALLOW_MAX, BLOCK_CIDR_MAX, BLOCK_EXACT_MAX, BlockEntry, NetKeyV4, NetKeyV6},
    config::{PORT_WORDS, XdpConfig},
    maps as names,
    ratelimit::{BUCKETS_MAX, Buckets, LIMIT_MAX, LimitOverride, SourceKey},
    stats::{Counter, DROP_SOURCES_MAX, REASONS, SourceDrops},
};

/// (name, key size, value size, max entries)
type Spec = (&'static str, usize, usize, u32);

/// LPM trie keys are a u32 prefix length followed by the address.
const LPM4: usize = 4 + 4;
const LPM6: usize = 4 + 16;

/// Every pinned map as (name, key size, value size, max entries) in bytes and entries, as this
/// build's program declares them.
pub const MAPS: [Spec; 15] = [
    (names::CONFIG, 4, size_of::<XdpConfig>(), 1),
    (names::PROTECTED_PORTS, 4, 8, PORT_WORDS),
    (names::ALLOW_V4, LPM4, 4, ALLOW_MAX),
    (names::ALLOW_V6, LPM6, 4, ALLOW_MAX),
    (names::BLOCK_V4, 4, size_of::<BlockEntry>(), BLOCK_EXACT_MAX),
    (
        names::BLOCK_V6,
        16,
        size_of::<BlockEntry>(),
        BLOCK_EXACT_MAX,
    ),
    (
        names::BLOCK_CIDR_V4,
        LPM4,
        size_of::<BlockEntry>(),
        BLOCK_CIDR_MAX,
    ),
    (
        names::BLOCK_CIDR_V6,
        LPM6,
        size_of::<BlockEntry>(),
        BLOCK_CIDR_MAX,
    ),
    (
        names::BLOCK_NET_V4,
        size_of::<NetKeyV4>(),
        size_of::<BlockEntry>(),
        BLOCK_CIDR_MAX,
    ),
    (
        names::BLOCK_NET_V6,
        size_of::<NetKeyV6>(),
        size_of::<BlockEntry>(),
        BLOCK_CIDR_MAX,
    ),
    (names::LIMIT_V4, LPM4, size_of::<LimitOverride>(), LIMIT_MAX),
    (names::LIMIT_V6, LPM6, size_of::<LimitOverride>(), LIMIT_MAX),
    (
        names::BUCKETS,
        size_of::<SourceKey>(),
        size_of::<Buckets>(),
        BUCKETS_MAX,
    ),
    (names::COUNTERS, 4, size_of::<Counter>(), REASONS),
    (
        names::DROPS_BY_SOURCE,
        size_of::<SourceKey>(),
        size_of::<SourceDrops>(),
        DROP_SOURCES_MAX,
    ),
];

/// Why the maps pinned by an earlier run cannot be reused.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A pinned map's description could not be read.
    #[error(transparent)]
    Info(#[from] aya::maps::MapError),
    /// A pinned map was created by a build with another layout (`Display`
    /// says what to move away).
    #[error(
        "pinned map {} has key/value size {}/{} and {} entries, but this gateway expects {}/{} and {}; \
         it was created by a different build. Move {} away to start with empty maps (its blocks are lost), \
         or set another [xdp] pin_dir",
        .path.display(), .found.0, .found.1, .found.2, .want.0, .want.1, .want.2, .dir.display()
    )]
    Mismatch {
        /// The pinned map.
        path: std::path::PathBuf,
        /// Its key size, value size and entries.
        found: (usize, usize, u32),
        /// This build's.
        want: (usize, usize, u32),
        /// The pin directory.
        dir: std::path::PathBuf,
    },
}

/// Fails if a map pinned in `dir` does not match the layout of this build.
pub fn check_pins(dir: &Path) -> Result<(), LayoutError> {
    for (name, key, value, max) in MAPS {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path)?;
        let found = (
            info.key_size() as usize,
            info.value_size() as usize,
            info.max_entries(),
        );
        if found != (key, value, max) {
            return Err(LayoutError::Mismatch {
                path,
                found,
                want: (key, value, max),
                dir: dir.to_owned(),
            });
        }
    }
    Ok(())
}
