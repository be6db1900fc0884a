//! Usage between two days, grouped one way (`keyproxy usage --since --until --by`), and the
//! last days per client and per model that the page charts. Both read the ledger's rows only
//! when asked; nothing here is kept.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{day, Counts, Row};

/// How `keyproxy usage --by` groups rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Day,
    Client,
    Profile,
    Model,
}

impl std::str::FromStr for By {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "day" => Ok(Self::Day),
            "client" => Ok(Self::Client),
            "profile" => Ok(Self::Profile),
            "model" => Ok(Self::Model),
            _ => Err(format!(
                "'{s}' is not a grouping: use day, client, profile or model"
            )),
        }
    }
}

/// A UTC day as `YYYY-MM-DD`, checked; the error says what was expected.
pub fn parse_day(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shaped = b.len() == 10 && b[4] == b'-' && b[7] == b'-';
    if shaped && digits(0..4) && digits(5..7) && digits(8..10) {
        let (m, d) = (&s[5..7], &s[8..10]);
        if ("01"..="12").contains(&m) && ("01"..="31").contains(&d) {
            return Ok(s.to_owned());
        }
    }
    Err(format!(
        "'{s}' is not a date: use YYYY-MM-DD (UTC), e.g. 2026-12-01"
    ))
}

/// The rows from `since` to `until` (both included, either open), summed per group.
#[derive(Debug, Serialize)]
pub struct Grouped {
    pub since: Option<String>,
    pub until: Option<String>,
    pub by: By,
    pub groups: Vec<Group>,
    pub total: Counts,
}

#[derive(Debug, Serialize)]
pub struct Group {
    /// The day, client ("" for none), profile or model.
    pub key: String,
    pub counts: Counts,
}

pub fn grouped(
    rows: &BTreeMap<Row, Counts>,
    since: Option<String>,
    until: Option<String>,
    by: By,
) -> Grouped {
    let mut groups: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut total = Counts::default();
    let inside = |d: &str| {
        since.as_deref().is_none_or(|s| d >= s) && until.as_deref().is_none_or(|u| d <= u)
    };
    for ((d, client, profile, model), c) in rows.iter().filter(|((d, ..), _)| inside(d)) {
        let key = match by {
            By::Day => d,
            By::Client => client,
            By::Profile => profile,
            By::Model => model,
        };
        groups.entry(key.as_str()).or_default().add(c);
        total.add(c);
    }
    let groups = groups
        .into_iter()
        .map(|(key, counts)| Group {
            key: key.to_owned(),
            counts,
        })
        .collect();
    Grouped {
        since,
        until,
        by,
        groups,
        total,
    }
}

/// Cost and tokens per day over the last `days` days (today last), per client and per model.
#[derive(Debug, Serialize)]
pub struct History {
    pub days: Vec<String>,
    pub by_client: BTreeMap<String, Series>,
    pub by_model: BTreeMap<String, Series>,
}

/// One value per day of `History::days`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Series {
    pub cost_usd: Vec<f64>,
    pub tokens: Vec<u64>,
}

/// The last `days` days up to `now`, of the rows `keep` lets through.
pub fn history(
    rows: &BTreeMap<Row, Counts>,
    now: SystemTime,
    days: u32,
    keep: impl Fn(&Row) -> bool,
) -> History {
    let days: Vec<String> = (0..days)
        .rev()
        .map(|back| day(now - Duration::from_secs(86_400 * u64::from(back))))
        .collect();
    let empty = Series {
        cost_usd: vec![0.0; days.len()],
        tokens: vec![0; days.len()],
    };
    let (mut by_client, mut by_model) = (BTreeMap::new(), BTreeMap::new());
    let first = days.first().cloned().unwrap_or_default();
    for (row, c) in rows.range((first, String::new(), String::new(), String::new())..) {
        let Some(i) = days.iter().position(|d| *d == row.0).filter(|_| keep(row)) else {
            continue;
        };
        let tokens = c.prompt_tokens.saturating_add(c.completion_tokens);
        for (map, name) in [(&mut by_client, &row.1), (&mut by_model, &row.3)] {
            let s: &mut Series = map.entry(name.clone()).or_insert_with(|| empty.clone());
            s.cost_usd[i] += c.cost_usd;
            s.tokens[i] = s.tokens[i].saturating_add(tokens);
        }
    }
    History {
        days,
        by_client,
        by_model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> BTreeMap<Row, Counts> {
        let row = |d: &str, c: &str, m: &str| (d.into(), c.into(), "openrouter:x".into(), m.into());
        let counts = |cost: f64, tokens: u64| Counts {
            requests: 1,
            prompt_tokens: tokens,
            cost_usd: cost,
            ..Counts::default()
        };
        BTreeMap::from([
            (row("2026-11-30", "alice", "m1"), counts(1.0, 10)),
            (row("2026-12-01", "alice", "m1"), counts(2.0, 20)),
            (row("2026-12-01", "bob", "m2"), counts(4.0, 40)),
            (row("2026-12-02", "bob", "m1"), counts(8.0, 80)),
        ])
    }

    #[test]
    fn a_range_is_inclusive_and_grouped_one_way() {
        let since = Some("2026-12-01".to_owned());
        let g = grouped(&rows(), since.clone(), None, By::Client);
        let keys: Vec<_> = g
            .groups
            .iter()
            .map(|g| (g.key.as_str(), g.counts.cost_usd))
            .collect();
        assert_eq!(keys, [("alice", 2.0), ("bob", 12.0)]);
        assert_eq!(g.total.requests, 3);
        let g = grouped(&rows(), since, Some("2026-12-01".into()), By::Model);
        let keys: Vec<_> = g
            .groups
            .iter()
            .map(|g| (g.key.as_str(), g.counts.cost_usd))
            .collect();
        assert_eq!(keys, [("m1", 2.0), ("m2", 4.0)]);
        assert_eq!(grouped(&rows(), None, None, By::Day).groups.len(), 3);
    }

    #[test]
    fn days_are_checked() {
        assert!(parse_day("2026-12-01").is_ok());
        for bad in ["2026-13-01", "2026-1-01", "yesterday", "2026-12-00", ""] {
            let e = parse_day(bad).unwrap_err();
            assert!(e.contains("YYYY-MM-DD"), "{e}");
        }
        assert!("week".parse::<By>().unwrap_err().contains("day, client"));
    }

    #[test]
    fn history_has_a_value_per_day_per_client_and_model() {
        let now = humantime::parse_rfc3339("2026-12-02T12:00:00Z").unwrap();
        let h = history(&rows(), now, 2, |r| r.1 == "bob");
        assert_eq!(h.days, ["2026-12-01", "2026-12-02"]);
        assert_eq!(h.by_client["bob"].cost_usd, [4.0, 8.0]);
        assert!(!h.by_client.contains_key("alice"));
        assert_eq!(h.by_model["m1"].tokens, [0, 80]);
        assert_eq!(h.by_model["m2"].tokens, [40, 0]);
    }
}
