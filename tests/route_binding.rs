//! A key goes only to the upstreams configured for it: a route injects its own profile, the
//! ones it lists, or by default those of its profile's provider; no header and no client can
//! steer a key elsewhere. And whatever credential a client sent is removed on every route.

mod support;
use support::*;

const LOCAL_KEY: &str = "local-key-0123456789abcdef0123456789abcdef";

fn two_routes(openrouter: &str, local: &str, extra: &str) -> String {
    format!(
        "keys_files = [\"keys.toml\"]\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"{openrouter}\"\nprofile = \"openrouter:default\"\n\
         [[routes]]\nprefix = \"/local\"\nupstream = \"{local}\"\nprofile = \"local:none\"\n{extra}"
    )
}

fn keys() -> String {
    format!(
        "[profiles.\"openrouter:default\"]\nkey = \"{KEY_A}\"\n[profiles.\"openrouter:work\"]\nkey = \"{KEY_B}\"\n[profiles.\"local:none\"]\nkey = \"{LOCAL_KEY}\"\n"
    )
}

#[tokio::test]
async fn a_profile_header_cannot_send_a_key_to_another_providers_route() {
    bounded(async {
        let openrouter = Mock::start(echo_authorization()).await;
        let local = Mock::start(echo_authorization()).await;
        let proxy = Proxy::start(
            &two_routes(&openrouter.url, &local.url, ""),
            &[("keys.toml", &keys())],
        )
        .await;
        let reply = get(
            &format!("{}/local/v1/chat", proxy.url),
            &[("x-keyproxy-profile", "openrouter:default")],
        )
        .await;
        assert_eq!(reply.status, 403);
        assert_eq!(reply.headers["x-keyproxy-error"], "profile-not-on-route");
        let msg = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            msg.contains("route '/local' may not use profile 'openrouter:default'"),
            "{msg}"
        );
        assert_eq!(
            local.count(),
            0,
            "the OpenRouter key never reaches the local upstream"
        );

        // The same provider's other profile is fine on the OpenRouter route.
        let reply = get(
            &format!("{}/api/v1/models", proxy.url),
            &[("x-keyproxy-profile", "openrouter:work")],
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            openrouter.received()[0].headers["authorization"],
            format!("Bearer {KEY_B}")
        );
        let reply = get(
            &format!("{}/api/v1/models", proxy.url),
            &[("x-keyproxy-profile", "local:none")],
        )
        .await;
        assert_eq!(reply.status, 403);
        assert_eq!(openrouter.count(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_route_may_list_the_profiles_it_injects() {
    bounded(async {
        let openrouter = Mock::start(echo_authorization()).await;
        let local = Mock::start(echo_authorization()).await;
        let proxy = Proxy::start(
            &two_routes(
                &openrouter.url,
                &local.url,
                "profiles = [\"openrouter:work\"]\n",
            ),
            &[("keys.toml", &keys())],
        )
        .await;
        let url = format!("{}/local/v1/chat", proxy.url);
        let reply = get(&url, &[("x-keyproxy-profile", "openrouter:work")]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            local.received()[0].headers["authorization"],
            format!("Bearer {KEY_B}")
        );
        let reply = get(&url, &[("x-keyproxy-profile", "openrouter:default")]).await;
        assert_eq!(
            reply.status, 403,
            "a listed route allows only what it lists"
        );
        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            local.received()[1].headers["authorization"],
            format!("Bearer {LOCAL_KEY}")
        );
    })
    .await;
}

#[tokio::test]
async fn a_clients_key_is_not_sent_on_a_route_of_another_provider() {
    bounded(async {
        let openrouter = Mock::start(echo_authorization()).await;
        let gemini = Mock::start(ok_handler()).await;
        let config = format!(
            "keys_files = [\"keys.toml\"]\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"openrouter:default\"\n\
             [[routes]]\nprefix = \"/gemini\"\nprovider = \"gemini\"\nupstream = \"{}\"\nstrip_prefix = true\n\
             [[clients]]\nname = \"laptop\"\ntoken = \"kp-laptop-0123456789\"\nprofiles = [\"openrouter:default\"]\n",
            openrouter.url, gemini.url
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys())]).await;
        let token = ("authorization", "Bearer kp-laptop-0123456789");
        let reply = get(&format!("{}/gemini/v1beta/models", proxy.url), &[token]).await;
        assert_eq!(reply.status, 403, "{}", reply.text());
        assert_eq!(gemini.count(), 0);
        let reply = get(&format!("{}/api/v1/models", proxy.url), &[token]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(openrouter.received()[0].headers["authorization"], format!("Bearer {KEY_A}"));
    })
    .await;
}

#[tokio::test]
async fn every_credential_the_client_sent_is_removed_on_every_route() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let config = format!(
            "keys_files = [\"keys.toml\"]\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"{0}\"\nprofile = \"openrouter:default\"\n\
             [[routes]]\nprefix = \"/gemini\"\nprovider = \"gemini\"\nupstream = \"{0}\"\nprofile = \"gemini:default\"\nstrip_prefix = true\n",
            up.url
        );
        let keys = format!("{}[profiles.\"gemini:default\"]\nkey = \"{KEY_B}\"\n", keys());
        let proxy = Proxy::start(&config, &[("keys.toml", &keys)]).await;
        let sent = [
            ("authorization", "Bearer client-real-key"),
            ("x-api-key", "client-real-key"),
            ("api-key", "client-real-key"),
            ("x-goog-api-key", "client-real-key"),
        ];
        let reply = get(&format!("{}/api/v1/models?key=client-real-key", proxy.url), &sent).await;
        assert_eq!(reply.status, 200);
        let reply = get(
            &format!("{}/gemini/v1beta/models?alt=sse&key=client-real-key", proxy.url),
            &sent,
        )
        .await;
        assert_eq!(reply.status, 200);
        let received = up.received();
        let openrouter = &received[0];
        assert_eq!(openrouter.headers["authorization"], format!("Bearer {KEY_A}"));
        for name in ["x-api-key", "api-key", "x-goog-api-key"] {
            assert!(openrouter.headers.get(name).is_none(), "{name} reached the upstream");
        }
        let gemini = &received[1];
        assert_eq!(gemini.headers["x-goog-api-key"], KEY_B);
        for name in ["authorization", "x-api-key", "api-key"] {
            assert!(gemini.headers.get(name).is_none(), "{name} reached Gemini");
        }
        assert_eq!(gemini.uri.query(), Some("alt=sse"), "the client's key parameter goes");
        for r in &received {
            assert!(!format!("{:?}", r.headers).contains("client-real-key"));
        }
    })
    .await;
}
