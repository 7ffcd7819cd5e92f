//! Typed access to the XDP program's maps. Userspace owns every policy
//! decision and writes it here; the program only reads these (and writes its
//! own counters and buckets). Addresses go in as [`Net`]s and come out as
//! [`Net`]s; the map-level byte layout stays in this file.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{
    Pod,
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap, lpm_trie::Key},
};
use gateway_common::{
    acl::{BlockEntry, BlockSource, HASHED_PREFIX_LENS_MAX, NetKeyV4, NetKeyV6, PrefixLens},
    config::*,
    maps as names,
    ratelimit::{Buckets, LimitOverride, SourceKey},
    stats::{Counter, REASONS, Reason, SourceDrops},
};

use super::expiry::ExpiryIndex;
use crate::net::Net;

/// Who put an address on the allowlist (the allowlist map's value).
pub const ALLOW_FROM_CONFIG: u32 = 1;
/// Added by an operator at runtime (`gateway allow add`); kept across config reloads.
pub const ALLOW_FROM_OPERATOR: u32 = 2;

/// Typed handles on the XDP program's pinned maps (names and layouts in `gateway_common`), one per
/// family where the kernel needs two. Every method is one or a few `bpf(2)` calls; errors are aya's
/// map errors carrying the kernel's errno (a full map, missing CAP_BPF). The config map's presence
/// bits are kept in step with what the lookup maps hold.
pub struct XdpMaps {
    config: Array<MapData, XdpConfig>,
    ports: Array<MapData, u64>,
    allow: Prefixes<u32>,
    /// Blocks of one address (exact match, the fast path).
    block_host: Hosts<BlockEntry>,
    /// Blocks of a range (a trie and a per-prefix-length hash).
    block_cidr: Ranges,
    limit: Prefixes<LimitOverride>,
    buckets: HashMap<MapData, SourceKey, Buckets>,
    counters: PerCpuArray<MapData, Counter>,
    drop_src: PerCpuHashMap<MapData, SourceKey, SourceDrops>,
    /// The presence bits last written to the config map (we are its only
    /// writer), so adding entries costs no extra syscall.
    present: u32,
    /// The CIDR prefix lengths last written to the config map.
    prefix_lens: [PrefixLens; 2],
    /// When each block with a TTL expires, for the sweeper.
    expiry: ExpiryIndex,
    /// The blocks whose source is the config's static list, indexed when
    /// the maps are opened and on every write, so a reload finds the ones
    /// to remove without walking a blocklist of a million entries while
    /// it holds the maps' lock (which escalation needs).
    config_blocks: BTreeSet<Net>,
    /// Full walks of the blocklist by this handle (one system call per
    /// entry each), for tests that check a reload does none.
    block_walks: AtomicU64,
    /// Set after `gateway upgrade` handed the maps to a successor: every
    /// write is refused from then on ([`MapsError::HandedOver`]), so the
    /// successor is the maps' only writer (its counts of CIDR prefix
    /// lengths and its presence bits are then the only ones written).
    retired: bool,
}

/// A map key (IPv4 or IPv6 octets and a prefix length) as a [`Net`].
fn net_of(data: impl Into<IpAddr>, prefix_len: u32) -> Option<Net> {
    Net::new(data.into(), u8::try_from(prefix_len).ok()?).ok()
}

/// The source-key form of an address (IPv4-mapped for v4).
pub fn source_key(addr: IpAddr) -> SourceKey {
    let addr = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    SourceKey { addr }
}

fn source_addr(key: &SourceKey) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(key.addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Why a map operation failed: the kernel refused it, or the loaded
/// object is not the one this build expects. Never the caller's input (a
/// missing key is `None` or `false`, not an error).
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// The loaded XDP object lacks a map this build expects (an eBPF
    /// object from another build).
    #[error("the XDP object has no map {0}")]
    Missing(String),
    /// A map's type or key/value layout differs from this build's.
    #[error("map {name} has an unexpected type or layout")]
    Layout {
        /// The map's name.
        name: String,
        /// What aya found.
        #[source]
        source: aya::maps::MapError,
    },
    /// A system call on a map failed (a lookup, update, delete or walk).
    #[error(transparent)]
    Kernel(#[from] aya::maps::MapError),
    /// This process handed the XDP maps to its successor (`gateway
    /// upgrade`); changes go to the new process.
    #[error(
        "this gateway handed the XDP maps to its successor (gateway upgrade); send changes to the new process"
    )]
    HandedOver,
}

