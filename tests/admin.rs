//! `/_keyproxy/`: health, ready and status, with fingerprints only.

mod support;
use support::*;

#[tokio::test]
async fn health_is_200_while_running_even_without_keys() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(&simple_config(&up.url, "p"), &[]).await;
        let reply = get(&format!("{}/_keyproxy/health", proxy.url), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["status"], "ok");
        assert_eq!(up.count(), 0, "admin requests are never forwarded");
    })
    .await;
}

#[tokio::test]
async fn ready_names_profiles_without_a_key_until_one_is_added() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(&simple_config(&up.url, "openrouter:work"), &[]).await;
        let url = format!("{}/_keyproxy/ready", proxy.url);

        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 503);
        let body = reply.json();
        assert_eq!(body["ready"], false);
        assert_eq!(body["profiles_without_key"][0], "openrouter:work");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("'openrouter:work'"));

        write_private(
            &proxy.path("keys.toml"),
            &keys_toml("openrouter:work", KEY_A),
        );
        proxy.running.reload("test").await;
        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["ready"], true);
    })
    .await;
}

#[tokio::test]
async fn status_shows_sources_profiles_and_reloads_by_fingerprint() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let keys = format!("[profiles.p]\nkeys = [\"{KEY_A}\", \"{KEY_B}\"]\n");
        let proxy = Proxy::start(&simple_config(&up.url, "p"), &[("keys.toml", &keys)]).await;
        let url = format!("{}/_keyproxy/status", proxy.url);

        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 200);
        assert_no_key(&reply.text());
        let s = reply.json();
        assert_eq!(
            s["config"],
            proxy.path("keyproxy.toml").display().to_string()
        );
        let keys_path = proxy.path("keys.toml").display().to_string();
        assert_eq!(s["sources"][0]["kind"], "keys_file");
        assert_eq!(s["sources"][0]["path"], keys_path);
        assert_eq!(s["sources"][0]["ok"], true);
        let keys = s["profiles"]["p"]["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["fingerprint"], FP_A);
        assert_eq!(keys[1]["fingerprint"], FP_B);
        assert_eq!(keys[0]["source"], format!("keys file {keys_path}"));
        assert_eq!(keys[0]["state"], "active");
        assert_eq!(s["reload"]["count"], 0, "start-up is reload 0");
        assert!(s["reload"]["last_ok_at"].is_string());
        assert!(s["reload"]["last_error"].is_null());

        // A bad edit keeps the keys and shows the error; a good one clears it.
        write_private(
            &proxy.path("keys.toml"),
            &format!("[profiles.p]\nkey = \"{KEY_A}\n"),
        );
        proxy.running.reload("test").await;
        let reply = get(&url, &[]).await;
        assert_no_key(&reply.text());
        let s = reply.json();
        // The file watch may have reloaded too; the explicit reload read the same bad file.
        assert!(s["reload"]["count"].as_u64().unwrap() >= 1);
        let message = s["reload"]["last_error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("{keys_path}:2:")), "{message}");
        assert!(s["reload"]["last_error"]["at"].is_string());
        assert_eq!(s["profiles"]["p"]["keys"].as_array().unwrap().len(), 2);

        write_private(&proxy.path("keys.toml"), &keys_toml("p", KEY_B));
        proxy.running.reload("test").await;
        let s = get(&url, &[]).await.json();
        assert!(s["reload"]["count"].as_u64().unwrap() >= 2);
        assert!(s["reload"]["last_error"].is_null());
        assert_eq!(s["profiles"]["p"]["keys"][0]["fingerprint"], FP_B);
    })
    .await;
}

#[tokio::test]
async fn unknown_admin_paths_are_404_and_not_forwarded() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let reply = get(&format!("{}/_keyproxy/nope", proxy.url), &[]).await;
        assert_eq!(reply.status, 404);
        assert!(reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/_keyproxy/nope"));
        assert_eq!(up.count(), 0);
    })
    .await;
}
