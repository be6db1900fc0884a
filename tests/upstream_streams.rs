//! Capacity toward TLS upstreams: streams are not limited by what one HTTP/2 connection allows.
//! An upstream that allows 4 streams per connection still gets every one of 12 concurrent
//! streams at once, over as few connections as they need; an upstream that speaks only
//! HTTP/1.1 is reached too.

mod support;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use support::*;
use tokio::sync::mpsc;

const STREAMS: usize = 12;
const ALLOWED: u32 = 4;

/// Answers `/warm` at once, and every other request with an SSE stream whose first event leaves
/// at once and whose end waits until the test drops the sender kept in `open`.
fn held_streams(open: Arc<Mutex<Vec<mpsc::Sender<Bytes>>>>) -> Handler {
    Arc::new(move |r: &Received| {
        if r.uri.path() == "/warm" {
            return reply(200, "{}");
        }
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Bytes::from_static(b"data: first\n\n")).unwrap();
        open.lock().unwrap().push(tx);
        event_stream(rx)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_one_connections_limit_all_start_at_once() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let open = Arc::new(Mutex::new(Vec::new()));
        let options = TlsOptions {
            max_streams: Some(ALLOWED),
            ..TlsOptions::default()
        };
        let up = Mock::start_tls_with(held_streams(open.clone()), &ca, options).await;
        // One worker, so the count of connections is the streams' alone (each worker has its own).
        let config = format!(
            "keys_files = [\"keys.toml\"]\nworkers = 1\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"p\"\nca_file = \"{}\"\n",
            up.url,
            ca.display()
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        // One request first, so the connection has the server's SETTINGS (its limit of 4)
        // before the burst.
        assert_eq!(get(&format!("{}/warm", proxy.url), &[]).await.status, 200);

        let client = client();
        let mut bodies = Vec::new();
        let mut firsts = tokio::task::JoinSet::new();
        for i in 0..STREAMS {
            let req = request("POST", &format!("{}/v1/chat/{i}", proxy.url), &[], "{}");
            let resp = client.request(req);
            firsts.spawn(async move {
                let resp = resp.await.unwrap();
                assert_eq!(resp.status(), 200);
                let mut body = resp.into_body();
                let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
                (first, body)
            });
        }
        // Every stream's first event arrives while all of them are still open upstream.
        while let Some(done) = firsts.join_next().await {
            let (first, body) = done.unwrap();
            assert_eq!(&first[..], b"data: first\n\n");
            bodies.push(body);
        }
        assert_eq!(open.lock().unwrap().len(), STREAMS);
        assert_eq!(
            up.connections(),
            STREAMS / ALLOWED as usize,
            "as many connections as {STREAMS} streams need at {ALLOWED} per connection"
        );
        assert!(up
            .received()
            .iter()
            .all(|r| r.version == http::Version::HTTP_2));

        // The streams end when the upstream ends them, and their places are given back: a
        // second burst needs no new connection.
        open.lock().unwrap().clear();
        for body in bodies {
            let rest = body.collect().await.unwrap().to_bytes();
            assert!(rest.is_empty(), "{rest:?}");
        }
        let before = up.connections();
        let mut again = tokio::task::JoinSet::new();
        for i in 0..STREAMS {
            let req = request("POST", &format!("{}/v1/again/{i}", proxy.url), &[], "{}");
            let resp = client.request(req);
            again.spawn(async move {
                let mut body = resp.await.unwrap().into_body();
                body.frame().await.unwrap().unwrap();
                body
            });
        }
        let mut held = Vec::new();
        while let Some(done) = again.join_next().await {
            held.push(done.unwrap());
        }
        assert_eq!(up.connections(), before);
        open.lock().unwrap().clear();
    })
    .await;
}

#[tokio::test]
async fn a_tls_upstream_that_speaks_only_http1_is_reached_over_http1() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let options = TlsOptions {
            alpn: vec![b"http/1.1".to_vec()],
            ..TlsOptions::default()
        };
        let up = Mock::start_tls_with(echo_authorization(), &ca, options).await;
        let config = format!(
            "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"p\"\nca_file = \"{}\"\n",
            up.url,
            ca.display()
        );
        let proxy = Proxy::start(&config, &[("keys.toml", &keys_toml("p", KEY_A))]).await;
        for _ in 0..3 {
            let reply = get(&format!("{}/v1/models", proxy.url), &[]).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(
                reply.headers["x-seen-authorization"],
                format!("Bearer {KEY_A}").as_str()
            );
        }
        assert!(up
            .received()
            .iter()
            .all(|r| r.version == http::Version::HTTP_11));
    })
    .await;
}