/// A map operation's outcome.
pub type Result<T, E = MapsError> = std::result::Result<T, E>;

fn take<T>(ebpf: &mut aya::Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| MapsError::Missing(name.to_owned()))?;
    T::try_from(map).map_err(|source| MapsError::Layout {
        name: name.to_owned(),
        source,
    })
}

/// Whether a map operation failed because the key was absent.
fn is_not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// One value kind in an IPv4 and an IPv6 LPM trie, used as one map keyed
/// by [`Net`] (the allowlist, range blocks, limit overrides): the family
/// picks the trie, the prefix length is the LPM key's.
struct Prefixes<V: Pod> {
    v4: LpmTrie<MapData, [u8; 4], V>,
    v6: LpmTrie<MapData, [u8; 16], V>,
    /// The config map's presence bits of the IPv4 and the IPv6 trie.
    bits: [u32; 2],
}

impl<V: Pod> Prefixes<V> {
    fn take(ebpf: &mut aya::Ebpf, names: [&str; 2], bits: [u32; 2]) -> Result<Self> {
        Ok(Self {
            v4: take(ebpf, names[0])?,
            v6: take(ebpf, names[1])?,
            bits,
        })
    }

    /// Adds or replaces `net`; returns the presence bit of its trie.
    fn insert(&mut self, net: &Net, value: V) -> Result<u32> {
        let p = u32::from(net.prefix_len());
        match net.addr() {
            IpAddr::V4(a) => self.v4.insert(&Key::new(p, a.octets()), value, 0)?,
            IpAddr::V6(a) => self.v6.insert(&Key::new(p, a.octets()), value, 0)?,
        }
        Ok(self.bits[usize::from(!net.is_ipv4())])
    }

    /// Removes `net` (exactly this prefix); whether it was there.
    fn remove(&mut self, net: &Net) -> Result<bool> {
        let p = u32::from(net.prefix_len());
        ignore_missing(match net.addr() {
            IpAddr::V4(a) => self.v4.remove(&Key::new(p, a.octets())),
            IpAddr::V6(a) => self.v6.remove(&Key::new(p, a.octets())),
        })
    }

    /// Appends the entries, IPv4 first, until `out` holds `max`.
    fn list(&self, out: &mut Vec<(Net, V)>, max: usize) -> Result<()> {
        for item in self.v4.iter() {
            if out.len() >= max {
                return Ok(());
            }
            let (k, v) = item?;
            out.extend(net_of(k.data(), k.prefix_len()).map(|n| (n, v)));
        }
        for item in self.v6.iter() {
            if out.len() >= max {
                return Ok(());
            }
            let (k, v) = item?;
            out.extend(net_of(k.data(), k.prefix_len()).map(|n| (n, v)));
        }
        Ok(())
    }

    /// The presence bits of the tries that hold an entry.
    fn presence(&self) -> u32 {
        let mut p = 0;
        if self.v4.keys().next().is_some() {
            p |= self.bits[0];
        }
        if self.v6.keys().next().is_some() {
            p |= self.bits[1];
        }
        p
    }
}

/// One value kind in an IPv4 and an IPv6 hash map keyed by the address
/// (host blocks: an exact match is cheaper in the program than an LPM walk).
struct Hosts<V: Pod> {
    v4: HashMap<MapData, [u8; 4], V>,
    v6: HashMap<MapData, [u8; 16], V>,
    /// The config map's presence bits of the IPv4 and the IPv6 map.
    bits: [u32; 2],
}

impl<V: Pod> Hosts<V> {
    fn take(ebpf: &mut aya::Ebpf, names: [&str; 2], bits: [u32; 2]) -> Result<Self> {
        Ok(Self {
            v4: take(ebpf, names[0])?,
            v6: take(ebpf, names[1])?,
            bits,
        })
    }

