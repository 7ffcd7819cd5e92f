//! Typed access to the XDP program's maps. Userspace owns every policy
//! decision and writes it here; the program only reads these (and writes its
//! own counters and buckets). Addresses go in as [`Net`]s and come out as
//! [`Net`]s; the map-level byte layout stays in this file.

use std::net::IpAddr;

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap, lpm_trie::Key};
use gateway_common::{
    acl::BlockEntry,
    config::*,
    maps as names,
    ratelimit::{Buckets, LimitOverride, SourceKey},
    stats::{Counter, REASONS, Reason, SourceDrops},
};

use super::expiry::ExpiryIndex;
use crate::net::Net;

/// Who put an address on the allowlist (the allowlist map's value).
pub const ALLOW_FROM_CONFIG: u32 = 1;
pub const ALLOW_FROM_OPERATOR: u32 = 2;

pub struct XdpMaps {
    config: Array<MapData, XdpConfig>,
    ports: Array<MapData, u64>,
    allow_v4: LpmTrie<MapData, [u8; 4], u32>,
    allow_v6: LpmTrie<MapData, [u8; 16], u32>,
    block_v4: HashMap<MapData, [u8; 4], BlockEntry>,
    block_v6: HashMap<MapData, [u8; 16], BlockEntry>,
    block_cidr_v4: LpmTrie<MapData, [u8; 4], BlockEntry>,
    block_cidr_v6: LpmTrie<MapData, [u8; 16], BlockEntry>,
    limit_v4: LpmTrie<MapData, [u8; 4], LimitOverride>,
    limit_v6: LpmTrie<MapData, [u8; 16], LimitOverride>,
    buckets: HashMap<MapData, SourceKey, Buckets>,
    counters: PerCpuArray<MapData, Counter>,
    drop_src: PerCpuHashMap<MapData, SourceKey, SourceDrops>,
    /// The presence bits last written to the config map (we are its only
    /// writer), so adding entries costs no extra syscall.
    present: u32,
    /// When each block with a TTL expires, for the sweeper.
    expiry: ExpiryIndex,
}

/// An address as the maps key it: IPv4 octets or IPv6 octets.
enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

fn split(net: &Net) -> (Addr, u32) {
    let addr = match net.addr() {
        IpAddr::V4(a) => Addr::V4(a.octets()),
        IpAddr::V6(a) => Addr::V6(a.octets()),
    };
    (addr, u32::from(net.prefix_len()))
}

fn net4(data: [u8; 4], prefix_len: u32) -> Option<Net> {
    Net::new(IpAddr::from(data), prefix_len as u8).ok()
}

