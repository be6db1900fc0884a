//! What a request holds against its client's limits while it runs, given back exactly once: the
//! answer's cost replaces it when the answer ends, and dropping it unsettled (a refusal after
//! admission, an upstream that never answered) gives it back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use super::{now_indexes, Used, PERIODS};
use crate::config::clients::Period;

/// What an answer is charged against the limits: micro-dollars and tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    pub micros: u64,
    pub tokens: u64,
}

#[derive(Debug)]
pub struct Reservation {
    used: Arc<Used>,
    /// The budget's kind of period, the period it was reserved in, and the micro-dollars.
    spend: Option<(Period, u64, u64)>,
    /// The day it was reserved in, and the tokens.
    tokens: Option<(u64, u64)>,
    in_flight: bool,
    /// With `[shared]`: what the shared store holds for this request, settled there too.
    shared: Option<crate::proxy::shared::Hold>,
}

impl Reservation {
    pub(super) fn new(used: Arc<Used>) -> Self {
        Self {
            used,
            spend: None,
            tokens: None,
            in_flight: false,
            shared: None,
        }
    }

    /// Adds what the shared store reserved, to be settled there with the answer's charge.
    pub fn with_shared(mut self, hold: crate::proxy::shared::Hold) -> Self {
        self.shared = Some(hold);
        self
    }

    pub(super) fn hold_spend(&mut self, period: Period, index: u64, micros: u64) {
        self.used
            .reserved_micros
            .fetch_add(micros, Ordering::Relaxed);
        self.spend = Some((period, index, micros));
    }

    pub(super) fn hold_tokens(&mut self, day: u64, tokens: u64) {
        self.used
            .reserved_tokens
            .fetch_add(tokens, Ordering::Relaxed);
        self.tokens = Some((day, tokens));
    }

    pub(super) fn hold_in_flight(&mut self) {
        self.in_flight = true;
    }

    /// What the answer is charged when its usage was not seen or not believed: the reservation.
    pub fn estimate(&self) -> Charge {
        let shared = self
            .shared
            .as_ref()
            .map(crate::proxy::shared::Hold::estimate)
            .unwrap_or_default();
        Charge {
            micros: self.spend.map_or(0, |(.., m)| m) + shared.micros,
            tokens: self.tokens.map_or(0, |(_, t)| t) + shared.tokens,
        }
    }

    /// The answer ended and cost `charge`: it replaces the reservation.
    pub fn settle(mut self, charge: Charge) {
        self.finish(charge);
    }

    /// Takes the reservation out and adds `charge`, once: every field is taken, so a second call
    /// (the drop after `settle`) finds nothing to give back.
    fn finish(&mut self, charge: Charge) {
        if let Some(hold) = self.shared.take() {
            hold.settle(charge);
        }
        let holds = self.spend.is_some() || self.tokens.is_some() || self.in_flight;
        if !holds && charge == Charge::default() {
            return;
        }
        let (periods, today) = now_indexes(SystemTime::now());
        let held = self.spend.take();
        for (i, p) in PERIODS.iter().enumerate() {
            let window = &self.used.spend[i];
            match held {
                // Reserved in this very period: the charge replaces the reservation. In a later
                // period the window started again without it, and only the charge goes in.
                Some((kind, index, r)) if kind == *p && index == periods[i] => {
                    let _ = window.update(index, |c| {
                        Some(c.saturating_sub(r).saturating_add(charge.micros))
                    });
                }
                _ if charge.micros > 0 => {
                    window.add(periods[i], charge.micros);
                }
                _ => {}
            }
        }
        if let Some((.., r)) = held {
            self.used.reserved_micros.fetch_sub(r, Ordering::Relaxed);
        }
        match self.tokens.take() {
            Some((day, r)) => {
                if day == today {
                    let _ = self.used.tokens.update(day, |c| {
                        Some(c.saturating_sub(r).saturating_add(charge.tokens))
                    });
                } else if charge.tokens > 0 {
                    self.used.tokens.add(today, charge.tokens);
                }
                self.used.reserved_tokens.fetch_sub(r, Ordering::Relaxed);
            }
            None if charge.tokens > 0 => {
                self.used.tokens.add(today, charge.tokens);
            }
            None => {}
        }
        if std::mem::take(&mut self.in_flight) {
            self.used.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.finish(Charge::default());
    }
}
