//! OpenClaw 2026.9's own key store: `<state dir>/state/openclaw.sqlite`, in WAL mode, read while
//! OpenClaw holds it open, never written, and watched so that a key pasted with OpenClaw's CLI
//! is served from the next request.

mod support;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use support::*;

const KEY_C: &str = "sk-or-v1-ccccccccccccccccSECRETMIDDLEcccccccccc33333333";

/// OpenClaw's schema, as `openclaw onboard` leaves it.
const SCHEMA: &str = "PRAGMA journal_mode = WAL; PRAGMA user_version = 18;
    CREATE TABLE config_machine_state(state_key TEXT PRIMARY KEY, value_json TEXT, updated_at_ms INTEGER);
    CREATE TABLE session_state_heads(id INTEGER PRIMARY KEY, body TEXT);";

fn store_json(profiles: &[(&str, &str)]) -> String {
    let profiles: Vec<String> = profiles
        .iter()
        .map(|(name, key)| {
            let provider = name.split(':').next().unwrap();
            format!(r#""{name}":{{"type":"api_key","provider":"{provider}","key":"{key}"}}"#)
        })
        .collect();
    format!(r#"{{"version":1,"profiles":{{{}}}}}"#, profiles.join(","))
}

/// A state folder with OpenClaw's database, and the writer connection OpenClaw would hold
/// open. Automatic checkpoints are off, so every write stays in the `-wal` file.
struct StateDir {
    dir: tempfile::TempDir,
    writer: Connection,
}

impl StateDir {
    fn new(store: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let writer = Connection::open(dir.path().join("state/openclaw.sqlite")).unwrap();
        writer.execute_batch(SCHEMA).unwrap();
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .unwrap();
        let s = Self { dir, writer };
        s.write(store);
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn db(&self) -> PathBuf {
        self.path().join("state/openclaw.sqlite")
    }

    fn write(&self, store: &str) {
        self.writer
            .execute(
                "INSERT INTO config_machine_state VALUES ('authProfiles.store', ?1, 1)
                 ON CONFLICT(state_key) DO UPDATE SET value_json = excluded.value_json",
                [store],
            )
            .unwrap();
    }

    fn config(&self, upstream: &str, profile: &str) -> String {
        format!(
            "keys_files = []\npoll_interval = \"1h\"\nopenclaw_state_dirs = [\"{}\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"{profile}\"\n",
            self.path().display()
        )
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn keys_committed_in_the_wal_are_served_and_rotations_are_live() {
    bounded(async {
        let up = Mock::start(echo_authorization()).await;
        let state = StateDir::new(&store_json(&[("openrouter:default", KEY_A)]));
        assert!(
            state.path().join("state/openclaw.sqlite-wal").exists(),
            "the test's writes must sit in the WAL, not the main file"
        );
        let proxy = Proxy::start(&state.config(&up.url, "openrouter:default"), &[]).await;
        let url = format!("{}/api/v1/chat/completions", proxy.url);
        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            up.received()[0].headers["authorization"],
            format!("Bearer {KEY_A}")
        );
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[]).await;
        assert_no_key(&status.text());
        assert_eq!(
            status.json()["profiles"]["openrouter:default"]["keys"][0]["source"],
            format!("OpenClaw {} (shared store)", state.db().display())
        );

        // `openclaw models auth paste-api-key --profile-id openrouter:default`: one UPDATE,
        // committed to the WAL, never checkpointed.
        state.write(&store_json(&[("openrouter:default", KEY_B)]));
        proxy.wait_for_key("openrouter:default", FP_B).await;
        let reply = get(&url, &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            up.received()[1].headers["authorization"],
            format!("Bearer {KEY_B}")
        );
    })
    .await;
}

#[tokio::test]
async fn an_uncommitted_write_is_not_seen_and_a_locked_database_does_not_block_reading() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let state = StateDir::new(&store_json(&[("openrouter:default", KEY_A)]));
        state.writer.execute_batch("BEGIN EXCLUSIVE;").unwrap();
        state.write(&store_json(&[("openrouter:default", KEY_B)]));
        let proxy = Proxy::start(&state.config(&up.url, "openrouter:default"), &[]).await;
        assert_eq!(proxy.keys_of("openrouter:default"), vec![FP_A.to_owned()]);
        assert!(proxy.status().last_error.is_none(), "{:?}", proxy.status());

        state.writer.execute_batch("COMMIT;").unwrap();
        proxy.wait_for_key("openrouter:default", FP_B).await;
        // keyproxy's reads took no lock: OpenClaw can still write at once.
        state
            .writer
            .execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn keyproxy_leaves_no_file_behind_in_openclaws_folder() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let state = StateDir::new(&store_json(&[("openrouter:default", KEY_A)]));
        let StateDir { dir, writer } = state;
        drop(writer); // OpenClaw stopped: the last close checkpoints and removes the WAL.
        let before = listing(&dir.path().join("state"));
        assert_eq!(before, vec!["openclaw.sqlite".to_owned()]);
        let state_dir = dir.path().display().to_string();
        let config = format!(
            "keys_files = []\nopenclaw_state_dirs = [\"{state_dir}\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"openrouter:default\"\n",
            up.url
        );
        let proxy = Proxy::start(&config, &[]).await;
        assert_eq!(proxy.keys_of("openrouter:default"), vec![FP_A.to_owned()]);
        assert_eq!(listing(&dir.path().join("state")), before);
    })
    .await;
}

