//! What an answer is charged, decided once, when it ends or is given up: the usage it reported
//! when keyproxy saw it and believes it; else, for a client that reserved, the reservation (an
//! answer cut before its usage event, a client that hung up, an upstream that never said, or
//! numbers no answer can have). The client's limits and the ledger are charged the same.

use std::sync::Arc;

use super::limits::{dollars_to_micros, Charge, Reservation};
use crate::config::clients::{MAX_ANSWER_TOKENS, MAX_ANSWER_USD};
use crate::usage::scan::{Scanner, Used};
use crate::usage::{Answer, Ledger};

/// One request's account, from admission (a limited client) or from the answer's head (any
/// other client whose answers are counted) to the end of its body.
pub struct Bill {
    scanner: Option<Scanner>,
    ledger: Option<Ledger>,
    client: Arc<str>,
    profile: Arc<str>,
    route: Arc<str>,
    reservation: Option<Reservation>,
    /// Sent upstream: from here on, giving up on the request still charges it, since the
    /// upstream may be running it.
    forwarded: bool,
    settled: bool,
}

impl Bill {
    pub fn new(
        ledger: Option<Ledger>,
        client: Arc<str>,
        profile: Arc<str>,
        route: Arc<str>,
        reservation: Option<Reservation>,
    ) -> Self {
        Self {
            scanner: None,
            ledger,
            client,
            profile,
            route,
            reservation,
            forwarded: false,
            settled: false,
        }
    }

    pub fn forwarded(&mut self) {
        self.forwarded = true;
    }

    /// Reads the answer's usage as it streams.
    pub fn with_scanner(mut self, scanner: Option<Scanner>) -> Self {
        self.scanner = scanner;
        self
    }

    pub fn feed(&mut self, data: &[u8]) {
        if let Some(s) = self.scanner.as_mut() {
            s.feed(data);
        }
    }

    /// No answer to charge (keyproxy refused, the upstream never answered, or answered with
    /// an error): the reservation is given back and nothing is recorded.
    pub fn release(mut self) {
        self.settled = true;
    }

    /// The answer ended, or its body was dropped part way.
    pub fn done(mut self) {
        self.settle();
    }

    fn settle(&mut self) {
        self.settled = true;
        let used = self.scanner.take().map(Scanner::finish).unwrap_or_default();
        let estimate = self
            .reservation
            .as_ref()
            .map(Reservation::estimate)
            .unwrap_or_default();
        let doubt = implausible(&used);
        if let Some(why) = &doubt {
            tracing::warn!(
                route = %self.route, client = %self.client, profile = %self.profile,
                "the upstream reported usage no answer can have ({why}); it is ignored and the answer counted as its reservation"
            );
        }
        let believed = used.reported && doubt.is_none();
        let (charge, answer) = if believed {
            let charge = Charge {
                micros: dollars_to_micros(used.cost),
                tokens: used.prompt_tokens.saturating_add(used.completion_tokens),
            };
            let answer = Answer {
                model: used.model,
                prompt_tokens: used.prompt_tokens,
                completion_tokens: used.completion_tokens,
                cost_usd: used.cost,
                ..Answer::default()
            };
            (charge, answer)
        } else if estimate != Charge::default() {
            let answer = Answer {
                model: used.model,
                cost_usd: estimate.micros as f64 / 1e6,
                estimated: true,
                estimated_tokens: estimate.tokens,
                ..Answer::default()
            };
            (estimate, answer)
        } else {
            // Nothing reserved (a client without a budget or token limit, or a read): what it
            // reported, if believed, else nothing but the request.
            let answer = Answer {
                model: used.model,
                ..Answer::default()
            };
            (Charge::default(), answer)
        };
        if let Some(r) = self.reservation.take() {
            r.settle(charge);
        }
        if let Some(ledger) = self.ledger.take() {
            ledger.record(self.client.clone(), self.profile.clone(), answer);
        }
    }
}

impl Drop for Bill {
    /// Given up before `done` or `release`: sent, so charged as an answer whose usage was not
    /// seen; not sent, so given back (the reservation's own drop).
    fn drop(&mut self) {
        if !self.settled && self.forwarded {
            self.settle();
        }
    }
}

/// Why what an answer reported cannot be so: a cost that is negative, not a number or beyond
/// one answer's ceiling, or a token count beyond it.
fn implausible(used: &Used) -> Option<String> {
    if !(used.cost.is_finite() && (0.0..=MAX_ANSWER_USD).contains(&used.cost)) {
        return Some(format!("cost {}", used.cost));
    }
    for (what, n) in [
        ("prompt tokens", used.prompt_tokens),
        ("completion tokens", used.completion_tokens),
    ] {
        if n > MAX_ANSWER_TOKENS {
            return Some(format!("{n} {what}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_no_answer_can_have_are_not_believed() {
        let ok = Used {
            cost: 0.5,
            prompt_tokens: 10,
            completion_tokens: 20,
            reported: true,
            ..Used::default()
        };
        assert_eq!(implausible(&ok), None);
        for bad in [
            Used {
                cost: -0.01,
                ..ok.clone()
            },
            Used {
                cost: f64::NAN,
                ..ok.clone()
            },
            Used {
                cost: f64::INFINITY,
                ..ok.clone()
            },
            Used {
                cost: 1e300,
                ..ok.clone()
            },
            Used {
                prompt_tokens: i64::MAX as u64,
                ..ok.clone()
            },
            Used {
                completion_tokens: MAX_ANSWER_TOKENS + 1,
                ..ok.clone()
            },
        ] {
            assert!(implausible(&bad).is_some(), "{bad:?}");
        }
    }
}
