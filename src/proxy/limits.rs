//! Budgets and rate limits per client: spend per calendar period, requests per minute, tokens
//! per UTC day. Counters are atomics, kept across reloads by client name; a request is refused
//! once a client is over, and the answer that crosses the line is never cut.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::LocalError;
use crate::config::clients::{Client, Clients, Limits as ClientLimits, Period};
use crate::usage::{Counts, Row};

const DAY: u64 = 86_400;

/// One counter that starts again at each period: the period it counts, and its count.
#[derive(Default, Debug)]
struct Window {
    period: AtomicU64,
    count: AtomicU64,
}

impl Window {
    /// The count in `period`, 0 when the window still counts an earlier one.
    fn get(&self, period: u64) -> u64 {
        if self.period.load(Ordering::Acquire) == period {
            self.count.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Adds `n` in `period` and returns the new count. A window from an earlier period starts
    /// again; two threads starting it at once may lose one's count, which a limit tolerates.
    fn add(&self, period: u64, n: u64) -> u64 {
        let seen = self.period.load(Ordering::Acquire);
        if seen != period
            && self
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.count.store(0, Ordering::Relaxed);
        }
        self.count.fetch_add(n, Ordering::Relaxed) + n
    }
}

/// What one client has used in its current windows.
#[derive(Default, Debug)]
pub struct Used {
    minute: Window,
    tokens_today: Window,
    /// Spend in the budget's period, in micro-dollars.
    spend: Window,
}

/// Every client's counters, by name.
#[derive(Default, Debug)]
pub struct Limits {
    by_client: HashMap<String, Arc<Used>>,
}

impl Limits {
    /// Counters for the clients of `clients` that have a limit, reusing `old`'s by name so a
    /// reload does not reset them.
    pub fn build(clients: &Clients, old: Option<&Limits>) -> Self {
        let by_client = clients
            .iter()
            .filter(|c| c.limits.any())
            .map(|c| {
                let kept = old.and_then(|o| o.by_client.get(&c.name).cloned());
                (c.name.clone(), kept.unwrap_or_default())
            })
            .collect();
        Self { by_client }
    }

    pub fn of(&self, client: &str) -> Option<&Arc<Used>> {
        self.by_client.get(client)
    }

    /// Seeds spend and tokens of the current windows from the ledger's rows, so a restart
    /// does not give a client its budget again.
    pub fn seed(&self, clients: &Clients, rows: &BTreeMap<Row, Counts>) {
        let now = SystemTime::now();
        for client in clients.iter() {
            let Some(used) = self.by_client.get(&client.name) else {
                continue;
            };
            let mine = rows.iter().filter(|((_, c, ..), _)| *c == client.name);
            for ((day, ..), counts) in mine {
                let Some(day) = day_number(day) else { continue };
                let then = UNIX_EPOCH + std::time::Duration::from_secs(day * DAY);
                if let Some((_, period)) = client.limits.budget {
                    if period_index(period, then) == period_index(period, now) {
                        used.spend.add(
                            period_index(period, now),
                            dollars_to_micros(counts.cost_usd),
                        );
                    }
                }
                if client.limits.tokens_per_day.is_some() && day == days(now) {
                    let tokens = counts.prompt_tokens + counts.completion_tokens;
                    used.tokens_today.add(day, tokens);
                }
            }
        }
    }
}

/// The day number of `2026-11-24`.
fn day_number(text: &str) -> Option<u64> {
    let mut parts = text.splitn(3, '-').map(|p| p.parse::<u64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    (y >= 1970 && (1..=12).contains(&m) && (1..=31).contains(&d))
        .then(|| days_from_civil(y, m) + d - 1)
}

fn dollars_to_micros(usd: f64) -> u64 {
    (usd.max(0.0) * 1e6).round() as u64
}

/// Before forwarding: refuses a client over a limit, with when it resets; counts the request
/// against the per-minute limit.
pub fn admit(client: &Client, used: &Used) -> Result<(), LocalError> {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let limits = &client.limits;
    if let Some((usd, period)) = limits.budget {
        let spent = used.spend.get(period_index(period, now));
        if spent >= dollars_to_micros(usd) {
            return Err(LocalError::BudgetExhausted {
                client: client.name.clone(),
                limit: format!("budget of ${usd:.2} per {}", period_name(period)),
                retry_after: period_end(period, now).saturating_sub(secs).max(1),
            });
        }
    }
    if let Some(max) = limits.tokens_per_day {
        if used.tokens_today.get(days(now)) >= max {
            return Err(LocalError::BudgetExhausted {
                client: client.name.clone(),
                limit: format!("{max} tokens per day"),
                retry_after: ((secs / DAY + 1) * DAY).saturating_sub(secs).max(1),
            });
        }
    }
    if let Some(max) = limits.requests_per_minute {
        if used.minute.add(secs / 60, 1) > u64::from(max) {
            return Err(LocalError::RateLimited {
                client: client.name.clone(),
                limit: format!("{max} requests per minute"),
                retry_after: (60 - secs % 60).max(1),
            });
        }
    }
    Ok(())
}

/// When an answer ends: adds what it used.
pub fn spent(limits: &ClientLimits, used: &Used, tokens: u64, usd: f64) {
    let now = SystemTime::now();
    if let Some((_, period)) = limits.budget {
        used.spend
            .add(period_index(period, now), dollars_to_micros(usd));
    }
    if limits.tokens_per_day.is_some() {
        used.tokens_today.add(days(now), tokens);
    }
}

/// A client's counters as they are now, for `GET /_keyproxy/me`. The names follow the
/// reservations' version of this file, where `reserved_*` and `in_flight` are counted; here
/// nothing is reserved, so they are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedNow {
    /// Spent in the budget's period, answers that ended only.
    pub spend_micros: u64,
    pub reserved_micros: u64,
    pub tokens_today: u64,
    pub reserved_tokens: u64,
    pub requests_this_minute: u64,
    pub in_flight: u64,
    /// Seconds since the epoch at which the budget's period ends; `None` without a budget.
    pub budget_resets_at: Option<u64>,
    pub tokens_reset_at: u64,
    pub minute_resets_at: u64,
}

impl Used {
    /// What this client has used now, under `limits` (its current ones).
    pub fn now(&self, limits: &ClientLimits) -> UsedNow {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let period = limits.budget.map_or(Period::Month, |(_, p)| p);
        UsedNow {
            spend_micros: self.spend.get(period_index(period, now)),
            reserved_micros: 0,
            tokens_today: self.tokens_today.get(days(now)),
            reserved_tokens: 0,
            requests_this_minute: self.minute.get(secs / 60),
            in_flight: 0,
            budget_resets_at: limits.budget.map(|(_, p)| period_end(p, now)),
            tokens_reset_at: (secs / DAY + 1) * DAY,
            minute_resets_at: (secs / 60 + 1) * 60,
        }
    }
}

fn days(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / DAY)
}

