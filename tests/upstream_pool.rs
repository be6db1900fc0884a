//! keyproxy's own pool of HTTP/1.1 upstream connections (src/proxy/h1.rs), attacked: reuse
//! across sequential and concurrent requests, upstreams that hang up on kept-alive connections,
//! clients that hang up mid-answer, an upstream that answers before the upload ends, and what
//! the upstream is sent (Host, origin-form target, the route's path).

#[path = "upstream_pool/raw.rs"]
mod raw;
mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use raw::{RawUpstream, Style};
use support::*;

const WORKERS: usize = 2;

async fn proxy_to(upstream: &str, workers: usize) -> Proxy {
    let config = format!("workers = {workers}\n{}", simple_config(upstream, "p"));
    Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await
}

/// One request on a new client connection, so successive requests land on any worker.
async fn get_fresh(url: &str) -> StatusCode {
    get(url, &[]).await.status
}

#[tokio::test]
async fn sequential_requests_reuse_a_few_upstream_connections() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = proxy_to(&up.url, WORKERS).await;
        for i in 0..50 {
            let status = get_fresh(&format!("{}/v1/models?n={i}", proxy.url)).await;
            assert_eq!(status, 200, "request {i}");
        }
        assert_eq!(up.count(), 50);
        // One connection per worker, maybe one more for an answer whose connection was not
        // yet free again when the next request came.
        assert!(
            up.connections() <= WORKERS + 1,
            "50 sequential requests opened {} upstream connections",
            up.connections()
        );
    })
    .await;
}

#[tokio::test]
async fn an_upstream_closing_after_each_answer_never_costs_a_502() {
    bounded(async {
        let up = RawUpstream::start(Style::CloseAfterAnswer).await;
        let proxy = proxy_to(&up.url, WORKERS).await;
        let client = client();
        for i in 0..100 {
            let reply = send(
                &client,
                request("GET", &format!("{}/x/{i}", proxy.url), &[], ""),
            )
            .await;
            assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        }
        assert_eq!(up.seen().len(), 100);
        assert_eq!(up.accepted(), 100, "a closed connection was used again");
    })
    .await;
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_never_costs_a_502() {
    bounded(async {
        let mut up = RawUpstream::start(Style::KeepAlive).await;
        let proxy = proxy_to(&up.url, WORKERS).await;
        let client = client();
        let mut closes = 0;
        for i in 0..100 {
            let body = format!("{{\"n\":{i}}}");
            let req = request("POST", &format!("{}/x", proxy.url), &[], body);
            let reply = send(&client, req).await;
            assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
            if i % 10 == 9 {
                // The upstream's idle timeout fires between two requests: the next one must go
                // on a new connection, not on the one just closed.
                up.close_idle_connections().await;
                closes += 1;
            }
        }
        assert_eq!(up.seen().len(), 100);
        assert!(
            up.accepted() <= closes + 2,
            "{} connections for {closes} idle closes: kept-alive connections were not reused",
            up.accepted()
        );
    })
    .await;
}

/// An upstream that streams events on `/events` (fed by the test) and answers `{}` elsewhere.
fn events_or_ok() -> (tokio::sync::mpsc::Sender<Bytes>, Handler) {
    let (tx, stream) = one_event_stream(16);
    let handler: Handler = Arc::new(move |r| {
        if r.uri.path().ends_with("/events") {
            stream(r)
        } else {
            reply(200, "{}")
        }
    });
    (tx, handler)
}

#[tokio::test]
async fn a_connection_cut_mid_answer_is_closed_and_never_reused() {
    bounded(async {
        let (events, handler) = events_or_ok();
        let up = Mock::start(handler).await;
        // One worker: the answer cut short would be on the connection the next request takes.
        let proxy = proxy_to(&up.url, 1).await;
        assert_eq!(get_fresh(&format!("{}/warm", proxy.url)).await, 200);
        assert_eq!(up.connections(), 1);

        let hurried = client();
        let resp = hurried
            .request(request(
                "POST",
                &format!("{}/v1/events", proxy.url),
                &[],
                "{}",
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        events
            .send(Bytes::from_static(b"data: one\n\n"))
            .await
            .unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().unwrap().as_ref(), b"data: one\n\n");
        drop(body);
        drop(hurried);
        // keyproxy closes the upstream connection it cannot finish reading: the upstream's
        // stream loses its reader.
        events.closed().await;

        for i in 0..5 {
            assert_eq!(get_fresh(&format!("{}/after/{i}", proxy.url)).await, 200);
        }
        assert_eq!(
            up.connections(),
            2,
            "the cut connection was used again, or the new one was not kept"
        );
    })
    .await;
}

#[tokio::test]
async fn two_hundred_at_once_then_sequential_requests_reuse_their_connections() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let proxy = proxy_to(&up.url, WORKERS).await;
        let burst: Vec<_> = (0..200)
            .map(|i| tokio::spawn(get_fresh_owned(format!("{}/burst/{i}", proxy.url))))
            .collect();
        for (i, one) in burst.into_iter().enumerate() {
            assert_eq!(one.await.unwrap(), 200, "request {i} of the burst");
        }
        let after_burst = up.connections();
        assert!(after_burst <= 200, "{after_burst} connections for 200 requests");
        for i in 0..50 {
            assert_eq!(get_fresh(&format!("{}/then/{i}", proxy.url)).await, 200);
        }
        let new = up.connections() - after_burst;
        assert!(
            new <= WORKERS,
            "50 sequential requests after the burst opened {new} new connections beside {after_burst} idle ones"
        );
        assert_eq!(up.count(), 250);
    })
    .await;
}

