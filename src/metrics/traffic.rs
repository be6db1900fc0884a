//! The last hour of traffic, minute by minute, for the page: one count per request by its final
//! answer, as `keyproxy_requests` counts (a refusal sent again on another key is a retry, not
//! an answer): upstream answers by status class, local refusals by `x-keyproxy-error` reason, and the upstream latency in the same buckets as the
//! Prometheus histogram. A fixed ring of 60 minutes of atomics (about 22 KB, allocated once, by
//! the first request counted, so a keyproxy nobody has used holds none of it): the request path
//! adds with relaxed atomic adds and never takes a lock; it is read only when the page asks.
//!
//! A minute's slot is claimed by whoever first counts in it (a compare-and-swap of its minute
//! number) and then cleared; an add racing that clear can be lost, which a chart of an hour
//! does not show.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::LATENCY_BUCKETS;

const MINUTES: usize = 60;

/// The `x-keyproxy-error` values keyproxy answers with; anything else counts as `other`.
const REASONS: [&str; 25] = [
    "missing-key",
    "no-route",
    "upstream-unreachable",
    "upstream-timeout",
    "foreign-target",
    "connect-refused",
    "trace-refused",
    "malformed-body",
    "body-timeout",
    "missing-token",
    "invalid-token",
    "admin-only",
    "not-a-client",
    "forbidden-profile",
    "profile-not-on-route",
    "keys-resting",
    "budget-exhausted",
    "rate-limited",
    "limits-unavailable",
    "model-not-allowed",
    "model-unreadable",
    "request-unreadable",
    "upgrade-unsupported",
    "unknown-admin-path",
    "other",
];

#[derive(Debug, Default)]
struct Minute {
    /// Minutes since the Unix epoch that this slot counts; 0 for never used.
    at: AtomicU64,
    /// Upstream answers by class: 1xx..5xx.
    answers: [AtomicU64; 5],
    local: [AtomicU64; REASONS.len()],
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

impl Minute {
    fn clear(&self) {
        let all = self.answers.iter().chain(&self.local).chain(&self.latency);
        all.for_each(|n| n.store(0, Relaxed));
    }
}

#[derive(Debug, Default)]
pub struct Traffic {
    /// Made by the first count: until then the page shows an hour of zeros.
    ring: OnceLock<Box<[Minute]>>,
}

/// Minutes since the Unix epoch.
pub fn minute_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl Traffic {
    /// This minute's slot, claimed and cleared if it still counts an older minute.
    fn slot(&self) -> (&Minute, u64) {
        let now = minute_now();
        let ring = self
            .ring
            .get_or_init(|| (0..MINUTES).map(|_| Minute::default()).collect());
        let slot = &ring[(now % MINUTES as u64) as usize];
        let at = slot.at.load(Relaxed);
        if at != now && slot.at.compare_exchange(at, now, Relaxed, Relaxed).is_ok() {
            slot.clear();
        }
        (slot, now)
    }

    /// The upstream answered with `status` after `upstream_time`; returns the minute it counted
    /// in (since the Unix epoch), for the key's last use.
    pub fn answered(&self, status: u16, upstream_time: Duration) -> u64 {
        let (slot, minute) = self.slot();
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        slot.answers[class].fetch_add(1, Relaxed);
        let secs = upstream_time.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        slot.latency[bucket].fetch_add(1, Relaxed);
        minute
    }

    /// keyproxy answered itself, for `reason` (the `x-keyproxy-error` value).
    pub fn local(&self, reason: &str) {
        let i = REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REASONS.len() - 1);
        self.slot().0.local[i].fetch_add(1, Relaxed);
    }

    /// The last hour, oldest minute first, every minute present (quiet ones as zeros).
    pub fn report(&self) -> TrafficReport {
        let now = minute_now();
        let mut latency = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
        let minutes = (now.saturating_sub(MINUTES as u64 - 1)..=now)
            .map(|at| {
                let mut m = MinuteReport {
                    at: at * 60,
                    ..MinuteReport::default()
                };
                let Some(slot) = self.ring.get().map(|r| &r[(at % MINUTES as u64) as usize]) else {
                    return m;
                };
                if slot.at.load(Relaxed) != at {
                    return m;
                }
                let answers: [u64; 5] = std::array::from_fn(|i| slot.answers[i].load(Relaxed));
                m.upstream_errors = answers[3] + answers[4];
                for (reason, n) in REASONS.iter().zip(&slot.local) {
                    let n = n.load(Relaxed);
                    if n > 0 {
                        m.local.insert(reason, n);
                        *errors.entry(reason).or_default() += n;
                    }
                }
                m.requests = answers.iter().sum::<u64>() + m.local.values().sum::<u64>();
                for (sum, n) in latency.iter_mut().zip(&slot.latency) {
                    *sum += n.load(Relaxed);
                }
                m
            })
            .collect::<Vec<_>>();
        TrafficReport {
            requests: minutes.iter().map(|m| m.requests).sum(),
            upstream_errors: minutes.iter().map(|m| m.upstream_errors).sum(),
            local: errors,
            latency_p50_ms: quantile(&latency, 0.5),
            latency_p99_ms: quantile(&latency, 0.99),
            minutes,
        }
    }
}

/// The upper bound, in milliseconds, of the bucket that holds quantile `q`; the last bound for
/// the few above it. None without an answer.
fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return None;
    }
    let rank = (q * count as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let bound = LATENCY_BUCKETS.get(i).or(LATENCY_BUCKETS.last());
            return bound.map(|b| b * 1e3);
        }
    }
    None
}

/// What the page's Traffic section shows.
#[derive(Debug, Serialize)]
pub struct TrafficReport {
    /// Requests over the hour: upstream answers and local refusals.
    pub requests: u64,
    /// Upstream answers with a 4xx or 5xx status.
    pub upstream_errors: u64,
    /// Local refusals by `x-keyproxy-error` reason.
    pub local: BTreeMap<&'static str, u64>,
    /// Upper bounds of the buckets holding the median and the 99th percentile.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub minutes: Vec<MinuteReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct MinuteReport {
    /// The minute's start, Unix seconds.
    pub at: u64,
    pub requests: u64,
    pub upstream_errors: u64,
    pub local: BTreeMap<&'static str, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_minutes_counts_answers_refusals_and_latency() {
        let t = Traffic::default();
        for ms in [3, 8, 40, 40, 700] {
            t.answered(200, Duration::from_millis(ms));
        }
        t.answered(429, Duration::from_millis(2));
        t.local("missing-key");
        t.local("budget-exhausted");
        t.local("something-new");
        let r = t.report();
        assert_eq!(r.minutes.len(), 60);
        assert_eq!(r.requests, 9);
        assert_eq!(r.upstream_errors, 1);
        assert_eq!(r.local["missing-key"], 1);
        assert_eq!(r.local["other"], 1);
        // 5, 5, 10, 50, 50, 1000 ms as bucket bounds.
        assert_eq!(r.latency_p50_ms, Some(10.0));
        assert_eq!(r.latency_p99_ms, Some(1000.0));
        assert_eq!(r.minutes.iter().map(|m| m.requests).sum::<u64>(), 9);
    }

    #[test]
    fn no_answer_has_no_latency() {
        assert_eq!(Traffic::default().report().latency_p50_ms, None);
    }
}
