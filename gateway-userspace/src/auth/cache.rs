//! A small bounded map whose entries expire, shared by the introspection
//! cache, the Basic verification cache and the brute-force counters. When
//! full it first drops expired entries (at most once per second, so a full
//! cache of live entries does not turn every insert into a scan), then an
//! arbitrary entry. Keys are digests, never credentials.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A bounded map of values with a deadline each.
pub struct TtlCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    max_entries: usize,
}

struct Inner<K, V> {
    map: HashMap<K, (V, Instant)>,
    last_sweep: Option<Instant>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(max_entries: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                last_sweep: None,
            }),
            max_entries: max_entries.max(1),
        }
    }

    /// The value, if present and not expired at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let mut inner = self.lock();
        match inner.map.get(key) {
            Some((v, deadline)) if *deadline > now => Some(v.clone()),
            Some(_) => {
                inner.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` until `deadline`, evicting if full.
    pub fn insert(&self, key: K, value: V, deadline: Instant, now: Instant) {
        let mut inner = self.lock();
        self.insert_locked(&mut inner, key, value, deadline, now);
    }

    /// Reads and updates an entry atomically; `f` gets the live value (or
    /// `None`) and returns the new value and deadline.
    pub fn update<R>(
        &self,
        key: K,
        now: Instant,
        f: impl FnOnce(Option<&V>) -> (V, Instant, R),
    ) -> R {
        let mut inner = self.lock();
        let current = inner
            .map
            .get(&key)
            .filter(|(_, d)| *d > now)
            .map(|(v, _)| v);
        let (value, deadline, out) = f(current);
        self.insert_locked(&mut inner, key, value, deadline, now);
        out
    }

    fn insert_locked(
        &self,
        inner: &mut Inner<K, V>,
        key: K,
        value: V,
        deadline: Instant,
        now: Instant,
    ) {
        if !inner.map.contains_key(&key) && inner.map.len() >= self.max_entries {
            let sweep_due = inner
                .last_sweep
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
            if sweep_due {
                inner.map.retain(|_, (_, d)| *d > now);
                inner.last_sweep = Some(now);
            }
            if inner.map.len() >= self.max_entries
                && let Some(victim) = inner.map.keys().next().cloned()
            {
                inner.map.remove(&victim);
            }
        }
        inner.map.insert(key, (value, deadline));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        // A panic while holding the lock leaves a consistent map.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_stays_bounded() {
        let c = TtlCache::new(3);
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        for i in 0..10 {
            c.insert(i, i, later, now);
        }
        assert_eq!(c.len(), 3);
        c.insert(100, 1, now + Duration::from_secs(1), now);
        assert_eq!(c.get(&100, now), Some(1));
        assert_eq!(c.get(&100, now + Duration::from_secs(2)), None);
    }
}
