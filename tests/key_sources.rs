//! Every place a user already keeps keys: keys file fields (`key`, `keys`, `key_env`,
//! `key_file`), `OPENROUTER_API_KEY`, dotenv files and OpenClaw's auth store. Each key remembers
//! where it came from.
//!
//! Tests that need environment variables run the binary, so that no test changes the
//! environment of the shared test process.

mod support;
use support::*;

fn check_json(
    bin: &Bin,
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> (i32, serde_json::Value) {
    let mut cmd = bin.command();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.arg("--config").arg(config).args(["check", "--json"]);
    let out = run(cmd);
    assert_no_key(&out.stdout);
    assert_no_key(&out.stderr);
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", out.stdout, out.stderr));
    (out.code.unwrap(), v)
}

/// Writes `files` and a config (routes `/` to profile `route_profile`, plus `extra` at the top)
/// into a folder of the binary's home; returns the config path.
fn setup(
    bin: &Bin,
    extra: &str,
    route_profile: &str,
    files: &[(&str, &str)],
) -> std::path::PathBuf {
    let dir = bin.home.path().join("etc");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        write_private(&dir.join(name), text);
    }
    let config = dir.join("keyproxy.toml");
    std::fs::write(
        &config,
        format!("{extra}\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nprofile = \"{route_profile}\"\n"),
    )
    .unwrap();
    config
}

fn key_of(v: &serde_json::Value, profile: &str, i: usize) -> (String, String) {
    let k = &v["profiles"][profile]["keys"][i];
    (
        k["fingerprint"].as_str().unwrap_or_default().to_owned(),
        k["source"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn key_file_is_read_without_its_trailing_newline() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[
                ("keys.toml", "[profiles.p]\nkey_file = \"secret\"\n"),
                ("secret", &format!("{KEY_A}\n")),
            ],
        )
        .await;
        let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            up.received()[0].headers["authorization"],
            format!("Bearer {KEY_A}")
        );
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[])
            .await
            .json();
        assert_eq!(
            status["profiles"]["p"]["keys"][0]["source"],
            format!("key_file {}", proxy.path("secret").display())
        );
    })
    .await;
}

#[test]
fn key_env_and_openrouter_api_key_come_from_the_environment() {
    let bin = Bin::new();
    let config = setup(
        &bin,
        "keys_files = [\"keys.toml\"]",
        "q",
        &[("keys.toml", "[profiles.q]\nkey_env = \"KP_TEST_Q\"\n")],
    );
    let (code, v) = check_json(
        &bin,
        &config,
        &[("KP_TEST_Q", KEY_A), ("OPENROUTER_API_KEY", KEY_B)],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(key_of(&v, "q", 0), (FP_A.into(), "env KP_TEST_Q".into()));
    assert_eq!(
        key_of(&v, "openrouter:default", 0),
        (FP_B.into(), "env OPENROUTER_API_KEY".into())
    );

    let (code, v) = check_json(&bin, &config, &[]);
    assert_eq!(code, 1);
    assert!(
        v["problems"][0]
            .as_str()
            .unwrap()
            .contains("environment variable KP_TEST_Q (key_env) not set"),
        "{v:#}"
    );
}

#[test]
fn a_keys_file_wins_over_openrouter_api_key() {
    let bin = Bin::new();
    let config = setup(
        &bin,
        "keys_files = [\"keys.toml\"]",
        "openrouter:default",
        &[("keys.toml", &keys_toml("openrouter:default", KEY_A))],
    );
    let (code, v) = check_json(&bin, &config, &[("OPENROUTER_API_KEY", KEY_B)]);
    assert_eq!(code, 0);
    let keys = v["profiles"]["openrouter:default"]["keys"]
        .as_array()
        .unwrap();
    assert_eq!(keys.len(), 1, "{v:#}");
    assert_eq!(keys[0]["fingerprint"], FP_A);
}

#[test]
fn an_env_file_wins_over_the_environment() {
    let bin = Bin::new();
    let config = setup(
        &bin,
        "keys_files = []\nenv_files = [\"openclaw.env\"]",
        "openrouter:default",
        &[(
            "openclaw.env",
            &format!("# OpenClaw's env file\nOPENROUTER_API_KEY={KEY_A}\n"),
        )],
    );
    let env_path = config.with_file_name("openclaw.env").display().to_string();
    let (code, v) = check_json(&bin, &config, &[("OPENROUTER_API_KEY", KEY_B)]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        key_of(&v, "openrouter:default", 0),
        (FP_A.into(), format!("env file {env_path}"))
    );
    assert!(v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["kind"] == "env_file" && s["path"] == env_path && s["ok"] == true));
}

#[test]
fn a_missing_env_file_is_named_where_the_key_was_looked_for() {
    let bin = Bin::new();
    let config = setup(
        &bin,
        "keys_files = []\nenv_files = [\"absent.env\"]",
        "openrouter:default",
        &[],
    );
    let (code, v) = check_json(&bin, &config, &[]);
    assert_eq!(code, 1);
    let env_path = config.with_file_name("absent.env").display().to_string();
    let problem = v["problems"][0].as_str().unwrap();
    assert!(
        problem.contains(&format!(
            "environment variable OPENROUTER_API_KEY (not set in env file {env_path} (not found) or the environment)"
        )),
        "{problem}"
    );
}

