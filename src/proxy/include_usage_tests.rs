use super::*;

fn asked(text: &str, path: &str) -> Option<String> {
    ask(text, &Members::of(text).unwrap(), path)
}

#[test]
fn usage_is_asked_for_on_streams_that_did_not() {
    let chat = "/api/v1/chat/completions";
    assert_eq!(
        asked(r#" {"model":"m","stream":true}"#, chat).as_deref(),
        Some(r#" {"stream_options":{"include_usage":true},"model":"m","stream":true}"#)
    );
    assert_eq!(
        asked(
            r#"{"stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
            "/v1/completions"
        )
        .as_deref(),
        Some(r#"{"stream":true,"stream_options":{"include_usage":true,"x":1}}"#)
    );
    assert_eq!(
        asked(r#"{"stream":true,"stream_options":null}"#, chat).as_deref(),
        Some(r#"{"stream":true,"stream_options":{"include_usage":true}}"#)
    );
    for (text, path) in [
        (
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
            chat,
        ),
        (r#"{"stream":false}"#, chat),
        (r#"{"stream":"true"}"#, chat),
        (r#"{"model":"m"}"#, chat),
        (r#"{"stream":true}"#, "/v1/responses"),
        (r#"{"stream":true}"#, "/v1/messages"),
    ] {
        assert_eq!(asked(text, path), None, "{text} {path}");
    }
}

const CONTENT: &str = "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
const CONTENT_ASKED: &str =
    "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n";
const USAGE: &str = "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n";
const DONE: &str = "data: [DONE]\n\n";

fn hidden(chunks: &[&[u8]]) -> Vec<u8> {
    let mut hider = UsageHider::default();
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&hider.filter(chunk));
    }
    out.extend_from_slice(&hider.finish());
    out
}

#[test]
fn what_asking_added_is_taken_out_wherever_the_chunks_split() {
    let asked = format!("{CONTENT_ASKED}{CONTENT_ASKED}{USAGE}{DONE}");
    let wanted = format!("{CONTENT}{CONTENT}{DONE}");
    let bytes = asked.as_bytes();
    for split in 0..=bytes.len() {
        assert_eq!(
            String::from_utf8(hidden(&[&bytes[..split], &bytes[split..]])).unwrap(),
            wanted,
            "split at {split}"
        );
    }
    let byte_by_byte: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(hidden(&byte_by_byte), wanted.as_bytes());
    // CRLF lines, spaces, an event with its name, a stream that ends without a blank line.
    let crlf = "event: x\r\ndata: {\"choices\":[], \"usage\": {\"total_tokens\":1}}\r\n\r\ndata: {\"a\":1, \"usage\" : null}\r\n\r\ndata: {\"usage\":null,\"a\":2}\n\ndata: {\"choices\":[],\"usage\":{}}";
    assert_eq!(
        String::from_utf8(hidden(&[crlf.as_bytes()])).unwrap(),
        "data: {\"a\":1}\r\n\r\ndata: {\"a\":2}\n\n"
    );
}

#[test]
fn other_events_pass_untouched() {
    let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":null\"}}],\"usage\":{\"prompt_tokens\":1}}\n\n: comment\n\ndata: [DONE]\n\n";
    assert_eq!(hidden(&[stream.as_bytes()]), stream.as_bytes());
}

#[test]
fn a_huge_event_passes_as_it_arrives() {
    let mut hider = UsageHider::default();
    let big = vec![b'a'; EVENT + 10];
    let mut out = hider.filter(b"data: ").to_vec();
    out.extend_from_slice(&hider.filter(&big));
    assert_eq!(out.len(), EVENT + 16, "nothing past EVENT is held");
    out.extend_from_slice(&hider.filter(b"\n\n"));
    out.extend_from_slice(&hider.filter(USAGE.as_bytes()));
    assert_eq!(&out[EVENT + 16..], b"\n\n");
    assert!(hider.event.is_empty());
}
