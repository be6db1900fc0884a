//! Keys rotate without a restart: in-place edits, renames over the file, Kubernetes secret
//! volume swaps, folders replaced under a watch, and filesystems that send no events. A bad edit
//! keeps the last good keys; nothing in flight is dropped.
//!
//! Unless a test is about polling, polling is set to an hour, so only the file watch can make
//! the test pass.

mod support;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either};
use support::*;
use tokio::sync::mpsc;

fn watched_only(upstream: &str, profile: &str) -> String {
    format!(
        "poll_interval = \"1h\"\n{}",
        simple_config(upstream, profile)
    )
}

/// A config whose keys file is `keys_file` (relative to the config's folder).
fn config_for_keys(upstream: &str, keys_file: &str, poll: &str) -> String {
    format!(
        "poll_interval = \"{poll}\"\nkeys_files = [\"{keys_file}\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"p\"\n"
    )
}

async fn authorization_sent(proxy: &Proxy, up: &Mock) -> String {
    let before = up.count();
    let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let received = up.received();
    assert_eq!(received.len(), before + 1);
    received[before].headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_in_place_edit_is_picked_up() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &watched_only(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        assert_eq!(
            authorization_sent(&proxy, &up).await,
            format!("Bearer {KEY_A}")
        );
        // Truncate and write, as `echo > file` and many editors do.
        std::fs::write(proxy.path("keys.toml"), keys_toml("p", KEY_B)).unwrap();
        proxy.wait_for_key("p", FP_B).await;
        assert_eq!(proxy.status().last_trigger, "file change");
        assert_eq!(
            authorization_sent(&proxy, &up).await,
            format!("Bearer {KEY_B}")
        );
    })
    .await;
}

#[tokio::test]
async fn a_rename_over_the_file_is_picked_up() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &watched_only(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        rename_over(&proxy.path("keys.toml"), &keys_toml("p", KEY_B));
        proxy.wait_for_key("p", FP_B).await;
        assert_eq!(
            authorization_sent(&proxy, &up).await,
            format!("Bearer {KEY_B}")
        );
    })
    .await;
}

#[tokio::test]
async fn a_kubernetes_secret_volume_swap_is_picked_up() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        kubernetes_secret_volume(&secret, "..2026_11_24_08_00_00.1", &keys_toml("p", KEY_A));
        let config = config_for_keys(
            &up.url,
            &secret.join("keys.toml").display().to_string(),
            "1h",
        );
        let proxy = Proxy::start(&config, &[]).await;
        assert_eq!(
            authorization_sent(&proxy, &up).await,
            format!("Bearer {KEY_A}")
        );

        kubernetes_secret_volume(&secret, "..2026_11_24_08_05_00.2", &keys_toml("p", KEY_B));
        proxy.wait_for_key("p", FP_B).await;
        assert_eq!(proxy.status().last_trigger, "file change");
        assert_eq!(
            authorization_sent(&proxy, &up).await,
            format!("Bearer {KEY_B}")
        );
        assert!(proxy.status().last_error.is_none());
    })
    .await;
}

#[tokio::test]
async fn a_watched_folder_moved_away_and_replaced_is_watched_again() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        std::fs::create_dir(&keys_dir).unwrap();
        write_private(&keys_dir.join("keys.toml"), &keys_toml("p", KEY_A));
        let config = config_for_keys(
            &up.url,
            &keys_dir.join("keys.toml").display().to_string(),
            "1h",
        );
        let proxy = Proxy::start(&config, &[]).await;

        // The old watch follows the moved folder and would never report the new one.
        std::fs::rename(&keys_dir, dir.path().join("keys.old")).unwrap();
        std::fs::create_dir(&keys_dir).unwrap();
        write_private(&keys_dir.join("keys.toml"), &keys_toml("p", KEY_B));
        proxy.wait_for_key("p", FP_B).await;

        // Only a watch on the new folder can see this edit.
        std::fs::write(keys_dir.join("keys.toml"), keys_toml("p", KEY_A)).unwrap();
        proxy.wait_for_key("p", FP_A).await;
        assert_eq!(proxy.status().last_trigger, "file change");
    })
    .await;
}

