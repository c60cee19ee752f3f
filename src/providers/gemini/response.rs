//! Gemini `generateContent` answer → OpenAI `chat.completion`, and the usage
//! mapping shared with the stream: Gemini's `promptTokenCount` already counts
//! cached tokens (`cachedContentTokenCount`), and thinking tokens
//! (`thoughtsTokenCount`) are output that OpenAI counts in `completion_tokens`
//! and reports as `reasoning_tokens`. Gemini calls have no ids: a call is
//! named `call_<answer id>_<n>` by its position in the answer (ids unique across
//! turns, as a conversation moved to Claude needs). A call's thought signature
//! (Gemini 3) travels as `extra_content.google.thought_signature`, as Google's own
//! OpenAI-compatible API spells it, to come back on the next turn (`request`).

use serde_json::{json, Value};

use crate::domain::chat::{CompletionDetails, PromptDetails, Usage};
use crate::providers::translate;

pub fn finish_reason(reason: Option<&str>, called_tools: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some("SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY") => {
            "content_filter"
        }
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

pub fn usage(meta: &Value) -> Usage {
    let n = |field: &str| meta.get(field).and_then(Value::as_u64).unwrap_or(0);
    let (prompt, thoughts, cached) = (n("promptTokenCount"), n("thoughtsTokenCount"), n("cachedContentTokenCount"));
    let completion = n("candidatesTokenCount").saturating_add(thoughts);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        cost: None,
        prompt_tokens_details: (cached > 0).then_some(PromptDetails { cached_tokens: cached, cache_write_tokens: 0 }),
        completion_tokens_details: (thoughts > 0).then_some(CompletionDetails { reasoning_tokens: thoughts }),
    }
}

/// Text and function calls of a candidate's parts; `first_call` numbers the calls of the answer `answer_id`.
pub fn content_of(candidate: &Value, first_call: usize, answer_id: &str) -> (String, Vec<Value>) {
    let answer: String = answer_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect();
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in candidate.get("content").and_then(|c| c.get("parts")).and_then(Value::as_array).into_iter().flatten() {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue; // thought summaries are not answer text
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(call) = part.get("functionCall") {
            let n = first_call + calls.len();
            let id = if answer.is_empty() { format!("call_{n}") } else { format!("call_{answer}_{n}") };
            let mut tool_call =
                translate::tool_call(id.into(), call.get("name").cloned().unwrap_or_default(), call.get("args"));
            if let Some(signature) = part.get("thoughtSignature").and_then(Value::as_str) {
                tool_call["extra_content"] = json!({"google": {"thought_signature": signature}});
            }
            calls.push(tool_call);
        }
    }
    (text, calls)
}

/// Whether Gemini blocked the prompt itself (`promptFeedback.blockReason`; the answer then has no candidates).
pub fn prompt_blocked(answer: &Value) -> bool {
    answer.pointer("/promptFeedback/blockReason").is_some_and(|r| !r.is_null())
}

pub fn chat_completion(answer: &Value, model: &str, created: i64) -> Value {
    let candidate = answer.get("candidates").and_then(|c| c.get(0)).cloned().unwrap_or_default();
    let answer_id = answer.get("responseId").and_then(Value::as_str).unwrap_or_default();
    let (text, calls) = content_of(&candidate, 0, answer_id);
    let finish = match candidate.is_null() && prompt_blocked(answer) {
        true => "content_filter",
        false => finish_reason(candidate.get("finishReason").and_then(Value::as_str), !calls.is_empty()),
    };
    let usage = usage(answer.get("usageMetadata").unwrap_or(&Value::Null));
    translate::chat_completion(
        answer.get("responseId").cloned().unwrap_or_default(),
        model,
        created,
        text,
        calls,
        finish,
        &usage,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).expect("fixture")
    }

    #[test]
    fn a_function_call_answer_becomes_an_openai_completion_with_thoughts_and_cache() {
        let answer = fixture(include_str!("../../../tests/fixtures/gemini/generate_function_call.json"));
        let expected = fixture(include_str!("../../../tests/fixtures/gemini/generate_function_call.openai.json"));
        assert_eq!(chat_completion(&answer, "google/gemini-2.0-flash-001", 1_764_460_800), expected);
    }

    #[test]
    fn a_thought_signature_rides_on_its_tool_call_and_ids_name_the_answer() {
        let candidate = json!({"content": {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "g", "args": {}}}]}});
        let (_, calls) = content_of(&candidate, 0, "r/1 x");
        assert_eq!(calls[0]["extra_content"], json!({"google": {"thought_signature": "c2ln"}}));
        assert!(calls[1].get("extra_content").is_none());
        assert_eq!([&calls[0]["id"], &calls[1]["id"]], [&json!("call_r1x_0"), &json!("call_r1x_1")]);
    }

    #[test]
    fn a_blocked_prompt_is_a_filtered_answer() {
        let blocked = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}});
        let answer = chat_completion(&blocked, "google/gemini-2.5-flash", 1);
        assert_eq!(answer["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(answer["usage"]["prompt_tokens"], 7);
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("STOP"), false), "stop");
        assert_eq!(finish_reason(Some("STOP"), true), "tool_calls");
        assert_eq!(finish_reason(Some("MAX_TOKENS"), true), "length");
        assert_eq!(finish_reason(Some("SAFETY"), false), "content_filter");
        assert_eq!(finish_reason(None, false), "stop");
    }
}
