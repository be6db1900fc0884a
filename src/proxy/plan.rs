//! Deciding a request's fate before anything is sent, with no I/O: the route, the profile, a key,
//! and the upstream request's URI and headers with the key injected.

use http::header::HeaderMap;
use http::request::Parts;
use http::Version;

use super::error::LocalError;
use super::headers::{strip_key_param, strip_request_headers};
use super::routes::Route;
use super::state::Snapshot;
use crate::config::clients;
use crate::config::{DEFAULT_PROFILE, OPENROUTER_ENV};
use crate::keys::{AllResting, Key, Profile};
use crate::text::tilde;

/// Names the profile a request asks for.
pub const PROFILE_HEADER: http::HeaderName = http::HeaderName::from_static("x-keyproxy-profile");

/// What the request path decided for one request before anything is sent.
pub struct Plan<'s> {
    pub route: &'s Route,
    pub profile: String,
    pub pool: &'s Profile,
    pub key: &'s Key,
    /// The client, when clients are configured.
    pub client: Option<&'s clients::Client>,
}

/// Steps 2 to 5 of the request path, everything but I/O: picks the route, the profile and a
/// key, and rewrites `parts` into the upstream request (URI, version, headers, the key).
pub fn plan<'s>(snapshot: &'s Snapshot, parts: &mut Parts) -> Result<Plan<'s>, LocalError> {
    let Some(route) = snapshot.routes.find(parts.uri.path()) else {
        return Err(LocalError::NoRoute {
            path: parts.uri.path().to_owned(),
        });
    };
    let (profile, client) = choose_profile(snapshot, route, &parts.headers)?;
    let Some(pool) = snapshot.keys.profile(&profile) else {
        return Err(missing_key(snapshot, profile));
    };
    let key = pool
        .pick()
        .map_err(|all| all_resting(profile.clone(), all))?;
    let uri = route
        .upstream_uri(&parts.uri)
        .map_err(|e| LocalError::UpstreamUnreachable {
            upstream: route.upstream_label.clone(),
            cause: format!("cannot build the upstream URL: {e}"),
        })?;
    parts.uri = match route.key_in_query {
        true => strip_key_param(&uri).unwrap_or(uri),
        false => uri,
    };
    // The client picks HTTP/1.1 or HTTP/2 per upstream connection (ALPN); it needs 1.1 here.
    parts.version = Version::HTTP_11;
    strip_request_headers(&mut parts.headers, &route.header);
    for (name, value) in &route.default_headers {
        if !parts.headers.contains_key(name) {
            parts.headers.insert(name.clone(), value.clone());
        }
    }
    for (name, value) in &route.add_headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    inject(route, key, &mut parts.headers);
    Ok(Plan {
        route,
        profile,
        pool,
        key,
        client,
    })
}

/// Writes `key` into the route's header, in the route's format, built once at load.
pub fn inject(route: &Route, key: &Key, headers: &mut HeaderMap) {
    if let Some(credential) = key.header(route.format) {
        headers.insert(route.header.clone(), credential.clone());
    }
}

/// The profile for a request: the one it names in `x-keyproxy-profile`, else its client's, else
/// the route's. With clients configured, every request needs a known token and may name only
/// that client's profiles. Whatever the choice, the route must allow it: a key goes only to the
/// upstreams configured for it.
fn choose_profile<'s>(
    snapshot: &'s Snapshot,
    route: &'s Route,
    headers: &HeaderMap,
) -> Result<(String, Option<&'s clients::Client>), LocalError> {
    let named = headers
        .get(&PROFILE_HEADER)
        .map(|v| v.to_str().unwrap_or_default());
    let clients = &snapshot.config.clients;
    let (chosen, client) = if clients.is_empty() {
        (named.unwrap_or(&route.profile), None)
    } else {
        let token = clients::presented(headers, &route.header).ok_or(LocalError::MissingToken)?;
        let client = clients.find(token).ok_or(LocalError::InvalidToken)?;
        let forbidden = |profile: &str| LocalError::ForbiddenProfile {
            client: client.name.clone(),
            profile: profile.to_owned(),
            allowed: client
                .profiles
                .iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let chosen = match named {
            Some(p) if client.may_use(p) => p,
            Some(p) => return Err(forbidden(p)),
            None => client
                .profile_for(&route.profile, |p| route.allows(p))
                .ok_or_else(|| forbidden(&route.profile))?,
        };
        (chosen, Some(client))
    };
    if !route.allows(chosen) {
        return Err(LocalError::ProfileNotOnRoute {
            route: route.prefix.clone(),
            profile: chosen.to_owned(),
        });
    }
    Ok((chosen.to_owned(), client))
}

/// The local 401: what to do first, where keyproxy looked after.
fn missing_key(snapshot: &Snapshot, profile: String) -> LocalError {
    let config = &snapshot.config;
    let todo = match config.keys_files.first() {
        Some(file) => format!("add one to {} or run keyproxy check", tilde(file)),
        None if !config.openclaw_state_dirs.is_empty() => {
            "add one with openclaw models auth paste-api-key or run keyproxy check".into()
        }
        None if profile == DEFAULT_PROFILE => format!(
            "set environment variable {OPENROUTER_ENV} where keyproxy runs or run keyproxy check"
        ),
        None => "add a keys file to keyproxy.toml or run keyproxy check".into(),
    };
    LocalError::MissingKey {
        looked: snapshot.keys.looked_for(&profile),
        todo,
        profile,
    }
}

fn all_resting(profile: String, all: AllResting) -> LocalError {
    LocalError::KeysResting {
        profile,
        why: "rate limited".into(),
        wakes_in_s: all.wakes_in.as_secs_f64().ceil() as u64,
    }
}