#[tokio::test]
async fn the_profile_openclaw_sends_to_openrouter_fills_openrouter_default() {
    bounded(async {
        let up = Mock::start(echo_authorization()).await;
        // Onboarding wrote openrouter:default; `paste-api-key` later added openrouter:manual
        // and pointed models.providers.openrouter.apiKey at it; re-onboarding left a setup
        // profile behind.
        let store = r#"{"version":1,"profiles":{
            "openrouter:default":{"type":"api_key","provider":"openrouter","key":"KEY_A"},
            "openrouter:manual":{"type":"api_key","provider":"openrouter","key":"KEY_B"},
            "openrouter:setup-1b2c":{"type":"api_key","provider":"openrouter","key":"KEY_C","setup":{"replacement":true}}}}"#
            .replace("KEY_A", KEY_A)
            .replace("KEY_B", KEY_B)
            .replace("KEY_C", KEY_C);
        let state = StateDir::new(&store);
        std::fs::write(
            state.path().join("openclaw.json"),
            "// JSON5, as OpenClaw reads it\n{models: {providers: {openrouter: {baseUrl: 'http://127.0.0.1:8787/api/v1', apiKey: 'openrouter:manual',},},},}\n",
        )
        .unwrap();
        let proxy = Proxy::start(&state.config(&up.url, "openrouter:default"), &[]).await;
        assert_eq!(proxy.keys_of("openrouter:default"), vec![FP_B.to_owned()]);
        assert_eq!(proxy.keys_of("openrouter:manual"), vec![FP_B.to_owned()]);
        assert!(proxy.keys_of("openrouter:setup-1b2c").is_empty());
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[]).await;
        let source = status.json()["profiles"]["openrouter:default"]["keys"][0]["source"].clone();
        assert!(
            source.as_str().unwrap().contains("'openrouter:manual', which models.providers.openrouter.apiKey names"),
            "{source}"
        );
        let reply = get(&format!("{}/x", proxy.url), &[("x-keyproxy-profile", "openrouter:setup-1b2c")]).await;
        assert_eq!(reply.status, 401);
        let msg = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("setup.replacement"), "{msg}");
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_legacy_auth_profiles_json_beside_the_database_is_read_too() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let state = StateDir::new(&store_json(&[("openrouter:default", KEY_A)]));
        let legacy = state.path().join("agents/main/agent");
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(
            legacy.join("auth-profiles.json"),
            store_json(&[("openrouter:default", KEY_C), ("openai:ci", KEY_B)]),
        )
        .unwrap();
        let proxy = Proxy::start(&state.config(&up.url, "openrouter:default"), &[]).await;
        assert_eq!(
            proxy.keys_of("openrouter:default"),
            vec![FP_A.to_owned()],
            "the database wins over the legacy file"
        );
        assert_eq!(proxy.keys_of("openai:ci"), vec![FP_B.to_owned()]);
    })
    .await;
}

#[tokio::test]
async fn a_corrupt_database_or_an_unknown_row_is_a_failed_source_not_a_crash() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let state = StateDir::new("{\"version\": 2, \"entries\": []}");
        let proxy = Proxy::start(&state.config(&up.url, "openrouter:default"), &[]).await;
        let reply = get(&format!("{}/x", proxy.url), &[]).await;
        assert_eq!(reply.status, 401);
        let msg = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("no \"profiles\" object"), "{msg}");
        let error = proxy.status().last_error.expect("a failed source is a reload error").1;
        assert!(error.contains("authProfiles.store"), "{error}");

        // Now OpenClaw writes a good row: the next look serves it.
        state.write(&store_json(&[("openrouter:default", KEY_A)]));
        proxy.wait_for_key("openrouter:default", FP_A).await;

        let broken = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(broken.path().join("state")).unwrap();
        std::fs::write(broken.path().join("state/openclaw.sqlite"), "this is no database, KEY_C")
            .unwrap();
        let config = format!(
            "keys_files = []\nopenclaw_state_dirs = [\"{}\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"openrouter:default\"\n",
            broken.path().display(),
            up.url
        );
        let proxy = Proxy::start(&config, &[]).await;
        let reply = get(&format!("{}/x", proxy.url), &[]).await;
        assert_eq!(reply.status, 401);
        let msg = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("not a readable SQLite database"), "{msg}");
        assert!(!msg.contains("KEY_C"), "{msg}");
        let ready = get(&format!("{}/_keyproxy/ready", proxy.url), &[]).await;
        assert_eq!(ready.status, 503);
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_missing_state_folder_is_named_and_watched_until_it_appears() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join(".openclaw");
        let config = format!(
            "keys_files = []\nopenclaw_state_dirs = [\"{}\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"openrouter:default\"\n",
            dir.display(),
            up.url
        );
        let proxy = Proxy::start(&config, &[]).await;
        let reply = get(&format!("{}/x", proxy.url), &[]).await;
        assert_eq!(reply.status, 401);
        let body = reply.json();
        assert_eq!(
            body["error"]["looked"][0]["source"],
            format!("OpenClaw state folder {}", dir.display())
        );
        assert_eq!(body["error"]["looked"][0]["result"], "not found");

        // `openclaw onboard` creates the folder and the database while keyproxy runs.
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let writer = Connection::open(dir.join("state/openclaw.sqlite")).unwrap();
        writer.execute_batch(SCHEMA).unwrap();
        writer
            .execute(
                "INSERT INTO config_machine_state VALUES ('authProfiles.store', ?1, 1)",
                [store_json(&[("openrouter:default", KEY_A)])],
            )
            .unwrap();
        proxy.wait_for_key("openrouter:default", FP_A).await;
    })
    .await;
}

