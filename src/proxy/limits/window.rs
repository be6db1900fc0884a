//! A counter that starts again at each period, in one atomic word: the period in the top 24
//! bits, the count in the low 40. One word means a compare-and-swap sees the period and the
//! count together, so a check-then-add (admit while below the limit, and reserve) is atomic, and
//! a new period can never mix with the old one's count.

use std::sync::atomic::{AtomicU64, Ordering};

const COUNT_BITS: u32 = 40;
/// Counts saturate here: about 1.1e12 micro-dollars ($1.1 million) or tokens, above any limit
/// a client may have (`budget_usd` and `tokens_per_day` are capped below it).
pub(super) const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
/// Periods are compared modulo 2^24: minutes wrap after 31 years, days never matter.
const PERIOD_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

fn pack(period: u64, count: u64) -> u64 {
    ((period & PERIOD_MASK) << COUNT_BITS) | count.min(COUNT_MAX)
}

#[derive(Default, Debug)]
pub(super) struct Window(AtomicU64);

impl Window {
    /// The count in `period`, 0 when the window still counts an earlier one.
    pub fn get(&self, period: u64) -> u64 {
        let word = self.0.load(Ordering::Acquire);
        if word >> COUNT_BITS == period & PERIOD_MASK {
            word & COUNT_MAX
        } else {
            0
        }
    }

    /// Sets the count of `period` to `f(count)` (the count being 0 if the window still counts an
    /// earlier period), atomically; `f` returning `None` leaves it and gives `Err(count)`.
    pub fn update(&self, period: u64, f: impl Fn(u64) -> Option<u64>) -> Result<u64, u64> {
        let mut word = self.0.load(Ordering::Acquire);
        loop {
            let count = if word >> COUNT_BITS == period & PERIOD_MASK {
                word & COUNT_MAX
            } else {
                0
            };
            let next = f(count).ok_or(count)?.min(COUNT_MAX);
            match self.0.compare_exchange_weak(
                word,
                pack(period, next),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(next),
                Err(seen) => word = seen,
            }
        }
    }

    /// Adds `n` in `period`, saturating, and returns the new count.
    pub fn add(&self, period: u64, n: u64) -> u64 {
        self.update(period, |c| Some(c.saturating_add(n)))
            .unwrap_or(COUNT_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_starts_again_in_a_new_period() {
        let w = Window::default();
        assert_eq!(w.add(5, 2), 2);
        assert_eq!(w.add(5, 1), 3);
        assert_eq!(w.get(6), 0);
        assert_eq!(w.add(6, 1), 1);
        assert_eq!(w.get(5), 0);
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let w = Window::default();
        assert_eq!(w.add(7, u64::MAX), COUNT_MAX);
        assert_eq!(w.add(7, u64::MAX), COUNT_MAX);
        assert_eq!(w.get(7), COUNT_MAX, "the period bits are untouched");
        assert_eq!(w.update(7, |c| (c < 10).then_some(0)), Err(COUNT_MAX));
    }

    #[test]
    fn a_check_and_add_admits_no_more_than_the_limit_across_threads() {
        let w = std::sync::Arc::new(Window::default());
        let admitted: usize = (0..8)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| w.update(1, |c| (c < 900).then_some(c + 9)).is_ok())
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(admitted, 100);
        assert_eq!(w.get(1), 900);
    }
}
