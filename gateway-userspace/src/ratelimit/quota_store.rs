//! The usage counts of quotas: one counter per (quota, consumer) for the
//! current window, in 16 mutex-guarded shards.
//!
//! The store is made once per gateway process and survives config
//! reloads (a reload that changes a plan's quota keeps what its consumers
//! used). It survives restarts through a JSON file: the request path only
//! marks the store dirty; [`QuotaStore::run_persister`] writes a snapshot
//! (temporary file, then `rename`, mode 0600) at most once per interval
//! from a background task, and [`QuotaStore::save`] writes one at
//! shutdown. Counts of windows that have ended are dropped on load.
//!
//! Time comes from a [`UnixClock`] so tests can drive windows without
//! sleeping.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, RandomState},
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::quota::{Quota, UtcOffset, window_bounds};

const SHARDS: usize = 16;

/// Unix time in seconds. The gateway uses the system clock; tests use a
/// [`ManualClock`].
pub type UnixClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock, in Unix seconds.
pub fn system_clock() -> UnixClock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    })
}

/// A clock that only moves when told to (tests).
#[derive(Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `unix_secs` (seconds since the Unix epoch).
    pub fn at(unix_secs: i64) -> Self {
        Self(Arc::new(AtomicI64::new(unix_secs)))
    }
    /// Moves the clock to `unix_secs`, for every [`UnixClock`] made from it.
    pub fn set(&self, unix_secs: i64) {
        self.0.store(unix_secs, Ordering::Relaxed);
    }
    /// A [`UnixClock`] reading this clock.
    pub fn clock(&self) -> UnixClock {
        let c = self.0.clone();
        Arc::new(move || c.load(Ordering::Relaxed))
    }
}

/// The count of one consumer in one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Unix seconds, inclusive.
    pub window_start: i64,
    /// Unix seconds, exclusive.
    pub window_end: i64,
    /// Requests counted in the window.
    pub used: u64,
}

/// The verdict of one quota for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaDecision {
    /// Whether the request fits in the quota (it was counted).
    pub allowed: bool,
    /// Requests counted in this window, this one included when allowed.
    pub used: u64,
    /// The quota's count per window.
    pub limit: u64,
    /// Seconds until the window ends (at least 1).
    pub reset_secs: u64,
    /// Length of the window in seconds (a month's varies).
    pub window_secs: u64,
}

impl QuotaDecision {
    /// Requests left in the window (0 when over).
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

/// Requests counted and refused per quota (for `/metrics`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcomes {
    /// Requests counted within their quota.
    pub allowed: u64,
    /// Requests refused (429) for an exhausted quota.
    pub rejected: u64,
}

/// quota name → consumer → count. Nested so that a lookup borrows the
/// request's strings: only a new (quota, consumer) pair allocates.
#[derive(Default)]
struct Shard {
    by_quota: HashMap<Box<str>, HashMap<Box<str>, Usage>>,
    len: usize,
}

impl Shard {
    fn get_mut(&mut self, quota: &str, consumer: &str) -> Option<&mut Usage> {
        self.by_quota.get_mut(quota)?.get_mut(consumer)
    }

    fn insert(&mut self, quota: &str, consumer: &str, usage: Usage) {
        let inner = match self.by_quota.get_mut(quota) {
            Some(m) => m,
            None => self.by_quota.entry(quota.into()).or_default(),
        };
        if inner.insert(consumer.into(), usage).is_none() {
            self.len += 1;
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&str, &str, &Usage) -> bool) {
        for (q, inner) in self.by_quota.iter_mut() {
            inner.retain(|c, u| keep(q, c, u));
        }
        self.by_quota.retain(|_, inner| !inner.is_empty());
        self.len = self.by_quota.values().map(HashMap::len).sum();
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str, &Usage)> {
        self.by_quota
            .iter()
            .flat_map(|(q, inner)| inner.iter().map(move |(c, u)| (&**q, &**c, u)))
    }
}

/// Quota counters of this node; see the module documentation.
pub struct QuotaStore {
    clock: UnixClock,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    dirty: AtomicBool,
    outcomes: Mutex<HashMap<Box<str>, Outcomes>>,
    path: Option<PathBuf>,
    /// The quotas of the running config and its time zone (for the admin
    /// socket), set by the rate-limit phase.
    configured: Mutex<(Vec<(String, Quota)>, UtcOffset)>,
    /// When "store full" was last logged (Unix seconds): once a minute at
    /// most, so a flood of new keys cannot flood the log too.
    full_warned: AtomicI64,
}

/// The file format of the persisted counts.
#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    entries: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    quota: String,
    consumer: String,
    #[serde(flatten)]
    usage: Usage,
}

