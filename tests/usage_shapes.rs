//! Every shape an answer reports usage in is counted, each split across chunks at awkward
//! places and passed on unchanged: the Responses API (JSON, and `response.completed` in a
//! stream), Gemini `usageMetadata` (JSON, and `streamGenerateContent?alt=sse`, the last event
//! winning), embeddings whose model follows the vectors.

mod support;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use support::*;

const TOKEN: &str = "kp-laptop-0123456789abcdef0123";

fn config(upstream: &str) -> String {
    format!(
        "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n[[clients]]\nname = \"laptop\"\ntoken = \"{TOKEN}\"\nprofiles = [\"openrouter:default\"]\n"
    )
}

/// `/_keyproxy/usage` for today's model `model`, once one answer is counted.
async fn counted(url: &str, model: &str) -> (u64, u64) {
    let auth = format!("Bearer {TOKEN}");
    loop {
        let v = get(
            &format!("{url}/_keyproxy/usage"),
            &[("authorization", &auth)],
        )
        .await
        .json();
        if v["today"]["total"]["requests"].as_u64() == Some(1) {
            let m = &v["today"]["by_model"][model];
            return (
                m["prompt_tokens"].as_u64().unwrap_or_else(|| panic!("{v}")),
                m["completion_tokens"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{v}")),
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn proxy_for(handler: Handler) -> (Mock, Proxy) {
    let up = Mock::start(handler).await;
    let keys = keys_toml("openrouter:default", KEY_A);
    let proxy = Proxy::start(&config(&up.url), &[("keys.toml", &keys)]).await;
    (up, proxy)
}

/// Streams `chunks` as an event stream on `path`, each reaching the client before the next is
/// sent (nothing held back, every byte unchanged), and returns the counts for `model`.
async fn streamed(path: &str, chunks: &[&str], model: &str) -> (u64, u64) {
    let (tx, handler) = one_event_stream(32);
    let (_up, proxy) = proxy_for(handler).await;
    let auth = format!("Bearer {TOKEN}");
    let req = request(
        "POST",
        &format!("{}{path}", proxy.url),
        &[("authorization", &auth)],
        "{\"stream\":true}",
    );
    let mut body = client().request(req).await.unwrap().into_body();
    let (mut got, mut sent) = (Vec::new(), Vec::new());
    for chunk in chunks {
        sent.extend_from_slice(chunk.as_bytes());
        tx.send(Bytes::copy_from_slice(chunk.as_bytes()))
            .await
            .unwrap();
        while got.len() < sent.len() {
            let frame = body.frame().await.unwrap().unwrap();
            got.extend_from_slice(frame.data_ref().unwrap());
        }
    }
    drop(tx);
    while let Some(frame) = body.frame().await {
        got.extend_from_slice(frame.unwrap().data_ref().unwrap_or(&Bytes::new()));
    }
    assert_eq!(got, sent);
    counted(&proxy.url, model).await
}

/// Answers `body` as JSON on `path` in pieces of `piece` bytes.
async fn answered(path: &str, body: String, piece: usize, model: &str) -> (u64, u64) {
    let handler: Handler = Arc::new(move |_| {
        let (tx, rx) = tokio::sync::mpsc::channel(body.len() / piece + 2);
        for chunk in body.as_bytes().chunks(piece) {
            tx.try_send(Bytes::copy_from_slice(chunk)).unwrap();
        }
        let mut r = event_stream(rx);
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    });
    let (_up, proxy) = proxy_for(handler).await;
    let auth = format!("Bearer {TOKEN}");
    let reply = send(
        &client(),
        request(
            "POST",
            &format!("{}{path}", proxy.url),
            &[("authorization", &auth)],
            "{}",
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    counted(&proxy.url, model).await
}

#[tokio::test]
async fn a_responses_api_stream_is_counted_from_response_completed() {
    bounded(async {
        let counts = streamed(
            "/api/v1/responses",
            &[
                "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r1\",\"model\":\"openai/gpt-5\",\"usage\":null}}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\nevent: response.comp",
                "leted\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r1\",\"model\":\"openai/gpt-5\",\"output\":[],\"usage\":{\"input_tok",
                "ens\":21,\"output_tokens\":43,\"total_tokens\":64}}}\n",
                "\n",
            ],
            "openai/gpt-5",
        )
        .await;
        assert_eq!(counts, (21, 43));
    })
    .await;
}

#[tokio::test]
async fn a_gemini_stream_is_counted_from_its_last_usage_metadata() {
    bounded(async {
        let counts = streamed(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            &[
                "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"H\"}]}}],\"usageMetadata\":{\"promptTokenCount\":9,\"totalTokenCount\":9},\"modelVersion\":\"gemini-2.5-flash\"}\r\n\r\ndata: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"i\"}]},\"finishReason\":\"STOP\"}],\"usageMeta",
                "data\":{\"promptTokenCount\":9,\"candidatesTokenCount\":4,\"thoughtsTok",
                "enCount\":6,\"totalTokenCount\":19},\"modelVersion\":\"gemini-2.5-flash\"}\r",
                "\n\r\n",
            ],
            "gemini-2.5-flash",
        )
        .await;
        assert_eq!(counts, (9, 10));
    })
    .await;
}

#[tokio::test]
async fn json_answers_of_the_responses_api_gemini_and_embeddings_are_counted() {
    bounded(async {
        let responses = r#"{"id":"r1","object":"response","model":"openai/gpt-5","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11}}"#;
        assert_eq!(answered("/api/v1/responses", responses.into(), 17, "openai/gpt-5").await, (5, 6));
        let gemini = r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]}}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5},"modelVersion":"gemini-2.5-pro"}"#;
        assert_eq!(answered("/v1beta/models/gemini-2.5-pro:generateContent", gemini.into(), 11, "gemini-2.5-pro").await, (3, 2));
        let vector = vec!["-0.0123456789"; 8000].join(",");
        let embeddings = format!(r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[{vector}]}}],"model":"openai/text-embedding-3-small","usage":{{"prompt_tokens":8,"total_tokens":8}}}}"#);
        assert_eq!(answered("/api/v1/embeddings", embeddings, 4093, "openai/text-embedding-3-small").await, (8, 0));
    })
    .await;
}
