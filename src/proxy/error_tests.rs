//! Specs of the local errors' messages, shapes and headers.
use super::*;
use crate::proxy::readable::check_agent_readable;

fn missing() -> LocalError {
    LocalError::MissingKey {
        profile: "openrouter:default".into(),
        todo: "add one to ~/.config/keyproxy/keys.toml or run keyproxy check".into(),
        looked: vec![
            LookedAt {
                source: "keys file ~/.config/keyproxy/keys.toml".into(),
                result: "not found".into(),
            },
            LookedAt {
                source: "environment variable OPENROUTER_API_KEY".into(),
                result: "not set".into(),
            },
        ],
    }
}

#[test]
fn missing_key_message_matches_the_contract() {
    assert_eq!(
        missing().to_string(),
        "keyproxy: no key for profile 'openrouter:default'; add one to ~/.config/keyproxy/keys.toml or run keyproxy check. Looked in: keys file ~/.config/keyproxy/keys.toml (not found), environment variable OPENROUTER_API_KEY (not set)."
    );
    let body = missing().body(ErrorShape::OpenAi);
    assert_eq!(
        body["error"]["looked"][1]["source"],
        "environment variable OPENROUTER_API_KEY"
    );
    assert_eq!(body["error"]["looked"][1]["result"], "not set");
    assert_eq!(body["error"]["code"], 401);
    let resp = missing().into_response();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["x-keyproxy-error"], "missing-key");
    assert_eq!(resp.headers()["x-keyproxy-profile"], "openrouter:default");
}

#[test]
fn anthropic_routes_get_anthropics_error_shape() {
    let body = missing().body(ErrorShape::Anthropic);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("keyproxy: no key"));
}

#[test]
fn every_local_message_survives_agents_filters() {
    let long = "/very/long/client/path".repeat(20);
    let all = [
        missing(),
        LocalError::NoRoute { path: long.clone() },
        LocalError::UpstreamUnreachable {
            upstream: "https://openrouter.ai".into(),
            cause: "client error (Connect): tcp connect error: Connection refused (os error 111)"
                .into(),
        },
        LocalError::UpstreamTimeout {
            upstream: "https://generativelanguage.googleapis.com".into(),
            after: "10s".into(),
            phase: TimeoutPhase::Connect,
        },
        LocalError::UpstreamTimeout {
            upstream: "https://generativelanguage.googleapis.com".into(),
            after: "5m".into(),
            phase: TimeoutPhase::ResponseHead,
        },
        LocalError::UpstreamTimeout {
            upstream: "https://generativelanguage.googleapis.com".into(),
            after: "5m".into(),
            phase: TimeoutPhase::Connecting,
        },
        LocalError::UpstreamTimeout {
            upstream: "https://generativelanguage.googleapis.com".into(),
            after: "5m".into(),
            phase: TimeoutPhase::StreamSlot,
        },
        LocalError::ForeignTarget {
            target: long.clone(),
        },
        LocalError::Connect,
        LocalError::Trace,
        LocalError::MalformedBody,
        LocalError::BodyStalled { after: "5m".into() },
        LocalError::BodyTooSlow {
            rate: "1KiB/s".into(),
            grace: "30s".into(),
        },
        LocalError::UnknownAdminPath { path: long },
        LocalError::MissingToken,
        LocalError::InvalidToken,
        LocalError::AdminTokenNeeded {
            path: "/_keyproxy/metrics".into(),
            presented: true,
        },
        LocalError::AdminOnly {
            path: "/_keyproxy/status".into(),
            client: "laptop-agent-with-a-long-name".into(),
        },
        LocalError::NotAClient {
            why: "this keyproxy has no [[clients]]",
        },
        LocalError::ForbiddenProfile {
            client: "laptop-agent".into(),
            profile: "anthropic:work".into(),
            allowed: "'openrouter:default', 'openrouter:work'".into(),
        },
        LocalError::ProfileNotOnRoute {
            route: "/local".into(),
            profile: "openrouter:default".into(),
        },
        LocalError::KeysResting {
            profile: "openrouter:default".into(),
            why: "rate limited or out of credit".into(),
            wakes_in_s: 3600,
        },
        LocalError::ModelUnreadable {
            client: "laptop-agent".into(),
            why: "its URL path is not one keyproxy can check (an escape, a dot segment or a ':' out of place)".into(),
        },
        LocalError::ModelUnreadable {
            client: "laptop-agent".into(),
            why: "the request's \"plugins[12].fallback_model_list_for_…\" can choose models keyproxy cannot check, so remove it".into(),
        },
        LocalError::RequestUnreadable {
            client: "laptop-agent".into(),
            why: "the request body is larger than retry_body_limit (1048576 bytes)".into(),
        },
        LocalError::RequestUnreadable {
            client: "laptop-agent".into(),
            why: "the request body names \"max_completion_tokens\" twice, which upstreams read differently".into(),
        },
    ];
    for e in all {
        let msg = e.to_string();
        if let Err(why) = check_agent_readable(&msg) {
            panic!("{}: {why}", e.reason());
        }
    }
}

#[test]
fn the_readability_check_catches_what_redaction_masks() {
    assert!(check_agent_readable("keyproxy: env OPENROUTER_API_KEY: not set").is_err());
    assert!(check_agent_readable("keyproxy: token=abc").is_err());
    assert!(check_agent_readable("no prefix").is_err());
    assert!(check_agent_readable(&format!("keyproxy: {}", "x".repeat(200))).is_err());
    assert!(
        check_agent_readable("keyproxy: environment variable OPENROUTER_API_KEY (not set).")
            .is_ok()
    );
}

#[test]
fn client_sent_paths_are_shortened() {
    let long = "/x".repeat(200);
    let msg = LocalError::NoRoute { path: long }.to_string();
    assert!(msg.len() < 180, "{msg}");
    assert!(msg.contains("add a [[routes]] prefix"), "{msg}");
}
