//! The real OpenClaw writing keys where 2026.9.6 keeps them beyond the shared store, and keyproxy
//! serving what OpenClaw itself sends: `openclaw agents add` plus `models auth paste-api-key
//! --agent` (a per-agent database), `openclaw secrets apply` with a `file` provider (a keyRef in
//! the default agent's own store, while the shared store keeps its plaintext key:
//! openclaw#143262), with an `exec` provider, and with a `store` ref (`openclaw secrets store
//! set`, served from OpenClaw's secret store; named in check and the 401 once `secrets store
//! rm` removed it). OpenClaw's own turn goes straight to the mock first, so the key it sends
//! is known, not assumed.

#[path = "openclaw/harness.rs"]
mod harness;
mod support;
use harness::*;
use support::*;

const KEY_C: &str = "sk-or-v1-ccccccccccccccccSECRETMIDDLEcccccccccc33333333";
const FP_C: &str = "sk-or-v1...33333333";
const KEY_D: &str = "sk-or-v1-ddddddddddddddddSECRETMIDDLEdddddddddd44444444";
const FP_D: &str = "sk-or-v1...44444444";

/// `openclaw secrets apply --from PLAN` for one auth-profile target of `agent`.
async fn apply(user: &User, agent: &str, profile: &str, providers: &str, r: &str, exec: bool) {
    let plan = user
        .home
        .path()
        .join(format!("plan-{agent}-{profile}.json"));
    std::fs::write(
        &plan,
        format!(
            r#"{{"version":1,"protocolVersion":1,"providerUpserts":{{{providers}}},
            "targets":[{{"type":"auth-profiles.api_key.key","path":"profiles.{profile}.key","agentId":"{agent}","authProfileProvider":"openrouter","ref":{r}}}]}}"#
        ),
    )
    .unwrap();
    let plan = plan.display().to_string();
    let mut args = vec!["secrets", "apply", "--from", &plan];
    if exec {
        args.push("--allow-exec");
    }
    user.openclaw(&args, None).await;
}