    /// Adds or replaces `addr`; returns the presence bit of its map.
    fn insert(&mut self, addr: IpAddr, value: V) -> Result<u32> {
        match addr {
            IpAddr::V4(a) => self.v4.insert(a.octets(), value, 0)?,
            IpAddr::V6(a) => self.v6.insert(a.octets(), value, 0)?,
        }
        Ok(self.bits[usize::from(addr.is_ipv6())])
    }

    fn remove(&mut self, addr: IpAddr) -> Result<bool> {
        ignore_missing(match addr {
            IpAddr::V4(a) => self.v4.remove(&a.octets()),
            IpAddr::V6(a) => self.v6.remove(&a.octets()),
        })
    }

    fn get(&self, addr: IpAddr) -> Result<Option<V>> {
        found(match addr {
            IpAddr::V4(a) => self.v4.get(&a.octets(), 0),
            IpAddr::V6(a) => self.v6.get(&a.octets(), 0),
        })
    }

    /// Appends the entries as host [`Net`]s, IPv4 first, until `out`
    /// holds `max`.
    fn list(&self, out: &mut Vec<(Net, V)>, max: usize) -> Result<()> {
        for item in self.v4.iter() {
            if out.len() >= max {
                return Ok(());
            }
            let (k, v) = item?;
            out.extend(net_of(k, 32).map(|n| (n, v)));
        }
        for item in self.v6.iter() {
            if out.len() >= max {
                return Ok(());
            }
            let (k, v) = item?;
            out.extend(net_of(k, 128).map(|n| (n, v)));
        }
        Ok(())
    }

    fn presence(&self) -> u32 {
        let mut p = 0;
        if self.v4.keys().next().is_some() {
            p |= self.bits[0];
        }
        if self.v6.keys().next().is_some() {
            p |= self.bits[1];
        }
        p
    }
}

/// Range blocks, stored twice with the same entries: an LPM trie per family
/// (any number of prefix lengths) and a hash map per family keyed by
/// (prefix length, network), which the program looks up once per length
/// while a family has at most [`HASHED_PREFIX_LENS_MAX`] distinct lengths
/// (a hash lookup is a fraction of a trie walk over 65,536 ranges).
/// `per_len` counts the entries of each prefix length, so the lengths in
/// use are known without walking a map.
struct Ranges {
    trie: Prefixes<BlockEntry>,
    net_v4: HashMap<MapData, NetKeyV4, BlockEntry>,
    net_v6: HashMap<MapData, NetKeyV6, BlockEntry>,
    /// Entries per prefix length: IPv4 lengths 0..=32, IPv6 0..=128.
    per_len_v4: [u32; 33],
    per_len_v6: [u32; 129],
}

fn net_key_v4(net: &Net, a: std::net::Ipv4Addr) -> NetKeyV4 {
    NetKeyV4 {
        prefix_len: u32::from(net.prefix_len()),
        addr: a.octets(),
    }
}

fn net_key_v6(net: &Net, a: std::net::Ipv6Addr) -> NetKeyV6 {
    NetKeyV6 {
        prefix_len: u32::from(net.prefix_len()),
        addr: a.octets(),
    }
}

/// The config map's view of one family's prefix-length counts: the
/// lengths in use, longest first, or `count == 0` (the trie) when there are
/// more than [`HASHED_PREFIX_LENS_MAX`].
fn prefix_lens(per_len: &[u32]) -> PrefixLens {
    let mut out = PrefixLens::default();
    let mut n = 0usize;
    for (len, _) in per_len.iter().enumerate().rev().filter(|(_, c)| **c > 0) {
        if n == HASHED_PREFIX_LENS_MAX {
            return PrefixLens::default();
        }
        out.lens[n] = len as u8;
        n += 1;
    }
    out.count = n as u8;
    out
}

