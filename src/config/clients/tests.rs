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
            reserve_usd: None,
            reserve_tokens: None,
            max_in_flight: None,
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
            reserve_usd: None,
            reserve_tokens: None,
            max_in_flight: None,
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
        reserve_usd: None,
        reserve_tokens: None,
        max_in_flight: None,
        admin: false,
    }])
    .unwrap_err();
    assert!(err.contains("client 'b'"), "{err}");
}

#[test]
fn a_client_without_a_named_profile_gets_the_routes_or_one_the_route_allows() {
    let c = client(&["openrouter:work", "anthropic:me"]);
    let same_provider = |route: &'static str| move |p: &str| provider_of(p) == provider_of(route);
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

fn raw(models: &[&str]) -> RawClient {
    RawClient {
        name: "é-agent ✓".into(),
        token: Some("kp-ééééééééééééééé".into()),
        token_sha256: None,
        profiles: vec!["p".into()],
        models: models.iter().map(|m| m.to_string()).collect(),
        budget_usd: None,
        budget_period: None,
        requests_per_minute: None,
        tokens_per_day: None,
        reserve_usd: None,
        reserve_tokens: None,
        max_in_flight: None,
        admin: false,
    }
}

#[test]
fn model_patterns_are_read_by_characters_whatever_the_text() {
    for good in [
        "gpt-é*",
        "é",
        "*",
        "🦀*",
        "a\u{301}*",
        "日本語/モデル*",
        "\u{0}*",
        "x y*",
    ] {
        let clients =
            Clients::build(vec![raw(&[good])]).unwrap_or_else(|(_, e)| panic!("{good:?}: {e}"));
        let c = clients.iter().next().unwrap();
        assert!(c.may_ask_for(good.trim_end_matches('*')), "{good:?}");
    }
    let c = Clients::build(vec![raw(&["gpt-é*"])]).unwrap();
    assert!(c.iter().next().unwrap().may_ask_for("gpt-éclair"));
    assert!(!c.iter().next().unwrap().may_ask_for("gpt-e"));
    for bad in ["", "**", "é*é", "*é", "🦀**", "a*b*"] {
        let (_, e) = Clients::build(vec![raw(&[bad])]).unwrap_err();
        assert!(e.contains("models entry"), "{bad:?}: {e}");
    }
    // 8 characters of 2 bytes each are 16 bytes, still too short a token.
    let mut short = raw(&[]);
    short.token = Some("éééééééé".into());
    let (_, e) = Clients::build(vec![short]).unwrap_err();
    assert!(e.contains("shorter than 16 characters"), "{e}");
}

#[test]
fn reservations_default_and_never_exceed_the_limit() {
    let mut c = raw(&[]);
    c.budget_usd = Some(0.02);
    c.tokens_per_day = Some(1000);
    let clients = Clients::build(vec![c]).unwrap();
    let limits = clients.iter().next().unwrap().limits;
    assert_eq!(limits.reserve_usd, 0.02);
    assert_eq!(limits.reserve_tokens, 1000);
    let mut c = raw(&[]);
    c.reserve_usd = Some(0.5);
    let (_, e) = Clients::build(vec![c]).unwrap_err();
    assert!(e.contains("reserve_usd needs budget_usd"), "{e}");
    let mut c = raw(&[]);
    c.budget_usd = Some(1.0);
    c.reserve_usd = Some(f64::NAN);
    assert!(Clients::build(vec![c]).is_err());
}