#[tokio::test]
async fn an_env_file_is_watched_like_a_keys_file() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let config = format!(
            "poll_interval = \"1h\"\nenv_files = [\"agent.env\"]\n{}",
            simple_config(&up.url, "p")
        );
        let proxy = Proxy::start(
            &config,
            &[
                (
                    "keys.toml",
                    "[profiles.p]\nkey_env = \"KP_ONLY_IN_THE_FILE\"\n",
                ),
                ("agent.env", &format!("KP_ONLY_IN_THE_FILE={KEY_A}\n")),
            ],
        )
        .await;
        assert_eq!(proxy.keys_of("p"), [FP_A]);
        rename_over(
            &proxy.path("agent.env"),
            &format!("export KP_ONLY_IN_THE_FILE=\"{KEY_B}\"\n"),
        );
        proxy.wait_for_key("p", FP_B).await;
        let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            up.received()[0].headers["authorization"],
            format!("Bearer {KEY_B}")
        );
    })
    .await;
}

fn openclaw_store(openrouter_key: &str) -> String {
    format!(
        r#"{{"version": 1, "profiles": {{
  "openrouter:default": {{"type": "api_key", "provider": "openrouter", "key": "{openrouter_key}"}},
  "anthropic:me": {{"type": "token", "provider": "anthropic", "token": "{KEY_B}"}},
  "google:me": {{"type": "oauth", "provider": "google", "access": "a", "refresh": "r"}}
}}, "order": {{}}, "lastGood": {{}}}}"#
    )
}

#[tokio::test]
async fn an_openclaw_store_serves_its_profiles_and_rotations_through_it_are_live() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let config = format!(
            "poll_interval = \"1h\"\nkeys_files = []\nopenclaw_auth_profiles = [\"auth-profiles.json\"]\n{}",
            simple_config(&up.url, "openrouter:default").replace("keys_files = [\"keys.toml\"]\n", "") + "profiles = [\"anthropic:me\", \"google:me\"]\n"
        );
        let proxy =
            Proxy::start(&config, &[("auth-profiles.json", &openclaw_store(KEY_A))]).await;
        let store_path = proxy.path("auth-profiles.json").display().to_string();
        let url = format!("{}/api/v1/chat/completions", proxy.url);

        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(up.received()[0].headers["authorization"], format!("Bearer {KEY_A}"));
        let reply = get(&url, &[("x-keyproxy-profile", "anthropic:me")]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(up.received()[1].headers["authorization"], format!("Bearer {KEY_B}"));

        let reply = get(&url, &[("x-keyproxy-profile", "google:me")]).await;
        assert_eq!(reply.status, 401);
        let msg = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(&format!("OpenClaw store {store_path} (an OAuth profile")), "{msg}");

        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[]).await;
        assert_no_key(&status.text());
        let status = status.json();
        assert_eq!(
            status["profiles"]["openrouter:default"]["keys"][0]["source"],
            format!("OpenClaw store {store_path}")
        );

        // OpenClaw writes its store with a rename when the user rotates a key.
        rename_over(&proxy.path("auth-profiles.json"), &openclaw_store(KEY_B));
        proxy.wait_for_key("openrouter:default", FP_B).await;
        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(up.received()[2].headers["authorization"], format!("Bearer {KEY_B}"));
        assert_eq!(up.count(), 3, "the OAuth profile's request was not forwarded");
    })
    .await;
}

#[test]
fn an_openclaw_key_ref_is_resolved_from_the_environment() {
    let bin = Bin::new();
    let store = r#"{"version":1,"profiles":{"openrouter:default":{"type":"api_key","provider":"openrouter","keyRef":{"source":"env","id":"OPENROUTER_API_KEY"}}}}"#;
    let config = setup(
        &bin,
        "keys_files = []\nopenclaw_auth_profiles = [\"auth-profiles.json\"]",
        "openrouter:default",
        &[("auth-profiles.json", store)],
    );
    let (code, v) = check_json(&bin, &config, &[("OPENROUTER_API_KEY", KEY_A)]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        key_of(&v, "openrouter:default", 0),
        (FP_A.into(), "env OPENROUTER_API_KEY".into())
    );
}

#[tokio::test]
async fn a_missing_openclaw_store_is_named_in_the_401_and_is_not_fatal() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let config = format!(
            "keys_files = []\nopenclaw_auth_profiles = [\"agents/main/agent/auth-profiles.json\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"openrouter:x\"\n",
            up.url
        );
        let proxy = Proxy::start(&config, &[]).await;
        let reply = get(&format!("{}/api/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 401);
        let msg = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        let store = proxy.path("agents/main/agent/auth-profiles.json").display().to_string();
        assert!(msg.contains(&format!("OpenClaw store {store} (not found)")), "{msg}");
        assert_eq!(up.count(), 0);
        let ready = get(&format!("{}/_keyproxy/ready", proxy.url), &[]).await;
        assert_eq!(ready.status, 503);
    })
    .await;
}

#[test]
fn a_keys_file_readable_by_others_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let bin = Bin::new();
    let config = setup(
        &bin,
        "keys_files = [\"keys.toml\"]",
        "p",
        &[("keys.toml", &keys_toml("p", KEY_A))],
    );
    let keys = config.with_file_name("keys.toml");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = bin.command();
    cmd.arg("--config").arg(&config).arg("check");
    let out = run(cmd);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stderr.contains("readable by group or others"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("chmod 600 {}", keys.display())),
        "{}",
        out.stderr
    );

    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = bin.command();
    cmd.arg("--config").arg(&config).arg("check");
    let out = run(cmd);
    assert!(
        !out.stderr.contains("readable by group or others"),
        "{}",
        out.stderr
    );
}