#[tokio::test]
async fn a_folder_of_an_older_openclaw_with_only_legacy_files_is_read() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("agents/main/agent");
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(
            legacy.join("auth-profiles.json"),
            store_json(&[("openrouter:default", KEY_A)]),
        )
        .unwrap();
        let config = format!(
            "keys_files = []\nopenclaw_state_dirs = [\"{}\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"openrouter:default\"\n",
            dir.path().display(),
            up.url
        );
        let proxy = Proxy::start(&config, &[]).await;
        assert_eq!(proxy.keys_of("openrouter:default"), vec![FP_A.to_owned()]);
        assert!(proxy.status().last_error.is_none(), "{:?}", proxy.status());
    })
    .await;
}

/// keyproxy's config in `bin`'s config folder, reading `state`, with its state folder in `bin`'s
/// home; returns that state folder.
fn served_config(bin: &Bin, state: &StateDir, upstream: &str) -> PathBuf {
    let state_dir = bin.home.path().join("state");
    std::fs::write(
        bin.config_dir().join("keyproxy.toml"),
        format!(
            "state_dir = \"{}\"\n{}",
            state_dir.display(),
            state.config(upstream, "openrouter:default")
        ),
    )
    .unwrap();
    state_dir
}

/// Dates the database's files a minute back, as a database OpenClaw last wrote a while ago.
fn age(state: &StateDir) {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", state.db().display());
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(then).unwrap();
    }
}

const COPIED: &str = "copied OpenClaw's database to read it";

fn copies(served: &Served) -> usize {
    served
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(COPIED))
        .count()
}

#[tokio::test]
async fn an_unchanged_database_is_not_copied_again() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let state = StateDir::new(&store_json(&[("openrouter:default", KEY_A)]));
        age(&state);
        let bin = Bin::new();
        served_config(&bin, &state, &up.url);
        let mut cmd = bin.command();
        cmd.env("RUST_LOG", "info,keyproxy::keys::openclaw_copy=debug");
        let mut served = Served::start(cmd).await;
        assert_eq!(copies(&served), 1, "the first read copies the database");

        for _ in 0..3 {
            served.signal("HUP");
            served.wait_for_log("reloaded config and keys").await;
        }
        assert_eq!(
            copies(&served),
            1,
            "reloads of an unchanged database copied it again"
        );

        // A key pasted in OpenClaw lands in the WAL: that is copied and read.
        state.write(&store_json(&[("openrouter:default", KEY_B)]));
        served.wait_for_log(COPIED).await;
        served.wait_for_log("keys changed").await;
        let (_, _, log) = served.stop().await;
        assert_no_key(&log.join("\n"));
    })
    .await;
}

#[tokio::test]
async fn a_copy_left_by_a_killed_keyproxy_is_removed_at_the_next_start() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let state = StateDir::new(&store_json(&[("openrouter:default", KEY_A)]));
        let bin = Bin::new();
        let state_dir = served_config(&bin, &state, &up.url);
        // What a SIGKILL in the middle of a copy leaves: the copy, and its lock file unlocked.
        let stale = state_dir.join("openclaw-copy/copy-Zk3qP1");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join(".lock"), "").unwrap();
        std::fs::copy(state.db(), stale.join("openclaw.sqlite")).unwrap();

        // What an earlier keyproxy, which copied into TMPDIR, left there.
        let tmp = bin.home.path().join("tmp");
        let legacy = tmp.join("keyproxy-openclaw-Ab12Cd");
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::copy(state.db(), legacy.join("openclaw.sqlite")).unwrap();
        let then = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        std::fs::File::open(&legacy)
            .unwrap()
            .set_modified(then)
            .unwrap();

        let mut cmd = bin.command();
        cmd.env("TMPDIR", &tmp);
        let served = Served::start(cmd).await;
        let folder = state_dir.join("openclaw-copy");
        assert_eq!(
            listing(&folder),
            Vec::<String>::new(),
            "copies are left in {folder:?}"
        );
        assert_eq!(
            listing(&tmp),
            Vec::<String>::new(),
            "copies are left in TMPDIR"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        served.stop().await;
    })
    .await;
}
