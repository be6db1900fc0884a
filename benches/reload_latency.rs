//! Reload latency: from the rename of a new keys file over the old one to the first response
//! whose request carried the new key, over 50 rotations, with the default settings (folder
//! watch, 2 s poll behind it). Run with `cargo bench --bench reload_latency`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const ROTATIONS: usize = 50;

fn key(i: usize) -> String {
    format!("sk-or-v1-bench-{}-{i:08}", "k".repeat(24))
}

/// The filesystem type of the mount holding `path`, from /proc/mounts (longest matching prefix).
fn filesystem_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{fs} mounted at {mount}")))
        })
        .max()
        .map(|(_, s)| s)
        .unwrap_or_else(|| "unknown filesystem".into())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let up = Mock::start(echo_authorization()).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", &key(0)))],
        )
        .await;
        let client = client();
        let url = format!("{}/v1/models", proxy.url);
        let mut latencies = Vec::with_capacity(ROTATIONS);
        let mut requests = 0usize;
        for i in 1..=ROTATIONS {
            let want = format!("Bearer {}", key(i));
            let started = Instant::now();
            rename_over(&proxy.path("keys.toml"), &keys_toml("p", &key(i)));
            loop {
                let resp = client.request(request("GET", &url, &[], "")).await.unwrap();
                requests += 1;
                if resp.headers()["x-seen-authorization"] == want.as_str() {
                    latencies.push(started.elapsed());
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "rotation {i} never landed"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies.sort_unstable();
        let median = latencies[ROTATIONS / 2];
        let p90 = latencies[ROTATIONS * 9 / 10];
        let worst = latencies[ROTATIONS - 1];
        let best = latencies[0];
        let triggers = proxy.running.state.log();
        println!(
            "reload latency, rename -> first response carrying the new key ({ROTATIONS} rotations)"
        );
        println!(
            "  watch path: inotify through notify 8, on {}; a 2 s poll behind it",
            filesystem_of(proxy.dir.path())
        );
        println!(
            "  best {:>8.2} ms   median {:>8.2} ms   p90 {:>8.2} ms   worst {:>8.2} ms",
            best.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3
        );
        println!(
            "  {requests} requests sent while waiting; last reload trigger: {}",
            triggers.last_trigger
        );
    });
}
