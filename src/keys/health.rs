//! A key's health: whether the upstream lately refused it, and until when it rests.
//!
//! Shared by the request path of every connection without a lock: three atomics. A key that has
//! never rested costs one relaxed load per pick and no clock read.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;

/// Rest after a 429 without Retry-After.
const RATE_LIMIT_REST: Duration = Duration::from_secs(10);
/// First rest after a 401/402/403; doubled on each further one in a row.
const REJECTED_REST: Duration = Duration::from_secs(60);
const MAX_REST: Duration = Duration::from_secs(3600);

/// Milliseconds on a monotonic clock private to this process; 0 means "never".
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| Instant::now() - Duration::from_millis(1));
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Does an upstream answer with this status put the key that was sent to rest?
pub fn rests_key(status: StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 402 | 403 | 429)
}

#[derive(Debug, Default)]
pub struct Health {
    resting_until_ms: AtomicU64,
    /// Refusals in a row, for the exponential back-off of 401/402/403.
    strikes: AtomicU32,
    /// The status that put the key to rest.
    reason: AtomicU16,
    /// The last minute (since the Unix epoch) an answer came to the key; 0 for never. Written
    /// at most once a minute, so the cache line stays shared.
    used_minute: AtomicU32,
}

/// A key's state, for `status` and for the local answer when every key rests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Resting { left: Duration, reason: u16 },
}

impl Health {
    pub fn is_resting(&self) -> bool {
        let until = self.resting_until_ms.load(Ordering::Relaxed);
        until != 0 && until > now_ms()
    }

    pub fn state(&self) -> KeyState {
        let until = self.resting_until_ms.load(Ordering::Relaxed);
        let now = now_ms();
        if until == 0 || until <= now {
            return KeyState::Active;
        }
        KeyState::Resting {
            left: Duration::from_millis(until - now),
            reason: self.reason.load(Ordering::Relaxed),
        }
    }

    /// Puts the key to rest after an upstream `status`; returns until when, from now. 429
    /// honours `retry_after`; refusals back off exponentially from a minute to an hour.
    ///
    /// Requests in flight on the same key all see the same refusal: the first to arrive starts
    /// a rest episode and counts one strike; the others, finding the key already resting, count
    /// none. And no refusal shortens a rest already set: a concurrent 429 with `Retry-After: 2`
    /// does not wake a key benched for an hour.
    pub fn rest(&self, status: StatusCode, retry_after: Option<Duration>) -> Duration {
        let now = now_ms();
        let resting = self.resting_until_ms.load(Ordering::Relaxed) > now;
        let rest = if status == StatusCode::TOO_MANY_REQUESTS {
            retry_after.unwrap_or(RATE_LIMIT_REST)
        } else {
            let strikes = if resting {
                self.strikes.load(Ordering::Relaxed).saturating_sub(1)
            } else {
                self.strikes.fetch_add(1, Ordering::Relaxed)
            };
            REJECTED_REST.saturating_mul(1 << strikes.min(6))
        }
        .min(MAX_REST);
        let ms = u64::try_from(rest.as_millis()).unwrap_or(u64::MAX).max(1);
        let until = now.saturating_add(ms);
        let before = self.resting_until_ms.fetch_max(until, Ordering::Relaxed);
        if before < until {
            self.reason.store(status.as_u16(), Ordering::Relaxed);
        }
        Duration::from_millis(before.max(until) - now)
    }

    /// Rests the key for `left` because another replica saw `reason` (`[shared]`); never
    /// shortens a longer rest, and counts no strike here.
    pub fn rest_for(&self, left: Duration, reason: u16) {
        let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
        let until = now_ms().saturating_add(ms);
        if self.resting_until_ms.fetch_max(until, Ordering::Relaxed) < until {
            self.reason.store(reason, Ordering::Relaxed);
        }
    }

    /// An answer to the key came in `minute` (since the Unix epoch, as the traffic counts it).
    pub fn used_in(&self, minute: u64) {
        let minute = u32::try_from(minute).unwrap_or(u32::MAX);
        if self.used_minute.load(Ordering::Relaxed) != minute {
            self.used_minute.store(minute, Ordering::Relaxed);
        }
    }

    /// How many minutes ago the key was last answered, at `minute`; None for never.
    pub fn used_minutes_ago(&self, minute: u64) -> Option<u64> {
        match self.used_minute.load(Ordering::Relaxed) {
            0 => None,
            used => Some(minute.saturating_sub(u64::from(used))),
        }
    }

    /// The upstream accepted the key: refusals in a row start again from zero.
    pub fn accepted(&self) {
        // A load first: the common case writes nothing, so the cache line stays shared.
        if self.strikes.load(Ordering::Relaxed) != 0 {
            self.strikes.store(0, Ordering::Relaxed);
        }
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 section 10.2.3).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_back_off_exponentially_and_429_honours_retry_after() {
        let h = Health::default();
        assert_eq!(h.state(), KeyState::Active);
        let first = h.rest(StatusCode::UNAUTHORIZED, None);
        assert!(first <= Duration::from_secs(60) && first > Duration::from_secs(59));
        assert!(h.is_resting());
        assert!(matches!(h.state(), KeyState::Resting { reason: 401, .. }));
        // A second episode (the rest ran out) doubles.
        h.resting_until_ms.store(1, Ordering::Relaxed);
        let second = h.rest(StatusCode::UNAUTHORIZED, None);
        assert!(second > Duration::from_secs(119), "{second:?}");
        h.accepted();
        h.resting_until_ms.store(1, Ordering::Relaxed);
        let after_success = h.rest(StatusCode::FORBIDDEN, None);
        assert!(
            after_success <= Duration::from_secs(60),
            "{after_success:?}"
        );
        let h = Health::default();
        assert_eq!(
            h.rest(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn concurrent_refusals_count_one_strike_and_never_shorten_a_rest() {
        let h = Health::default();
        let rests: Vec<Duration> = (0..16)
            .map(|_| h.rest(StatusCode::UNAUTHORIZED, None))
            .collect();
        assert!(
            rests.iter().all(|r| *r <= Duration::from_secs(60)),
            "{rests:?}"
        );
        assert_eq!(h.strikes.load(Ordering::Relaxed), 1);
        let left = h.rest(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(2)));
        assert!(
            left > Duration::from_secs(50),
            "a 429 must not shorten the rest: {left:?}"
        );
        assert!(matches!(h.state(), KeyState::Resting { reason: 401, .. }));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert("retry-after", later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
    }
}
