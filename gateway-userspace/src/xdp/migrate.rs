//! Carrying runtime state over a map layout change. A new layout pins its
//! maps in a new `<pin_dir>/v<LAYOUT_VERSION>` directory, so blocks and
//! overrides pinned by an older gateway would be lost on upgrade. When the
//! new directory starts empty, the maps whose layout did not change (the
//! allow, block and limit maps) are copied from the newest older directory
//! that has them, skipping expired blocks; the counters, buckets and
//! per-source drops start afresh. The old directory is left in place and
//! the log says how to remove it.

use std::{net::IpAddr, path::Path};

use aya::maps::{HashMap, LpmTrie, Map, MapData, MapInfo};
use gateway_common::{LAYOUT_VERSION, acl::BlockEntry, maps as names, ratelimit::LimitOverride};

use super::{XdpMaps, layout::MAPS};
use crate::net::Net;

/// What an import copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Allowlist entries copied.
    pub allows: usize,
    /// Blocks copied (with their remaining TTL).
    pub blocks: usize,
    /// Blocks not copied because their TTL had passed.
    pub expired_skipped: usize,
    /// Per-source limit overrides copied.
    pub limits: usize,
}

/// The newest populated `v<N>` directory under `pin_dir` with `N` below the
/// current layout, if any.
pub fn older_layout_dir(pin_dir: &Path) -> Option<(u32, std::path::PathBuf)> {
    std::fs::read_dir(pin_dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e
                .file_name()
                .to_str()?
                .strip_prefix('v')?
                .parse::<u32>()
                .ok()?;
            let populated = std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some());
            (v < LAYOUT_VERSION && populated).then(|| (v, e.path()))
        })
        .max_by_key(|(v, _)| *v)
}

/// Why the entries of an older layout's maps could not be copied (the
/// gateway starts with the config's lists; the log says what to do by
/// hand).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// An old pinned map could not be opened.
    #[error("opening {}", .path.display())]
    Open {
        /// The old map's pin.
        path: std::path::PathBuf,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// Reading an old map failed.
    #[error(transparent)]
    Old(#[from] aya::maps::MapError),
    /// Writing into the new maps failed.
    #[error(transparent)]
    New(#[from] super::maps::MapsError),
}

type Result<T, E = MigrateError> = std::result::Result<T, E>;

/// Opens a pinned map of `old` if it exists and has this build's layout.
fn open<T>(old: &Path, name: &str) -> Result<Option<T>>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let path = old.join(name);
    if !path.exists() {
        return Ok(None);
    }
    let info = MapInfo::from_pin(&path)?;
    let same = MAPS.iter().any(|(n, k, v, max)| {
        *n == name
            && (
                info.key_size() as usize,
                info.value_size() as usize,
                info.max_entries(),
            ) == (*k, *v, *max)
    });
    if !same {
        tracing::warn!(map = %path.display(), "not imported: its layout differs from this build's");
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(|source| MigrateError::Open {
        path: path.clone(),
        source,
    })?;
    Ok(Some(T::try_from(Map::from_map_data(data)?)?))
}

fn lpm_net<const N: usize>(key: &aya::maps::lpm_trie::Key<[u8; N]>) -> Option<Net>
where
    IpAddr: From<[u8; N]>,
{
    Net::new(IpAddr::from(key.data()), key.prefix_len() as u8).ok()
}

/// Copies allow, block and limit entries pinned in `old` into `maps`.
/// Blocks that expired before `now_ns` (monotonic) are skipped.
pub fn import(maps: &mut XdpMaps, old: &Path, now_ns: u64) -> Result<Imported> {
    let mut got = Imported::default();
    let live = |e: &BlockEntry| e.is_active(now_ns);
    let mut blocks: Vec<(Net, BlockEntry)> = Vec::new();
    if let Some(m) = open::<HashMap<MapData, [u8; 4], BlockEntry>>(old, names::BLOCK_V4)? {
        for item in m.iter() {
            let (k, e) = item?;
            blocks.push((Net::host(IpAddr::from(k)), e));
        }
    }
    if let Some(m) = open::<HashMap<MapData, [u8; 16], BlockEntry>>(old, names::BLOCK_V6)? {
        for item in m.iter() {
            let (k, e) = item?;
            blocks.push((Net::host(IpAddr::from(k)), e));
        }
    }
    if let Some(m) = open::<LpmTrie<MapData, [u8; 4], BlockEntry>>(old, names::BLOCK_CIDR_V4)? {
        for item in m.iter() {
            let (k, e) = item?;
            blocks.extend(lpm_net(&k).map(|n| (n, e)));
        }
    }
    if let Some(m) = open::<LpmTrie<MapData, [u8; 16], BlockEntry>>(old, names::BLOCK_CIDR_V6)? {
        for item in m.iter() {
            let (k, e) = item?;
            blocks.extend(lpm_net(&k).map(|n| (n, e)));
        }
    }
    for (net, e) in blocks {
        if live(&e) {
            maps.block_add(&net, e)?;
            got.blocks += 1;
        } else {
            got.expired_skipped += 1;
        }
    }
    let mut limits: Vec<(Net, LimitOverride)> = Vec::new();
    if let Some(m) = open::<LpmTrie<MapData, [u8; 4], LimitOverride>>(old, names::LIMIT_V4)? {
        for item in m.iter() {
            let (k, l) = item?;
            limits.extend(lpm_net(&k).map(|n| (n, l)));
        }
    }
    if let Some(m) = open::<LpmTrie<MapData, [u8; 16], LimitOverride>>(old, names::LIMIT_V6)? {
        for item in m.iter() {
            let (k, l) = item?;
            limits.extend(lpm_net(&k).map(|n| (n, l)));
        }
    }
    for (net, l) in limits {
        maps.limit_set(&net, l)?;
        got.limits += 1;
    }
    let mut allows: Vec<(Net, u32)> = Vec::new();
    if let Some(m) = open::<LpmTrie<MapData, [u8; 4], u32>>(old, names::ALLOW_V4)? {
        for item in m.iter() {
            let (k, o) = item?;
            allows.extend(lpm_net(&k).map(|n| (n, o)));
        }
    }
    if let Some(m) = open::<LpmTrie<MapData, [u8; 16], u32>>(old, names::ALLOW_V6)? {
        for item in m.iter() {
            let (k, o) = item?;
            allows.extend(lpm_net(&k).map(|n| (n, o)));
        }
    }
    for (net, origin) in allows {
        maps.allow_add(&net, origin)?;
        got.allows += 1;
    }
    Ok(got)
}
