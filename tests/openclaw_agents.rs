//! OpenClaw 2026.9's per-agent stores and SecretRefs: an agent-local profile wins over the
//! shared one, another agent is reached as `PROFILE@AGENT`, `file` refs are watched, `exec` refs
//! run with OpenClaw's protocol, a `store` ref is read from OpenClaw's secret store, and a database of an unknown layout is
//! a failed source naming its version. Databases are built in OpenClaw's exact schemas, in WAL
//! mode, with a writer holding them open.

mod support;
use std::path::Path;

use rusqlite::Connection;
use support::*;

const KEY_C: &str = "sk-or-v1-ccccccccccccccccSECRETMIDDLEcccccccccc33333333";
const FP_C: &str = "sk-or-v1...33333333";

const SHARED: &str = "PRAGMA journal_mode = WAL; PRAGMA user_version = 18;
    CREATE TABLE config_machine_state(state_key TEXT PRIMARY KEY, value_json TEXT, updated_at_ms INTEGER);
    CREATE TABLE secret_store_entries (
      scope_kind TEXT NOT NULL CHECK (scope_kind IN ('team', 'identity')),
      scope_id TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
      kind TEXT NOT NULL CHECK (kind IN ('secret', 'env')),
      created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0),
      updated_at_ms INTEGER NOT NULL CHECK (updated_at_ms >= 0),
      updated_by TEXT, deleted_at_ms INTEGER, allowed_hosts TEXT,
      CHECK ((scope_kind = 'team' AND scope_id = '') OR (scope_kind = 'identity' AND length(scope_id) > 0)),
      PRIMARY KEY (scope_kind, scope_id, name)) STRICT;";
const AGENT: &str = "PRAGMA journal_mode = WAL; PRAGMA user_version = 23;
    CREATE TABLE auth_profile_store (store_key TEXT NOT NULL PRIMARY KEY, store_json TEXT NOT NULL, updated_at INTEGER NOT NULL) STRICT;";

/// A database with its schema and a writer that stays open, never checkpointing.
fn database(path: &Path, schema: &str) -> Connection {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = Connection::open(path).unwrap();
    c.execute_batch(schema).unwrap();
    c.execute_batch("PRAGMA wal_autocheckpoint = 0;").unwrap();
    c
}

fn shared(dir: &Path, store: &str) -> Connection {
    let c = database(&dir.join("state/openclaw.sqlite"), SHARED);
    c.execute(
        "INSERT INTO config_machine_state VALUES ('authProfiles.store', ?1, 1)",
        [store],
    )
    .unwrap();
    c
}

fn agent(dir: &Path, id: &str, store: &str) -> Connection {
    let c = database(
        &dir.join(format!("agents/{id}/agent/openclaw-agent.sqlite")),
        AGENT,
    );
    c.execute(
        "INSERT INTO auth_profile_store VALUES ('primary', ?1, 1)",
        [store],
    )
    .unwrap();
    c
}

fn key(name: &str, key: &str) -> String {
    format!(
        r#"{{"version":1,"profiles":{{"{name}":{{"type":"api_key","provider":"openrouter","key":"{key}"}}}}}}"#
    )
}

fn reference(name: &str, r: &str) -> String {
    format!(
        r#"{{"version":1,"profiles":{{"{name}":{{"type":"api_key","provider":"openrouter","keyRef":{r}}}}}}}"#
    )
}

fn config(dir: &Path, upstream: &str) -> String {
    format!(
        "keys_files = []\npoll_interval = \"200ms\"\nopenclaw_state_dirs = [\"{}\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n",
        dir.display()
    )
}

async fn message(proxy: &Proxy) -> String {
    let reply = get(&format!("{}/api/v1/chat/completions", proxy.url), &[]).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    let text = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_no_key(&text);
    text
}