impl Ranges {
    /// Takes the maps and indexes the hash map's entries by prefix length.
    ///
    /// Writes keep the hash map a subset of the trie at every step (an
    /// insert writes the trie first, a removal the hash first), so a
    /// process stopped between two writes leaves an entry in the trie only.
    /// With `restore`, such entries are copied into the hash map: only the
    /// handle that writes the maps does that, never a second handle opened
    /// for reading (it would race the writers).
    fn take(ebpf: &mut aya::Ebpf, restore: bool) -> Result<Self> {
        let mut r = Self {
            trie: Prefixes::take(
                ebpf,
                [names::BLOCK_CIDR_V4, names::BLOCK_CIDR_V6],
                [PRESENT_BLOCK_CIDR_V4, PRESENT_BLOCK_CIDR_V6],
            )?,
            net_v4: take(ebpf, names::BLOCK_NET_V4)?,
            net_v6: take(ebpf, names::BLOCK_NET_V6)?,
            per_len_v4: [0; 33],
            per_len_v6: [0; 129],
        };
        if restore {
            let mut all = Vec::new();
            r.trie.list(&mut all, usize::MAX)?;
            for (net, e) in &all {
                if r.get(net)?.is_none() {
                    r.hash_insert(net, *e)?;
                }
            }
        }
        r.recount()?;
        Ok(r)
    }

    /// Counts the hash map's entries per prefix length (one walk).
    fn recount(&mut self) -> Result<()> {
        self.per_len_v4 = [0; 33];
        self.per_len_v6 = [0; 129];
        for k in self.net_v4.keys() {
            let k = k?;
            if let Some(c) = self.per_len_v4.get_mut(k.prefix_len as usize) {
                *c += 1;
            }
        }
        for k in self.net_v6.keys() {
            let k = k?;
            if let Some(c) = self.per_len_v6.get_mut(k.prefix_len as usize) {
                *c += 1;
            }
        }
        Ok(())
    }

    fn count(&mut self, net: &Net) -> &mut u32 {
        let len = usize::from(net.prefix_len());
        if net.is_ipv4() {
            &mut self.per_len_v4[len]
        } else {
            &mut self.per_len_v6[len]
        }
    }

    /// Adds or replaces `net`: the trie first, then the hash map (so the
    /// hash map never holds what the trie lacks); returns the presence bit.
    /// `in_trie` runs once the trie holds the entry (before the hash
    /// write, which may fail): the handle's indexes follow the trie, which
    /// is what lists and restarts read.
    fn insert(&mut self, net: &Net, entry: BlockEntry, in_trie: impl FnOnce()) -> Result<u32> {
        let new = self.get(net)?.is_none();
        let bit = self.trie.insert(net, entry)?;
        in_trie();
        // A refused hash write leaves the range in the trie only (listed,
        // and enforced while the family uses the trie); the next start of
        // the writing handle copies it into the hash map. Taking it back out
        // of the trie could remove a range that was there before this call.
        self.hash_insert(net, entry)?;
        if new {
            *self.count(net) += 1;
        }
        Ok(bit)
    }

    /// Adds or replaces `net` in the hash map only.
    fn hash_insert(&mut self, net: &Net, entry: BlockEntry) -> Result<()> {
        match net.addr() {
            IpAddr::V4(a) => self.net_v4.insert(net_key_v4(net, a), entry, 0)?,
            IpAddr::V6(a) => self.net_v6.insert(net_key_v6(net, a), entry, 0)?,
        }
        Ok(())
    }

    /// Removes exactly `net`: the hash map first, then the trie; whether
    /// it was there. The per-length counts follow the hash map.
    fn remove(&mut self, net: &Net) -> Result<bool> {
        let hashed = ignore_missing(match net.addr() {
            IpAddr::V4(a) => self.net_v4.remove(&net_key_v4(net, a)),
            IpAddr::V6(a) => self.net_v6.remove(&net_key_v6(net, a)),
        })?;
        if hashed {
            let c = self.count(net);
            *c = c.saturating_sub(1);
        }
        let in_trie = self.trie.remove(net)?;
        Ok(hashed || in_trie)
    }

    /// The entry of exactly `net`, from the hash map: a trie lookup from
    /// userspace is a longest-prefix match and would answer for a covering
    /// range.
    fn get(&self, net: &Net) -> Result<Option<BlockEntry>> {
        found(match net.addr() {
            IpAddr::V4(a) => self.net_v4.get(&net_key_v4(net, a), 0),
            IpAddr::V6(a) => self.net_v6.get(&net_key_v6(net, a), 0),
        })
    }

