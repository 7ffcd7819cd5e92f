//! A rate limit shared by every node: one GCRA bucket per key in Redis,
//! with token leasing as the local fast path.
//!
//! A node that sees a request for a key asks Redis for a *lease* of up to
//! `rate × lease` tokens (at least 1, at most `burst + 1`); Redis grants
//! what the bucket holds, atomically, and the node serves the next requests
//! for that key from the lease without a round trip. Unused tokens lapse
//! when the lease does. A refused key is refused locally until Redis said
//! it may try again, so a client hammering a limit costs one round trip
//! per retry period, not one per request.
//!
//! **Overshoot bound.** Every request served spent a token the Redis bucket
//! granted, and a token is spent at most `lease` after its grant. So over
//! any interval T the cluster serves at most what the limit allows over
//! T + `lease`: `burst + 1 + rate × (T + lease)`: at most `rate × lease`
//! requests above the exact limit (5 at 100 r/s with the default 50 ms).
//! Leasing can only under-serve otherwise (tokens that lapse unused).
//! While Redis is unreachable each node enforces the limit alone, so a
//! cluster of N nodes serves at most N times the limit (fail-open).

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, RandomState},
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use super::{Cluster, scripts};
use crate::{
    clock,
    ratelimit::{Decision, LimitConfig, Limiter, Rate},
};

const SHARDS: usize = 16;

#[derive(Clone, Copy, Default)]
struct Lease {
    /// Tokens left to spend locally.
    tokens: u32,
    /// Monotonic ns when unused tokens lapse.
    expires_ns: u64,
    /// Refused by Redis until then.
    denied_until_ns: u64,
    /// Requests Redis still had for this key at the grant.
    remaining: u32,
    /// Monotonic ns when the bucket is full again (for headers).
    reset_at_ns: u64,
}

/// One `shared = true` limit: a GCRA bucket per key in Redis, served from local token leases (see
/// the module docs for the overshoot bound), falling back to the node's own limiter while Redis is
/// unreachable.
pub struct SharedLimit {
    cluster: Arc<Cluster>,
    key_prefix: String,
    interval_us: u64,
    burst: u32,
    lease_size: u32,
    lease_ns: u64,
    leases: Box<[Mutex<HashMap<String, Lease>>]>,
    per_shard: usize,
    hasher: RandomState,
}

/// Tokens per lease: what the rate earns in one lease period, at least one,
/// at most what a full bucket holds.
pub fn lease_size(interval_us: u64, burst: u32, lease: Duration) -> u32 {
    let n = lease.as_micros() as u64 / interval_us.max(1);
    n.clamp(1, u64::from(burst) + 1) as u32
}

impl SharedLimit {
    /// The shared bucket of `config` at `rate` (its configured rate).
    pub fn new(cluster: Arc<Cluster>, config: &LimitConfig, rate: Rate) -> Self {
        let interval_us = (rate.interval_ns() / 1000).max(1);
        let lease = cluster.config().lease.get();
        Self {
            key_prefix: format!("{}:rl:{}:", cluster.keys.prefix, config.name),
            interval_us,
            burst: config.burst,
            lease_size: lease_size(interval_us, config.burst, lease),
            lease_ns: lease.as_nanos() as u64,
            leases: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: config.max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            cluster,
        }
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Lease>> {
        &self.leases[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// Checks and counts one request for `key`: from the local lease, else
    /// from Redis, else (Redis unavailable) from `local`, the node's own
    /// bucket for the same limit.
    pub async fn check(&self, key: &str, local: &Limiter) -> Decision {
        let now = clock::monotonic_ns();
        if let Some(d) = self.spend_lease(key, now) {
            return d;
        }
        let Some(mut conn) = self.cluster.connection() else {
            return self.local(key, local, now);
        };
        self.cluster
            .stats
            .lease_requests
            .fetch_add(1, Ordering::Relaxed);
        let redis_key = format!("{}{key}", self.key_prefix);
        let mut call = scripts::LEASE.key(redis_key);
        call.arg(self.interval_us)
            .arg(self.burst)
            .arg(self.lease_size);
        let reply = tokio::time::timeout(
            self.cluster.config().command_timeout.get(),
            call.invoke_async::<(u64, u64, u64, u64)>(&mut conn),
        )
        .await;
        match reply {
            Ok(Ok((granted, remaining, reset_us, retry_us))) => {
                self.granted(key, now, granted, remaining, reset_us, retry_us)
            }
            Ok(Err(e)) => {
                self.cluster.request_failed(Some(&e));
                self.local(key, local, clock::monotonic_ns())
            }
            Err(_) => {
                self.cluster.request_failed(None);
                self.local(key, local, clock::monotonic_ns())
            }
        }
    }

    fn local(&self, key: &str, local: &Limiter, now: u64) -> Decision {
        self.cluster
            .stats
            .local_decisions
            .fetch_add(1, Ordering::Relaxed);
        local.check_key(key, now)
    }

    fn spend_lease(&self, key: &str, now: u64) -> Option<Decision> {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let lease = shard.get_mut(key)?;
        let reset = Duration::from_nanos(lease.reset_at_ns.saturating_sub(now));
        if lease.denied_until_ns > now {
            return Some(Decision::Reject {
                retry_after: Duration::from_nanos(lease.denied_until_ns - now),
                reset,
            });
        }
        if lease.tokens > 0 && lease.expires_ns > now {
            lease.tokens -= 1;
            return Some(Decision::Allow {
                remaining: lease.remaining + lease.tokens,
                reset,
            });
        }
        None
    }

    fn granted(
        &self,
        key: &str,
        now: u64,
        granted: u64,
        remaining: u64,
        reset_us: u64,
        retry_us: u64,
    ) -> Decision {
        let reset = Duration::from_micros(reset_us);
        let reset_at_ns = now + reset_us * 1000;
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if !shard.contains_key(key) && shard.len() >= self.per_shard {
            // Forget lapsed leases first; if every one is live, start over
            // (a dropped lease only wastes tokens: it never over-serves).
            shard.retain(|_, l| l.expires_ns > now || l.denied_until_ns > now);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        let lease = shard.entry(key.to_owned()).or_default();
        if granted == 0 {
            let retry = Duration::from_micros(retry_us.max(1));
            lease.denied_until_ns = now + retry.as_nanos() as u64;
            lease.reset_at_ns = reset_at_ns;
            return Decision::Reject {
                retry_after: retry,
                reset,
            };
        }
        // Tokens of an earlier lease that has not lapsed stay usable.
        let carried = if lease.expires_ns > now {
            lease.tokens
        } else {
            0
        };
        *lease = Lease {
            tokens: carried + (granted as u32 - 1),
            expires_ns: now + self.lease_ns,
            denied_until_ns: 0,
            remaining: remaining as u32,
            reset_at_ns,
        };
        Decision::Allow {
            remaining: lease.remaining + lease.tokens,
            reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_size_follows_rate_and_burst() {
        let ms = Duration::from_millis;
        // 10 r/s (100 ms apart): one token per 50 ms lease.
        assert_eq!(lease_size(100_000, 20, ms(50)), 1);
        // 1000 r/s: 50 tokens per 50 ms lease.
        assert_eq!(lease_size(1_000, 100, ms(50)), 50);
        // ...but never more than a full bucket.
        assert_eq!(lease_size(1_000, 9, ms(50)), 10);
        // 1 r/m: still one token.
        assert_eq!(lease_size(60_000_000, 0, ms(50)), 1);
    }
}
