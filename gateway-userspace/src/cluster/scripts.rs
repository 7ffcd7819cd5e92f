//! The Lua scripts run inside Redis. Each runs atomically, so two nodes
//! never interleave inside one; time is Redis's own (`TIME`), so nodes with
//! drifting clocks still agree. Scripts are sent by SHA and re-sent when a
//! restarted Redis no longer knows them (`redis::Script` does this).
//!
//! Keys (with `P` the configured prefix):
//! - `P:rl:<limit>:<key>`: GCRA theoretical arrival time of a shared limit
//!   (microseconds, Redis time), expiring when the bucket is full again;
//! - `P:blocks`: hash net → block record (JSON);
//! - `P:block-expiry`: sorted set net → expiry (ms, Redis time) for cleanup;
//! - `P:unblocks`: sorted set net → when it was unblocked (ms), kept a day so
//!   a node that was away cannot bring a removed block back;
//! - `P:quota:<quota>:<window start>:<consumer>`: requests counted in one
//!   quota window (exact, `INCRBY`), expiring an hour after the window ends;
//! - channel `P:events`: `{"op":"add",…}` / `{"op":"del",…}` per change.

#![forbid(unsafe_code)]

use std::sync::LazyLock;

use redis::Script;

/// Leases up to `ARGV[3]` tokens of a GCRA limit with emission interval
/// `ARGV[1]` µs and burst `ARGV[2]`. Returns `{granted, remaining,
/// reset_us, retry_us}`: tokens granted (0 = over the limit), requests
/// still allowed at once after this grant, time until the bucket is full
/// again, and (when nothing was granted) time until one would be.
pub static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2]) * interval
local wanted = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local excess = tat - now
if excess > tolerance then
  return {0, 0, excess, excess - tolerance}
end
local avail = math.floor((tolerance - excess) / interval) + 1
local granted = math.min(wanted, avail)
tat = tat + granted * interval
local ahead = tat - now
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor(ahead / 1000) + 1000)
local remaining = 0
if ahead <= tolerance then remaining = math.floor((tolerance - ahead) / interval) + 1 end
return {granted, remaining, ahead, 0}
"#,
    )
});

/// Adds (or replaces) one cluster block and announces it.
/// KEYS: blocks, block-expiry, unblocks. ARGV: net, record JSON, expiry ms
/// (the far-future sentinel for permanent), channel, `1` to keep an
/// existing block that lasts longer (escalations) or `0` to replace
/// (operators). Returns 1 if written.
pub static ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('ZSCORE', KEYS[2], ARGV[1])
if ARGV[5] == '1' and cur and tonumber(cur) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[4], '{"op":"add","net":"' .. ARGV[1] .. '","record":' .. ARGV[2] .. '}')
return 1
"#,
    )
});

/// Removes one cluster block, leaves a tombstone and announces it.
/// KEYS: blocks, block-expiry, unblocks. ARGV: net, now ms, channel, origin
/// node. Returns 1 if the block existed.
pub static DEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], '{"op":"del","net":"' .. ARGV[1] .. '","origin":"' .. ARGV[4] .. '"}')
return existed
"#,
    )
});

/// Reconciles one node with the cluster: drops expired blocks and old
/// tombstones, applies the node's pending unblocks, adds the node's blocks
/// that Redis lacks or holds with an expiry over a second earlier (unless
/// unblocked after they were made; announced like ADD), and returns every live block as `[net, record, net, record, …]`.
/// KEYS: blocks, block-expiry, unblocks. ARGV: now ms, channel, origin,
/// number of unblocks N, then N × (net, unblocked ms), then blocks as
/// (net, created ms, expiry ms, record JSON) until the end.
pub static MERGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, net in ipairs(expired) do
  redis.call('HDEL', KEYS[1], net)
  redis.call('ZREM', KEYS[2], net)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 86400000)
local ndel = tonumber(ARGV[4])
local i = 5
for _ = 1, ndel do
  local net, at = ARGV[i], ARGV[i + 1]
  redis.call('HDEL', KEYS[1], net)
  redis.call('ZREM', KEYS[2], net)
  redis.call('ZADD', KEYS[3], at, net)
  redis.call('PUBLISH', ARGV[2], '{"op":"del","net":"' .. net .. '","origin":"' .. ARGV[3] .. '"}')
  i = i + 2
end
while i + 3 <= #ARGV do
  local net, created, expiry, record = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  local tomb = redis.call('ZSCORE', KEYS[3], net)
  if expiry > now and not (tomb and tonumber(tomb) >= created) then
    local cur = redis.call('ZSCORE', KEYS[2], net)
    if not cur or tonumber(cur) + 1000 < expiry then
      redis.call('HSET', KEYS[1], net, record)
      redis.call('ZADD', KEYS[2], ARGV[i + 2], net)
      redis.call('PUBLISH', ARGV[2], '{"op":"add","net":"' .. net .. '","record":' .. record .. '}')
    end
  end
  i = i + 4
end
return redis.call('HGETALL', KEYS[1])
"#,
    )
});

/// Adds `ARGV[1]` penalty points to a source's cluster-wide score, which
/// lives `ARGV[2]` ms from its first point (the escalation window). When
/// the total reaches `ARGV[3]` the score is cleared and the total returned
/// (once: the caller that crossed escalates); otherwise 0.
pub static SCORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if v >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return v
end
return 0
"#,
    )
});

/// Counts one request against a quota window unless it is used up.
/// KEYS: the window's counter. ARGV: the quota, the Unix second at which the
/// counter expires. Returns `{1, used}` when counted, `{0, used}` when the
/// quota is used up (a refused request is not counted).
pub static QUOTA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v >= tonumber(ARGV[1]) then return {0, v} end
v = redis.call('INCRBY', KEYS[1], 1)
if v == 1 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
return {1, v}
"#,
    )
});