    fn list(&self, out: &mut Vec<(Net, BlockEntry)>, max: usize) -> Result<()> {
        self.trie.list(out, max)
    }

    fn presence(&self) -> u32 {
        self.trie.presence()
    }

    /// How the program should look each family up (see [`PrefixLens`]).
    fn prefix_lens(&self) -> [PrefixLens; 2] {
        [prefix_lens(&self.per_len_v4), prefix_lens(&self.per_len_v6)]
    }
}

/// A lookup's value, `None` when the key is absent.
fn found<V>(r: Result<V, aya::maps::MapError>) -> Result<Option<V>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl XdpMaps {
    /// Takes the maps out of a loaded object, as the handle that writes
    /// them (it also restores CIDR entries a stopped process left in the
    /// trie only, see `Ranges::take`).
    pub fn take_from(ebpf: &mut aya::Ebpf) -> Result<Self> {
        Self::take_as(ebpf, true)
    }

    /// Takes the maps for reading only (lists, stats, the dashboard): no
    /// repair at start, which would race the writing handle.
    pub fn take_for_reading(ebpf: &mut aya::Ebpf) -> Result<Self> {
        Self::take_as(ebpf, false)
    }

    fn take_as(ebpf: &mut aya::Ebpf, writer: bool) -> Result<Self> {
        Self {
            config: take(ebpf, names::CONFIG)?,
            ports: take(ebpf, names::PROTECTED_PORTS)?,
            allow: Prefixes::take(
                ebpf,
                [names::ALLOW_V4, names::ALLOW_V6],
                [PRESENT_ALLOW_V4, PRESENT_ALLOW_V6],
            )?,
            block_host: Hosts::take(
                ebpf,
                [names::BLOCK_V4, names::BLOCK_V6],
                [PRESENT_BLOCK_V4, PRESENT_BLOCK_V6],
            )?,
            block_cidr: Ranges::take(ebpf, writer)?,
            limit: Prefixes::take(
                ebpf,
                [names::LIMIT_V4, names::LIMIT_V6],
                [PRESENT_LIMIT_V4, PRESENT_LIMIT_V6],
            )?,
            buckets: take(ebpf, names::BUCKETS)?,
            counters: take(ebpf, names::COUNTERS)?,
            drop_src: take(ebpf, names::DROPS_BY_SOURCE)?,
            present: 0,
            prefix_lens: [PrefixLens::default(); 2],
            expiry: ExpiryIndex::default(),
            config_blocks: BTreeSet::new(),
            block_walks: AtomicU64::new(0),
            retired: false,
        }
        .with_presence()
        .with_expiry_index()
    }

    /// Indexes the blocks already in the (pinned) maps, once.
    fn with_expiry_index(mut self) -> Result<Self> {
        self.reindex()?;
        Ok(self)
    }

    /// Rebuilds the expiry and config-block indexes from one walk of the
    /// blocklist (at open, and after a handover, when the previous process
    /// may have written since this handle was opened).
    fn reindex(&mut self) -> Result<()> {
        let blocks = self.block_list()?;
        self.expiry = ExpiryIndex::default();
        self.config_blocks.clear();
        for (net, e) in blocks {
            self.expiry.set(net, e.expires_ns);
            if e.source == BlockSource::Config as u32 {
                self.config_blocks.insert(net);
            }
        }
        Ok(())
    }

    fn with_presence(mut self) -> Self {
        self.count_lookups();
        self
    }

    /// Sets the presence bits and CIDR prefix lengths from what the maps
    /// hold (written to the config map by the next `set_config`).
    fn count_lookups(&mut self) {
        self.present = self.presence();
        self.prefix_lens = self.block_cidr.prefix_lens();
    }

    /// Stops this handle writing: after a handover the successor owns the
    /// maps. Reads still work.
    pub fn retire(&mut self) {
        self.retired = true;
    }

    /// Undoes [`XdpMaps::retire`] (a handover that failed).
    pub fn resume_writing(&mut self) {
        self.retired = false;
    }

    /// Counts again what the maps hold (CIDR entries per prefix length,
    /// presence, the expiry and config-block indexes) and writes the config's lookup settings from that, even if
    /// this handle believes them unchanged: after a handover, the previous
    /// process may have added or swept entries since this handle was
    /// opened.
    pub fn recount(&mut self) -> Result<()> {
        self.writable()?;
        self.block_cidr.recount()?;
        // One walk per handover (not per reload): config blocks and expiries
        // the previous process wrote after this handle was opened.
        self.reindex()?;
        self.count_lookups();
        let cfg = self.config()?;
        self.set_config(cfg)
    }

    fn writable(&self) -> Result<()> {
        if self.retired {
            Err(MapsError::HandedOver)
        } else {
            Ok(())
        }
    }

    // ---- config and ports ----

    /// The program's settings as stored (index 0 of `GW_CONFIG`).
    pub fn config(&self) -> Result<XdpConfig> {
        Ok(self.config.get(&0, 0)?)
    }

    /// Writes the settings; the presence bits and the CIDR prefix lengths
    /// are computed here, not taken from `cfg`.
    pub fn set_config(&mut self, mut cfg: XdpConfig) -> Result<()> {
        self.writable()?;
        cfg.present = self.present;
        cfg.block_prefix_lens = self.prefix_lens;
        Ok(self.config.set(0, cfg, 0)?)
    }

    /// Which lookup maps hold at least one entry. A map that cannot be read
    /// counts as present, so the program never skips a real entry.
    fn presence(&self) -> u32 {
        self.allow.presence()
            | self.block_host.presence()
            | self.block_cidr.presence()
            | self.limit.presence()
    }

    /// Recomputes the presence bits after entries were added or removed.
    /// An entry is written before its bit is set, and its bit cleared only
    /// after the map is empty, so no packet misses a live entry.
    fn refresh_presence(&mut self) -> Result<()> {
        let present = self.presence();
        self.write_presence(present)
    }

    /// Sets one presence bit after an insert into its map.
    fn mark_present(&mut self, bit: u32) -> Result<()> {
        self.write_presence(self.present | bit)
    }

    /// Writes the presence bits and the CIDR prefix lengths when either
    /// changed. Called after an insert (so the program never looks for a
    /// length before its entries are there) and after a removal.
    fn write_presence(&mut self, present: u32) -> Result<()> {
        let lens = self.block_cidr.prefix_lens();
        if present != self.present || lens != self.prefix_lens {
            let mut cfg = self.config()?;
            cfg.present = present;
            cfg.block_prefix_lens = lens;
            self.config.set(0, cfg, 0)?;
            self.present = present;
            self.prefix_lens = lens;
        }
        Ok(())
    }

    /// Makes `ports` exactly the protected set.
    /// Writes only the bitmap words that change, so a reload that keeps
    /// the ports costs 1,024 reads and no write.
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<()> {
        self.writable()?;
        let mut want = vec![0u64; PORT_WORDS as usize];
        for &p in ports {
            want[usize::from(p >> 6)] |= 1 << (p & 63);
        }
        for (i, word) in want.into_iter().enumerate() {
            let i = i as u32;
            if self.ports.get(&i, 0)? != word {
                self.ports.set(i, word, 0)?;
            }
        }
        Ok(())
    }

    /// The protected ports, ascending.
    pub fn ports(&self) -> Result<Vec<u16>> {
        let mut v = Vec::new();
        for i in 0..PORT_WORDS {
            let word = self.ports.get(&i, 0)?;
            for bit in 0..64u32 {
                if word & (1 << bit) != 0 {
                    v.push((i * 64 + bit) as u16);
                }
            }
        }
        Ok(v)
    }

    // ---- allowlist ----

    /// Adds or replaces an allowlist entry; `origin` is [`ALLOW_FROM_CONFIG`] or
    /// [`ALLOW_FROM_OPERATOR`].
    pub fn allow_add(&mut self, net: &Net, origin: u32) -> Result<()> {
        self.writable()?;
        let bit = self.allow.insert(net, origin)?;
        self.mark_present(bit)
    }

    /// Removes the allowlist entry for exactly `net`; `false` if there was none.
    pub fn allow_del(&mut self, net: &Net) -> Result<bool> {
        self.writable()?;
        let removed = self.allow.remove(net)?;
        self.refresh_presence()?;
        Ok(removed)
    }

    /// Every allowlist entry with who added it.
    pub fn allow_list(&self) -> Result<Vec<(Net, u32)>> {
        let mut out = Vec::new();
        self.allow.list(&mut out, usize::MAX)?;
        out.sort();
        Ok(out)
    }

    // ---- blocklist ----

    /// Adds or replaces a block. Host addresses go to the exact map, ranges
    /// to the LPM trie and the per-prefix-length hash map.
    pub fn block_add(&mut self, net: &Net, entry: BlockEntry) -> Result<()> {
        self.writable()?;
        // The expiry and config-block indexes follow what the maps hold,
        // including a range whose trie write succeeded and hash write did
        // not (it is listed, and restored into the hash map at the next
        // start).
        let (expiry, config_blocks) = (&mut self.expiry, &mut self.config_blocks);
        let mut index = move || {
            expiry.set(*net, entry.expires_ns);
            if entry.source == BlockSource::Config as u32 {
                config_blocks.insert(*net);
            } else {
                config_blocks.remove(net);
            }
        };
        let bit = if net.is_host() {
            let bit = self.block_host.insert(net.addr(), entry)?;
            index();
            bit
        } else {
            self.block_cidr.insert(net, entry, index)?
        };
        self.mark_present(bit)
    }

    /// The block stored for exactly `net` (a host in the exact map, a range in the trie), expired
    /// or not.
    pub fn block_get(&self, net: &Net) -> Result<Option<BlockEntry>> {
        if net.is_host() {
            self.block_host.get(net.addr())
        } else {
            self.block_cidr.get(net)
        }
    }

    /// Removes the block for exactly `net`; `false` if there was none. A covering range stays.
    pub fn block_del(&mut self, net: &Net) -> Result<bool> {
        self.writable()?;
        let removed = self.block_remove(net)?;
        self.refresh_presence()?;
        Ok(removed)
    }

    /// Removes a block without updating the presence bits.
    fn block_remove(&mut self, net: &Net) -> Result<bool> {
        let removed = if net.is_host() {
            self.block_host.remove(net.addr())?
        } else {
            self.block_cidr.remove(net)?
        };
        self.expiry.remove(net);
        self.config_blocks.remove(net);
        Ok(removed)
    }

    /// The blocks the config's static list wrote (source `config`), as this
    /// handle knows them: indexed when the maps were opened and on every
    /// write through this handle. No system call.
    pub fn config_blocks(&self) -> Vec<Net> {
        self.config_blocks.iter().copied().collect()
    }

    /// How many times this handle walked the blocklist ([`XdpMaps::block_list`],
    /// [`XdpMaps::block_list_first`]), the opening walk included.
    pub fn block_walks(&self) -> u64 {
        self.block_walks.load(Ordering::Relaxed)
    }

    /// Every block entry, expired ones included (the sweeper removes those).
    pub fn block_list(&self) -> Result<Vec<(Net, BlockEntry)>> {
        Ok(self.block_list_first(usize::MAX)?.0)
    }

    /// At most `max` blocks (CIDR blocks first, then hosts; sorted), and
    /// whether there are more: a bounded walk (one system call per entry)
    /// for views that poll, such as the dashboard, so that a blocklist of a
    /// million entries never holds the maps' lock for long.
    pub fn block_list_first(&self, max: usize) -> Result<(Vec<(Net, BlockEntry)>, bool)> {
        self.block_walks.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        let probe = max.saturating_add(1);
        self.block_cidr.list(&mut out, probe)?;
        self.block_host.list(&mut out, probe)?;
        let more = out.len() > max;
        out.truncate(max);
        out.sort_by_key(|(n, _)| *n);
        Ok((out, more))
    }

    /// Removes blocks whose expiry has passed at monotonic `now_ns`; returns
    /// what was removed. Only the due entries of the expiry index are
    /// looked at, not the whole blocklist. (An entry another process wrote
    /// into the pinned maps is indexed at the next start; the XDP program
    /// ignores it once expired either way.)
    pub fn sweep_expired(&mut self, now_ns: u64) -> Result<Vec<(Net, BlockEntry)>> {
        self.writable()?;
        let mut expired = Vec::new();
        for net in self.expiry.take_due(now_ns) {
            match self.block_get(&net)? {
                Some(e) if !e.is_active(now_ns) => {
                    self.block_remove(&net)?;
                    expired.push((net, e));
                }
                // Renewed behind our back: index its real expiry.
                Some(e) => self.expiry.set(net, e.expires_ns),
                None => {}
            }
        }
        if !expired.is_empty() {
            expired.sort_by_key(|(n, _)| *n);
            self.refresh_presence()?;
        }
        Ok(expired)
    }

    /// Blocks with a TTL this process knows of (for tests and metrics).
    pub fn expiring_blocks(&self) -> usize {
        self.expiry.len()
    }

    // ---- per-source limit overrides ----

    /// Adds or replaces the per-source budget override for `net` (an LPM entry: the longest
    /// matching prefix applies).
    pub fn limit_set(&mut self, net: &Net, limits: LimitOverride) -> Result<()> {
        self.writable()?;
        let bit = self.limit.insert(net, limits)?;
        self.mark_present(bit)
    }

    /// Removes the override for exactly `net`; `false` if there was none.
    pub fn limit_del(&mut self, net: &Net) -> Result<bool> {
        self.writable()?;
        let removed = self.limit.remove(net)?;
        self.refresh_presence()?;
        Ok(removed)
    }

    /// Every override, both families, sorted by network.
    pub fn limit_list(&self) -> Result<Vec<(Net, LimitOverride)>> {
        let mut out = Vec::new();
        self.limit.list(&mut out, usize::MAX)?;
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    /// Removes every per-source override; returns how many there were.
    pub fn limit_clear(&mut self) -> Result<usize> {
        self.writable()?;
        let all = self.limit_list()?;
        for (net, _) in &all {
            self.limit_del(net)?;
        }
        Ok(all.len())
    }

    // ---- buckets (tests and diagnostics) ----

    /// The token-bucket state of a source, if the program has seen it (and the LRU kept it).
    pub fn bucket(&self, key: &SourceKey) -> Result<Option<Buckets>> {
        found(self.buckets.get(key, 0))
    }

    /// Overwrites the token-bucket state of a source (tests and diagnostics).
    pub fn set_bucket(&mut self, key: &SourceKey, b: Buckets) -> Result<()> {
        self.writable()?;
        Ok(self.buckets.insert(key, b, 0)?)
    }

    // ---- statistics ----

    /// Packets and bytes per reason, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Reason, Counter)>> {
        let mut out = Vec::with_capacity(REASONS as usize);
        for reason in Reason::ALL {
            let per_cpu = self.counters.get(&(reason as u32), 0)?;
            let sum = per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            });
            out.push((reason, sum));
        }
        Ok(out)
    }

    /// The `n` sources with the most dropped packets, summed over CPUs.
    pub fn top_dropped(&self, n: usize) -> Result<Vec<(IpAddr, SourceDrops)>> {
        let mut all = Vec::new();
        for item in self.drop_src.iter() {
            let (k, per_cpu) = item?;
            let mut sum = SourceDrops::default();
            for d in per_cpu.iter() {
                sum.packets += d.packets;
                if d.last_ns >= sum.last_ns {
                    sum.last_ns = d.last_ns;
                    sum.last_reason = d.last_reason;
                }
            }
            all.push((source_addr(&k), sum));
        }
        all.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.0.cmp(&b.0)));
        all.truncate(n);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_lens_are_longest_first_and_fall_back_to_the_trie() {
        let mut per_len = [0u32; 33];
        assert_eq!(prefix_lens(&per_len), PrefixLens::default(), "none");
        per_len[8] = 3;
        per_len[24] = 65_536;
        let l = prefix_lens(&per_len);
        assert_eq!((l.count, l.lens), (2, [24, 8, 0, 0]));
        per_len[0] = 1;
        per_len[31] = 1;
        let l = prefix_lens(&per_len);
        assert_eq!((l.count, l.lens), (4, [31, 24, 8, 0]), "/0 is a length");
        per_len[16] = 1;
        assert_eq!(prefix_lens(&per_len).count, 0, "five lengths: the trie");
    }
}
