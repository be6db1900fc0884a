use super::*;

fn scan(content_type: &str, chunks: &[&[u8]]) -> Used {
    let mut s = Scanner::for_content_type(content_type).unwrap();
    for c in chunks {
        s.feed(c);
    }
    s.finish()
}

#[test]
fn a_json_completion_with_openrouter_cost() {
    let body = br#"{"id":"x","model":"openai/gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"cost":0.00042}}"#;
    let used = scan(
        "application/json; charset=utf-8",
        &[&body[..20], &body[20..]],
    );
    assert_eq!(used.model, "openai/gpt-4o-mini");
    assert_eq!((used.prompt_tokens, used.completion_tokens), (12, 34));
    assert!((used.cost - 0.00042).abs() < 1e-12);
}

#[test]
fn a_large_json_answer_is_read_from_its_ends() {
    let pad = "x".repeat(100_000);
    let body = format!(
        r#"{{"model":"m1","choices":[{{"text":"{pad}"}}],"usage":{{"prompt_tokens":1,"completion_tokens":2}}}}"#
    );
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(7000).collect();
    let used = scan("application/json", &chunks);
    assert_eq!(
        (
            used.model.as_str(),
            used.prompt_tokens,
            used.completion_tokens
        ),
        ("m1", 1, 2)
    );
}

#[test]
fn an_sse_usage_event_split_across_chunks() {
    let stream = b"data: {\"model\":\"openai/gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"model\":\"openai/gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9,\"cost\":0.5}}\r\n\r\ndata: [DONE]\n\n";
    for split in [1, 5, 60, 100, 130] {
        let used = scan("text/event-stream", &[&stream[..split], &stream[split..]]);
        assert_eq!(used.model, "openai/gpt-4o", "split at {split}");
        assert_eq!(
            (used.prompt_tokens, used.completion_tokens),
            (7, 9),
            "split at {split}"
        );
        assert!((used.cost - 0.5).abs() < 1e-12);
    }
}

#[test]
fn anthropic_streams_and_answers() {
    let stream = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
    let used = scan("text/event-stream", &[stream]);
    assert_eq!(used.model, "claude-sonnet-4-5");
    assert_eq!((used.prompt_tokens, used.completion_tokens), (30, 15));
    let body = br#"{"type":"message","model":"claude-haiku","content":[],"usage":{"input_tokens":3,"output_tokens":4}}"#;
    let used = scan("application/json", &[body]);
    assert_eq!(
        (
            used.model.as_str(),
            used.prompt_tokens,
            used.completion_tokens
        ),
        ("claude-haiku", 3, 4)
    );
}

#[test]
fn a_huge_line_is_skipped_not_kept() {
    let mut s = Scanner::for_content_type("text/event-stream").unwrap();
    let big = vec![b'a'; LINE + 10];
    s.feed(b"data: ");
    s.feed(&big);
    if let Scanner::Sse { line, tail, .. } = &s {
        assert!(line.len() <= HEAD && tail.len() <= TAIL);
    }
    s.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n");
    assert_eq!(s.finish().prompt_tokens, 1);
    assert!(Scanner::for_content_type("text/plain").is_none());
}

