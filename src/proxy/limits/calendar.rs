//! Calendar periods in UTC for budgets and daily token limits, with no time zone database: a day
//! number, an ISO week from Monday, a month, and when each ends.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::clients::Period;

pub(super) const DAY: u64 = 86_400;

pub(super) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn days(t: SystemTime) -> u64 {
    secs(t) / DAY
}

pub(crate) fn period_name(p: Period) -> &'static str {
    match p {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    }
}

/// A number for the calendar period (UTC) `t` falls in: its day, its ISO week (from Monday), or
/// its month.
pub(super) fn period_index(p: Period, t: SystemTime) -> u64 {
    period_of_day(p, days(t))
}

/// The period number of day number `d`.
pub(super) fn period_of_day(p: Period, d: u64) -> u64 {
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
pub(super) fn period_end(p: Period, t: SystemTime) -> u64 {
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

/// The day number of `2026-11-24`.
pub(super) fn day_number(text: &str) -> Option<u64> {
    let mut parts = text.splitn(3, '-').map(|p| p.parse::<u64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    (y >= 1970 && (1..=12).contains(&m) && (1..=31).contains(&d))
        .then(|| days_from_civil(y, m) + d - 1)
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
}
