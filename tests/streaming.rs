//! Bodies stream both ways: an SSE event reaches the client as soon as the upstream sends it, and
//! large bodies pass through intact.

mod support;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Either};
use support::*;
use tokio::sync::mpsc;

/// An upstream answering one event stream, whose events the test sends, and a proxy in front.
async fn event_stream_through_proxy() -> (mpsc::Sender<Bytes>, Mock, Proxy) {
    let (events_tx, handler) = one_event_stream(32);
    let up = Mock::start(handler).await;
    let proxy = Proxy::start(
        &simple_config(&up.url, "p"),
        &[("keys.toml", &keys_toml("p", KEY_A))],
    )
    .await;
    (events_tx, up, proxy)
}

#[tokio::test]
async fn first_sse_event_reaches_the_client_before_the_upstream_sends_the_last() {
    bounded(async {
        let (events_tx, _up, proxy) = event_stream_through_proxy().await;

        events_tx
            .send(Bytes::from_static(b"data: {\"n\":1}\n\n"))
            .await
            .unwrap();
        let resp = client()
            .request(request(
                "POST",
                &format!("{}/api/v1/chat/completions", proxy.url),
                &[],
                "{}",
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-accel-buffering"], "no");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();

        // The upstream holds back every later event until the client has seen the first one.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.as_ref(), b"data: {\"n\":1}\n\n");
        events_tx
            .send(Bytes::from_static(b"data: {\"n\":2}\n\n"))
            .await
            .unwrap();
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second.as_ref(), b"data: {\"n\":2}\n\n");
        events_tx
            .send(Bytes::from_static(b"data: [DONE]\n\n"))
            .await
            .unwrap();
        drop(events_tx);
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest.as_ref(), b"data: [DONE]\n\n");
    })
    .await;
}

/// 20 events the upstream sends at once reach the client in a few chunks, not one write each
/// (see src/burst.rs), and intact.
#[tokio::test]
async fn events_sent_together_leave_together() {
    bounded(async {
        let (events_tx, _up, proxy) = event_stream_through_proxy().await;
        let events: Vec<String> = (0..20)
            .map(|i| format!("data: {{\"n\":{i}}}\n\n"))
            .collect();
        for e in &events {
            events_tx.send(Bytes::from(e.clone())).await.unwrap();
        }
        drop(events_tx);

        let resp = client()
            .request(request(
                "POST",
                &format!("{}/api/v1/chat/completions", proxy.url),
                &[],
                "{}",
            ))
            .await
            .unwrap();
        let mut body = resp.into_body();
        let (mut chunks, mut got) = (0, Vec::new());
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                chunks += 1;
                got.extend_from_slice(&data);
            }
        }
        assert_eq!(String::from_utf8(got).unwrap(), events.concat());
        assert!(
            chunks <= 10,
            "20 events sent together reached the client as {chunks} chunks"
        );
    })
    .await;
}

#[tokio::test]
async fn ten_megabyte_bodies_pass_intact_both_ways() {
    bounded(async {
        let big: Bytes = (0..10 * 1024 * 1024)
            .map(|i: u32| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let echo: Handler = Arc::new(|r: &Received| {
            http::Response::new(Either::Left(http_body_util::Full::new(r.body.clone())))
        });
        let up = Mock::start(echo).await;
        let proxy = Proxy::start(
            &simple_config(&up.url, "p"),
            &[("keys.toml", &keys_toml("p", KEY_A))],
        )
        .await;

        // Streamed in 64 KiB chunks with no content-length, so the proxy cannot rely on a size.
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let chunks = big.clone();
        tokio::spawn(async move {
            for c in chunks.chunks(64 * 1024) {
                if tx.send(Bytes::copy_from_slice(c)).await.is_err() {
                    return;
                }
            }
        });
        let req = http::Request::post(format!("{}/upload", proxy.url))
            .body(ChannelBody(rx))
            .unwrap();
        let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
        let resp = c.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let back = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(up.received()[0].body.len(), big.len());
        assert!(
            up.received()[0].body == big,
            "the upstream got a different body"
        );
        assert_eq!(back.len(), big.len());
        assert!(back == big, "the client got a different body");
    })
    .await;
}
