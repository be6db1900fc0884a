use super::*;
use crate::config::clients::Limits;

fn client() -> Client {
    Client {
        name: "laptop".into(),
        profiles: vec!["openrouter:default".into()],
        models: vec![
            "openai/gpt-4o-mini".into(),
            "anthropic/*".into(),
            "gemini-2.5-flash".into(),
            "mini-deploy".into(),
        ],
        limits: Limits::default(),
        admin: false,
    }
}

fn body(text: &str) -> Result<(), LocalError> {
    check_body(&client(), &Members::of(text).unwrap(), false)
}

fn refused_model(r: Result<impl std::fmt::Debug, LocalError>) -> String {
    match r {
        Err(LocalError::ModelNotAllowed { model, .. }) => model,
        other => panic!("not a model refusal: {other:?}"),
    }
}

fn unreadable_why(r: Result<impl std::fmt::Debug, LocalError>) -> String {
    match r {
        Err(LocalError::ModelUnreadable { why, .. }) => why,
        other => panic!("not a 400: {other:?}"),
    }
}

#[test]
fn every_model_in_the_body_is_checked() {
    assert!(body(r#"{"model":"openai/gpt-4o-mini","models":["anthropic/claude"]}"#).is_ok());
    for (text, model) in [
        (
            r#"{"model":"openai/gpt-4o-mini","models":["openai/o1-pro"]}"#,
            "openai/o1-pro",
        ),
        (
            r#"{"models":["anthropic/x","openai/o1-pro"],"route":"fallback"}"#,
            "openai/o1-pro",
        ),
        (
            r#"{"model":"openai/gpt-4o-mini","tools":[{"type":"advisor_20260301","name":"advisor","model":"openai/o3"}]}"#,
            "openai/o3",
        ),
        (
            r#"{"model":"openai/gpt-4o-mini","tools":[{"type":"image_generation","model":"gpt-image-1"}]}"#,
            "gpt-image-1",
        ),
        (
            r#"{"model":"openrouter/auto","plugins":[{"id":"auto-router","allowed_models":["openai/o1-pro"]}]}"#,
            "openrouter/auto",
        ),
        (
            r#"{"model":"anthropic/x","plugins":[{"id":"auto-router","allowed_models":["openai/o1-pro"]}]}"#,
            "openai/o1-pro",
        ),
        // A preset holds its own models: a pattern never allows one.
        (
            r#"{"model":"anthropic/claude@preset/mine"}"#,
            "anthropic/claude@preset/mine",
        ),
        (r#"{"mod\u0065l":"openai/o1-pro"}"#, "openai/o1-pro"),
        (
            r#"{"model":"anthropic/x","fallbacks":[{"model":"anthropic/y"},{"model":"openai/o1"}]}"#,
            "openai/o1",
        ),
        (
            r#"{"model":"anthropic/x","fallbacks":["openai/o1"]}"#,
            "openai/o1",
        ),
    ] {
        assert_eq!(refused_model(body(text)), model, "{text}");
    }
}

#[test]
fn what_cannot_be_checked_is_refused_naming_the_field() {
    for (text, field) in [
        (
            r#"{"model":"anthropic/x","models":"openai/o1"}"#,
            "\"models\"",
        ),
        (
            r#"{"model":"anthropic/x","models":["anthropic/y",7]}"#,
            "\"models\"",
        ),
        (r#"{"model":["anthropic/x"]}"#, "\"model\""),
        (
            r#"{"model":"anthropic/x","route":{"type":"custom"}}"#,
            "\"route\"",
        ),
        (r#"{"model":"anthropic/x","route":"cheapest"}"#, "\"route\""),
        (r#"{"model":"anthropic/x","route":"fallback"}"#, "\"route\""),
        (
            r#"{"model":"anthropic/x","models":[],"route":"fallback"}"#,
            "\"route\"",
        ),
        (r#"{"model":"anthropic/x","preset":"mine"}"#, "\"preset\""),
        (
            r#"{"model":"anthropic/x","fallbacks":"openai/o1"}"#,
            "\"fallbacks\"",
        ),
        (
            r#"{"model":"anthropic/x","fallbacks":[{"max_tokens":5}]}"#,
            "\"fallbacks[0].model\"",
        ),
        (
            r#"{"model":"anthropic/x","fallbacks":[{"model":"anthropic/y","model":"openai/o1"}]}"#,
            "\"fallbacks[0].model\"",
        ),
        (r#"{"model":"anthropic/x","Fallbacks":[]}"#, "\"Fallbacks\""),
        (
            r#"{"model":"anthropic/x","Model":"openai/o1"}"#,
            "\"Model\"",
        ),
        (
            r#"{"model":"anthropic/x","fallback_models":[]}"#,
            "\"fallback_models\"",
        ),
        (r#"{"model":"anthropic/x","Tools":[]}"#, "\"Tools\""),
        (
            r#"{"requests":[{"params":{"model":"openai/o1"}}]}"#,
            "\"requests\"",
        ),
        (
            r#"{"model":"anthropic/x","tools":[{"type":"openrouter:advisor","parameters":{"model":"anthropic/y"}}]}"#,
            "\"tools[0].type\"",
        ),
        (
            r#"{"model":"anthropic/x","tools":[{"type":"function"},{"type":"openrouter:subagent"}]}"#,
            "\"tools[1].type\"",
        ),
        (
            r#"{"model":"anthropic/x","tools":[{"type":"advisor_20260301","name":"advisor"}]}"#,
            "\"tools[0].model\"",
        ),
        (
            r#"{"model":"anthropic/x","tools":[{"type":"x","model":"anthropic/y","model":"openai/o1"}]}"#,
            "\"tools[0].model\"",
        ),
        (
            r#"{"model":"anthropic/x","plugins":[{"id":"auto-router","model_list":["openai/o1"]}]}"#,
            "\"plugins[0].model_list\"",
        ),
    ] {
        let why = unreadable_why(body(text));
        assert!(why.contains(field), "{text}: {why}");
    }
    assert!(unreadable_why(body(r#"{"messages":[]}"#)).contains("no top-level \"model\""));
}

#[test]
fn ordinary_requests_pass() {
    for text in [
        r#"{"model":"anthropic/claude-sonnet-4.5","messages":[],"tools":[{"type":"function","function":{"name":"t","parameters":{"type":"object","properties":{"model":{"type":"string"}}}}}],"stream":true}"#,
        r#"{"model":"anthropic/x","tools":[{"name":"Task","input_schema":{"properties":{"model":{"enum":["opus"]}}}}]}"#,
        r#"{"model":"openai/gpt-4o-mini","provider":{"order":["openai"],"allow_fallbacks":false},"modalities":["text"]}"#,
        r#"{"model":"anthropic/x","tools":[{"type":"openrouter:web_search"}],"plugins":[{"id":"web"}]}"#,
        r#"{"model":"models/gemini-2.5-flash"}"#,
        r#"{"model":"anthropic/x","tools":null,"models":null,"plugins":null,"route":null}"#,
        r#"{"model":"anthropic/x","fallbacks":[{"model":"anthropic/y"},"openai/gpt-4o-mini"]}"#,
    ] {
        assert!(body(text).is_ok(), "{text}");
    }
    // A path that named a model makes a body model optional.
    let gemini = Members::of(r#"{"contents":[]}"#).unwrap();
    assert!(check_body(&client(), &gemini, true).is_ok());
}

#[test]
fn models_in_the_path() {
    let none = HeaderMap::new();
    let post = |path: &str| check_path(&client(), &Method::POST, &none, path);
    for path in [
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        "/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-flash:generateContent",
        "/v1beta/models/gemini-2.5-flash%3AcountTokens",
        "/openai/deployments/mini-deploy/chat/completions",
        "/openai/deployments/mini%2Ddeploy/chat/completions",
    ] {
        assert_eq!(post(path).ok(), Some(true), "{path}");
    }
    assert_eq!(post("/api/v1/chat/completions").ok(), Some(false));
    for (path, model) in [
        (
            "/v1beta/models/gemini-2.5-pro:generateContent",
            "gemini-2.5-pro",
        ),
        (
            "/v1beta/models/gemini-2.5-pro%3AstreamGenerateContent",
            "gemini-2.5-pro",
        ),
        (
            "/v1beta/models/gemini%2D2.5-pro:generateContent",
            "gemini-2.5-pro",
        ),
        (
            "/v1beta/tunedModels/mine:generateContent",
            "tunedModels/mine",
        ),
        (
            "/openai/deployments/gpt-4o-big/chat/completions",
            "gpt-4o-big",
        ),
    ] {
        assert_eq!(refused_model(post(path)), model, "{path}");
    }
    for path in [
        "/v1beta/models/gemini-2.5-flash/../gemini-2.5-pro:generateContent",
        "/v1beta/models%2Fgemini-2.5-pro:generateContent",
        "/v1beta/models/gemini-2.5-flash%ZZ:generateContent",
        "/v1beta/cachedContents/x:generateContent",
    ] {
        assert!(unreadable_why(post(path)).contains("URL path"), "{path}");
    }
    // Reading a model's description runs nothing.
    let pro = "/v1beta/models/gemini-2.5-pro:generateContent";
    let get = check_path(&client(), &Method::GET, &none, pro);
    assert_eq!(get.ok(), Some(false));
    // Unless it asks to be taken for a POST.
    let mut overridden = HeaderMap::new();
    overridden.insert("x-http-method-override", "POST".parse().unwrap());
    let get = check_path(&client(), &Method::GET, &overridden, pro);
    assert_eq!(refused_model(get), "gemini-2.5-pro");
}
