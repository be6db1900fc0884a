//! What an operator relies on: metrics after known traffic, JSON access logs without keys,
//! graceful shutdown with a stream in flight, timeouts and limits on slow or silent peers, and
//! `keyproxy health` for container health checks.

mod support;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

fn api_config(upstream: &str, extra: &str) -> String {
    format!(
        "{extra}\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/api\"\nupstream = \"{upstream}\"\nprofile = \"p\"\n"
    )
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    bounded(async {
        let up = Mock::start(Arc::new(|r: &Received| {
            if r.uri.path() == "/api/fail" {
                reply(500, "{\"error\":\"boom\"}")
            } else {
                reply(200, "{\"ok\":true}")
            }
        }))
        .await;
        let proxy = Proxy::start(
            &api_config(&up.url, ""),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        for _ in 0..3 {
            let r = send(
                &client(),
                request(
                    "POST",
                    &format!("{}/api/chat", proxy.url),
                    &[],
                    "0123456789",
                ),
            )
            .await;
            assert_eq!(r.status, 200);
        }
        assert_eq!(
            get(&format!("{}/api/fail", proxy.url), &[]).await.status,
            500
        );
        assert_eq!(
            get(&format!("{}/elsewhere", proxy.url), &[]).await.status,
            404
        );
        assert_eq!(
            get(
                &format!("{}/api/x", proxy.url),
                &[("x-keyproxy-profile", "p:none")]
            )
            .await
            .status,
            401
        );
        proxy.running.reload("test").await;

        let url = format!("{}/_keyproxy/metrics", proxy.url);
        // Byte counts are added when hyper drops a body, just after the client has it all.
        let mut text = String::new();
        for _ in 0..1000 {
            let reply = get(&url, &[]).await;
            assert_eq!(reply.status, 200);
            assert!(reply.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text"));
            text = reply.text();
            if metric(&text, "keyproxy_response_bytes_total") == Some(3.0 * 11.0 + 16.0) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_no_key(&text);
        let expect = [
            (
                "keyproxy_requests_total{route=\"/api\",profile=\"p\",client=\"\",status=\"2xx\"}",
                3.0,
            ),
            (
                "keyproxy_requests_total{route=\"/api\",profile=\"p\",client=\"\",status=\"5xx\"}",
                1.0,
            ),
            ("keyproxy_local_responses_total{reason=\"no-route\"}", 1.0),
            (
                "keyproxy_local_responses_total{reason=\"missing-key\"}",
                1.0,
            ),
            (
                "keyproxy_upstream_latency_seconds_count{route=\"/api\"}",
                4.0,
            ),
            ("keyproxy_request_bytes_total", 30.0),
            ("keyproxy_response_bytes_total", 49.0),
            ("keyproxy_reloads_total", 1.0),
            ("keyproxy_reload_failures_total", 0.0),
            ("keyproxy_keys{profile=\"p\",state=\"active\"}", 1.0),
            ("keyproxy_keys{profile=\"p\",state=\"resting\"}", 0.0),
        ];
        for (series, value) in expect {
            assert_eq!(metric(&text, series), Some(value), "{series} in\n{text}");
        }
        assert!(
            text.contains("keyproxy_upstream_latency_seconds_bucket{le=\"0.001\",route=\"/api\"}")
                || text.contains(
                    "keyproxy_upstream_latency_seconds_bucket{route=\"/api\",le=\"0.001\"}"
                ),
            "{text}"
        );
        // The histogram as Prometheus reads it: cumulative once, non-decreasing, +Inf last and
        // equal to the count.
        let buckets: Vec<(String, f64)> = text
            .lines()
            .filter(|l| l.starts_with("keyproxy_upstream_latency_seconds_bucket{"))
            .map(|l| {
                let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                (
                    le.to_owned(),
                    l.rsplit(' ').next().unwrap().parse().unwrap(),
                )
            })
            .collect();
        assert_eq!(buckets.len(), 15, "14 bounds and +Inf: {buckets:?}");
        assert_eq!(
            buckets.last().unwrap(),
            &("+Inf".to_owned(), 4.0),
            "{buckets:?}"
        );
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_logs_parse_and_hold_no_key_even_at_trace_level() {
    bounded(async {
        // A TLS upstream speaking HTTP/2, so rustls, h2 and hyper all log at trace level.
        let bin = Bin::new();
        let dir = bin.home.path().join("etc");
        std::fs::create_dir_all(&dir).unwrap();
        let up = Mock::start_tls(ok_handler(), &dir.join("ca.pem")).await;
        write_private(&dir.join("keys.toml"), &keys_toml("p", KEY_A));
        let config = api_config(&up.url, "") + "ca_file = \"ca.pem\"\n";
        std::fs::write(dir.join("keyproxy.toml"), config).unwrap();
        let mut cmd = bin.command();
        cmd.env("RUST_LOG", "trace")
            .arg("--config")
            .arg(dir.join("keyproxy.toml"));
        let mut served = Served::start(cmd).await;

        let reply = get(
            &format!("{}/api/v1/models", served.url),
            &[("authorization", &format!("Bearer {KEY_B}"))],
        )
        .await;
        assert_eq!(reply.status, 200);
        let line = served.wait_for_log("\"proxied\"").await;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let f = &v["fields"];
        assert_eq!(v["target"], "keyproxy::access");
        assert_eq!(
            (
                f["route"].as_str(),
                f["profile"].as_str(),
                f["status"].as_u64()
            ),
            (Some("/api"), Some("p"), Some(200))
        );
        assert_eq!(f["bytes"], 11);
        assert_eq!(f["outcome"], "complete");
        assert!(
            f["upstream_ms"].is_string() || f["upstream_ms"].is_number(),
            "{line}"
        );

        assert_eq!(up.received()[0].version, http::Version::HTTP_2);
        let (code, _, log) = served.stop().await;
        assert_eq!(code, Some(0));
        assert!(
            log.iter().any(|l| l.contains("\"target\":\"h2")),
            "h2 traced nothing"
        );
        assert!(
            log.iter().any(|l| l.contains("\"target\":\"rustls")),
            "rustls traced nothing"
        );
        for line in &log {
            assert_no_key(line);
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_in_flight_finish_then_exits_0() {
    bounded(async {
        let (tx, handler) = one_event_stream(4);
        let up = Mock::start(handler).await;
        let bin = Bin::new();
        let dir = bin.home.path().join("etc");
        std::fs::create_dir_all(&dir).unwrap();
        write_private(&dir.join("keys.toml"), &keys_toml("p", KEY_A));
        std::fs::write(
            dir.join("keyproxy.toml"),
            api_config(&up.url, "shutdown_grace = \"20s\""),
        )
        .unwrap();
        let mut cmd = bin.command();
        cmd.arg("--config").arg(dir.join("keyproxy.toml"));
        let mut served = Served::start(cmd).await;
        let addr = served.url.trim_start_matches("http://").to_owned();

        let resp = client()
            .request(request(
                "POST",
                &format!("{}/api/v1/chat/completions", served.url),
                &[],
                "{}",
            ))
            .await
            .unwrap();
        tx.send(Bytes::from_static(b"data: 1\n\n")).await.unwrap();
        let mut body = resp.into_body();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "data: 1\n\n"
        );

        served.signal("TERM");
        served.wait_for_log("shutting down").await;
        assert!(
            tokio::net::TcpStream::connect(&addr).await.is_err(),
            "no new connections after SIGTERM"
        );

        tx.send(Bytes::from_static(b"data: 2\n\n")).await.unwrap();
        tx.send(Bytes::from_static(b"data: [DONE]\n\n"))
            .await
            .unwrap();
        drop(tx);
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "data: 2\n\ndata: [DONE]\n\n");
        let (code, _, log) = served.stop().await;
        assert_eq!(code, Some(0), "{}", log.join("\n"));
        assert!(
            log.iter().any(|l| l.contains("all connections finished")),
            "{}",
            log.join("\n")
        );
    })
    .await;
}

/// Reads until the server closes the connection; returns how long that took and what came.
async fn until_closed(stream: &mut tokio::net::TcpStream) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (started.elapsed(), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn silent_and_slow_clients_are_cut_at_the_header_read_timeout() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &api_config(&up.url, "header_read_timeout = \"300ms\""),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let addr = proxy.running.local_addr;

        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (took, _) = until_closed(&mut silent).await;
        assert!(took >= Duration::from_millis(250), "cut after {took:?}");

        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        slow.write_all(b"GET /api/x HTTP/1.1\r\nhost: a\r\n")
            .await
            .unwrap();
        let mut closed = false;
        for i in 0..30 {
            tokio::time::sleep(Duration::from_millis(50)).await; // a trickling client, not a wait
            if slow
                .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                closed = true;
                break;
            }
        }
        let (_, _) = until_closed(&mut slow).await;
        let took = started.elapsed();
        assert!(
            closed || took < Duration::from_millis(1400),
            "a trickling head was never cut"
        );
        assert!(took >= Duration::from_millis(250), "cut after {took:?}");
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_refused() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(
            &api_config(&up.url, ""),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let mut stream = tokio::net::TcpStream::connect(proxy.running.local_addr)
            .await
            .unwrap();
        let mut head = String::from("GET /api/x HTTP/1.1\r\nhost: a\r\n");
        for i in 0..150 {
            head += &format!("x-h-{i}: v\r\n");
        }
        head += "\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        let (_, got) = until_closed(&mut stream).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");

        // And a head larger than 64 KiB, in one header.
        let mut stream = tokio::net::TcpStream::connect(proxy.running.local_addr)
            .await
            .unwrap();
        let head = format!(
            "GET /api/x HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
            "b".repeat(70 * 1024)
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let (_, got) = until_closed(&mut stream).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
        assert_eq!(up.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_stream_that_goes_silent_is_closed_after_the_idle_timeout() {
    bounded(async {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let slot = Arc::new(Mutex::new(Some(rx)));
        let up = Mock::start(Arc::new(move |_| {
            let rx = slot.lock().unwrap().take().expect("one stream");
            http::Response::new(Either::Right(ChannelBody(rx)))
        }))
        .await;
        let proxy = Proxy::start(
            &api_config(&up.url, "idle_timeout = \"300ms\""),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;
        let resp = client()
            .request(request(
                "GET",
                &format!("{}/api/stream", proxy.url),
                &[],
                "",
            ))
            .await
            .unwrap();
        tx.send(Bytes::from_static(b"data: 1\n\n")).await.unwrap();
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        let silent_since = Instant::now();
        // The upstream keeps the stream open and says nothing more.
        let end = body.frame().await;
        assert!(
            !matches!(end, Some(Ok(_))),
            "the silent stream was not closed: {end:?}"
        );
        assert!(
            silent_since.elapsed() >= Duration::from_millis(250),
            "{:?}",
            silent_since.elapsed()
        );
        drop(tx);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_subcommand_exits_0_only_for_a_200() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = Proxy::start(&api_config(&up.url, ""), &[]).await;
        let bin = Bin::new();
        let health = |args: Vec<String>| {
            // The last case asks the config's own listen address, on purpose.
            let mut cmd = bin.command_with_config_listen();
            cmd.arg("health").args(args);
            async move { tokio::task::spawn_blocking(move || run(cmd)).await.unwrap() }
        };

        let out = health(vec![
            "--url".into(),
            format!("{}/_keyproxy/health", proxy.url),
        ])
        .await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(out.stdout.contains("200 OK"), "{}", out.stdout);

        // Ready is 503 while profile p has no key.
        let out = health(vec![
            "--url".into(),
            format!("{}/_keyproxy/ready", proxy.url),
        ])
        .await;
        assert_eq!(out.code, Some(1));
        assert!(out.stderr.contains("503"), "{}", out.stderr);

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let out = health(vec![
            "--url".into(),
            format!("http://{closed}/_keyproxy/health"),
            "--timeout".into(),
            "2s".into(),
        ])
        .await;
        assert_eq!(out.code, Some(1));
        assert!(out.stderr.contains(&closed.to_string()), "{}", out.stderr);

        // Without --url: the configured listen address, a wildcard reached on loopback.
        let config = bin.home.path().join("keyproxy.toml");
        let port = proxy.running.local_addr.port();
        std::fs::write(
            &config,
            format!("listen = \"0.0.0.0:{port}\"\n{}", api_config(&up.url, "")),
        )
        .unwrap();
        let out = health(vec!["--config".into(), config.display().to_string()]).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    })
    .await;
}

#[tokio::test]
async fn request_metrics_name_the_client_and_removed_routes_stop_being_exported() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let two_routes = format!(
            "keys_files = [\"keys.toml\"]\n\
             [[routes]]\nprefix = \"/a\"\nupstream = \"{0}\"\nprofile = \"p\"\n\
             [[routes]]\nprefix = \"/b\"\nupstream = \"{0}\"\nprofile = \"p\"\n\
             [[clients]]\nname = \"laptop\"\ntoken = \"kp-laptop-0123456789\"\nprofiles = [\"p\"]\n",
            up.url
        );
        let proxy = Proxy::start(&two_routes, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        let auth = ("authorization", "Bearer kp-laptop-0123456789");
        assert_eq!(get(&format!("{}/a/x", proxy.url), &[auth]).await.status, 200);
        assert_eq!(get(&format!("{}/b/x", proxy.url), &[auth]).await.status, 200);
        let metrics_url = format!("{}/_keyproxy/metrics", proxy.url);
        let text = get(&metrics_url, &[auth]).await.text();
        let series = |route: &str| {
            format!("keyproxy_requests_total{{route=\"{route}\",profile=\"p\",client=\"laptop\",status=\"2xx\"}}")
        };
        assert_eq!(metric(&text, &series("/a")), Some(1.0), "{text}");
        assert_eq!(metric(&text, &series("/b")), Some(1.0), "{text}");

        // Route /b goes away.
        let one_route = two_routes.replace(
            &format!("[[routes]]\nprefix = \"/b\"\nupstream = \"{}\"\nprofile = \"p\"\n", up.url),
            "",
        );
        std::fs::write(proxy.path("keyproxy.toml"), one_route).unwrap();
        proxy.running.reload("test").await;
        let text = get(&metrics_url, &[auth]).await.text();
        assert_eq!(metric(&text, &series("/a")), Some(1.0), "{text}");
        assert!(!text.contains("route=\"/b\""), "series of a removed route are still exported:\n{text}");
    })
    .await;
}
