//! Budgets and rate limits per client: spend per calendar period, tokens per UTC day, requests
//! per minute, requests at once. A request reserves before it is sent and is admitted only while
//! what was spent plus what requests in flight hold is below the limit; its [`Reservation`]
//! travels with the answer and is replaced by what the answer cost when it ends. Counters are
//! atomics updated by compare-and-swap, never under a lock, and kept across reloads by token
//! (then by name); a client that gains a limit starts from what the ledger says it spent.

mod calendar;
mod reservation;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::error::LocalError;
use crate::config::clients::MAX_ANSWER_TOKENS;
use crate::config::clients::{Client, Clients, Digest, Limits as ClientLimits, Period};
use crate::usage::{Counts, Row};
pub(crate) use calendar::period_name;
use calendar::{day_number, days, period_end, period_index, period_of_day, secs, DAY};
pub use reservation::{Charge, Reservation};
use window::Window;

const PERIODS: [Period; 3] = [Period::Day, Period::Week, Period::Month];

/// What one client has used in its current windows. Every dimension is counted for every client
/// with a limit, whichever it has, so a reload that adds a budget or changes its period finds
/// the spend already there.
#[derive(Default, Debug)]
pub struct Used {
    minute: Window,
    /// Tokens of the UTC day, reservations in flight included.
    tokens: Window,
    /// Micro-dollars per kind of period (day, week, month); the budget's own also holds the
    /// reservations in flight.
    spend: [Window; 3],
    reserved_micros: AtomicU64,
    reserved_tokens: AtomicU64,
    in_flight: AtomicU64,
}

fn slot(p: Period) -> usize {
    match p {
        Period::Day => 0,
        Period::Week => 1,
        Period::Month => 2,
    }
}

/// A client's counters as they are now, for `GET /_keyproxy/me` and the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UsedNow {
    /// Spent in the budget's period (the month without a budget), answers that ended only.
    pub spend_micros: u64,
    /// Held by requests in flight against the budget.
    pub reserved_micros: u64,
    /// Tokens of the UTC day, answers that ended only.
    pub tokens_today: u64,
    pub reserved_tokens: u64,
    pub requests_this_minute: u64,
    /// Requests running now (counted only with `max_in_flight`).
    pub in_flight: u64,
    /// Seconds since the epoch at which the budget's period ends; `None` without a budget.
    pub budget_resets_at: Option<u64>,
    pub tokens_reset_at: u64,
    pub minute_resets_at: u64,
}

impl Used {
    /// What this client has used and holds now, under `limits` (its current ones).
    pub fn now(&self, limits: &ClientLimits) -> UsedNow {
        let now = SystemTime::now();
        let s = secs(now);
        let period = limits.budget.map_or(Period::Month, |(_, p)| p);
        let reserved_micros = self.reserved_micros.load(Ordering::Relaxed);
        let reserved_tokens = self.reserved_tokens.load(Ordering::Relaxed);
        let spend = self.spend[slot(period)].get(period_index(period, now));
        UsedNow {
            spend_micros: spend.saturating_sub(reserved_micros),
            reserved_micros,
            tokens_today: self.tokens.get(days(now)).saturating_sub(reserved_tokens),
            reserved_tokens,
            requests_this_minute: self.minute.get(s / 60),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            budget_resets_at: limits.budget.map(|(_, p)| period_end(p, now)),
            tokens_reset_at: (s / DAY + 1) * DAY,
            minute_resets_at: (s / 60 + 1) * 60,
        }
    }

    /// Adds the ledger's rows of `client` that fall in the current periods.
    fn seed(&self, client: &str, rows: &BTreeMap<Row, Counts>) {
        let now = SystemTime::now();
        let today = days(now);
        for ((day, ..), counts) in rows.iter().filter(|((_, c, ..), _)| c == client) {
            let Some(day) = day_number(day) else { continue };
            for p in PERIODS {
                let current = period_index(p, now);
                if period_of_day(p, day) == current {
                    self.spend[slot(p)].add(current, dollars_to_micros(counts.cost_usd));
                }
            }
            if day == today {
                let tokens = counts
                    .prompt_tokens
                    .saturating_add(counts.completion_tokens)
                    .saturating_add(counts.estimated_tokens);
                self.tokens.add(today, tokens);
            }
        }
    }
}

/// Every limited client's counters, by name (the request path) and by token (reloads).
#[derive(Default, Debug)]
pub struct Limits {
    by_client: HashMap<String, Arc<Used>>,
    by_token: HashMap<Digest, Arc<Used>>,
}

