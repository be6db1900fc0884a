//! The JSON shapes usage comes in, read in place: only the fields that can carry usage or the
//! model are looked at, as raw slices of the answer, and everything else is skipped without
//! building anything. A `serde_json::Value` tree per answer cost about 35 allocations and a
//! tenth of keyproxy's instructions per chat request (callgrind, 858e6ee).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::scan::Used;

/// The top level of an answer or of an SSE event. A field of an unexpected type is skipped, not
/// an error: each is parsed on its own when it is looked at.
#[derive(Deserialize, Default)]
struct Event<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "modelVersion")]
    model_version: Option<&'a RawValue>,
    /// Anthropic's `message_start`.
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    /// The Responses API's `response.completed`.
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "usageMetadata")]
    usage_metadata: Option<&'a RawValue>,
    /// Gemini's answers: the last event of a stream has a `finishReason`.
    #[serde(borrow, default)]
    candidates: Option<&'a RawValue>,
}

/// What `message` and `response` may hold.
#[derive(Deserialize)]
struct Inner<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

/// OpenAI (`prompt_tokens`, `completion_tokens`; embeddings only `prompt_tokens` and
/// `total_tokens`), the Responses API and Anthropic (`input_tokens`, `output_tokens`, Anthropic's
/// cache reads and writes counted as input), OpenRouter's `cost`.
#[derive(Deserialize)]
struct Counts<'a> {
    #[serde(borrow, default)]
    prompt_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    total_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    output_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cache_creation_input_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cache_read_input_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cost: Option<&'a RawValue>,
}

/// Gemini's `usageMetadata`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiCounts<'a> {
    #[serde(borrow, default)]
    prompt_token_count: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_use_prompt_token_count: Option<&'a RawValue>,
    #[serde(borrow, default)]
    candidates_token_count: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thoughts_token_count: Option<&'a RawValue>,
    #[serde(borrow, default)]
    total_token_count: Option<&'a RawValue>,
}

/// Takes what a whole answer says: one object, or (Gemini's `streamGenerateContent` without
/// `alt=sse`) an array of them, each with the usage so far.
pub(super) fn answer(json: &[u8], used: &mut Used) {
    if json.trim_ascii_start().first() == Some(&b'[') {
        if let Ok(items) = serde_json::from_slice::<Vec<Event<'_>>>(json) {
            items.iter().for_each(|e| merge(e, used, true));
        }
    } else if let Ok(event) = serde_json::from_slice::<Event<'_>>(json) {
        merge(&event, used, true);
    }
}

/// Takes what one SSE event's data says.
pub(super) fn event(data: &[u8], used: &mut Used) {
    if let Ok(event) = serde_json::from_slice::<Event<'_>>(data) {
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
        let finished = e.candidates.is_some_and(|c| {
            memchr::memmem::find(c.get().as_bytes(), b"\"finishReason\"").is_some()
        });
        gemini(u, used, whole || finished);
    }
}

/// `message` or `response` as an object, when it is one.
fn inner<'a>(raw: Option<&'a RawValue>) -> Option<Inner<'a>> {
    serde_json::from_str(raw?.get()).ok()
}

fn model(raw: Option<&RawValue>, used: &mut Used) {
    let Some(raw) = raw else { return };
    // Most events name the model they named before: compared as written, without unescaping.
    let text = raw.get();
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
pub(super) fn openai_or_anthropic(raw: &RawValue, used: &mut Used, closes: bool) {
    let Ok(u) = serde_json::from_str::<Counts>(raw.get()) else {
        return;
    };
    let input = int(u.input_tokens).map(|i| {
        i.saturating_add(int(u.cache_creation_input_tokens).unwrap_or(0))
            .saturating_add(int(u.cache_read_input_tokens).unwrap_or(0))
    });
    let mut prompt = int(u.prompt_tokens).or(input);
    let completion = int(u.completion_tokens).or(int(u.output_tokens));
    if prompt.is_none() && completion.is_none() {
        prompt = int(u.total_tokens);
    }
    counted(used, prompt, completion, float(u.cost), closes);
}

/// Gemini's `usageMetadata`: the prompt (with tool-use prompts), and the answer with its
/// thinking, which is billed as output; from the total when the parts are missing.
pub(super) fn gemini(raw: &RawValue, used: &mut Used, closes: bool) {
    let Ok(u) = serde_json::from_str::<GeminiCounts>(raw.get()) else {
        return;
    };
    let prompt = int(u.prompt_token_count)
        .map(|p| p.saturating_add(int(u.tool_use_prompt_token_count).unwrap_or(0)));
    let completion = match (int(u.candidates_token_count), int(u.thoughts_token_count)) {
        (None, None) => int(u.total_token_count).map(|t| t.saturating_sub(prompt.unwrap_or(0))),
        (c, t) => Some(c.unwrap_or(0).saturating_add(t.unwrap_or(0))),
    };
    counted(used, prompt, completion, None, closes);
}

/// A non-negative integer as written; anything else (a string, a fraction, a negative count) is
/// no count.
fn int(raw: Option<&RawValue>) -> Option<u64> {
    raw?.get().parse().ok()
}

/// A number as written (a cost); a string or anything else is none.
fn float(raw: Option<&RawValue>) -> Option<f64> {
    let text = raw?.get();
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
