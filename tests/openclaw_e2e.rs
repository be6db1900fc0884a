//! The real OpenClaw (pinned in tests/openclaw/install.sh, installed from the npm registry with
//! the Node it needs) through keyproxy to a mock OpenRouter: onboard a key with OpenClaw's own
//! CLI, `keyproxy openclaw connect`, run a turn, rotate the key with `openclaw models auth
//! paste-api-key` while keyproxy runs, and check that with no key OpenClaw's own output carries
//! keyproxy's sentence whole. Nothing leaves the machine: OpenClaw's HTTPS_PROXY is a local
//! port that drops every connection, and the provider is an in-process mock.

#[path = "openclaw/harness.rs"]
mod harness;
mod support;
use std::sync::atomic::Ordering;

use harness::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_openclaw_runs_a_turn_through_keyproxy_with_the_key_it_stores() {
    let Some(cache) = install("openclaw_e2e") else {
        return;
    };
    let (proxy, dropped) = dropping_proxy().await;
    let user = User::new(&cache, proxy);
    user.onboard(KEY_A).await;
    let state_dir = user.home.path().join(".openclaw");
    assert!(state_dir.join("state/openclaw.sqlite").is_file());

    let up = Mock::start(openrouter()).await;
    let config = user.home.path().join("keyproxy.toml");
    std::fs::write(
        &config,
        format!(
            "keys_files = []\nopenclaw_state_dirs = [\"{}\"]\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"openrouter:default\"\n\
             [[routes]]\nprefix = \"/nokey\"\nstrip_prefix = true\nupstream = \"{}\"\nprofile = \"openrouter:missing\"\n",
            state_dir.display(),
            up.url,
            up.url
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_keyproxy");
    let mut served = std::process::Command::new(bin);
    served
        .env_clear()
        .env("HOME", user.home.path())
        .arg("--config")
        .arg(&config);
    let served = Served::start(served).await;
    wait_for_default_key(&served.url, FP_A).await;

    let listen = served.url.trim_start_matches("http://").to_owned();
    let config_arg = config.display().to_string();
    let (ok, out) = user
        .run(
            bin,
            &[
                "--config",
                &config_arg,
                "--listen",
                &listen,
                "openclaw",
                "connect",
            ],
            None,
        )
        .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("OpenClaw now sends OpenRouter requests to"),
        "{out}"
    );
    let (ok, out) = user
        .run(
            bin,
            &[
                "--config",
                &config_arg,
                "--listen",
                &listen,
                "openclaw",
                "status",
            ],
            None,
        )
        .await;
    assert!(ok, "status after connect:\n{out}");

    let out = user
        .openclaw(&["agent", "--local", "--message", "hi"], None)
        .await;
    assert!(out.contains("hello from mock"), "{out}");
    let sent = up.received();
    let turn = sent
        .iter()
        .find(|r| r.uri.path() == "/api/v1/chat/completions")
        .unwrap_or_else(|| panic!("no chat completion reached the mock: {sent:?}"));
    assert_eq!(turn.headers["authorization"], format!("Bearer {KEY_A}"));

    // Rotation with OpenClaw's own CLI, while keyproxy runs.
    user.openclaw(
        &[
            "models",
            "auth",
            "paste-api-key",
            "--provider",
            "openrouter",
            "--profile-id",
            "openrouter:default",
        ],
        Some(&format!("{KEY_B}\n")),
    )
    .await;
    wait_for_default_key(&served.url, FP_B).await;
    let before = up.count();
    let out = user
        .openclaw(&["agent", "--local", "--message", "hi again"], None)
        .await;
    assert!(out.contains("hello from mock"), "{out}");
    let sent = up.received();
    let turn = sent[before..]
        .iter()
        .find(|r| r.uri.path() == "/api/v1/chat/completions")
        .expect("the second turn reached the mock");
    assert_eq!(turn.headers["authorization"], format!("Bearer {KEY_B}"));

    // No key: OpenClaw shows its own generic line, and keeps keyproxy's sentence in its log.
    let nokey = format!("{}/nokey/api/v1", served.url);
    user.openclaw(
        &[
            "config",
            "set",
            "models.providers.openrouter.baseUrl",
            &nokey,
        ],
        None,
    )
    .await;
    let before = up.count();
    let (ok, out) = user
        .run("openclaw", &["agent", "--local", "--message", "hi"], None)
        .await;
    assert!(!ok, "a turn without a key must fail:\n{out}");
    let sentence = "keyproxy: no key for profile 'openrouter:missing'; add one with openclaw models auth paste-api-key or run keyproxy check.";
    assert!(
        out.contains(sentence),
        "keyproxy's sentence was not shown whole:\n{out}"
    );
    assert_eq!(up.count(), before, "nothing is forwarded without a key");
    assert_no_key(&out);

    let (code, _, log) = served.stop().await;
    assert_eq!(code, Some(0));
    assert_no_key(&log.join("\n"));
    // OpenClaw's own HTTPS (its model catalogue) went to the dropping proxy, never out.
    eprintln!(
        "connections OpenClaw tried through HTTPS_PROXY: {}",
        dropped.load(Ordering::Relaxed)
    );
}
