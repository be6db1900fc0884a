//! The JSON shapes usage comes in, read in place: only the fields that can carry usage or the
//! model are looked at, as raw slices of the answer ([`pick`]), and everything else is skipped
//! without building anything. A `serde_json::Value` tree per answer cost about 35 allocations
//! and a tenth of keyproxy's instructions per chat request (callgrind, 858e6ee); serde_json's
//! struct deserializer with raw values, still 8,000 instructions per chat answer.

use super::fields::{elements, pick};
use super::scan::Used;

/// The top level of an answer or of an SSE event, as raw JSON text. A field of an unexpected
/// type is skipped, not an error: each is parsed on its own when it is looked at.
#[derive(Default)]
struct Event<'a> {
    model: Option<&'a str>,
    model_version: Option<&'a str>,
    /// Anthropic's `message_start`.
    message: Option<&'a str>,
    /// The Responses API's `response.completed`.
    response: Option<&'a str>,
    usage: Option<&'a str>,
    usage_metadata: Option<&'a str>,
    /// Gemini's answers: the last event of a stream has a `finishReason`.
    candidates: Option<&'a str>,
}

impl<'a> Event<'a> {
    fn read(text: &'a str) -> Option<Self> {
        let [model, model_version, message, response, usage, usage_metadata, candidates] = pick(
            text,
            [
                "model",
                "modelVersion",
                "message",
                "response",
                "usage",
                "usageMetadata",
                "candidates",
            ],
        )?;
        Some(Self {
            model,
            model_version,
            message,
            response,
            usage,
            usage_metadata,
            candidates,
        })
    }
}

/// What `message` and `response` may hold.
struct Inner<'a> {
    model: Option<&'a str>,
    usage: Option<&'a str>,
}

/// Takes what a whole answer says: one object, or (Gemini's `streamGenerateContent` without
/// `alt=sse`) an array of them, each with the usage so far.
pub(super) fn answer(json: &[u8], used: &mut Used) {
    let Ok(json) = std::str::from_utf8(json) else {
        return;
    };
    if json.trim_ascii_start().starts_with('[') {
        // All or nothing, as a whole array that does not parse gave nothing.
        let events: Option<Vec<Event<'_>>> = elements(json)
            .map(|items| items.into_iter().map(Event::read).collect())
            .unwrap_or_default();
        events.iter().flatten().for_each(|e| merge(e, used, true));
    } else if let Some(event) = Event::read(json) {
        merge(&event, used, true);
    }
}

/// Takes what one SSE event's data says.
pub(super) fn event(data: &[u8], used: &mut Used) {
    if let Some(event) = std::str::from_utf8(data).ok().and_then(Event::read) {
        merge(&event, used, false);
    }
}

/// Usage events are cumulative, so later values win. The model: `model` (OpenAI, Anthropic's
/// `message.model`, the Responses API's `response.model`) or Gemini's `modelVersion`.
///
/// Only usage that closes an answer makes it `reported`: a whole JSON answer, an event's own
/// `usage` (OpenAI's last chunk, Anthropic's `message_delta`), `response.completed`, and a Gemini
/// event with a `finishReason`. Anthropic's `message_start` and Gemini's earlier events count
/// what was used so far; a stream cut after them is charged its reservation, so an agent
/// cannot make an answer cheap by hanging up before its end.
fn merge(e: &Event<'_>, used: &mut Used, whole: bool) {
    let (message, response) = (inner(e.message), inner(e.response));
    let nested = [message.as_ref(), response.as_ref()];
    let models = [e.model]
        .into_iter()
        .chain(nested.iter().map(|i| i.and_then(|i| i.model)))
        .chain([e.model_version]);
    for m in models {
        model(m, used);
    }
    if let Some(u) = message.as_ref().and_then(|m| m.usage) {
        openai_or_anthropic(u, used, whole);
    }
    for u in [e.usage, response.as_ref().and_then(|r| r.usage)]
        .into_iter()
        .flatten()
    {
        openai_or_anthropic(u, used, true);
    }
    if let Some(u) = e.usage_metadata {
        let finished = e
            .candidates
            .is_some_and(|c| memchr::memmem::find(c.as_bytes(), b"\"finishReason\"").is_some());
        gemini(u, used, whole || finished);
    }
}