impl QuotaStore {
    /// An empty store; `path` is where counts are persisted (none: memory
    /// only). `max_consumers` bounds the (quota, consumer) pairs tracked.
    pub fn new(path: Option<PathBuf>, clock: UnixClock, max_consumers: usize) -> Self {
        Self {
            clock,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            per_shard: max_consumers.div_ceil(SHARDS).max(1),
            dirty: AtomicBool::new(false),
            outcomes: Mutex::new(HashMap::new()),
            path,
            configured: Mutex::new((Vec::new(), UtcOffset(0))),
            full_warned: AtomicI64::new(i64::MIN),
        }
    }

    /// A store with the counts of `path` (windows that ended are dropped).
    /// A missing file is an empty store; an unreadable or corrupt one is
    /// moved aside to `<path>.bad` (kept for inspection) with a warning,
    /// and the store starts empty: the gateway still starts.
    pub fn open(path: PathBuf, clock: UnixClock, max_consumers: usize) -> Self {
        let store = Self::new(Some(path.clone()), clock, max_consumers);
        store.load(&path);
        store
    }

    /// Replaces every count by those of the state file (after `gateway
    /// upgrade`: the previous process saved its counts when it stopped
    /// accepting, after this one had opened the file). Without a path,
    /// does nothing.
    pub fn reload_file(&self) {
        let Some(path) = &self.path else {
            return;
        };
        for s in self.shards.iter() {
            *s.lock() = Shard::default();
        }
        self.load(path);
    }

