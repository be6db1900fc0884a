//! A client's model limit (`models` on `[[clients]]`): every model a request names must be one
//! it may ask for. A request names models in its URL path (Gemini's `models/{model}:action`,
//! Azure's `deployments/{name}/`) and in its JSON body: `model`, OpenRouter's `models` fallback
//! list, Anthropic's (and OpenRouter's Messages) `fallbacks`, and models inside `tools`
//! (advisors, image generation) and `plugins` (the auto router's `allowed_models`). Anything
//! else that can choose a model (`preset`, a custom `route`, a server tool that runs models of
//! its own, a field spelled like `model`) is refused with a 400 naming it, never passed on.

use http::{HeaderMap, Method};
use serde_json::value::RawValue;

use super::error::LocalError;
use super::request_json::{array, string, Members, NotMembers};
use crate::config::clients::Client;

/// Checks the models the upstream path names; true when it names one (the body then need not).
/// A GET or HEAD reads a model's description, never runs one: its path is not checked, unless
/// it asks to be taken for another method (Google's front ends honour the override headers).
pub(super) fn check_path(
    client: &Client,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
) -> Result<bool, LocalError> {
    const OVERRIDES: [&str; 3] = [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ];
    let reads = method == Method::GET || method == Method::HEAD;
    if reads && !OVERRIDES.iter().any(|h| headers.contains_key(*h)) {
        return Ok(false);
    }
    let unreadable = || {
        unreadable(
            client,
            "its URL path is not one keyproxy can check (an escape, a dot segment or a ':' out of place)".into(),
        )
    };
    let segments = decoded_segments(path).ok_or_else(unreadable)?;
    let mut named = false;
    for pair in segments.windows(2) {
        let (before, segment) = (pair[0].as_str(), pair[1].as_str());
        let model = match (before, segment.split_once(':')) {
            // Azure OpenAI: `/openai/deployments/{name}/chat/completions`.
            ("deployments", None) => segment.to_owned(),
            // Gemini and Vertex: `models/{model}:generateContent`, any action.
            ("models", Some((model, _))) => model.to_owned(),
            ("tunedModels", Some((model, _))) => format!("tunedModels/{model}"),
            (_, Some(_)) => return Err(unreadable()),
            (_, None) => continue,
        };
        ensure(client, &model)?;
        named = true;
    }
    Ok(named)
}

/// Checks every model the body names; a body that names none passes only when the path did.
pub(super) fn check_body(
    client: &Client,
    body: &Members<'_>,
    path_named: bool,
) -> Result<(), LocalError> {
    let mut named = path_named;
    // A member set to null is taken for absent, by upstreams and SDKs alike: it names nothing.
    for (name, value) in body.iter().filter(|(_, v)| v.get() != "null") {
        match name {
            "model" => {
                let model = string(value).ok_or_else(|| field(client, name, NOT_A_NAME))?;
                ensure(client, &model)?;
                named = true;
            }
            "models" => names(client, name, value)?,
            // OpenRouter's fallback route tries the `models` list, each checked here; without
            // one, OpenRouter picks the fallback itself.
            "route" if string(value).as_deref() == Some("fallback") && has_models(body) => {}
            "tools" => tools(client, value)?,
            "plugins" => plugins(client, value)?,
            "fallbacks" => fallbacks(client, value)?,
            _ if chooses_models(name) => return Err(field(client, name, CHOOSES)),
            _ => {}
        }
    }
    if named {
        Ok(())
    } else {
        Err(unreadable(
            client,
            "the request body has no top-level \"model\" string".into(),
        ))
    }
}

/// A non-empty `models` list (each of its models is checked on its own).
fn has_models(body: &Members<'_>) -> bool {
    body.get("models")
        .and_then(array)
        .is_some_and(|list| !list.is_empty())
}

const NOT_A_NAME: &str = "is not a model name string";
const NOT_NAMES: &str = "is not a list of model name strings";
const CHOOSES: &str = "can choose models keyproxy cannot check, so remove it";

/// A top-level member that can choose a model keyproxy does not read: a preset (which holds
/// its own model list), a custom route, batches of requests, and any spelling of the fields it does read that an upstream matching names loosely
/// (Go's encoding/json ignores case, protobuf's JSON takes snake_case too) would take for them.
fn chooses_models(name: &str) -> bool {
    let loose: String = name
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect();
    loose.contains("model")
        || matches!(
            loose.as_str(),
            "preset" | "route" | "fallback" | "fallbacks" | "requests" | "tools" | "plugins"
        )
}

/// `tools`: a tool may name a model (Anthropic's advisor, OpenAI's image generation); OpenRouter
/// server tools other than search, fetch and the date run models of their own choosing.
fn tools(client: &Client, value: &RawValue) -> Result<(), LocalError> {
    const SAFE: [&str; 3] = [
        "openrouter:web_search",
        "openrouter:web_fetch",
        "openrouter:datetime",
    ];
    let list = array(value).ok_or_else(|| field(client, "tools", "is not a list"))?;
    for (i, tool) in list.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        let tool = members(client, &at, tool)?;
        let named = models_of(client, &at, &tool)?;
        let kind = tool.get("type").and_then(string).unwrap_or_default();
        if kind.starts_with("openrouter:") && !SAFE.contains(&kind.as_str()) {
            return Err(field(client, &format!("{at}.type"), CHOOSES));
        }
        // An advisor with no model of its own consults one the answering model picks.
        if kind.contains("advisor") && !named {
            return Err(field(
                client,
                &format!("{at}.model"),
                "is missing from an advisor tool",
            ));
        }
    }
    Ok(())
}

