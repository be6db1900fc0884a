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
    /// Its token also opens status, reload, everyone's usage and metrics.
    #[serde(default)]
    pub admin: bool,
}

/// A calendar period in UTC, for budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
}

/// What a client may use: spend per period, requests per minute, tokens per UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub budget: Option<(f64, Period)>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_day: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.budget.is_some() || self.requests_per_minute.is_some() || self.tokens_per_day.is_some()
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

pub(super) type Digest = [u8; 32];

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
        let name = c.name;
        if names.contains(&name) {
            return Err(format!("two clients are named '{name}'"));
        }
        let digest = match (c.token, c.token_sha256) {
            (Some(token), None) => {
                if token.len() < 16 {
                    return Err(format!(
                        "client '{name}': token is shorter than 16 characters; use a long random one (openssl rand -hex 24)"
                    ));
                }
                sha256(&token)
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
        if let Some(bad) = c
            .models
            .iter()
            .find(|m| m.is_empty() || m[..m.len() - 1].contains('*'))
        {
            return Err(format!(
                "client '{name}': models entry {bad:?} must be a model name, or a prefix ending in * (\"anthropic/*\")"
            ));
        }
        if c.budget_usd.is_some_and(|b| !(b > 0.0 && b.is_finite())) {
            return Err(format!(
                "client '{name}': budget_usd must be a positive number of dollars"
            ));
        }
        if c.budget_period.is_some() && c.budget_usd.is_none() {
            return Err(format!("client '{name}': budget_period needs budget_usd"));
        }
        if c.requests_per_minute == Some(0) || c.tokens_per_day == Some(0) {
            return Err(format!("client '{name}': requests_per_minute and tokens_per_day must be more than 0 (leave one out for no limit)"));
        }
        let limits = Limits {
            budget: c
                .budget_usd
                .map(|usd| (usd, c.budget_period.unwrap_or(Period::Month))),
            requests_per_minute: c.requests_per_minute,
            tokens_per_day: c.tokens_per_day,
        };
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
mod tests {
    use super::*;

    fn client(profiles: &[&str]) -> Client {
        Client {
            name: "c".into(),
            profiles: profiles.iter().map(|p| p.to_string()).collect(),
            models: Vec::new(),
            limits: Limits::default(),
            admin: false,
        }
    }

    #[test]
    fn tokens_are_found_by_digest_either_way() {
        let token = "kp-0123456789abcdef0123";
        let hex: String = sha256(token).iter().map(|b| format!("{b:02x}")).collect();
        for raw in [
            RawClient {
                name: "a".into(),
                token: Some(token.into()),
                token_sha256: None,
                profiles: vec!["p".into()],
                models: Vec::new(),
                budget_usd: None,
                budget_period: None,
                requests_per_minute: None,
                tokens_per_day: None,
                admin: false,
            },
            RawClient {
                name: "a".into(),
                token: None,
                token_sha256: Some(hex.clone()),
                profiles: vec!["p".into()],
                models: Vec::new(),
                budget_usd: None,
                budget_period: None,
                requests_per_minute: None,
                tokens_per_day: None,
                admin: false,
            },
        ] {
            let clients = Clients::build(vec![raw]).unwrap();
            assert_eq!(clients.find(token).unwrap().name, "a");
            assert!(clients.find("kp-wrong-token-000000000").is_none());
        }
        let (_, err) = Clients::build(vec![RawClient {
            name: "b".into(),
            token: None,
            token_sha256: Some(hex.to_uppercase()),
            profiles: vec!["p".into()],
            models: Vec::new(),
            budget_usd: None,
            budget_period: None,
            requests_per_minute: None,
            tokens_per_day: None,
            admin: false,
        }])
        .unwrap_err();
        assert!(err.contains("client 'b'"), "{err}");
    }

    #[test]
    fn a_client_without_a_named_profile_gets_the_routes_or_one_the_route_allows() {
        let c = client(&["openrouter:work", "anthropic:me"]);
        let same_provider =
            |route: &'static str| move |p: &str| provider_of(p) == provider_of(route);
        assert_eq!(
            c.profile_for("openrouter:work", same_provider("openrouter:work")),
            Some("openrouter:work")
        );
        assert_eq!(
            c.profile_for("anthropic:default", same_provider("anthropic:default")),
            Some("anthropic:me")
        );
        assert_eq!(
            c.profile_for("gemini:default", same_provider("gemini:default")),
            None,
            "no key of another provider is sent on the Gemini route"
        );
    }

    #[test]
    fn the_token_comes_from_authorization_or_the_routes_header() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "tok-x".parse().unwrap());
        let x = HeaderName::from_static("x-api-key");
        assert_eq!(presented(&h, &x), Some("tok-x"));
        h.insert(AUTHORIZATION, "Bearer tok-a".parse().unwrap());
        assert_eq!(presented(&h, &x), Some("tok-a"));
    }

    #[test]
    fn model_patterns_match_names_and_prefixes() {
        let mut c = client(&["p"]);
        assert!(c.may_ask_for("anything"));
        c.models = vec!["openai/gpt-4o-mini".into(), "anthropic/*".into()];
        assert!(c.may_ask_for("openai/gpt-4o-mini"));
        assert!(c.may_ask_for("anthropic/claude-sonnet-4.5"));
        assert!(!c.may_ask_for("openai/gpt-4o"));
        assert!(!c.may_ask_for("openai/gpt-4o-mini-2024"));
    }
}
