//! A coarse clock that fits in an atomic: milliseconds since the process first asked, so that
//! a time can be shared between tasks with a plain store and load.

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `at` in milliseconds of this clock; 0 for anything before its start.
pub fn ms(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

pub fn now_ms() -> u64 {
    ms(Instant::now())
}