async fn key_of(url: &str, profile: &str) -> serde_json::Value {
    let status = get(&format!("{url}/_keyproxy/status"), &[]).await.json();
    status["profiles"][profile]["keys"][0]["fingerprint"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyproxy_serves_what_the_real_openclaw_sends_from_agent_stores_and_secret_refs() {
    let Some(cache) = install("openclaw_e2e_stores") else {
        return;
    };
    let (proxy, _dropped) = dropping_proxy().await;
    let user = User::new(&cache, proxy);
    let home = user.home.path();
    user.onboard(KEY_A).await;

    // A second agent with a key of its own: OpenClaw writes agents/work/agent/openclaw-agent.sqlite.
    let ws = home.join("ws-work").display().to_string();
    user.openclaw(
        &[
            "agents",
            "add",
            "work",
            "--non-interactive",
            "--workspace",
            &ws,
        ],
        None,
    )
    .await;
    user.openclaw(
        &[
            "models",
            "auth",
            "paste-api-key",
            "--agent",
            "work",
            "--provider",
            "openrouter",
            "--profile-id",
            "openrouter:work",
        ],
        Some(&format!("{KEY_B}\n")),
    )
    .await;
    assert!(home
        .join(".openclaw/agents/work/agent/openclaw-agent.sqlite")
        .is_file());

    // The default agent's key moved to a file provider: a keyRef in agents/main's own store.
    let secrets = home.join("secrets.json");
    write_private(&secrets, &format!(r#"{{"openrouter":"{KEY_C}"}}"#));
    let files = format!(
        r#""files":{{"source":"file","path":"{}","mode":"json"}}"#,
        secrets.display()
    );
    let file_ref = r#"{"source":"file","provider":"files","id":"/openrouter"}"#;
    apply(&user, "main", "openrouter:default", &files, file_ref, false).await;

    // What OpenClaw itself sends now, straight to the mock.
    let up = Mock::start(openrouter()).await;
    let direct = format!("{}/api/v1", up.url);
    user.openclaw(
        &[
            "config",
            "set",
            "models.providers.openrouter.baseUrl",
            &direct,
        ],
        None,
    )
    .await;
    let out = user
        .openclaw(&["agent", "--local", "--message", "hi"], None)
        .await;
    assert!(out.contains("hello from mock"), "{out}");
    let sent = up.received();
    let turn = sent
        .iter()
        .find(|r| r.uri.path() == "/api/v1/chat/completions")
        .expect("OpenClaw's own turn reached the mock");
    assert_eq!(turn.headers["authorization"], format!("Bearer {KEY_C}"));

    // An exec provider for the work agent's profile, and a key in OpenClaw's own secret store.
    let helper = home.join("bin/helper");
    std::fs::create_dir_all(helper.parent().unwrap()).unwrap();
    std::fs::write(
        &helper,
        format!("#!/bin/sh\nread req\nprintf '{{\"protocolVersion\":1,\"values\":{{\"openrouter\":\"{KEY_D}\"}}}}'\n"),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let vault = format!(
        r#""vault":{{"source":"exec","command":"{}"}}"#,
        helper.display()
    );
    let exec_ref = r#"{"source":"exec","provider":"vault","id":"openrouter"}"#;
    apply(&user, "work", "openrouter:work", &vault, exec_ref, true).await;
    user.openclaw(
        &[
            "secrets",
            "store",
            "set",
            "OPENROUTER_TEAM_KEY",
            "--kind",
            "secret",
            "--value-file",
            "-",
        ],
        Some(&format!("{KEY_A}\n")),
    )
    .await;
    let store_ref = r#"{"source":"store","provider":"default","id":"OPENROUTER_TEAM_KEY"}"#;
    apply(&user, "main", "openrouter:team", "", store_ref, false).await;

    let config = home.join("keyproxy.toml");
    std::fs::write(
        &config,
        format!(
            "keys_files = []\npoll_interval = \"200ms\"\nopenclaw_state_dirs = [\"{}\"]\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"openrouter:default\"\n",
            home.join(".openclaw").display(),
            up.url
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_keyproxy");
    let mut served = std::process::Command::new(bin);
    served
        .env_clear()
        .env("HOME", home)
        .arg("--config")
        .arg(&config);
    let served = Served::start(served).await;
    // The default agent's own keyRef wins over the shared plaintext key, as in OpenClaw's turn.
    wait_for_default_key(&served.url, FP_C).await;
    assert_eq!(key_of(&served.url, "openrouter:work@work").await, FP_D);
    assert_eq!(key_of(&served.url, "openrouter:default@work").await, FP_A);

    // The file rotated in place of OpenClaw: served live.
    let tmp = home.join("secrets.json.new");
    write_private(&tmp, &format!(r#"{{"openrouter":"{KEY_B}"}}"#));
    std::fs::rename(&tmp, &secrets).unwrap();
    wait_for_default_key(&served.url, FP_B).await;

    // The key in OpenClaw's own secret store, which `secrets store set` wrote in plain text:
    // served; once deleted there, the local 401 names the entry, nothing sent.
    assert_eq!(key_of(&served.url, "openrouter:team").await, FP_A);
    user.openclaw(
        &["secrets", "store", "rm", "OPENROUTER_TEAM_KEY", "--yes"],
        None,
    )
    .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while key_of(&served.url, "openrouter:team").await == FP_A {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deleted entry is still served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let before = up.count();
    let reply = get(
        &format!("{}/api/v1/chat/completions", served.url),
        &[("x-keyproxy-profile", "openrouter:team")],
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    let body = reply.text();
    assert!(
        body.contains(
            "OpenClaw's secret store (state/openclaw.sqlite) has no entry OPENROUTER_TEAM_KEY"
        ),
        "{body}"
    );
    assert_no_key(&body);
    assert_eq!(up.count(), before);

    let config_arg = config.display().to_string();
    let listen = served.url.trim_start_matches("http://").to_owned();
    let (ok, out) = user
        .run(
            bin,
            &["--config", &config_arg, "--listen", &listen, "check"],
            None,
        )
        .await;
    assert!(ok, "{out}");
    for line in [
        "profile 'openrouter:default' (agent main) from agent main: key sk-or-v1...22222222",
        "profile 'openrouter:team' (agent main) from agent main: nothing: OpenClaw's secret store (state/openclaw.sqlite) has no entry OPENROUTER_TEAM_KEY",
        "warning: agent main holds its own 'openrouter:default', which OpenClaw sends instead of the shared store's",
        "store: shared ~/.openclaw/state/openclaw.sqlite (user_version 18)",
        "store: agent work ~/.openclaw/agents/work/agent/openclaw-agent.sqlite (user_version 23)",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert_no_key(&out);
    let (code, _, log) = served.stop().await;
    assert_eq!(code, Some(0));
    assert_no_key(&log.join("\n"));
}
