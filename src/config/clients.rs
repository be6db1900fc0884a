//! Client tokens (virtual keys): what an agent puts in its API key setting instead of a real
//! key. keyproxy knows each token only by its SHA-256, so a config can hold `token_sha256` and no
//! secret at all.

use std::collections::HashMap;

use http::header::{HeaderMap, HeaderName, AUTHORIZATION};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub name: String,
    pub token: Option<String>,
    pub token_sha256: Option<String>,
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Models it may ask for; empty: any. A trailing `*` matches any rest (`anthropic/*`).
    #[serde(default)]
    pub models: Vec<String>,
    pub budget_usd: Option<f64>,
    pub budget_period: Option<Period>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_day: Option<u64>,
    /// Dollars a request holds against `budget_usd` while it runs.
    pub reserve_usd: Option<f64>,
    /// Tokens a request holds against `tokens_per_day` while it runs, when its body does not say.
    pub reserve_tokens: Option<u64>,
    pub max_in_flight: Option<u32>,
    /// Its token also opens status, reload, everyone's usage and metrics.
    #[serde(default)]
    pub admin: bool,
}

/// What a request reserves against `budget_usd` unless the client says: about one long answer
/// of a mid-priced model. It is also what an answer whose usage was not seen is charged.
pub const DEFAULT_RESERVE_USD: f64 = 0.05;
/// What a request reserves against `tokens_per_day` unless its body or the client says.
pub const DEFAULT_RESERVE_TOKENS: u64 = 4096;
/// Ceilings on what one answer can plausibly use; a number beyond is not believed.
pub const MAX_ANSWER_USD: f64 = 10_000.0;
pub const MAX_ANSWER_TOKENS: u64 = 1_000_000_000;
/// The largest budget and daily token limit accepted: limit counters hold 40 bits (about 1.1e12
/// micro-dollars or tokens) beside their period, so one atomic word holds both.
const MAX_BUDGET_USD: f64 = 1_000_000.0;
const MAX_TOKENS_PER_DAY: u64 = 1_000_000_000_000;

/// A calendar period in UTC, for budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
}

/// What a client may use: spend per period, requests per minute, tokens per UTC day, requests
/// at once; and what each request reserves against the budget and the tokens while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub budget: Option<(f64, Period)>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_day: Option<u64>,
    pub max_in_flight: Option<u32>,
    /// Dollars reserved per request (with a budget).
    pub reserve_usd: f64,
    /// Tokens reserved per request whose body does not say (with `tokens_per_day`).
    pub reserve_tokens: u64,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.budget.is_some()
            || self.requests_per_minute.is_some()
            || self.tokens_per_day.is_some()
            || self.max_in_flight.is_some()
    }
}

/// A client: its name and the profiles it may use, the first being its default.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub name: String,
    pub profiles: Vec<String>,
    /// The models it may ask for (`models`); empty: any.
    pub models: Vec<String>,
    pub limits: Limits,
    /// `admin = true`: its token opens status, reload, everyone's usage and metrics as well.
    pub admin: bool,
}

impl Client {
    /// May this client ask for `model`? An exact name, or a pattern ending in `*` that matches
    /// every model starting with what comes before it.
    pub fn may_ask_for(&self, model: &str) -> bool {
        self.models.is_empty()
            || self.models.iter().any(|m| match m.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => m == model,
            })
    }

    pub fn may_use(&self, profile: &str) -> bool {
        self.profiles.iter().any(|p| p == profile)
    }

    /// The profile for a request that names none: the route's default if this client may use
    /// it, else the client's first profile the route may inject; `None` when it has none, since
    /// a key goes only to the upstreams configured for it.
    pub fn profile_for<'a>(
        &'a self,
        route_profile: &'a str,
        route_allows: impl Fn(&str) -> bool,
    ) -> Option<&'a str> {
        if self.may_use(route_profile) {
            return Some(route_profile);
        }
        self.profiles
            .iter()
            .map(String::as_str)
            .find(|p| route_allows(p))
    }
}

/// The provider part of a profile name: `openrouter` of `openrouter:work`.
pub fn provider_of(profile: &str) -> &str {
    profile.split_once(':').map_or(profile, |(p, _)| p)
}

pub type Digest = [u8; 32];

/// The example config's client tokens (config/two-agents.toml), refused like the example keys
/// file's placeholder key, so that a copied example never lets in whoever read it.
pub(super) const EXAMPLE_TOKEN_MARK: &str = "replace-me";
pub(super) const EXAMPLE_TOKEN_SHA256: &str =
    "21528b2600d31fdb7209da6a7fd3b819c5125da3107090bb6c5dbb493c85d4d2";