/// `message` or `response` as an object, when it is one.
fn inner(raw: Option<&str>) -> Option<Inner<'_>> {
    let [model, usage] = pick(raw?, ["model", "usage"])?;
    Some(Inner { model, usage })
}

fn model(raw: Option<&str>, used: &mut Used) {
    let Some(text) = raw else { return };
    // Most events name the model they named before: compared as written, without unescaping.
    if text.len() == used.model.len() + 2 && text.get(1..text.len() - 1) == Some(&used.model) {
        return;
    }
    if let Ok(m) = serde_json::from_str::<String>(text) {
        if !m.is_empty() {
            used.model = m;
        }
    }
}

/// A usage object in the OpenAI, Responses API or Anthropic shape; anything but an object is
/// skipped.
pub(super) fn openai_or_anthropic(raw: &str, used: &mut Used, closes: bool) {
    let Some(
        [prompt_tokens, completion_tokens, total_tokens, input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cost],
    ) = pick(
        raw,
        [
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cost",
        ],
    )
    else {
        return;
    };
    let input = int(input_tokens).map(|i| {
        i.saturating_add(int(cache_creation_input_tokens).unwrap_or(0))
            .saturating_add(int(cache_read_input_tokens).unwrap_or(0))
    });
    let mut prompt = int(prompt_tokens).or(input);
    let completion = int(completion_tokens).or(int(output_tokens));
    if prompt.is_none() && completion.is_none() {
        prompt = int(total_tokens);
    }
    counted(used, prompt, completion, float(cost), closes);
}

/// Gemini's `usageMetadata`: the prompt (with tool-use prompts), and the answer with its
/// thinking, which is billed as output; from the total when the parts are missing.
pub(super) fn gemini(raw: &str, used: &mut Used, closes: bool) {
    let Some([prompt_count, tool_use_count, candidates_count, thoughts_count, total_count]) = pick(
        raw,
        [
            "promptTokenCount",
            "toolUsePromptTokenCount",
            "candidatesTokenCount",
            "thoughtsTokenCount",
            "totalTokenCount",
        ],
    ) else {
        return;
    };
    let prompt = int(prompt_count).map(|p| p.saturating_add(int(tool_use_count).unwrap_or(0)));
    let completion = match (int(candidates_count), int(thoughts_count)) {
        (None, None) => int(total_count).map(|t| t.saturating_sub(prompt.unwrap_or(0))),
        (c, t) => Some(c.unwrap_or(0).saturating_add(t.unwrap_or(0))),
    };
    counted(used, prompt, completion, None, closes);
}

/// A non-negative integer as written; anything else (a string, a fraction, a negative count) is
/// no count.
fn int(raw: Option<&str>) -> Option<u64> {
    raw?.parse().ok()
}

/// A number as written (a cost); a string or anything else is none.
fn float(raw: Option<&str>) -> Option<f64> {
    let text = raw?;
    // parse::<f64> would take "inf" and "NaN", which JSON cannot write.
    text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        .then(|| text.parse().ok())
        .flatten()
}

fn counted(
    used: &mut Used,
    prompt: Option<u64>,
    completion: Option<u64>,
    cost: Option<f64>,
    closes: bool,
) {
    if prompt.is_none() && completion.is_none() && cost.is_none() {
        return;
    }
    used.reported |= closes;
    if let Some(p) = prompt {
        used.prompt_tokens = p;
    }
    if let Some(c) = completion {
        used.completion_tokens = c;
    }
    if let Some(c) = cost {
        used.cost = c;
    }
}