fn period_name(p: Period) -> &'static str {
    match p {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    }
}

/// A number for the calendar period (UTC) `t` falls in: its day, its ISO week (from Monday), or
/// its month.
fn period_index(p: Period, t: SystemTime) -> u64 {
    let d = days(t);
    match p {
        Period::Day => d,
        // 1970-01-01 was a Thursday; the week starting Monday 1969-12-29 is week 0.
        Period::Week => (d + 3) / 7,
        Period::Month => {
            let (y, m, _) = civil(d);
            y * 12 + m - 1
        }
    }
}

/// The second (since the epoch) at which the period `t` falls in ends.
fn period_end(p: Period, t: SystemTime) -> u64 {
    let d = days(t);
    let end_day = match p {
        Period::Day => d + 1,
        Period::Week => ((d + 3) / 7 + 1) * 7 - 3,
        Period::Month => {
            let (y, m, _) = civil(d);
            let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            days_from_civil(y, m)
        }
    };
    end_day * DAY
}

/// (year, month, day) of a day number (days since 1970-01-01), after Howard Hinnant's
/// `civil_from_days`, for days from 1970 on.
fn civil(z: u64) -> (u64, u64, u64) {
    let z = z + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day number of the first day of month `m` of year `y`.
fn days_from_civil(y: u64, m: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn calendar_periods_in_utc() {
        // 2026-11-24 23:59:59 UTC, a Tuesday.
        let t = at(1_795_564_799);
        assert_eq!(civil(days(t)), (2026, 11, 24));
        assert_eq!(period_end(Period::Day, t), 1_795_564_800);
        // The week ends on Monday 2026-11-30 00:00.
        assert_eq!(period_end(Period::Week, t), 1_795_564_800 + 5 * DAY);
        // The month ends on 2026-12-01 00:00.
        assert_eq!(period_end(Period::Month, t), 1_795_564_800 + 6 * DAY);
        assert_eq!(days_from_civil(2026, 12), days(t) + 7);
        assert_eq!(civil(days_from_civil(2028, 3)), (2028, 3, 1));
        assert_eq!(day_number("2026-11-24"), Some(days(t)));
        assert_ne!(
            period_index(Period::Month, t),
            period_index(Period::Month, at(1_795_564_800 + 6 * DAY))
        );
    }

    #[test]
    fn a_window_starts_again_in_a_new_period() {
        let w = Window::default();
        assert_eq!(w.add(5, 2), 2);
        assert_eq!(w.add(5, 1), 3);
        assert_eq!(w.get(6), 0);
        assert_eq!(w.add(6, 1), 1);
    }
}
