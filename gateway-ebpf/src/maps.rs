//! Every map of the program, pinned by name so the gateway can reuse them
//! across restarts. Names, sizes, keys and values come from gateway-common.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray},
};
use gateway_common::{
    acl::{ALLOW_MAX, AllowValue, BLOCK_CIDR_MAX, BLOCK_EXACT_MAX, BlockEntry, NetKeyV4, NetKeyV6},
    config::{PORT_WORDS, XdpConfig},
    ratelimit::{BUCKETS_MAX, Buckets, LIMIT_MAX, LimitOverride, SourceKey},
    stats::{Counter, DROP_SOURCES_MAX, REASONS, SourceDrops},
};

#[map(name = "GW_CONFIG")]
pub static CONFIG: Array<XdpConfig> = Array::pinned(1, 0);

/// Protected destination ports, a bitmap (see `PORT_WORDS`).
#[map(name = "GW_PORTS")]
pub static PORTS: Array<u64> = Array::pinned(PORT_WORDS, 0);

#[map(name = "GW_ALLOW_V4")]
pub static ALLOW_V4: LpmTrie<[u8; 4], AllowValue> = LpmTrie::pinned(ALLOW_MAX, 0);
#[map(name = "GW_ALLOW_V6")]
pub static ALLOW_V6: LpmTrie<[u8; 16], AllowValue> = LpmTrie::pinned(ALLOW_MAX, 0);

#[map(name = "GW_BLOCK_V4")]
pub static BLOCK_V4: HashMap<[u8; 4], BlockEntry> = HashMap::pinned(BLOCK_EXACT_MAX, 0);
#[map(name = "GW_BLOCK_V6")]
pub static BLOCK_V6: HashMap<[u8; 16], BlockEntry> = HashMap::pinned(BLOCK_EXACT_MAX, 0);
#[map(name = "GW_BLOCK_CIDR_V4")]
pub static BLOCK_CIDR_V4: LpmTrie<[u8; 4], BlockEntry> = LpmTrie::pinned(BLOCK_CIDR_MAX, 0);
#[map(name = "GW_BLOCK_CIDR_V6")]
pub static BLOCK_CIDR_V6: LpmTrie<[u8; 16], BlockEntry> = LpmTrie::pinned(BLOCK_CIDR_MAX, 0);
/// The CIDR blocks again, keyed by (prefix length, network): looked up once
/// per prefix length while a family has few lengths (see `acl::blocked`).
#[map(name = "GW_BLOCK_NET_V4")]
pub static BLOCK_NET_V4: HashMap<NetKeyV4, BlockEntry> = HashMap::pinned(BLOCK_CIDR_MAX, 0);
#[map(name = "GW_BLOCK_NET_V6")]
pub static BLOCK_NET_V6: HashMap<NetKeyV6, BlockEntry> = HashMap::pinned(BLOCK_CIDR_MAX, 0);

#[map(name = "GW_LIMIT_V4")]
pub static LIMIT_V4: LpmTrie<[u8; 4], LimitOverride> = LpmTrie::pinned(LIMIT_MAX, 0);
#[map(name = "GW_LIMIT_V6")]
pub static LIMIT_V6: LpmTrie<[u8; 16], LimitOverride> = LpmTrie::pinned(LIMIT_MAX, 0);

#[map(name = "GW_BUCKETS")]
pub static BUCKETS: LruHashMap<SourceKey, Buckets> = LruHashMap::pinned(BUCKETS_MAX, 0);

#[map(name = "GW_COUNTERS")]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(REASONS, 0);

#[map(name = "GW_DROP_SRC")]
pub static DROP_SRC: LruPerCpuHashMap<SourceKey, SourceDrops> =
    LruPerCpuHashMap::pinned(DROP_SOURCES_MAX, 0);

/// Per-CPU batch of the per-source drop counter (see
/// `stats::count_source_drop`). Not pinned: a restart loses at most
/// `DROP_BATCH_MAX - 1` drops per CPU from the per-source view.
#[map(name = "GW_DROP_BATCH")]
pub static DROP_BATCH: PerCpuArray<crate::stats::DropBatch> = PerCpuArray::with_max_entries(1, 0);