async fn get_fresh_owned(url: String) -> StatusCode {
    get_fresh(&url).await
}

#[tokio::test]
async fn the_upstream_gets_its_host_and_an_origin_form_target() {
    bounded(async {
        let up = RawUpstream::start(Style::KeepAlive).await;
        let config = format!(
            "workers = 1\nkeys_files = [\"keys.toml\"]\n\n[[routes]]\nprefix = \"/based\"\nupstream = \"{0}/api/v2\"\nprofile = \"p\"\nstrip_prefix = true\n\n[[routes]]\nprefix = \"/\"\nupstream = \"{0}\"\nprofile = \"p\"\n",
            up.url
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        let host = format!("127.0.0.1:{}", up.port);
        let plain = send(&client(), request("GET", &format!("{}/v1/models?a=1&b=two", proxy.url), &[], "")).await;
        assert_eq!(plain.status, 200);
        // Over HTTP/2 from the client the request has an authority and no Host header.
        let h2 = send(&h2c_client(), request("GET", &format!("{}/based/chat?stream=true", proxy.url), &[], "")).await;
        assert_eq!(h2.status, 200);
        let seen = up.seen();
        assert_eq!(seen[0].line, "GET /v1/models?a=1&b=two HTTP/1.1");
        assert_eq!(seen[0].host.as_deref(), Some(host.as_str()));
        assert_eq!(seen[1].line, "GET /api/v2/chat?stream=true HTTP/1.1");
        assert_eq!(seen[1].host.as_deref(), Some(host.as_str()));
    })
    .await;
}

/// 4 MiB, past `retry_body_limit`, so it streams to the upstream while the answer comes back.
/// A large upload the upstream answers early, then five small requests: every one answered 200.
async fn upload_then_five_more(url: &str) {
    let early = send(&client(), request("POST", url, &[], large_body())).await;
    assert_eq!(early.status, 200, "{}", early.text());
    for i in 0..5 {
        let reply = send(
            &client(),
            request("POST", url, &[], format!("{{\"n\":{i}}}")),
        )
        .await;
        assert_eq!(
            reply.status,
            200,
            "request {i} after the early answer: {}",
            reply.text()
        );
    }
}

fn large_body() -> Bytes {
    Bytes::from(vec![b'a'; 4 << 20])
}

#[tokio::test]
async fn an_answer_before_the_upload_ends_leaves_the_connection_usable() {
    bounded(async {
        let up = RawUpstream::start(Style::AnswerEarly).await;
        let proxy = proxy_to(&up.url, 1).await;
        let url = format!("{}/upload", proxy.url);
        upload_then_five_more(&url).await;
        up.wait_for_requests(6).await;
        let seen = up.seen();
        assert_eq!(seen.len(), 6);
        assert!(
            seen.iter().any(|s| s.body == 4 << 20),
            "the upload was cut short: {seen:?}"
        );
        // The connection that carried it, free again once the upload ended, breaks nothing.
        let reply = send(&client(), request("POST", &url, &[], "{}")).await;
        assert_eq!(reply.status, 200);
    })
    .await;
}

#[tokio::test]
async fn an_upstream_answering_without_reading_the_upload_leaves_keyproxy_serving() {
    bounded(async {
        // hyper's server answers without the body and closes the connection it was not read on.
        let up = Mock::start(ok_handler()).await;
        let proxy = proxy_to(&up.url, 1).await;
        let url = format!("{}/upload", proxy.url);
        upload_then_five_more(&url).await;
    })
    .await;
}

#[tokio::test]
async fn after_a_burst_the_connection_used_last_is_taken_first() {
    bounded(async {
        let up = RawUpstream::start(Style::KeepAlive).await;
        let proxy = proxy_to(&up.url, 1).await;
        let burst: Vec<_> = (0..20)
            .map(|i| tokio::spawn(get_fresh_owned(format!("{}/burst/{i}", proxy.url))))
            .collect();
        for one in burst {
            assert_eq!(one.await.unwrap(), 200);
        }
        for i in 0..30 {
            assert_eq!(get_fresh(&format!("{}/then/{i}", proxy.url)).await, 200);
        }
        // Taking the connection idle longest (first in, first out) would spread a trickle over
        // every connection of the burst, each kept just alive and always the one an upstream's
        // idle timeout (uvicorn's 5 s) is about to close as the request goes out: a 502 for a
        // POST that cannot be sent again. Last in, first out, the others are left to expire.
        let seen = up.seen();
        let trickle: std::collections::BTreeSet<usize> =
            seen[seen.len() - 29..].iter().map(|s| s.conn).collect();
        assert_eq!(
            trickle.len(),
            1,
            "30 sequential requests after a burst of 20 went on connections {trickle:?} of {}",
            up.accepted()
        );
    })
    .await;
}

#[tokio::test]
async fn answers_ended_by_a_hang_up_are_whole_and_their_connections_never_reused() {
    bounded(async {
        // No length and no chunking: the answer ends when the upstream closes.
        let url = raw_upstream(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"whole\":true}",
            Then::Close,
        )
        .await;
        let proxy = proxy_to(&url, 1).await;
        let client = client();
        for i in 0..20 {
            let reply = send(
                &client,
                request("GET", &format!("{}/x/{i}", proxy.url), &[], ""),
            )
            .await;
            assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
            assert_eq!(reply.text(), r#"{"whole":true}"#, "request {i}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_tls_upstream_speaking_http1_only_reuses_its_connections() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let options = TlsOptions {
            alpn: vec![b"http/1.1".to_vec()],
            max_streams: None,
        };
        let up = Mock::start_tls_with(ok_handler(), &ca, options).await;
        let config = format!(
            "workers = 1\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"p\"\nca_file = \"{}\"\n",
            up.url,
            ca.display()
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        for i in 0..30 {
            assert_eq!(get_fresh(&format!("{}/v1/models?n={i}", proxy.url)).await, 200);
        }
        assert!(up.received().iter().all(|r| r.version == http::Version::HTTP_11));
        // The first connection only learns, by ALPN, that the upstream speaks HTTP/1.1.
        assert!(
            up.connections() <= 3,
            "30 sequential requests opened {} TLS connections",
            up.connections()
        );
    })
    .await;
}

#[tokio::test]
async fn a_client_gone_before_the_answer_closes_its_upstream_connection() {
    bounded(async {
        use tokio::io::AsyncWriteExt;
        let up = RawUpstream::start(Style::HoldFirst).await;
        let proxy = proxy_to(&up.url, 1).await;
        let mut gone = tokio::net::TcpStream::connect(proxy.url.trim_start_matches("http://"))
            .await
            .unwrap();
        gone.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: keyproxy\r\ncontent-length: 2\r\n\r\n{}",
        )
        .await
        .unwrap();
        // The upstream has the request and is still thinking when the client goes.
        up.wait_for_held().await;
        drop(gone);
        // The upstream learns the answer is not wanted, and stops generating it.
        up.wait_for_hang_up().await;
        for i in 0..5 {
            assert_eq!(get_fresh(&format!("{}/after/{i}", proxy.url)).await, 200);
        }
        assert_eq!(up.accepted(), 2, "the abandoned connection was used again");
    })
    .await;
}
