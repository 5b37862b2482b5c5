//! The Lua scripts that make each shared operation one atomic step in Redis (a script runs
//! alone: no other client's command interleaves). Keys are built by the caller, except the
//! per-prediction keys of a batch, built here from the prefix passed in (so a fleet must be on
//! one Redis, not a cluster).

use std::sync::LazyLock;

use redis::Script;

/// Stores a batch of one model's predictions and keeps the model's index bounded.
/// KEYS[1] = index (sorted set of ids by time); ARGV = key prefix, capacity, expiry (ms),
/// oldest kept (ms), then per prediction: id, payload, rows, at (ms).
pub static PUT_PREDICTIONS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local index, prefix = KEYS[1], ARGV[1]
local cap, px, oldest = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 5, #ARGV, 4 do
  local key = prefix .. ARGV[i]
  redis.call('DEL', key)
  redis.call('HSET', key, 'p', ARGV[i + 1], 'rows', ARGV[i + 2], 'at', ARGV[i + 3], 'l', '0')
  redis.call('PEXPIRE', key, px)
  redis.call('ZADD', index, ARGV[i + 3], ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', index, '-inf', oldest)
local n = redis.call('ZCARD', index)
if n > cap then
  local old = redis.call('ZPOPMIN', index, n - cap)
  for j = 1, #old, 2 do redis.call('DEL', prefix .. old[j]) end
end
redis.call('PEXPIRE', index, px)
return n
",
    )
});

/// Takes the prediction for a label: marks it labelled when it is found, fresh, unlabelled and
/// has the label's number of rows. KEYS[1] = the prediction; ARGV = rows, now (ms), TTL (ms).
/// Answers `{outcome, detail}`.
pub static TAKE_PREDICTION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HMGET', KEYS[1], 'p', 'rows', 'at', 'l')
if not v[1] then return {'unknown', ''} end
if tonumber(ARGV[2]) - tonumber(v[3]) > tonumber(ARGV[3]) then return {'expired', ''} end
if v[4] == '1' then return {'labelled', ''} end
if v[2] ~= ARGV[1] then return {'rows', v[2]} end
redis.call('HSET', KEYS[1], 'l', '1')
return {'found', v[1]}
",
    )
});

/// Marks a prediction labelled (its label was joined by the replica that still held it before
/// it reached Redis). KEYS[1] = the prediction.
pub static MARK_LABELLED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'l', '1') end
return 1
",
    )
});

/// Takes or renews the lease. KEYS[1] = lease; ARGV = replica id, TTL (ms). 1: held by us.
pub static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
",
    )
});

/// Gives the lease up if we hold it. KEYS[1] = lease; ARGV[1] = replica id.
pub static RESIGN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
",
    )
});

/// Publishes a document if its sequence number is still the one the writer read and, for
/// leader-only writes, the writer still holds the lease. KEYS[1] = document, KEYS[2] = lease;
/// ARGV = body, new seq, expected seq ('' for any), replica that must lead ('' for none).
pub static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then return 'not_leader' end
local cur = redis.call('HGET', KEYS[1], 'seq')
if ARGV[3] ~= '' and (cur or '0') ~= ARGV[3] then return 'stale' end
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'body', ARGV[1])
return 'ok'
",
    )
});