    fn load(&self, path: &Path) {
        let store = self;
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                Ok(file) => {
                    let now = store.now();
                    let mut loaded = 0usize;
                    for e in file.entries {
                        if e.usage.window_end > now {
                            store.put(&e.quota, &e.consumer, e.usage);
                            loaded += 1;
                        }
                    }
                    tracing::info!(path = %path.display(), loaded, "quota counts restored");
                }
                Err(e) => {
                    let bad = path.with_extension("bad");
                    let _ = std::fs::rename(path, &bad);
                    tracing::warn!(path = %path.display(), moved_to = %bad.display(), error = %e,
                        "quota state file is not valid; starting with empty quota counts");
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e,
                "quota state file unreadable; starting with empty quota counts"),
        }
    }

    /// Notes the quotas of the config being applied: `(name, quota)` pairs
    /// such as `("plan:gold", 10000/day)`, and the time zone.
    pub fn set_configured(&self, quotas: Vec<(String, Quota)>, tz: UtcOffset) {
        *self.configured.lock() = (quotas, tz);
    }

    /// The quotas of the running config and its time zone.
    pub fn configured(&self) -> (Vec<(String, Quota)>, UtcOffset) {
        self.configured.lock().clone()
    }

    /// The path counts are persisted to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Unix seconds now, by this store's clock.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    fn shard(&self, quota: &str, consumer: &str) -> &Mutex<Shard> {
        let h = self.hasher.hash_one((quota, consumer));
        &self.shards[h as usize % SHARDS]
    }

    /// Checks and counts one request of `consumer` against `quota` (named
    /// `name`, e.g. `plan:gold`). A refused request is not counted.
    pub fn check(&self, name: &str, consumer: &str, quota: Quota, tz: UtcOffset) -> QuotaDecision {
        let now = self.now();
        let (start, end) = window_bounds(now, quota.window, tz);
        let mut shard = self.shard(name, consumer).lock();
        let fresh = Usage {
            window_start: start,
            window_end: end,
            used: 1,
        };
        let (allowed, used) = match shard.get_mut(name, consumer) {
            Some(u) if u.window_start == start && u.window_end == end => {
                // A refused request is not counted.
                if u.used < quota.count {
                    u.used += 1;
                    (true, u.used)
                } else {
                    (false, u.used)
                }
            }
            Some(u) => {
                *u = fresh;
                (true, 1)
            }
            None => {
                if shard.len >= self.per_shard {
                    shard.retain(|_, _, u| u.window_end > now);
                }
                if shard.len < self.per_shard {
                    shard.insert(name, consumer, fresh);
                } else {
                    let last = self.full_warned.load(Ordering::Relaxed);
                    if now.saturating_sub(last) >= 60
                        && self
                            .full_warned
                            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok()
                    {
                        tracing::warn!(
                            quota = name,
                            "quota store full: new consumers are not counted \
                             (raise [rate_limit] quota_max_consumers); logged once a minute"
                        );
                    }
                }
                (true, 1)
            }
        };
        drop(shard);
        self.dirty.store(true, Ordering::Relaxed);
        self.count_outcome(name, allowed);
        QuotaDecision {
            allowed,
            used,
            limit: quota.count,
            reset_secs: (end - now).max(1) as u64,
            window_secs: (end - start) as u64,
        }
    }

    /// Records what the cluster's Redis counted (cluster mode), so this
    /// node's view, file and fallback follow the shared count.
    pub fn record_shared(
        &self,
        name: &str,
        consumer: &str,
        quota: Quota,
        tz: UtcOffset,
        used: u64,
        allowed: bool,
    ) -> QuotaDecision {
        let now = self.now();
        let (start, end) = window_bounds(now, quota.window, tz);
        self.put(
            name,
            consumer,
            Usage {
                window_start: start,
                window_end: end,
                used,
            },
        );
        self.dirty.store(true, Ordering::Relaxed);
        self.count_outcome(name, allowed);
        QuotaDecision {
            allowed,
            used,
            limit: quota.count,
            reset_secs: (end - now).max(1) as u64,
            window_secs: (end - start) as u64,
        }
    }

    fn count_outcome(&self, name: &str, allowed: bool) {
        let mut o = self.outcomes.lock();
        let e = match o.get_mut(name) {
            Some(e) => e,
            None => o.entry(name.into()).or_default(),
        };
        if allowed {
            e.allowed += 1;
        } else {
            e.rejected += 1;
        }
    }

    fn put(&self, name: &str, consumer: &str, usage: Usage) {
        let mut shard = self.shard(name, consumer).lock();
        if shard.get_mut(name, consumer).is_none() && shard.len >= self.per_shard {
            let now = self.now();
            shard.retain(|_, _, u| u.window_end > now);
            if shard.len >= self.per_shard {
                return;
            }
        }
        shard.insert(name, consumer, usage);
    }

    /// The current usage of `consumer` under every quota it has a count
    /// for, sorted by quota name.
    pub fn get(&self, consumer: &str) -> Vec<(String, Usage)> {
        let now = self.now();
        let mut out: Vec<(String, Usage)> = self
            .shards
            .iter()
            .flat_map(|s| {
                let s = s.lock();
                s.iter()
                    .filter(|(_, c, u)| *c == consumer && u.window_end > now)
                    .map(|(q, _, u)| (q.to_owned(), *u))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Forgets the counts of `consumer` (under `quota` only, if given);
    /// returns how many counts were removed.
    pub fn reset(&self, consumer: &str, quota: Option<&str>) -> usize {
        let mut removed = 0;
        for s in self.shards.iter() {
            let mut s = s.lock();
            let before = s.len;
            s.retain(|q, c, _| !(c == consumer && quota.is_none_or(|want| q == want)));
            removed += before - s.len;
        }
        if removed > 0 {
            self.dirty.store(true, Ordering::Relaxed);
        }
        removed
    }

    /// Per quota name: consumers with a count in their current window, the
    /// sum of their counts, and the requests counted and refused since start.
    pub fn usage_by_quota(&self) -> Vec<(String, u64, u64, Outcomes)> {
        let now = self.now();
        let mut sums: HashMap<String, (u64, u64)> = HashMap::new();
        for s in self.shards.iter() {
            let s = s.lock();
            for (q, _, u) in s.iter().filter(|(_, _, u)| u.window_end > now) {
                let e = sums.entry(q.to_owned()).or_default();
                e.0 += 1;
                e.1 += u.used;
            }
        }
        let outcomes = self.outcomes.lock();
        let mut names: Vec<String> = sums
            .keys()
            .cloned()
            .chain(outcomes.keys().map(|k| k.to_string()))
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|n| {
                let (consumers, used) = sums.get(&n).copied().unwrap_or_default();
                let o = outcomes.get(n.as_str()).copied().unwrap_or_default();
                (n, consumers, used, o)
            })
            .collect()
    }

    /// Writes the counts of windows still running to the state file (temp
    /// file + rename, mode 0600). Without a path, does nothing.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        self.dirty.store(false, Ordering::Relaxed);
        let now = self.now();
        let mut entries = Vec::new();
        for s in self.shards.iter() {
            let s = s.lock();
            entries.extend(
                s.iter()
                    .filter(|(_, _, u)| u.window_end > now)
                    .map(|(q, c, u)| FileEntry {
                        quota: q.to_string(),
                        consumer: c.to_string(),
                        usage: *u,
                    }),
            );
        }
        let bytes = serde_json::to_vec(&File {
            version: 1,
            entries,
        })
        .map_err(std::io::Error::other)?;
        write_atomically(path, &bytes)
    }

    /// [`QuotaStore::save`] if counts changed since the last save (at
    /// shutdown: a gateway without quotas never creates the file).
    pub fn save_if_changed(&self) -> std::io::Result<()> {
        if self.dirty.load(Ordering::Relaxed) {
            self.save()
        } else {
            Ok(())
        }
    }

    /// Writes the state file every `interval` while counts changed, on the
    /// blocking pool (never on a request worker). Runs until aborted; call
    /// [`QuotaStore::save_if_changed`] after aborting it at shutdown.
    pub async fn run_persister(self: Arc<Self>, interval: Duration) {
        if self.path.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.dirty.load(Ordering::Relaxed) {
                continue;
            }
            let store = self.clone();
            match tokio::task::spawn_blocking(move || store.save()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(
                    path = %self.path.as_deref().unwrap_or(Path::new("")).display(),
                    error = %e,
                    "writing the quota state file failed; counts are kept in memory"
                ),
                Err(_) => {}
            }
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::quota::Window;

    const MIDNIGHT: i64 = 1_796_083_200; // 2026-12-01T00:00Z

    fn q(s: &str) -> Quota {
        s.parse().unwrap()
    }

    #[test]
    fn counts_to_the_limit_then_refuses_until_the_window_ends() {
        let clock = ManualClock::at(MIDNIGHT - 3600);
        let s = QuotaStore::new(None, clock.clock(), 100);
        for i in 1..=5 {
            let d = s.check("plan:p", "alice", q("5/day"), UtcOffset(0));
            assert!(d.allowed, "request {i}");
            assert_eq!((d.used, d.remaining()), (i, 5 - i));
        }
        let d = s.check("plan:p", "alice", q("5/day"), UtcOffset(0));
        assert!(!d.allowed);
        assert_eq!((d.used, d.reset_secs, d.window_secs), (5, 3600, 86_400));
        // Another consumer, another quota: their own counts.
        assert!(s.check("plan:p", "bob", q("5/day"), UtcOffset(0)).allowed);
        assert!(
            s.check("limit:x", "alice", q("5/day"), UtcOffset(0))
                .allowed
        );
        // The next day starts afresh.
        clock.set(MIDNIGHT);
        let d = s.check("plan:p", "alice", q("5/day"), UtcOffset(0));
        assert!(d.allowed);
        assert_eq!(d.used, 1);
        let o = s.usage_by_quota();
        assert_eq!(o[1].0, "plan:p");
        assert_eq!((o[1].3.allowed, o[1].3.rejected), (7, 1));
        assert_eq!(Window::Day, q("5/day").window);
    }

    #[test]
    fn counts_survive_a_save_and_open_and_ended_windows_are_dropped() {
        let dir = std::env::temp_dir().join(format!("gateway-quota-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/quota.json");
        let clock = ManualClock::at(MIDNIGHT - 60);
        let s = QuotaStore::open(path.clone(), clock.clock(), 100);
        // Nothing counted: nothing written (a gateway without quotas never
        // creates the file).
        s.save_if_changed().unwrap();
        assert!(!path.exists());
        for _ in 0..3 {
            s.check("plan:p", "alice", q("5/day"), UtcOffset(0));
        }
        s.check("plan:h", "alice", q("5/hour"), UtcOffset(0));
        s.save().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(mode.mode() & 0o777, 0o600);
        let s2 = QuotaStore::open(path.clone(), clock.clock(), 100);
        assert_eq!(s2.get("alice").len(), 2);
        assert_eq!(s2.get("alice")[1].1.used, 3);
        // After midnight both windows ended: nothing is restored.
        clock.set(MIDNIGHT + 1);
        let s3 = QuotaStore::open(path.clone(), clock.clock(), 100);
        assert!(s3.get("alice").is_empty());
        // A corrupt file is moved aside, never fatal.
        std::fs::write(&path, b"{not json").unwrap();
        let s4 = QuotaStore::open(path.clone(), clock.clock(), 100);
        assert!(s4.get("alice").is_empty());
        assert!(path.with_extension("bad").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reset_forgets_a_consumer() {
        let s = QuotaStore::new(None, ManualClock::at(MIDNIGHT - 10).clock(), 100);
        for _ in 0..5 {
            s.check("plan:p", "alice", q("5/day"), UtcOffset(0));
        }
        assert!(!s.check("plan:p", "alice", q("5/day"), UtcOffset(0)).allowed);
        assert_eq!(s.reset("alice", Some("plan:other")), 0);
        assert_eq!(s.reset("alice", None), 1);
        assert!(s.check("plan:p", "alice", q("5/day"), UtcOffset(0)).allowed);
    }

    #[test]
    fn memory_is_bounded() {
        let s = QuotaStore::new(None, ManualClock::at(MIDNIGHT - 10).clock(), 64);
        for i in 0..10_000 {
            s.check("plan:p", &format!("c{i}"), q("5/day"), UtcOffset(0));
        }
        let total: usize = s.shards.iter().map(|x| x.lock().len).sum();
        assert!(total <= 64, "{total}");
    }
}