/// `plugins`: OpenRouter's auto router takes `allowed_models`; every model named is checked.
fn plugins(client: &Client, value: &RawValue) -> Result<(), LocalError> {
    let list = array(value).ok_or_else(|| field(client, "plugins", "is not a list"))?;
    for (i, plugin) in list.into_iter().enumerate() {
        let at = format!("plugins[{i}]");
        models_of(client, &at, &members(client, &at, plugin)?)?;
    }
    Ok(())
}

/// `fallbacks`: Anthropic's server-side fallbacks and OpenRouter's on its Messages endpoint,
/// `[{"model": "..."}]`, tried in order when the first model fails or refuses.
fn fallbacks(client: &Client, value: &RawValue) -> Result<(), LocalError> {
    let list = array(value).ok_or_else(|| field(client, "fallbacks", "is not a list"))?;
    for (i, entry) in list.into_iter().enumerate() {
        let at = format!("fallbacks[{i}]");
        // Some gateways take bare names.
        if let Some(model) = string(entry) {
            ensure(client, &model)?;
        } else if !models_of(client, &at, &members(client, &at, entry)?)? {
            return Err(field(client, &format!("{at}.model"), "is missing"));
        }
    }
    Ok(())
}

/// Checks the models an object inside the body names (`model`, `models`, `allowed_models`);
/// any other member spelled like them is refused. True when it names one.
fn models_of(client: &Client, at: &str, object: &Members<'_>) -> Result<bool, LocalError> {
    let mut named = false;
    for (name, value) in object.iter().filter(|(_, v)| v.get() != "null") {
        let at = format!("{at}.{name}");
        match name {
            "model" => {
                let model = string(value).ok_or_else(|| field(client, &at, NOT_A_NAME))?;
                ensure(client, &model)?;
                named = true;
            }
            "models" | "allowed_models" => names(client, &at, value)?,
            _ if name.to_ascii_lowercase().contains("model") => {
                return Err(field(client, &at, CHOOSES))
            }
            _ => {}
        }
    }
    Ok(named)
}

/// A list of model names, each allowed.
fn names(client: &Client, at: &str, value: &RawValue) -> Result<(), LocalError> {
    let list = array(value).ok_or_else(|| field(client, at, NOT_NAMES))?;
    for model in list {
        let model = string(model).ok_or_else(|| field(client, at, NOT_NAMES))?;
        ensure(client, &model)?;
    }
    Ok(())
}

fn members<'a>(client: &Client, at: &str, value: &'a RawValue) -> Result<Members<'a>, LocalError> {
    Members::of_raw(value).map_err(|e| match e {
        NotMembers::NotObject => field(client, at, "is not an object"),
        NotMembers::Twice(name) => field(client, &format!("{at}.{name}"), "is given twice"),
    })
}

/// May `client` ask for `model`? A preset (`@preset/x`, `model@preset/x`) holds models of its
/// own, so only an entry naming it exactly allows it, never a pattern. Gemini names models
/// `models/x` in bodies; `x` in the list allows it.
pub(super) fn allowed(client: &Client, model: &str) -> bool {
    if model.contains('@') {
        return client.models.iter().any(|m| m == model);
    }
    client.may_ask_for(model)
        || model
            .strip_prefix("models/")
            .is_some_and(|m| client.may_ask_for(m))
}

fn ensure(client: &Client, model: &str) -> Result<(), LocalError> {
    if allowed(client, model) {
        Ok(())
    } else {
        Err(LocalError::ModelNotAllowed {
            client: client.name.clone(),
            model: model.to_owned(),
            allowed: client.models.join(", "),
        })
    }
}

fn unreadable(client: &Client, why: String) -> LocalError {
    LocalError::ModelUnreadable {
        client: client.name.clone(),
        why,
    }
}

/// A 400 naming the member: `the request's "models" is not a list of model name strings`.
/// The name is the client's and may be anything: a long one is cut, to keep the advice in sight.
fn field(client: &Client, name: &str, problem: &str) -> LocalError {
    let name = match name.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    };
    unreadable(client, format!("the request's \"{name}\" {problem}"))
}

/// The path's segments, percent-decoded as the upstream will decode them; None for a path
/// whose decoding could mean something else to the upstream (a bad escape, an encoded `/`,
/// `.` or `..`, a `%` left after decoding) or that is not UTF-8.
fn decoded_segments(path: &str) -> Option<Vec<String>> {
    path.split('/')
        .map(|segment| {
            let decoded = String::from_utf8(percent_decode(segment)?).ok()?;
            let odd = decoded == "." || decoded == ".." || decoded.contains(['/', '\\', '%', ';']);
            (!odd).then_some(decoded)
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
#[path = "model_limit_tests.rs"]
mod tests;