pub(super) fn sha256(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Every configured client, found by the SHA-256 of its token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Clients {
    by_digest: HashMap<Digest, Client>,
}

impl Clients {
    /// Validates `[[clients]]`; an error names the client and gives its index.
    pub fn build(raw: Vec<RawClient>) -> Result<Self, (usize, String)> {
        let mut by_digest = HashMap::new();
        let mut names = Vec::new();
        for (i, c) in raw.into_iter().enumerate() {
            Self::add(&mut by_digest, &mut names, c).map_err(|m| (i, m))?;
        }
        Ok(Self { by_digest })
    }

    fn add(
        by_digest: &mut HashMap<Digest, Client>,
        names: &mut Vec<String>,
        c: RawClient,
    ) -> Result<(), String> {
        let limits = limits(&c.name, &c)?;
        let name = c.name;
        if names.contains(&name) {
            return Err(format!("two clients are named '{name}'"));
        }
        let digest = match (c.token, c.token_sha256) {
            (Some(token), None) => {
                if token.contains(EXAMPLE_TOKEN_MARK) {
                    return Err(format!(
                        "client '{name}': token is the example's placeholder, which anyone can read; make one with openssl rand -hex 24"
                    ));
                }
                if token.chars().count() < 16 {
                    return Err(format!(
                        "client '{name}': token is shorter than 16 characters; use a long random one (openssl rand -hex 24)"
                    ));
                }
                sha256(&token)
            }
            (None, Some(hex)) if hex.eq_ignore_ascii_case(EXAMPLE_TOKEN_SHA256) => {
                return Err(format!(
                    "client '{name}': token_sha256 is the example's, not of a token of yours; make a token with openssl rand -hex 24 and put its SHA-256 here"
                ));
            }
            (None, Some(hex)) => parse_hex(&hex).ok_or_else(|| {
                format!("client '{name}': token_sha256 must be 64 lowercase hex characters (sha256sum of the token)")
            })?,
            _ => {
                return Err(format!(
                    "client '{name}': give exactly one of token and token_sha256"
                ))
            }
        };
        if c.profiles.is_empty() {
            return Err(format!(
                "client '{name}': profiles is empty; list the profiles it may use, its default first"
            ));
        }
        if by_digest.contains_key(&digest) {
            return Err(format!(
                "client '{name}' has the same token as another client"
            ));
        }
        // By characters: a byte slice one short of the end split "gpt-é*"'s é and panicked.
        let misplaced_star = |m: &str| m.strip_suffix('*').unwrap_or(m).contains('*');
        if let Some(bad) = c.models.iter().find(|m| m.is_empty() || misplaced_star(m)) {
            return Err(format!(
                "client '{name}': models entry {bad:?} must be a model name, or a prefix ending in * (\"anthropic/*\")"
            ));
        }
        names.push(name.clone());
        by_digest.insert(
            digest,
            Client {
                name,
                profiles: c.profiles,
                models: c.models,
                limits,
                admin: c.admin,
            },
        );
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Every client with the SHA-256 of its token, which stays when a client is renamed.
    pub fn with_digests(&self) -> impl Iterator<Item = (&Digest, &Client)> {
        self.by_digest.iter()
    }

    pub fn find(&self, token: &str) -> Option<&Client> {
        self.by_digest.get(&sha256(token))
    }

    pub(super) fn by_digest(&self, digest: &Digest) -> Option<&Client> {
        self.by_digest.get(digest)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Client> {
        self.by_digest.values()
    }
}

/// A client's limits from what it wrote, each checked; an error names the client.
fn limits(name: &str, c: &RawClient) -> Result<Limits, String> {
    let dollars = |v: f64| v > 0.0 && v.is_finite();
    if c.budget_usd
        .is_some_and(|b| !(dollars(b) && b <= MAX_BUDGET_USD))
    {
        return Err(format!(
            "client '{name}': budget_usd must be a positive number of dollars, at most {MAX_BUDGET_USD}"
        ));
    }
    if c.budget_period.is_some() && c.budget_usd.is_none() {
        return Err(format!("client '{name}': budget_period needs budget_usd"));
    }
    if c.requests_per_minute == Some(0) || c.tokens_per_day == Some(0) || c.max_in_flight == Some(0)
    {
        return Err(format!("client '{name}': requests_per_minute, tokens_per_day and max_in_flight must be more than 0 (leave one out for no limit)"));
    }
    if c.tokens_per_day.is_some_and(|t| t > MAX_TOKENS_PER_DAY) {
        return Err(format!(
            "client '{name}': tokens_per_day must be at most {MAX_TOKENS_PER_DAY}"
        ));
    }
    match (c.reserve_usd, c.budget_usd) {
        (Some(_), None) => return Err(format!("client '{name}': reserve_usd needs budget_usd")),
        (Some(r), Some(_)) if !(dollars(r) && r <= MAX_ANSWER_USD) => {
            return Err(format!(
                "client '{name}': reserve_usd must be a positive number of dollars, at most {MAX_ANSWER_USD}"
            ))
        }
        _ => {}
    }
    match (c.reserve_tokens, c.tokens_per_day) {
        (Some(_), None) => {
            return Err(format!(
                "client '{name}': reserve_tokens needs tokens_per_day"
            ))
        }
        (Some(r), Some(_)) if r == 0 || r > MAX_ANSWER_TOKENS => {
            return Err(format!(
            "client '{name}': reserve_tokens must be more than 0 and at most {MAX_ANSWER_TOKENS}"
        ))
        }
        _ => {}
    }
    let budget = c
        .budget_usd
        .map(|usd| (usd, c.budget_period.unwrap_or(Period::Month)));
    Ok(Limits {
        budget,
        requests_per_minute: c.requests_per_minute,
        tokens_per_day: c.tokens_per_day,
        max_in_flight: c.max_in_flight,
        // A default larger than the limit itself would refuse nothing more, and charge a cut
        // answer more than the whole limit.
        reserve_usd: c
            .reserve_usd
            .unwrap_or(DEFAULT_RESERVE_USD)
            .min(c.budget_usd.unwrap_or(f64::MAX)),
        reserve_tokens: c
            .reserve_tokens
            .unwrap_or(DEFAULT_RESERVE_TOKENS)
            .min(c.tokens_per_day.unwrap_or(u64::MAX)),
    })
}

pub(super) fn parse_hex(hex: &str) -> Option<Digest> {
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The token a client presented: `Authorization: Bearer T`, or the route's own header (an
/// Anthropic SDK sends `x-api-key: T`).
pub fn presented<'a>(headers: &'a HeaderMap, route_header: &HeaderName) -> Option<&'a str> {
    let bearer = |v: &'a str| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v)
            .trim()
    };
    headers
        .get(AUTHORIZATION)
        .or_else(|| headers.get(route_header))
        .and_then(|v| v.to_str().ok())
        .map(bearer)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests;
