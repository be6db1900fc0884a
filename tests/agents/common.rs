//! What every real-agent spec shares: installing the pinned CLI from the npm registry into
//! target/ (its npm cache too), a throw-away HOME, an HTTPS proxy that refuses every connection
//! so nothing the agent does on its own leaves the machine, and running one command with a bound.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One agent command's bound; a cold start of a Node CLI takes seconds on a loaded machine.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// Installs `package@version` into target/agents-e2e/`name`, or says why the spec cannot run.
/// Only an unreachable registry or `KEYPROXY_SKIP_REAL_CLIENTS` skips it.
pub fn install(name: &str, package: &str) -> Option<PathBuf> {
    if crate::support::real_clients_skipped(name) {
        return None;
    }
    // The specs of one file run in parallel: one npm install into a folder at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/agents-e2e").join(name);
    let out = std::process::Command::new("bash")
        .arg(root.join("tests/agents/install.sh"))
        .arg(package)
        .arg(&dir)
        .stderr(Stdio::piped())
        .output()
        .expect("bash runs the install script");
    match out.status.code() {
        Some(0) => Some(dir),
        Some(75) => {
            eprintln!(
                "SKIPPED {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        _ => panic!(
            "installing {package} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A proxy address that refuses every connection: a port bound, then let go. (A proxy that
/// accepts and then drops connections made Gemini CLI retry its own telemetry for 90 s.)
pub fn refusing_proxy() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A throw-away user: its own HOME, the agent's bin folder first on PATH, HTTP and HTTPS through
/// the refusing proxy (except to 127.0.0.1).
pub struct User {
    pub home: tempfile::TempDir,
    pub path: String,
    pub proxy: String,
}

/// How one command ended: success, its output (stdout then stderr), and how long it took.
pub struct Ran {
    pub ok: bool,
    pub out: String,
    pub took: Duration,
}

impl User {
    pub async fn new(install_dir: &Path) -> Self {
        let proxy = refusing_proxy();
        Self {
            home: tempfile::tempdir().unwrap(),
            path: format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                install_dir.join("node_modules/.bin").display()
            ),
            proxy,
        }
    }

    pub async fn run(&self, program: &str, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear()
            .env("HOME", self.home.path())
            .env("PATH", &self.path)
            .env("HTTPS_PROXY", &self.proxy)
            .env("https_proxy", &self.proxy)
            .env("HTTP_PROXY", &self.proxy)
            .env("http_proxy", &self.proxy)
            // keyproxy and the mocks are on 127.0.0.1; Claude Code sends even plain HTTP there
            // through HTTPS_PROXY without this.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("NO_COLOR", "1")
            .env("CI", "1")
            .envs(env.iter().copied())
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.args(args);
        let started = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{program}: {e}"));
        let out = tokio::time::timeout(COMMAND_LIMIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{program} {args:?} did not finish"))
            .unwrap();
        Ran {
            ok: out.status.success(),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            took: started.elapsed(),
        }
    }

    pub fn write(&self, path: &str, text: &str) {
        let path = self.home.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// keyproxy's config and keys in `dir`: `routes` (TOML `[[routes]]` tables) and KEY_A for
/// `profile`.
pub fn keyproxy_config(dir: &Path, profile: &str, key: &str, routes: &str) -> PathBuf {
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        format!("[profiles.\"{profile}\"]\nkey = \"{key}\"\n"),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = dir.join("keyproxy.toml");
    std::fs::write(
        &config,
        format!(
            "keys_files = [\"{}\"]\nstate_dir = \"{}\"\n{routes}",
            keys.display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    config
}

/// The real keyproxy binary serving `config`, with HOME the user's.
pub async fn keyproxy(user: &User, config: &Path) -> crate::support::Served {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyproxy"));
    cmd.env_clear()
        .env("HOME", user.home.path())
        .arg("--config")
        .arg(config);
    crate::support::Served::start(cmd).await
}

/// A route to `upstream` for `provider`'s preset at `prefix`, and one at `/nokey` to a profile
/// that has no key.
pub fn routes_with_nokey(provider: &str, upstream: &str) -> String {
    format!(
        "[[routes]]\nprefix = \"/\"\nprovider = \"{provider}\"\nupstream = \"{upstream}\"\n\
         [[routes]]\nprefix = \"/nokey\"\nstrip_prefix = true\nprovider = \"{provider}\"\n\
         upstream = \"{upstream}\"\nprofile = \"{provider}:missing\"\n"
    )
}

/// "Within a few seconds": an agent that honours the answer shows it after one request or a
/// few quick retries; a retry storm takes minutes.
pub const NO_STORM: Duration = Duration::from_secs(20);

/// A turn without a key: keyproxy's sentence for `profile` reached the agent's own output within
/// [`NO_STORM`] (no retry storm), nothing reached the upstream since it had `before` requests,
/// and no key was shown.
pub fn assert_refused_at_once(
    refused: &Ran,
    profile: &str,
    up: &crate::support::Mock,
    before: usize,
) {
    let sentence = format!("keyproxy: no key for profile '{profile}'");
    assert!(refused.out.contains(&sentence), "{}", refused.out);
    assert!(refused.took < NO_STORM, "took {:?}", refused.took);
    assert_eq!(up.count(), before, "nothing is forwarded without a key");
    crate::support::assert_no_key(&refused.out);
}

/// Stops keyproxy, which must exit 0 with no key anywhere in its log; the log, for more checks.
pub async fn stop_cleanly(served: crate::support::Served) -> Vec<String> {
    let (code, _, log) = served.stop().await;
    assert_eq!(code, Some(0));
    crate::support::assert_no_key(&log.join("\n"));
    log
}
