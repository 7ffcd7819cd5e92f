//! The per-key state of one limiter: a GCRA timestamp per key, in 64 shards
//! chosen by a keyed hash, each behind its own mutex, each bounded. When a
//! shard is full, keys whose bucket is full again (timestamp in the past:
//! the same as never seen) are dropped first; if every key is active, the
//! oldest entry goes (its client starts with a full bucket: the limit fails
//! open for that one key, memory never grows).

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::Mutex,
};

const SHARDS: usize = 64;

struct Shard {
    /// key hash → (TAT, insertion order)
    entries: HashMap<u64, (u64, u64)>,
    next_seq: u64,
}

pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
}

impl Store {
    pub fn new(max_keys: usize) -> Self {
        let per_shard = max_keys.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashMap::new(),
                    next_seq: 0,
                })
            })
            .collect();
        Self {
            shards,
            per_shard,
            hasher: RandomState::new(),
        }
    }

    /// Applies `f` to the key's TAT (0 when unseen) and stores what it returns.
    pub fn update<T>(&self, key: &str, now_ns: u64, f: impl FnOnce(u64) -> (u64, T)) -> T {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[(hash as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let current = shard.entries.get(&hash).map(|e| e.0).unwrap_or(0);
        let (tat, out) = f(current);
        if !shard.entries.contains_key(&hash) && shard.entries.len() >= self.per_shard {
            evict(&mut shard, now_ns, self.per_shard);
        }
        let seq = shard.next_seq;
        shard.next_seq += 1;
        shard
            .entries
            .entry(hash)
            .and_modify(|e| e.0 = tat)
            .or_insert((tat, seq));
        out
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).entries.len())
            .sum()
    }
}

fn evict(shard: &mut Shard, now_ns: u64, per_shard: usize) {
    shard.entries.retain(|_, (tat, _)| *tat > now_ns);
    if shard.entries.len() < per_shard {
        return;
    }
    // Still full of active keys: drop the oldest eighth at once, so a flood
    // of new keys pays for this scan once per many inserts.
    let mut seqs: Vec<u64> = shard.entries.values().map(|(_, seq)| *seq).collect();
    let cut = (seqs.len() / 8).max(1);
    let (_, nth, _) = seqs.select_nth_unstable(cut - 1);
    let threshold = *nth;
    shard.entries.retain(|_, (_, seq)| *seq > threshold);
}
