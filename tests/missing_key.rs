//! A request keyproxy cannot authorize gets a local 401 naming the profile and every place
//! looked, and nothing reaches the upstream.

mod support;
use support::*;

#[tokio::test]
async fn missing_key_answers_401_and_forwards_nothing() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "openrouter:work"),
            &[("keys.toml", &keys_toml("openrouter:other", KEY_A))],
        )
        .await;
        let reply = send(
            &client(),
            request("POST", &format!("{}/api/v1/chat/completions", proxy.url), &[], "{}"),
        )
        .await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.headers["x-keyproxy-error"], "missing-key");
        assert_eq!(reply.headers["x-keyproxy-profile"], "openrouter:work");
        assert_eq!(reply.headers["content-type"], "application/json");
        let body = reply.json();
        let keys_path = proxy.path("keys.toml").display().to_string();
        assert_eq!(
            body["error"]["message"],
            format!(
                "keyproxy: no key for profile 'openrouter:work'; add one to {keys_path} or run keyproxy check. Looked in: keys file {keys_path} (no such profile)."
            )
        );
        assert_eq!(body["error"]["type"], "authentication_error");
        assert_eq!(body["error"]["code"], 401);
        assert_eq!(body["error"]["profile"], "openrouter:work");
        assert_eq!(body["error"]["looked"][0]["source"], format!("keys file {keys_path}"));
        assert_eq!(body["error"]["looked"][0]["result"], "no such profile");
        assert_eq!(up.count(), 0, "nothing may be forwarded without a key");
    })
    .await;
}

#[tokio::test]
async fn missing_sources_are_named_in_the_401() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let config = format!(
            "keys_files = [\"absent.toml\", \"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"p\"\n",
            up.url
        );
        let keys = "[profiles.p]\nkey_env = \"KEYPROXY_TEST_SURELY_UNSET\"\nkey_file = \"secret.txt\"\n";
        let proxy = Proxy::start(&config, &[("keys.toml", keys)]).await;
        let reply = get(&format!("{}/x", proxy.url), &[]).await;
        assert_eq!(reply.status, 401);
        let msg = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        let dir = proxy.dir.path().display().to_string();
        assert!(msg.contains(&format!("keys file {dir}/absent.toml (not found)")), "{msg}");
        assert!(msg.contains("environment variable KEYPROXY_TEST_SURELY_UNSET (key_env) not set"), "{msg}");
        assert!(msg.contains(&format!("key_file {dir}/secret.txt not found")), "{msg}");
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn unknown_paths_get_a_json_404_when_no_route_covers_them() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let config = format!(
            "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\nprofile = \"p\"\n",
            up.url
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        let reply = get(&format!("{}/other/path", proxy.url), &[]).await;
        assert_eq!(reply.status, 404);
        let msg = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("'/other/path'"), "{msg}");
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_key_with_header_breaking_bytes_is_refused_at_load_naming_the_profile() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let keys = "[profiles.p]\nkey = \"sk-or-v1-abc\\r\\nX-Injected: 1\"\n";
        let proxy = Proxy::start(&simple_config(&up.url, "p"), &[("keys.toml", keys)]).await;
        let reply = get(&format!("{}/x", proxy.url), &[]).await;
        assert_eq!(reply.status, 401);
        let msg = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(msg.contains("keys.toml (line 2:"), "{msg}");
        assert!(msg.contains("profile 'p'"), "{msg}");
        assert!(!msg.contains("X-Injected"), "{msg}");
        assert_eq!(up.count(), 0);
    })
    .await;
}
