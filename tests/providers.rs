//! Provider presets set the header and format each provider reads; explicit settings win;
//! `strip_prefix` maps `/anthropic/...` onto the provider's root; `add_headers` restores
//! attribution an agent stops sending.

mod support;
use support::*;

fn keys() -> String {
    [
        "openrouter:default",
        "openai:default",
        "anthropic:default",
        "gemini:default",
        "azure:default",
        "custom:default",
    ]
    .iter()
    .map(|p| keys_toml(p, KEY_A))
    .collect()
}

fn presets(upstream: &str) -> String {
    let mut config = String::from("keys_files = [\"keys.toml\"]\n");
    for p in ["openrouter", "openai", "anthropic", "gemini", "azure"] {
        config += &format!(
            "[[routes]]\nprefix = \"/{p}\"\nstrip_prefix = true\nprovider = \"{p}\"\nupstream = \"{upstream}\"\n"
        );
    }
    config += &format!(
        "[[routes]]\nprefix = \"/custom\"\nstrip_prefix = true\nprovider = \"anthropic\"\nprofile = \"custom:default\"\nheader = \"authorization\"\nformat = \"Token {{key}}\"\nupstream = \"{upstream}/base\"\n"
    );
    config
}

#[tokio::test]
async fn each_preset_injects_its_providers_header() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(&presets(&up.url), &[("keys.toml", &keys())]).await;
        let cases = [
            ("openrouter", "authorization", format!("Bearer {KEY_A}")),
            ("openai", "authorization", format!("Bearer {KEY_A}")),
            ("anthropic", "x-api-key", KEY_A.to_owned()),
            ("gemini", "x-goog-api-key", KEY_A.to_owned()),
            ("azure", "api-key", KEY_A.to_owned()),
        ];
        for (i, (provider, header, value)) in cases.iter().enumerate() {
            let reply = get(
                &format!("{}/{provider}/v1/messages?beta=true", proxy.url),
                &[
                    ("authorization", "Bearer agent-placeholder"),
                    (header, "agent-placeholder"),
                ],
            )
            .await;
            assert_eq!(reply.status, 200, "{provider}: {}", reply.text());
            let r = &up.received()[i];
            assert_eq!(r.headers[*header], value.as_str(), "{provider}");
            assert_eq!(
                r.uri.path_and_query().unwrap().as_str(),
                "/v1/messages?beta=true",
                "{provider}: strip_prefix"
            );
            if *header != "authorization" {
                assert!(
                    r.headers.get("authorization").is_none(),
                    "{provider}: the agent's credential is removed"
                );
            }
        }
        assert_eq!(up.received()[2].headers["anthropic-version"], "2023-06-01");
    })
    .await;
}

#[tokio::test]
async fn explicit_header_and_format_win_over_the_preset_and_the_clients_version_is_kept() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(&presets(&up.url), &[("keys.toml", &keys())]).await;
        let reply = get(
            &format!("{}/custom/v1/messages", proxy.url),
            &[("anthropic-version", "2024-01-01")],
        )
        .await;
        assert_eq!(reply.status, 200);
        let r = &up.received()[0];
        assert_eq!(r.headers["authorization"], format!("Token {KEY_A}"));
        assert!(r.headers.get("x-api-key").is_none());
        assert_eq!(r.headers["anthropic-version"], "2024-01-01");
        assert_eq!(r.uri.path(), "/base/v1/messages");
    })
    .await;
}

#[tokio::test]
async fn add_headers_restore_openrouter_attribution() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let config = format!(
            "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nprovider = \"openrouter\"\nupstream = \"{}\"\nadd_headers = {{ \"HTTP-Referer\" = \"https://openclaw.ai\", \"X-OpenRouter-Title\" = \"OpenClaw\" }}\n",
            up.url
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys())]).await;
        let reply = get(&format!("{}/api/v1/models", proxy.url), &[("x-openrouter-title", "agent's own")]).await;
        assert_eq!(reply.status, 200);
        let r = &up.received()[0];
        assert_eq!(r.headers["http-referer"], "https://openclaw.ai");
        assert_eq!(r.headers["x-openrouter-title"], "OpenClaw");
        assert_eq!(r.headers.get_all("x-openrouter-title").iter().count(), 1);
    })
    .await;
}

#[test]
fn a_preset_fills_in_upstream_and_profile_and_azure_needs_an_upstream() {
    let parse = |text: &str| keyproxy::config::parse(text, std::path::Path::new("k.toml"));
    let c = parse(
        "[[routes]]\nprefix = \"/anthropic\"\nstrip_prefix = true\nprovider = \"anthropic\"\n",
    )
    .unwrap();
    assert_eq!(
        c.routes[0].upstream.to_string(),
        "https://api.anthropic.com"
    );
    assert_eq!(c.routes[0].profile, "anthropic:default");
    assert_eq!(c.routes[0].header.as_str(), "x-api-key");

    let err = parse("[[routes]]\nprefix = \"/az\"\nprovider = \"azure\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("k.toml:1:"), "{err}");
    assert!(err.contains("needs an upstream"), "{err}");

    let err = parse("[[routes]]\nprefix = \"/\"\nprovider = \"mistral\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("mistral"), "{err}");

    let err = parse("[[routes]]\nprefix = \"/\"\nprovider = \"openai\"\nadd_headers = { authorization = \"x\" }\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("set by keyproxy itself"), "{err}");
}