#[tokio::test]
async fn a_secret_folder_mounted_late_is_picked_up() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let dir = tempfile::tempdir().unwrap();
        let late = dir.path().join("run/secrets");
        let config = config_for_keys(&up.url, &late.join("keys.toml").display().to_string(), "1h");
        let proxy = Proxy::start(&config, &[]).await;
        let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 401);

        std::fs::create_dir_all(&late).unwrap();
        rename_over(&late.join("keys.toml"), &keys_toml("p", KEY_A));
        proxy.wait_for_key("p", FP_A).await;
        assert_eq!(
            authorization_sent(&proxy, &up).await,
            format!("Bearer {KEY_A}")
        );
    })
    .await;
}

#[tokio::test]
async fn polling_finds_changes_that_no_event_reports() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        // The keys file is a symlink into a folder keyproxy does not watch, like a bind mount
        // whose changes inotify never reports.
        let elsewhere = tempfile::tempdir().unwrap();
        let real = elsewhere.path().join("real.toml");
        write_private(&real, &keys_toml("p", KEY_A));
        let links = tempfile::tempdir().unwrap();
        let link = links.path().join("keys.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let config = config_for_keys(&up.url, &link.display().to_string(), "100ms");
        let proxy = Proxy::start(&config, &[]).await;
        assert_eq!(proxy.keys_of("p"), [FP_A]);

        std::fs::write(&real, keys_toml("p", KEY_B)).unwrap();
        proxy.wait_for_key("p", FP_B).await;
        assert_eq!(proxy.status().last_trigger, "poll");
    })
    .await;
}

#[tokio::test]
async fn a_bad_edit_keeps_the_last_good_keys_until_a_good_one() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &watched_only(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let keys_path = proxy.path("keys.toml").display().to_string();

        std::fs::write(
            proxy.path("keys.toml"),
            format!("[profiles.p]\nkye = \"{KEY_B}\"\n"),
        )
        .unwrap();
        proxy
            .wait_until(|_| proxy.status().last_error.is_some())
            .await;
        let (_, message) = proxy.status().last_error.unwrap();
        assert!(message.contains(&format!("{keys_path}:2:1")), "{message}");
        assert!(message.contains("unknown field `kye`"), "{message}");
        assert_no_key(&message);
        assert_eq!(
            authorization_sent(&proxy, &up).await,
            format!("Bearer {KEY_A}")
        );
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[])
            .await
            .json();
        assert!(status["reload"]["last_error"]["at"].is_string());
        assert_eq!(status["sources"][0]["ok"], false);

        std::fs::write(proxy.path("keys.toml"), keys_toml("p", KEY_B)).unwrap();
        proxy.wait_for_key("p", FP_B).await;
        assert!(proxy.status().last_error.is_none());
        let status = get(&format!("{}/_keyproxy/status", proxy.url), &[])
            .await
            .json();
        assert!(status["reload"]["last_error"].is_null());
    })
    .await;
}

