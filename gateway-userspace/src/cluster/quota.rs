//! Quotas shared by every node: one counter per (quota, consumer, window)
//! in Redis, incremented by one script per request (`INCRBY`, exact: no
//! leasing, a quota is a business count, not a flood guard) and expiring an
//! hour after its window ends. The window is computed by the node from its
//! clock (keep nodes on NTP): nodes agree on the key except within their
//! clock skew of a window boundary.
//!
//! When Redis is unavailable the caller counts on the node alone
//! (fail-open, like shared limits): the cluster may then serve up to N
//! times the quota for N nodes, and the local counts do not flow back.

#![forbid(unsafe_code)]

use super::{Cluster, scripts};

/// Why Redis could not read or reset a quota count (the cluster's side;
/// the message never carries the Redis password).
#[derive(Debug, thiserror::Error)]
pub enum RedisQuotaError {
    /// The link to Redis is down.
    #[error("Redis is unavailable")]
    Unavailable,
    /// Redis did not answer within `[cluster] command_timeout`.
    #[error("Redis did not answer in time")]
    Timeout,
    /// Redis refused the command (its message, password scrubbed).
    #[error("{0}")]
    Redis(String),
}

/// Seconds a window's counter outlives the window (so `gateway quota get`
/// still sees a count just after a window ended and skewed nodes agree).
const GRACE_SECS: i64 = 3600;

impl Cluster {
    fn quota_key(&self, quota: &str, window_start: i64, consumer: &str) -> String {
        format!(
            "{}:quota:{quota}:{window_start}:{consumer}",
            self.keys.prefix
        )
    }

    /// Counts one request of `consumer` against `quota` (at most `limit` in
    /// the window `[start, end)`). `Some((counted, used))` from Redis, or
    /// `None` when Redis is unavailable (decide locally).
    pub async fn quota_take(
        &self,
        quota: &str,
        consumer: &str,
        limit: u64,
        start: i64,
        end: i64,
    ) -> Option<(bool, u64)> {
        let mut conn = self.connection()?;
        let mut call = scripts::QUOTA.key(self.quota_key(quota, start, consumer));
        call.arg(limit).arg(end + GRACE_SECS);
        let reply = tokio::time::timeout(
            self.cfg.command_timeout.get(),
            call.invoke_async::<(u64, u64)>(&mut conn),
        )
        .await;
        match reply {
            Ok(Ok((counted, used))) => Some((counted == 1, used)),
            Ok(Err(e)) => {
                self.request_failed(Some(&e));
                None
            }
            Err(_) => {
                self.request_failed(None);
                None
            }
        }
    }

    /// The cluster's count of `consumer` in the window starting at `start`.
    pub async fn quota_get(
        &self,
        quota: &str,
        start: i64,
        consumer: &str,
    ) -> Result<u64, RedisQuotaError> {
        let mut conn = self.connection().ok_or(RedisQuotaError::Unavailable)?;
        let cmd = redis::cmd("GET")
            .arg(self.quota_key(quota, start, consumer))
            .to_owned();
        let v: Option<u64> =
            tokio::time::timeout(self.cfg.command_timeout.get(), cmd.query_async(&mut conn))
                .await
                .map_err(|_| RedisQuotaError::Timeout)?
                .map_err(|e| RedisQuotaError::Redis(self.scrub(&e)))?;
        Ok(v.unwrap_or(0))
    }

    /// Deletes the cluster's count of `consumer` in the window starting at
    /// `start`; true if there was one.
    pub async fn quota_reset(
        &self,
        quota: &str,
        start: i64,
        consumer: &str,
    ) -> Result<bool, RedisQuotaError> {
        let mut conn = self.connection().ok_or(RedisQuotaError::Unavailable)?;
        let cmd = redis::cmd("DEL")
            .arg(self.quota_key(quota, start, consumer))
            .to_owned();
        let n: u64 =
            tokio::time::timeout(self.cfg.command_timeout.get(), cmd.query_async(&mut conn))
                .await
                .map_err(|_| RedisQuotaError::Timeout)?
                .map_err(|e| RedisQuotaError::Redis(self.scrub(&e)))?;
        Ok(n > 0)
    }
}
