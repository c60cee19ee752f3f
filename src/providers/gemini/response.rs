//! Gemini `generateContent` answer → OpenAI `chat.completion`, and the usage
//! mapping shared with the stream: Gemini's `promptTokenCount` already counts
//! cached tokens (`cachedContentTokenCount`), and thinking tokens
//! (`thoughtsTokenCount`) are output that OpenAI counts in `completion_tokens`
//! and reports as `reasoning_tokens`. Gemini calls have no ids: a call is
//! named `call_<n>` by its position in the answer.

use serde_json::Value;

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

/// Text and function calls of a candidate's parts; `first_call` numbers the calls.
pub fn content_of(candidate: &Value, first_call: usize) -> (String, Vec<Value>) {
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
            let id = format!("call_{}", first_call + calls.len());
            calls.push(translate::tool_call(
                id.into(),
                call.get("name").cloned().unwrap_or_default(),
                call.get("args"),
            ));
        }
    }
    (text, calls)
}

pub fn chat_completion(answer: &Value, model: &str, created: i64) -> Value {
    let candidate = answer.get("candidates").and_then(|c| c.get(0)).cloned().unwrap_or_default();
    let (text, calls) = content_of(&candidate, 0);
    let finish = finish_reason(candidate.get("finishReason").and_then(Value::as_str), !calls.is_empty());
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
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("STOP"), false), "stop");
        assert_eq!(finish_reason(Some("STOP"), true), "tool_calls");
        assert_eq!(finish_reason(Some("MAX_TOKENS"), true), "length");
        assert_eq!(finish_reason(Some("SAFETY"), false), "content_filter");
        assert_eq!(finish_reason(None, false), "stop");
    }
}