#[tokio::test]
async fn an_agent_local_profile_wins_over_the_shared_one_and_other_agents_are_reached_by_name() {
    bounded(async {
        let up = Mock::start(echo_authorization()).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("openclaw.json"),
            r#"{ agents: { list: [ { id: "main", default: true }, { id: "work" } ] } }"#,
        )
        .unwrap();
        let _s = shared(dir.path(), &key("openrouter:default", KEY_A));
        let _m = agent(dir.path(), "main", &key("openrouter:default", KEY_B));
        let _w = agent(dir.path(), "work", &key("openrouter:default", KEY_C));
        let proxy = Proxy::start(&config(dir.path(), &up.url), &[]).await;
        let url = format!("{}/api/v1/chat/completions", proxy.url);
        assert_eq!(get(&url, &[]).await.status, 200);
        assert_eq!(
            up.received()[0].headers["authorization"],
            format!("Bearer {KEY_B}"),
            "the default agent's own profile is what OpenClaw sends"
        );
        let work = [("x-keyproxy-profile", "openrouter:default@work")];
        assert_eq!(get(&url, &work).await.status, 200);
        assert_eq!(
            up.received()[1].headers["authorization"],
            format!("Bearer {KEY_C}")
        );
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[]).await;
        assert_no_key(&status.text());
        let source = status.json()["profiles"]["openrouter:default"]["keys"][0]["source"].clone();
        assert!(
            source.as_str().unwrap().ends_with("(agent main)"),
            "{source}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_file_ref_is_read_and_a_rotated_file_is_served_live() {
    bounded(async {
        let up = Mock::start(echo_authorization()).await;
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets.json");
        std::fs::write(&secrets, format!(r#"{{"openrouter":"{KEY_A}"}}"#)).unwrap();
        std::fs::write(
            dir.path().join("openclaw.json"),
            format!(
                r#"{{ secrets: {{ providers: {{ files: {{ source: "file", path: "{}", mode: "json" }} }} }} }}"#,
                secrets.display()
            ),
        )
        .unwrap();
        let r = r#"{"source":"file","provider":"files","id":"/openrouter"}"#;
        let _s = shared(dir.path(), &reference("openrouter:default", r));
        let proxy = Proxy::start(&config(dir.path(), &up.url), &[]).await;
        proxy.wait_for_key("openrouter:default", FP_A).await;
        let tmp = dir.path().join("secrets.json.tmp");
        std::fs::write(&tmp, format!(r#"{{"openrouter":"{KEY_B}"}}"#)).unwrap();
        std::fs::rename(&tmp, &secrets).unwrap();
        proxy.wait_for_key("openrouter:default", FP_B).await;
        let url = format!("{}/api/v1/chat/completions", proxy.url);
        assert_eq!(get(&url, &[]).await.status, 200);
        assert_eq!(
            up.received()[0].headers["authorization"],
            format!("Bearer {KEY_B}")
        );
    })
    .await;
}

#[tokio::test]
async fn an_exec_ref_runs_openclaws_protocol_without_a_shell() {
    bounded(async {
        let up = Mock::start(echo_authorization()).await;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("helper.sh");
        // Answers only a request in OpenClaw's shape, in an environment of passEnv and env only.
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\nread req\ncase \"$req\" in *'\"protocolVersion\":1'*'\"ids\":[\"openrouter\"]'*) ;; *) exit 3;; esac\n[ -z \"$HOME$CARGO_MANIFEST_DIR\" ] && [ \"$MODE\" = on ] || exit 4\nprintf '{{\"protocolVersion\":1,\"values\":{{\"openrouter\":\"{KEY_C}\"}}}}'\n"
            ),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        std::fs::write(
            dir.path().join("openclaw.json"),
            format!(
                r#"{{ secrets: {{ providers: {{ vault: {{ source: "exec", command: "{}", env: {{ MODE: "on" }}, passEnv: ["PATH"] }} }} }} }}"#,
                helper.display()
            ),
        )
        .unwrap();
        let r = r#"{"source":"exec","provider":"vault","id":"openrouter"}"#;
        let _s = shared(dir.path(), &reference("openrouter:default", r));
        let proxy = Proxy::start(&config(dir.path(), &up.url), &[]).await;
        proxy.wait_for_key("openrouter:default", FP_C).await;
        let url = format!("{}/api/v1/chat/completions", proxy.url);
        assert_eq!(get(&url, &[]).await.status, 200);
        assert_eq!(
            up.received()[0].headers["authorization"],
            format!("Bearer {KEY_C}")
        );
    })
    .await;
}

#[tokio::test]
async fn a_store_ref_is_served_from_openclaws_secret_store_and_a_missing_entry_is_named() {
    bounded(async {
        let up = Mock::start(echo_authorization()).await;
        let dir = tempfile::tempdir().unwrap();
        let r = r#"{"source":"store","provider":"default","id":"OPENROUTER"}"#;
        let s = shared(dir.path(), &reference("openrouter:default", r));
        // As `openclaw secrets store set OPENROUTER --kind secret` writes it; a deleted entry
        // of another name beside it.
        s.execute_batch(&format!(
            "INSERT INTO secret_store_entries VALUES ('team', '', 'OPENROUTER', '{KEY_C}', 'secret', 1, 1, 'cli', NULL, NULL);
             INSERT INTO secret_store_entries VALUES ('team', '', 'OLD', '{KEY_A}', 'secret', 1, 1, 'cli', 2, NULL);"
        ))
        .unwrap();
        let proxy = Proxy::start(&config(dir.path(), &up.url), &[]).await;
        proxy.wait_for_key("openrouter:default", FP_C).await;

        // Deleted by `openclaw secrets store delete`: named, nothing forwarded.
        let before = up.count();
        s.execute("UPDATE secret_store_entries SET deleted_at_ms = 3", [])
            .unwrap();
        proxy
            .wait_until(|snap| snap.keys.fingerprints("openrouter:default").is_empty())
            .await;
        let msg = message(&proxy).await;
        assert!(
            msg.contains("OpenClaw's secret store (state/openclaw.sqlite) has no entry OPENROUTER"),
            "{msg}"
        );
        assert_eq!(up.count(), before);

        let dir = tempfile::tempdir().unwrap();
        let r = r#"{"source":"file","provider":"nowhere","id":"/x"}"#;
        let _s = shared(dir.path(), &reference("openrouter:default", r));
        let proxy = Proxy::start(&config(dir.path(), &up.url), &[]).await;
        let msg = message(&proxy).await;
        assert!(msg.contains("secret provider 'nowhere'"), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn a_database_of_an_unknown_layout_is_a_failed_source_naming_its_version() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let dir = tempfile::tempdir().unwrap();
        let _s = shared(dir.path(), &key("openrouter:default", KEY_A));
        let db = dir.path().join("agents/main/agent/openclaw-agent.sqlite");
        let _a = database(
            &db,
            "PRAGMA journal_mode = WAL; PRAGMA user_version = 99;
             CREATE TABLE auth_profiles_v2 (id TEXT PRIMARY KEY, body TEXT) STRICT;",
        );
        let proxy = Proxy::start(&config(dir.path(), &up.url), &[]).await;
        let msg = message(&proxy).await;
        assert!(msg.contains("user_version 99"), "{msg}");
        let error = proxy.status().last_error.expect("a failed source").1;
        assert!(error.contains("tested with user_version 23"), "{error}");
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[test]
fn openclaw_status_says_which_store_each_openrouter_profile_comes_from_in_each_folder() {
    let bin = Bin::new();
    let home = bin.home.path();
    let cli = home.join(".openclaw");
    let _s = shared(&cli, &key("openrouter:default", KEY_A));
    let _a = agent(&cli, "main", &key("openrouter:default", KEY_B));
    let service = home.join("srv/openclaw");
    let s = shared(&service, &key("openrouter:manual", KEY_C));
    s.execute_batch("PRAGMA user_version = 30;").unwrap();
    let units = home.join(".config/systemd/user");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(
        units.join("openclaw-gateway.service"),
        format!(
            "[Service]\nEnvironment=\"OPENCLAW_STATE_DIR={}\"\n",
            service.display()
        ),
    )
    .unwrap();
    let mut cmd = bin.command_with_config_listen();
    cmd.args(["openclaw", "status"]);
    let out = run(cmd);
    let text = &out.stdout;
    assert_no_key(text);
    for line in [
        "store: agent main ~/.openclaw/agents/main/agent/openclaw-agent.sqlite (user_version 23)",
        "store: shared ~/.openclaw/state/openclaw.sqlite (user_version 18)",
        "profile 'openrouter:default' (agent main) from agent main: key sk-or-v1...22222222",
        "warning: agent main holds its own 'openrouter:default', which OpenClaw sends instead of the shared store's",
        "store: shared ~/srv/openclaw/state/openclaw.sqlite (user_version 30, not tested)",
        "profile 'openrouter:manual' (agent main) from shared store: key sk-or-v1...33333333",
        "has user_version 30; keyproxy was tested with 18 (OpenClaw 2026.9.6)",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}{}", out.stderr);
    }
}

/// The sentences the OpenClaw stores and refs say, each still in its source file and quoted in
/// docs/troubleshooting.md (which tests/docs.rs cannot find for itself in format strings).
#[test]
fn every_openclaw_store_sentence_is_in_troubleshooting() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let plain = |t: &str| {
        t.replace('`', "")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let doc = plain(&read("docs/troubleshooting.md"));
    for (file, sentence) in [
        ("src/keys/openclaw_refs.rs", "which keyRef source \\\"store\\\" names; set it with openclaw secrets store set"),
        ("src/keys/openclaw.rs", "is not one keyproxy reads (env, file, exec, store)"),
        ("src/keys/openclaw_refs.rs", "which openclaw.json does not configure (secrets.providers)"),
        ("src/keys/openclaw_refs.rs", "a singleValue file provider expects ref id \\\"value\\\""),
        ("src/keys/openclaw_refs.rs", "its provider has no path"),
        ("src/keys/openclaw_refs.rs", "its provider has no command"),
        ("src/keys/openclaw_refs.rs", "is not an absolute path, which OpenClaw requires"),
        ("src/keys/command_run.rs", "answered without protocolVersion 1"),
        ("src/keys/command_run.rs", "printed nothing"),
        ("src/keys/sources/openclaw_sources.rs", "needs its OpenClaw state folder (the secrets.providers of its openclaw.json, its secret store); name the state folder in openclaw_state_dirs"),
        ("src/keys/openclaw_agents.rs", "as keyproxy knows it"),
        ("src/keys/openclaw_agents.rs", "read as that layout"),
        ("src/keys/openclaw_state.rs", "no OpenClaw key store (state/openclaw.sqlite) in this folder; run openclaw onboard"),
        ("src/tasks/openclaw_stores.rs", "which OpenClaw sends instead of the shared store's (a key changed in one is not changed in the other)"),
    ] {
        assert!(read(file).contains(sentence), "{file} no longer says {sentence:?}");
        let said = plain(&sentence.replace("\\\"", "\""));
        assert!(doc.contains(&said), "docs/troubleshooting.md does not quote {said:?}");
    }
}
