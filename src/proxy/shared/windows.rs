//! Clients' windows in the shared store: one script checks every window of a client and
//! reserves in all of them atomically (one round trip, the store's clock). What an answer cost
//! replaces its reservation off the response path: the next admit on the same worker carries
//! it in its own round trip, or, when none comes within a millisecond, one call of the
//! worker's on its connection.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::Shared;
use crate::config::clients::{Client, Limits as ClientLimits, MAX_ANSWER_TOKENS};
use crate::config::shared::OnFailure;
use crate::proxy::limits::{self, dollars_to_micros, Charge, Estimate, Reservation, Used};
use crate::proxy::LocalError;

/// KEYS[1]: the client's prefix. ARGV: budget period ('' for none), budget and reserve in
/// micro-dollars, tokens per day (0 for none) and tokens reserved, requests per minute (0 for
/// none). KEYS[2..]: windows to settle first, each by ARGV[i + 5] (an expired one is skipped). Periods are UTC days, ISO weeks and months (Hinnant's civil calendar), as locally.
/// Returns {'0', budget key, tokens key} or {'1'|'2'|'3', seconds until the window resets}.
static ADMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local function from_civil(y, m)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + math.floor((153 * mp + 2) / 5)
  return era * 146097 + doe - 719468
end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i + 5]) end
end
local s = tonumber(redis.call('TIME')[1])
local day = math.floor(s / 86400)
local base = KEYS[1]
local bkey, bttl, tkey, mkey
if ARGV[1] ~= '' then
  local idx, stop
  if ARGV[1] == 'day' then
    idx = day; stop = (day + 1) * 86400
  elseif ARGV[1] == 'week' then
    idx = math.floor((day + 3) / 7); stop = ((idx + 1) * 7 - 3) * 86400
  else
    local z = day + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
    local y = yoe + era * 400
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local m = mp < 10 and mp + 3 or mp - 9
    if m <= 2 then y = y + 1 end
    idx = y * 12 + m - 1
    if m == 12 then stop = from_civil(y + 1, 1) * 86400 else stop = from_civil(y, m + 1) * 86400 end
  end
  bkey = string.format('%sspend:%s:%d', base, ARGV[1], idx)
  bttl = stop - s
  if tonumber(redis.call('GET', bkey) or '0') >= tonumber(ARGV[2]) then return {'1', tostring(bttl)} end
end
local dttl = (day + 1) * 86400 - s
if tonumber(ARGV[4]) > 0 then
  tkey = string.format('%stokens:%d', base, day)
  if tonumber(redis.call('GET', tkey) or '0') >= tonumber(ARGV[4]) then return {'2', tostring(dttl)} end
end
if tonumber(ARGV[6]) > 0 then
  mkey = string.format('%sminute:%d', base, math.floor(s / 60))
  if tonumber(redis.call('GET', mkey) or '0') >= tonumber(ARGV[6]) then return {'3', tostring(60 - s % 60)} end
end
if bkey then redis.call('INCRBY', bkey, ARGV[3]); redis.call('EXPIRE', bkey, bttl + 3600) end
if tkey then redis.call('INCRBY', tkey, ARGV[5]); redis.call('EXPIRE', tkey, dttl + 3600) end
if mkey then redis.call('INCR', mkey); redis.call('EXPIRE', mkey, 120) end
return {'0', bkey or '', tkey or ''}
",
    )
});

/// Adds ARGV[i] to KEYS[i] where the window still exists (an expired one is not brought back).
static SETTLE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i]) end
end
return 1
",
    )
});

/// How long a settlement waits for the next admit on its worker to carry it.
const SETTLE_WITHIN: Duration = Duration::from_millis(1);

thread_local! {
    /// On a worker's thread: what answers cost against what they reserved, per window, not yet
    /// sent. The next admit on this thread takes it; else the task `FLUSHING` says is spawned.
    static PENDING: RefCell<Vec<(String, i64)>> = const { RefCell::new(Vec::new()) };
    static FLUSHING: Cell<bool> = const { Cell::new(false) };
}

