//! Key health across replicas: a key one replica rests is written with its end (on the store's
//! clock) to one hash; every replica's watcher reads the hash each quarter second and rests the
//! same key in its own view, so choosing a key never asks the store.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::Shared;

/// What the watcher does with a key another replica rested: fingerprint, time left, status.
pub type OnRested = Box<dyn Fn(&str, Duration, u16) + Send + Sync>;

pub(super) struct Seen {
    pub replicas: u64,
    pub rested: Vec<(String, Duration, u16)>,
}

/// Heartbeat this replica, drop replicas silent for a minute, count the rest, and read the keys
/// resting now (what is left of each rest, so clocks need not agree).
static HEARTBEAT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - 60000)
redis.call('PEXPIRE', KEYS[1], 120000)
local out = {tostring(redis.call('ZCARD', KEYS[1]))}
local rested = redis.call('HGETALL', KEYS[2])
for i = 1, #rested, 2 do
  local stop, reason = string.match(rested[i + 1], '^(%d+):(%d+)$')
  if stop and tonumber(stop) > ms then
    out[#out + 1] = rested[i]
    out[#out + 1] = tostring(tonumber(stop) - ms)
    out[#out + 1] = reason
  else
    redis.call('HDEL', KEYS[2], rested[i])
  end
end
return out
",
    )
});

/// Rest a key until now + ARGV[2] ms on the store's clock, never shortening a longer rest.
static REST: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stop = ms + tonumber(ARGV[2])
local old = redis.call('HGET', KEYS[1], ARGV[1])
local before = old and tonumber(string.match(old, '^(%d+)')) or 0
if before < stop then
  redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%s', stop, ARGV[3]))
end
redis.call('PEXPIRE', KEYS[1], 7200000)
return 1
",
    )
});

pub(super) async fn heartbeat(shared: &Shared) -> Option<Seen> {
    let mut invocation = HEARTBEAT.key(shared.key("replicas"));
    invocation.key(shared.key("rested")).arg(&shared.id);
    let mut conn = shared.conn.clone();
    let out: Vec<String> = shared.call(invocation.invoke_async(&mut conn)).await?;
    let replicas = out.first().and_then(|n| n.parse().ok()).unwrap_or(1);
    let rested = out[1.min(out.len())..]
        .chunks_exact(3)
        .filter_map(|c| {
            let left = Duration::from_millis(c[1].parse().ok()?);
            Some((c[0].clone(), left, c[2].parse().ok()?))
        })
        .collect();
    Some(Seen { replicas, rested })
}

/// Tells the other replicas that the key with `fingerprint` rests for `rest` after `status`;
/// off the response path, and skipped while the store is down (health stays local).
pub fn publish_rest(shared: &Arc<Shared>, fingerprint: &str, rest: Duration, status: u16) {
    if !shared.reachable() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let shared = shared.clone();
    let fingerprint = fingerprint.to_owned();
    runtime.spawn(async move {
        let mut invocation = REST.key(shared.key("rested"));
        invocation
            .arg(fingerprint)
            .arg(u64::try_from(rest.as_millis()).unwrap_or(u64::MAX))
            .arg(status);
        let mut conn = shared.conn.clone();
        let _: Option<i64> = shared.call(invocation.invoke_async(&mut conn)).await;
    });
}