/// What `stream` counts fed whole, split in two at every byte, and byte by byte.
fn every_split(content_type: &str, stream: &[u8]) -> Used {
    let whole = scan(content_type, &[stream]);
    for split in 0..=stream.len() {
        let used = scan(content_type, &[&stream[..split], &stream[split..]]);
        assert_eq!(used, whole, "split at {split}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(scan(content_type, &bytes), whole, "byte by byte");
    whole
}

fn counts(used: &Used) -> (&str, u64, u64, bool) {
    (
        used.model.as_str(),
        used.prompt_tokens,
        used.completion_tokens,
        used.reported,
    )
}

#[test]
fn openai_chat_and_completions_streams() {
    let chat = b"data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\ndata: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n";
    assert_eq!(
        counts(&every_split("text/event-stream", chat)),
        ("gpt-4o", 7, 9, true)
    );
    let completions = b"data: {\"object\":\"text_completion\",\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":\"x\",\"index\":0}]}\r\n\r\ndata: {\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1,\"total_tokens\":3}}\r\n\r\n";
    assert_eq!(
        counts(&every_split("text/event-stream", completions)),
        ("gpt-3.5-turbo-instruct", 2, 1, true)
    );
    let none = b"data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
    assert!(!every_split("text/event-stream", none).reported);
}

#[test]
fn the_responses_api_json_and_stream() {
    let json = br#"{"id":"resp_1","object":"response","model":"gpt-4.1","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":20,"total_tokens":30}}"#;
    assert_eq!(
        counts(&every_split("application/json", json)),
        ("gpt-4.1", 10, 20, true)
    );
    let stream = b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4.1\",\"usage\":null}}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4.1\",\"output\":[],\"usage\":{\"input_tokens\":11,\"output_tokens\":22,\"total_tokens\":33}}}\n\n";
    assert_eq!(
        counts(&every_split("text/event-stream", stream)),
        ("gpt-4.1", 11, 22, true)
    );
}

#[test]
fn a_responses_completion_longer_than_a_line_is_read_from_its_ends() {
    let text = "y".repeat(LINE + 1000);
    let line = format!(
        "data: {{\"type\":\"response.completed\",\"response\":{{\"model\":\"gpt-4.1\",\"output\":[{{\"text\":\"{text}\"}}],\"usage\":{{\"input_tokens\":5,\"output_tokens\":70000}},\"user\":null}}}}\n\n"
    );
    for size in [1000, 70_000, 300_000] {
        let chunks: Vec<&[u8]> = line.as_bytes().chunks(size).collect();
        assert_eq!(
            counts(&scan("text/event-stream", &chunks)),
            ("gpt-4.1", 5, 70000, true),
            "chunks of {size}"
        );
    }
}

#[test]
fn gemini_json_and_stream() {
    let json = br#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]}}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":3,"thoughtsTokenCount":5,"totalTokenCount":16},"modelVersion":"gemini-2.5-flash"}"#;
    assert_eq!(
        counts(&every_split("application/json; charset=UTF-8", json)),
        ("gemini-2.5-flash", 8, 8, true)
    );
    // Each event carries the usage so far; the last wins.
    let stream = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"H\"}]}}],\"usageMetadata\":{\"promptTokenCount\":8,\"totalTokenCount\":8},\"modelVersion\":\"gemini-2.5-pro\"}\r\n\r\ndata: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"i\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":8,\"candidatesTokenCount\":2,\"totalTokenCount\":10},\"modelVersion\":\"gemini-2.5-pro\"}\r\n\r\n";
    assert_eq!(
        counts(&every_split("text/event-stream", stream)),
        ("gemini-2.5-pro", 8, 2, true)
    );
    // Without `alt=sse` the stream is one JSON array.
    let array = br#"[{"candidates":[],"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}},
{"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":5,"totalTokenCount":13},"modelVersion":"gemini-2.5-pro"}]"#;
    assert_eq!(
        counts(&every_split("application/json", array)),
        ("gemini-2.5-pro", 8, 5, true)
    );
    let only_total = br#"{"usageMetadata":{"promptTokenCount":4,"totalTokenCount":10}}"#;
    assert_eq!(
        counts(&scan("application/json", &[only_total])),
        ("", 4, 6, true)
    );
}

#[test]
fn embeddings_with_the_model_after_the_vectors() {
    let vector = vec!["0.0123456789"; 20_000].join(",");
    let body = format!(
        r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[{vector}]}}],"model":"text-embedding-3-small","usage":{{"prompt_tokens":9,"total_tokens":9}}}}"#
    );
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(8192).collect();
    assert_eq!(
        counts(&scan("application/json", &chunks)),
        ("text-embedding-3-small", 9, 0, true)
    );
    let small =
        br#"{"object":"list","data":[],"model":"e","usage":{"prompt_tokens":3,"total_tokens":3}}"#;
    assert_eq!(
        counts(&every_split("application/json", small)),
        ("e", 3, 0, true)
    );
}

#[test]
fn openrouter_cost_in_a_stream_and_an_empty_usage() {
    let stream = b"data: {\"model\":\"openai/gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"model\":\"openai/gpt-4o\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"cost\":0.125}}\n\n";
    let used = every_split("text/event-stream", stream);
    assert_eq!(counts(&used), ("openai/gpt-4o", 1, 2, true));
    assert_eq!(used.cost, 0.125);
    assert!(!scan("application/json", &[br#"{"usage":{}}"#]).reported);
}

#[test]
fn a_stream_cut_before_its_closing_usage_is_not_reported() {
    // Anthropic: message_start says what the prompt used, not the answer.
    let cut = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n";
    let used = scan("text/event-stream", &[cut]);
    assert_eq!((used.prompt_tokens, used.reported), (25, false));
    // Gemini: every event carries the usage so far; only the one with a finishReason closes.
    let cut = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"H\"}]}}],\"usageMetadata\":{\"promptTokenCount\":8,\"candidatesTokenCount\":1,\"totalTokenCount\":9}}\r\n\r\n";
    assert_eq!(
        counts(&every_split("text/event-stream", cut)),
        ("", 8, 1, false)
    );
}

#[test]
fn numbers_of_the_wrong_kind_are_no_counts_and_spoil_nothing_else() {
    let body = br#"{"model":7,"usage":{"prompt_tokens":-5,"completion_tokens":"12","total_tokens":3.5,"cost":1e400}}"#;
    let used = scan("application/json", &[body]);
    assert_eq!(
        (
            used.model.as_str(),
            used.prompt_tokens,
            used.completion_tokens
        ),
        ("", 0, 0)
    );
    // An absurd cost is read as what it is, for the bill to refuse; not taken for zero.
    assert!(used.reported && used.cost.is_infinite());
    let odd = br#"{"message":"overloaded","response":[1],"usage":{"prompt_tokens":4,"completion_tokens":2,"cost":"0.1"}}"#;
    let used = scan("application/json", &[odd]);
    assert_eq!(
        (used.prompt_tokens, used.completion_tokens, used.cost),
        (4, 2, 0.0)
    );
}