fn net6(data: [u8; 16], prefix_len: u32) -> Option<Net> {
    Net::new(IpAddr::from(data), prefix_len as u8).ok()
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

fn take<T>(ebpf: &mut aya::Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("the XDP object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type or layout"))
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

impl XdpMaps {
    /// Takes the maps out of a loaded object.
    pub fn take_from(ebpf: &mut aya::Ebpf) -> Result<Self> {
        Self {
            config: take(ebpf, names::CONFIG)?,
            ports: take(ebpf, names::PROTECTED_PORTS)?,
            allow_v4: take(ebpf, names::ALLOW_V4)?,
            allow_v6: take(ebpf, names::ALLOW_V6)?,
            block_v4: take(ebpf, names::BLOCK_V4)?,
            block_v6: take(ebpf, names::BLOCK_V6)?,
            block_cidr_v4: take(ebpf, names::BLOCK_CIDR_V4)?,
            block_cidr_v6: take(ebpf, names::BLOCK_CIDR_V6)?,
            limit_v4: take(ebpf, names::LIMIT_V4)?,
            limit_v6: take(ebpf, names::LIMIT_V6)?,
            buckets: take(ebpf, names::BUCKETS)?,
            counters: take(ebpf, names::COUNTERS)?,
            drop_src: take(ebpf, names::DROPS_BY_SOURCE)?,
            present: 0,
            expiry: ExpiryIndex::default(),
        }
        .with_presence()
        .with_expiry_index()
    }

    /// Indexes the blocks already in the (pinned) maps, once.
    fn with_expiry_index(mut self) -> Result<Self> {
        for (net, e) in self.block_list()? {
            self.expiry.set(net, e.expires_ns);
        }
        Ok(self)
    }

    fn with_presence(mut self) -> Self {
        self.present = self.presence();
        self
    }

    // ---- config and ports ----

    pub fn config(&self) -> Result<XdpConfig> {
        Ok(self.config.get(&0, 0)?)
    }

    /// Writes the settings; the presence bits are computed here, not taken
    /// from `cfg`.
    pub fn set_config(&mut self, mut cfg: XdpConfig) -> Result<()> {
        cfg.present = self.present;
        Ok(self.config.set(0, cfg, 0)?)
    }

    /// Which lookup maps hold at least one entry. A map that cannot be read
    /// counts as present, so the program never skips a real entry.
    fn presence(&self) -> u32 {
        fn has<I: Iterator<Item = Result<T, E>>, T, E>(mut keys: I) -> bool {
            keys.next().is_some()
        }
        let mut p = 0;
        for (present, bit) in [
            (has(self.allow_v4.keys()), PRESENT_ALLOW_V4),
            (has(self.allow_v6.keys()), PRESENT_ALLOW_V6),
            (has(self.block_v4.keys()), PRESENT_BLOCK_V4),
            (has(self.block_v6.keys()), PRESENT_BLOCK_V6),
            (has(self.block_cidr_v4.keys()), PRESENT_BLOCK_CIDR_V4),
            (has(self.block_cidr_v6.keys()), PRESENT_BLOCK_CIDR_V6),
            (has(self.limit_v4.keys()), PRESENT_LIMIT_V4),
            (has(self.limit_v6.keys()), PRESENT_LIMIT_V6),
        ] {
            if present {
                p |= bit;
            }
        }
        p
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

    fn write_presence(&mut self, present: u32) -> Result<()> {
        if present != self.present {
            let mut cfg = self.config()?;
            cfg.present = present;
            self.config.set(0, cfg, 0)?;
            self.present = present;
        }
        Ok(())
    }

    /// Makes `ports` exactly the protected set.
    /// Writes only the bitmap words that change, so a reload that keeps
    /// the ports costs 1,024 reads and no write.
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<()> {
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

    pub fn allow_add(&mut self, net: &Net, origin: u32) -> Result<()> {
        match split(net) {
            (Addr::V4(a), p) => self.allow_v4.insert(&Key::new(p, a), origin, 0)?,
            (Addr::V6(a), p) => self.allow_v6.insert(&Key::new(p, a), origin, 0)?,
        }
        self.mark_present(if net.is_ipv4() {
            PRESENT_ALLOW_V4
        } else {
            PRESENT_ALLOW_V6
        })
    }

    pub fn allow_del(&mut self, net: &Net) -> Result<bool> {
        let removed = match split(net) {
            (Addr::V4(a), p) => ignore_missing(self.allow_v4.remove(&Key::new(p, a)))?,
            (Addr::V6(a), p) => ignore_missing(self.allow_v6.remove(&Key::new(p, a)))?,
        };
        self.refresh_presence()?;
        Ok(removed)
    }

    /// Every allowlist entry with who added it.
    pub fn allow_list(&self) -> Result<Vec<(Net, u32)>> {
        let mut out = Vec::new();
        for item in self.allow_v4.iter() {
            let (k, v) = item?;
            out.extend(net4(k.data(), k.prefix_len()).map(|n| (n, v)));
        }
        for item in self.allow_v6.iter() {
            let (k, v) = item?;
            out.extend(net6(k.data(), k.prefix_len()).map(|n| (n, v)));
        }
        out.sort();
        Ok(out)
    }

    // ---- blocklist ----

    /// Adds or replaces a block. Host addresses go to the exact map, ranges
    /// to the LPM trie.
    pub fn block_add(&mut self, net: &Net, entry: BlockEntry) -> Result<()> {
        let host = net.is_host();
        match split(net) {
            (Addr::V4(a), _) if host => self.block_v4.insert(a, entry, 0)?,
            (Addr::V6(a), _) if host => self.block_v6.insert(a, entry, 0)?,
            (Addr::V4(a), p) => self.block_cidr_v4.insert(&Key::new(p, a), entry, 0)?,
            (Addr::V6(a), p) => self.block_cidr_v6.insert(&Key::new(p, a), entry, 0)?,
        }
        self.expiry.set(*net, entry.expires_ns);
        self.mark_present(match (net.is_ipv4(), host) {
            (true, true) => PRESENT_BLOCK_V4,
            (false, true) => PRESENT_BLOCK_V6,
            (true, false) => PRESENT_BLOCK_CIDR_V4,
            (false, false) => PRESENT_BLOCK_CIDR_V6,
        })
    }

    pub fn block_get(&self, net: &Net) -> Result<Option<BlockEntry>> {
        let host = net.is_host();
        let r = match split(net) {
            (Addr::V4(a), _) if host => self.block_v4.get(&a, 0),
            (Addr::V6(a), _) if host => self.block_v6.get(&a, 0),
            (Addr::V4(a), p) => self.block_cidr_v4.get(&Key::new(p, a), 0),
            (Addr::V6(a), p) => self.block_cidr_v6.get(&Key::new(p, a), 0),
        };
        match r {
            Ok(e) => Ok(Some(e)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn block_del(&mut self, net: &Net) -> Result<bool> {
        let removed = self.block_remove(net)?;
        self.refresh_presence()?;
        Ok(removed)
    }

    /// Removes a block without updating the presence bits.
    fn block_remove(&mut self, net: &Net) -> Result<bool> {
        let host = net.is_host();
        let removed = match split(net) {
            (Addr::V4(a), _) if host => ignore_missing(self.block_v4.remove(&a))?,
            (Addr::V6(a), _) if host => ignore_missing(self.block_v6.remove(&a))?,
            (Addr::V4(a), p) => ignore_missing(self.block_cidr_v4.remove(&Key::new(p, a)))?,
            (Addr::V6(a), p) => ignore_missing(self.block_cidr_v6.remove(&Key::new(p, a)))?,
        };
        self.expiry.remove(net);
        Ok(removed)
    }

    /// Every block entry, expired ones included (the sweeper removes those).
    pub fn block_list(&self) -> Result<Vec<(Net, BlockEntry)>> {
        let mut out = Vec::new();
        for item in self.block_v4.iter() {
            let (k, v) = item?;
            out.extend(net4(k, 32).map(|n| (n, v)));
        }
        for item in self.block_v6.iter() {
            let (k, v) = item?;
            out.extend(net6(k, 128).map(|n| (n, v)));
        }
        for item in self.block_cidr_v4.iter() {
            let (k, v) = item?;
            out.extend(net4(k.data(), k.prefix_len()).map(|n| (n, v)));
        }
        for item in self.block_cidr_v6.iter() {
            let (k, v) = item?;
            out.extend(net6(k.data(), k.prefix_len()).map(|n| (n, v)));
        }
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    /// Removes blocks whose expiry has passed at monotonic `now_ns`; returns
    /// what was removed. Only the due entries of the expiry index are
    /// looked at, not the whole blocklist. (An entry another process wrote
    /// into the pinned maps is indexed at the next start; the XDP program
    /// ignores it once expired either way.)
    pub fn sweep_expired(&mut self, now_ns: u64) -> Result<Vec<(Net, BlockEntry)>> {
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

    pub fn limit_set(&mut self, net: &Net, limits: LimitOverride) -> Result<()> {
        match split(net) {
            (Addr::V4(a), p) => self.limit_v4.insert(&Key::new(p, a), limits, 0)?,
            (Addr::V6(a), p) => self.limit_v6.insert(&Key::new(p, a), limits, 0)?,
        }
        self.mark_present(if net.is_ipv4() {
            PRESENT_LIMIT_V4
        } else {
            PRESENT_LIMIT_V6
        })
    }

    pub fn limit_del(&mut self, net: &Net) -> Result<bool> {
        let removed = match split(net) {
            (Addr::V4(a), p) => ignore_missing(self.limit_v4.remove(&Key::new(p, a)))?,
            (Addr::V6(a), p) => ignore_missing(self.limit_v6.remove(&Key::new(p, a)))?,
        };
        self.refresh_presence()?;
        Ok(removed)
    }

    pub fn limit_list(&self) -> Result<Vec<(Net, LimitOverride)>> {
        let mut out = Vec::new();
        for item in self.limit_v4.iter() {
            let (k, v) = item?;
            out.extend(net4(k.data(), k.prefix_len()).map(|n| (n, v)));
        }
        for item in self.limit_v6.iter() {
            let (k, v) = item?;
            out.extend(net6(k.data(), k.prefix_len()).map(|n| (n, v)));
        }
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    /// Removes every per-source override; returns how many there were.
    pub fn limit_clear(&mut self) -> Result<usize> {
        let all = self.limit_list()?;
        for (net, _) in &all {
            self.limit_del(net)?;
        }
        Ok(all.len())
    }

    // ---- buckets (tests and diagnostics) ----

    pub fn bucket(&self, key: &SourceKey) -> Result<Option<Buckets>> {
        match self.buckets.get(key, 0) {
            Ok(b) => Ok(Some(b)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn set_bucket(&mut self, key: &SourceKey, b: Buckets) -> Result<()> {
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