/// What the shared store holds for one request; settled (or given back when dropped) once.
pub struct Hold {
    shared: Arc<Shared>,
    spend: Option<(String, u64)>,
    tokens: Option<(String, u64)>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("spend", &self.spend)
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl Hold {
    pub fn estimate(&self) -> Charge {
        Charge {
            micros: self.spend.as_ref().map_or(0, |(_, m)| *m),
            tokens: self.tokens.as_ref().map_or(0, |(_, t)| *t),
        }
    }

    /// Replaces the reservation with `charge`, off the response path: the answer does not wait.
    pub fn settle(mut self, charge: Charge) {
        self.send(charge);
    }

    fn send(&mut self, charge: Charge) {
        let mut moves: Vec<(String, i64)> = Vec::new();
        if let Some((key, reserved)) = self.spend.take() {
            moves.push((key, delta(charge.micros, reserved)));
        }
        if let Some((key, reserved)) = self.tokens.take() {
            moves.push((key, delta(charge.tokens, reserved)));
        }
        moves.retain(|(_, d)| *d != 0);
        if moves.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        if !crate::rt::on_worker() {
            runtime.spawn(async move {
                let conn = shared.conn.clone();
                settle_now(&shared, moves, conn).await;
            });
            return;
        }
        PENDING.with_borrow_mut(|p| p.extend(moves));
        if !FLUSHING.replace(true) {
            // A worker's runtime runs its tasks on its one thread: this task sees this PENDING.
            runtime.spawn(async move {
                tokio::time::sleep(SETTLE_WITHIN).await;
                FLUSHING.set(false);
                let conn = shared.worker_conn();
                settle_now(&shared, PENDING.take(), conn).await;
            });
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.send(Charge::default());
    }
}

/// Adds each of `moves` to its window in one call, unless there is none.
async fn settle_now(
    shared: &Shared,
    moves: Vec<(String, i64)>,
    conn: redis::aio::ConnectionManager,
) {
    if moves.is_empty() {
        return;
    }
    let mut invocation = SETTLE.prepare_invoke();
    for (key, d) in &moves {
        invocation.key(key).arg(d);
    }
    let invocation = &invocation;
    let _: Option<i64> = shared
        .call_fresh(|| {
            let mut conn = conn.clone();
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await;
}

fn delta(charge: u64, reserved: u64) -> i64 {
    let c = i64::try_from(charge).unwrap_or(i64::MAX);
    let r = i64::try_from(reserved).unwrap_or(i64::MAX);
    c.saturating_sub(r)
}

/// Admits a limited client against the shared windows; requests at once stay local. When the
/// store does not answer within `timeout` (or is known down): budgets and token limits follow
/// `on_failure`, requests per minute this replica's share.
pub async fn admit(
    shared: &Arc<Shared>,
    client: &Client,
    used: &Arc<Used>,
    estimate: Estimate,
) -> Result<Reservation, LocalError> {
    let l = &client.limits;
    if l.budget.is_none() && l.tokens_per_day.is_none() && l.requests_per_minute.is_none() {
        return limits::admit(client, used, estimate);
    }
    let at_once = ClientLimits {
        max_in_flight: l.max_in_flight,
        ..ClientLimits::default()
    };
    if shared.reachable() {
        // Requests at once first: a refusal there asks the store nothing.
        let held = limits::admit_under(&client.name, &at_once, used, estimate)?;
        match ask(shared, client, estimate).await {
            Some(Ok(hold)) => return Ok(held.with_shared(hold)),
            Some(Err(refused)) => return Err(refused),
            None => {}
        }
    }
    if shared.config.on_failure == OnFailure::Closed
        && (l.budget.is_some() || l.tokens_per_day.is_some())
    {
        return Err(LocalError::LimitsUnavailable {
            client: client.name.clone(),
            store: shared.config.store.clone(),
        });
    }
    let n = shared
        .replicas
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(1);
    let share = ClientLimits {
        budget: l.budget.map(|(usd, p)| (usd / n as f64, p)),
        tokens_per_day: l.tokens_per_day.map(|t| (t / n).max(1)),
        requests_per_minute: l
            .requests_per_minute
            .map(|r| (u64::from(r) / n).max(1) as u32),
        ..*l
    };
    limits::admit_under(&client.name, &share, used, estimate)
}

/// One round trip: `None` when the store did not answer in time.
async fn ask(
    shared: &Arc<Shared>,
    client: &Client,
    estimate: Estimate,
) -> Option<Result<Hold, LocalError>> {
    let l = &client.limits;
    let reserve_usd = if estimate.billable {
        dollars_to_micros(l.reserve_usd)
    } else {
        0
    };
    let reserve_tokens = match (estimate.billable, estimate.tokens) {
        (false, _) => 0,
        (true, Some(t)) => t.min(MAX_ANSWER_TOKENS),
        (true, None) => l.reserve_tokens,
    };
    let period = l.budget.map_or("", |(_, p)| limits::period_name(p));
    // What answers on this worker cost and no call has settled yet rides along.
    let carried = match crate::rt::on_worker() {
        true => PENDING.take(),
        false => Vec::new(),
    };
    let mut invocation = ADMIT.key(shared.key(&format!("c:{}:", client.name)));
    for (key, _) in &carried {
        invocation.key(key);
    }
    invocation
        .arg(period)
        .arg(l.budget.map_or(0, |(usd, _)| dollars_to_micros(usd)))
        .arg(reserve_usd)
        .arg(l.tokens_per_day.unwrap_or(0))
        .arg(reserve_tokens)
        .arg(l.requests_per_minute.unwrap_or(0));
    for (_, d) in &carried {
        invocation.arg(d);
    }
    let (conn, invocation) = (shared.worker_conn(), &invocation);
    let out: Vec<String> = shared
        .call_fresh(|| {
            let mut conn = conn.clone();
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await?;
    let retry_after = |i: usize| {
        out.get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(1)
            .max(1)
    };
    let name = client.name.clone();
    Some(match out.first().map(String::as_str) {
        Some("1") => Err(LocalError::BudgetExhausted {
            client: name,
            limit: match l.budget {
                Some((usd, p)) => format!("budget of ${usd:.2} per {}", limits::period_name(p)),
                None => "budget".into(),
            },
            retry_after: retry_after(1),
        }),
        Some("2") => Err(LocalError::BudgetExhausted {
            client: name,
            limit: format!("{} tokens per day", l.tokens_per_day.unwrap_or(0)),
            retry_after: retry_after(1),
        }),
        Some("3") => Err(LocalError::RateLimited {
            client: name,
            limit: format!("{} requests per minute", l.requests_per_minute.unwrap_or(0)),
            retry_after: retry_after(1),
        }),
        _ => {
            let key = |i: usize| out.get(i).filter(|k| !k.is_empty()).cloned();
            Ok(Hold {
                shared: shared.clone(),
                spend: key(1).map(|k| (k, reserve_usd)),
                tokens: key(2).map(|k| (k, reserve_tokens)),
            })
        }
    })
}