impl Limits {
    /// Counters for the clients of `clients` that have a limit: `old`'s, found by token (a
    /// rename keeps them) and else by name; a client with none yet (new, or gaining its first
    /// limit) starts from the ledger's rows, which `rows` gives, asked once and only if needed.
    pub fn build<R>(clients: &Clients, old: Option<&Limits>, rows: R) -> Self
    where
        R: FnOnce() -> Option<BTreeMap<Row, Counts>>,
    {
        let mut rows = Some(rows);
        let mut read: Option<BTreeMap<Row, Counts>> = None;
        let mut limits = Self::default();
        for (digest, c) in clients.with_digests().filter(|(_, c)| c.limits.any()) {
            let kept = old.and_then(|o| {
                o.by_token
                    .get(digest)
                    .or_else(|| o.by_client.get(&c.name))
                    .cloned()
            });
            let used = kept.unwrap_or_else(|| {
                let used = Used::default();
                if let Some(rows) = rows.take().and_then(|r| r()) {
                    read = Some(rows);
                }
                if let Some(rows) = &read {
                    used.seed(&c.name, rows);
                }
                Arc::new(used)
            });
            limits.by_token.insert(*digest, used.clone());
            limits.by_client.insert(c.name.clone(), used);
        }
        limits
    }

    pub fn of(&self, client: &str) -> Option<&Arc<Used>> {
        self.by_client.get(client)
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Seeds every client's current windows from the ledger's rows, so a restart does not give
    /// a client its budget again.
    pub fn seed(&self, rows: &BTreeMap<Row, Counts>) {
        for (name, used) in &self.by_client {
            used.seed(name, rows);
        }
    }
}

/// Micro-dollars of `usd`; what is not a plausible amount counts nothing (callers check first).
pub fn dollars_to_micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e6).round().min(window::COUNT_MAX as f64) as u64
    } else {
        0
    }
}

/// What a request may use, as far as keyproxy can tell before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// A request that can run a model (not GET, HEAD or OPTIONS) reserves; a read does not.
    pub billable: bool,
    /// Its prompt and most output tokens, when its body says; else the client's
    /// `reserve_tokens` is reserved.
    pub tokens: Option<u64>,
}

impl Estimate {
    pub fn of_method(method: &http::Method) -> Self {
        use http::Method;
        let read = [Method::GET, Method::HEAD, Method::OPTIONS].contains(method);
        Self {
            billable: !read,
            tokens: None,
        }
    }
}

/// Before forwarding: refuses a client over a limit, with when it resets, or reserves what the
/// request may cost and counts it against the per-minute limit. What was reserved is given back
/// if a later check refuses.
pub fn admit(
    client: &Client,
    used: &Arc<Used>,
    estimate: Estimate,
) -> Result<Reservation, LocalError> {
    admit_under(&client.name, &client.limits, used, estimate)
}

/// [`admit`] under `limits` in place of the client's own: with `[shared]`, only what is not
/// kept in the shared store (requests at once), or this replica's share when the store does
/// not answer.
pub fn admit_under(
    name: &str,
    limits: &ClientLimits,
    used: &Arc<Used>,
    estimate: Estimate,
) -> Result<Reservation, LocalError> {
    let now = SystemTime::now();
    let s = secs(now);
    let mut held = Reservation::new(used.clone());
    if let Some((usd, period)) = limits.budget {
        let index = period_index(period, now);
        let limit = dollars_to_micros(usd);
        let reserve = if estimate.billable {
            dollars_to_micros(limits.reserve_usd)
        } else {
            0
        };
        let admitted = used.spend[slot(period)]
            .update(index, |c| (c < limit).then(|| c.saturating_add(reserve)));
        if admitted.is_err() {
            return Err(LocalError::BudgetExhausted {
                client: name.to_owned(),
                limit: format!("budget of ${usd:.2} per {}", period_name(period)),
                retry_after: period_end(period, now).saturating_sub(s).max(1),
            });
        }
        held.hold_spend(period, index, reserve);
    }
    if let Some(max) = limits.tokens_per_day {
        let day = days(now);
        let reserve = match (estimate.billable, estimate.tokens) {
            (false, _) => 0,
            (true, Some(t)) => t.min(MAX_ANSWER_TOKENS),
            (true, None) => limits.reserve_tokens,
        };
        if used
            .tokens
            .update(day, |c| (c < max).then(|| c.saturating_add(reserve)))
            .is_err()
        {
            return Err(LocalError::BudgetExhausted {
                client: name.to_owned(),
                limit: format!("{max} tokens per day"),
                retry_after: ((s / DAY + 1) * DAY).saturating_sub(s).max(1),
            });
        }
        held.hold_tokens(day, reserve);
    }
    if let Some(max) = limits.max_in_flight {
        let max = u64::from(max);
        let counted = used
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if counted.is_err() {
            return Err(LocalError::RateLimited {
                client: name.to_owned(),
                limit: format!("{max} requests at once"),
                retry_after: 1,
            });
        }
        held.hold_in_flight();
    }
    if let Some(max) = limits.requests_per_minute {
        let max = u64::from(max);
        if used
            .minute
            .update(s / 60, |c| (c < max).then_some(c + 1))
            .is_err()
        {
            return Err(LocalError::RateLimited {
                client: name.to_owned(),
                limit: format!("{max} requests per minute"),
                retry_after: (60 - s % 60).max(1),
            });
        }
    }
    Ok(held)
}

/// The period windows the `at` of an answer's end falls in, for settling.
fn now_indexes(at: SystemTime) -> ([u64; 3], u64) {
    (PERIODS.map(|p| period_index(p, at)), days(at))
}

#[cfg(test)]
mod tests;
