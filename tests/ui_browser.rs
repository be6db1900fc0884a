//! The page in a real browser: Debian's headless Chromium, driven by playwright-core from npm
//! (installed into target/ui-e2e, its npm cache too), opens `/_keyproxy/` against a keyproxy
//! with two agents and traffic from a mock upstream. tests/ui/page.mjs logs in with the admin
//! token and checks every section against the JSON, the key rested by a 429, then a client
//! token's own view; no request outside `/_keyproxy/`, no key text in the DOM or the network
//! log, no console error. Screenshots: target/ui-screens/admin.png and client.png.
//!
//! Setup installs `chromium` with apt-get when it is missing; the spec is skipped, saying why,
//! only when Chromium or playwright-core cannot be installed, or when
//! `KEYPROXY_SKIP_REAL_CLIENTS` asks it to download nothing.

#[path = "ui/busy.rs"]
mod busy;
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use busy::*;
use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const PLAYWRIGHT: &str = "playwright-core@1.65.1";
/// Chromium's start and two views on a loaded 2-core machine take seconds, not minutes.
const BROWSER_LIMIT: Duration = Duration::from_secs(180);

/// Chromium at /usr/bin/chromium, installed from Debian when missing; None says why not.
fn chromium() -> Result<(), String> {
    if Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    let install =
        "(apt-get install -y chromium || (apt-get update && apt-get install -y chromium)) >&2";
    let out = std::process::Command::new("timeout")
        .args(["900", "sh", "-c", install])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    match Path::new(CHROMIUM).exists() {
        true => Ok(()),
        false => Err(format!(
            "chromium is not installed and apt-get could not install it: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )),
    }
}

/// playwright-core in target/ui-e2e, by the agent specs' install script.
fn playwright() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/ui-e2e");
    let out = std::process::Command::new("bash")
        .arg(root.join("tests/agents/install.sh"))
        .arg(PLAYWRIGHT)
        .arg(&dir)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    match out.status.code() {
        Some(0) => Ok(dir.join("node_modules")),
        Some(75) => Err(why),
        _ => panic!("installing {PLAYWRIGHT} failed:\n{why}"),
    }
}

#[tokio::test]
async fn the_page_in_headless_chromium_shows_what_the_json_has_and_nothing_else() {
    if real_clients_skipped("the page in Chromium") {
        return;
    }
    let ready = tokio::task::spawn_blocking(|| chromium().and_then(|()| playwright()))
        .await
        .unwrap();
    let modules = match ready {
        Ok(modules) => modules,
        Err(why) => {
            eprintln!("SKIPPED the page in Chromium: {why}");
            return;
        }
    };
    let (_up, proxy) = bounded(busy()).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let screens = root.join("target/ui-screens");
    let mut node = tokio::process::Command::new("node");
    node.arg(root.join("tests/ui/page.mjs"))
        .env("KP_PLAYWRIGHT", &modules)
        .env("KP_URL", &proxy.url)
        .env("KP_ADMIN", ADMIN)
        .env("KP_CLIENT", ALICE)
        .env("KP_CLIENT_NAME", "alice")
        .env("KP_OTHER_NAME", "bob")
        .env("KP_RESTING_FP", FP_B)
        .env("KP_SECRETS", secrets().join(","))
        .env("KP_SCREENS", &screens)
        .kill_on_drop(true);
    let out = tokio::time::timeout(BROWSER_LIMIT, node.output())
        .await
        .expect("the browser run exceeded its time limit")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "page checks failed:\n{stdout}\n{stderr}"
    );
    for shot in ["admin.png", "client.png"] {
        let len = std::fs::metadata(screens.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
    assert_no_key(&stdout);
    assert_no_key(&stderr);
}