#[tokio::test]
async fn route_changes_in_the_config_apply_on_reload() {
    bounded(async {
        let first = Mock::start(ok_handler()).await;
        let second = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &watched_only(&first.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        rename_over(
            &proxy.path("keyproxy.toml"),
            &watched_only(&second.url, "p"),
        );
        proxy
            .wait_until(|s| s.config.routes[0].upstream.to_string() == second.url)
            .await;
        let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!((first.count(), second.count()), (0, 1));

        // A broken config is kept out like a broken keys file.
        std::fs::write(proxy.path("keyproxy.toml"), "listen = 5\n").unwrap();
        proxy
            .wait_until(|_| proxy.status().last_error.is_some())
            .await;
        let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(second.count(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_request_in_flight_finishes_with_the_key_it_started_with() {
    bounded(async {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let slot = Arc::new(Mutex::new(Some(rx)));
        let handler: Handler = Arc::new(move |r| match slot.lock().unwrap().take() {
            Some(rx) if r.uri.path() == "/stream" => {
                http::Response::new(Either::Right(ChannelBody(rx)))
            }
            _ => reply(200, "{}"),
        });
        let up = Mock::start(handler).await;
        let proxy = Proxy::start(
            &watched_only(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let resp = client()
            .request(request("GET", &format!("{}/stream", proxy.url), &[], ""))
            .await
            .unwrap();
        tx.send(Bytes::from_static(b"data: 1\n\n")).await.unwrap();
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();

        rename_over(&proxy.path("keys.toml"), &keys_toml("p", KEY_B));
        proxy.wait_for_key("p", FP_B).await;
        assert_eq!(
            authorization_sent(&proxy, &up).await,
            format!("Bearer {KEY_B}")
        );

        // The stream that began before the swap carries on to its end.
        tx.send(Bytes::from_static(b"data: 2\n\n")).await.unwrap();
        drop(tx);
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest.as_ref(), b"data: 2\n\n");
        assert_eq!(
            up.received()[0].headers["authorization"],
            format!("Bearer {KEY_A}")
        );
    })
    .await;
}

fn rotation_key(i: usize) -> String {
    format!("sk-or-v1-rotation-{}-{i:08}", "r".repeat(24))
}

/// The rotation index of the key in `value` (a header value or a fingerprint).
fn rotation_index(value: &str) -> usize {
    value[value.len() - 8..].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_request() {
    const CLIENTS: usize = 8;
    const ROTATIONS: usize = 24;
    bounded(async {
        let up = Mock::start(echo_authorization()).await;
        let proxy = Arc::new(
            Proxy::start(
                &simple_config(&up.url, "p"),
                &[("keys.toml", &keys_toml("p", &rotation_key(0)))],
            )
            .await,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (proxy, stop, failures) = (proxy.clone(), stop.clone(), failures.clone());
            clients.push(tokio::spawn(async move {
                let client = client();
                let url = format!("{}/api/v1/chat/completions", proxy.url);
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let before = rotation_index(&proxy.keys_of("p")[0]);
                    let req = request("POST", &url, &[("content-type", "application/json")], "{}");
                    match client.request(req).await {
                        Ok(resp) if resp.status() == 200 => {
                            let sent = resp.headers()["x-seen-authorization"].to_str().unwrap().to_owned();
                            let _ = resp.into_body().collect().await;
                            let after = rotation_index(&proxy.keys_of("p")[0]);
                            seen.push((before, rotation_index(&sent), after));
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                seen
            }));
        }
        for i in 1..=ROTATIONS {
            tokio::time::sleep(Duration::from_millis(150)).await; // pacing, not synchronisation
            rename_over(&proxy.path("keys.toml"), &keys_toml("p", &rotation_key(i)));
        }
        let last = rotation_key(ROTATIONS);
        proxy.wait_for_key("p", &keyproxy::keys::fingerprint(&last)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for c in clients {
            all.extend(c.await.unwrap());
        }
        assert_eq!(failures.load(Ordering::Relaxed), 0, "no request may fail");
        assert!(all.len() > 100, "only {} requests ran", all.len());
        for &(before, sent, after) in &all {
            assert!(
                before <= sent && sent <= after,
                "key {sent} was not valid during a request that began at {before} and ended at {after}"
            );
        }
        let mut distinct: Vec<usize> = all.iter().map(|r| r.1).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(
            distinct.len() > ROTATIONS / 2,
            "requests saw only keys {distinct:?}: the rotations did not overlap the load"
        );
        assert!(proxy.status().last_error.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_truncates_then_pauses_drops_no_key() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &format!("poll_interval = \"1h\"\n{}", simple_config(&up.url, "p")),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let path = proxy.path("keys.toml");
        // An in-place writer: truncate, think for 40 ms, write the new key.
        let writer = std::thread::spawn(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(40));
            use std::io::Write;
            (&file).write_all(keys_toml("p", KEY_B).as_bytes()).unwrap();
        });
        let url = format!("{}/v1/models", proxy.url);
        let mut statuses = Vec::new();
        while proxy.keys_of("p") != [FP_B] {
            statuses.push(get(&url, &[]).await.status.as_u16());
            assert!(statuses.len() < 100_000, "the new key never arrived");
        }
        writer.join().unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "{} of {} requests got no key while the file was being written",
            statuses.iter().filter(|s| **s != 200).count(),
            statuses.len()
        );
    })
    .await;
}
