//! Anthropic Messages response → OpenAI `chat.completion`.
//!
//! Anthropic's `input_tokens` excludes cache reads and writes; OpenAI's
//! `prompt_tokens` includes them, so they are added back, with cache reads in
//! `prompt_tokens_details.cached_tokens` (and writes in `cache_write_tokens`,
//! which the gateway prices separately).

use serde_json::Value;

use crate::domain::chat::{PromptDetails, Usage};
use crate::providers::{reasoning, translate};

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        // The answer stopped at the model's context window: cut short, as by `max_tokens`.
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn, and anything new
    }
}

/// A chat choice that ended at one of the client's stop sequences says so as OpenRouter does
/// (`native_finish_reason: "stop_sequence"`) and names the sequence (`stop_sequence`), which a Messages
/// client is told again.
pub fn stopped_by_sequence(choice: &mut Value, stop_reason: Option<&Value>, sequence: Option<&Value>) {
    if stop_reason.and_then(Value::as_str) == Some("stop_sequence") {
        choice["native_finish_reason"] = "stop_sequence".into();
        if let Some(sequence) = sequence.filter(|s| s.is_string()) {
            choice["stop_sequence"] = sequence.clone();
        }
    }
}

/// OpenAI usage from Anthropic's `usage` object.
pub fn usage(u: &Value) -> Usage {
    let n = |field: &str| u.get(field).and_then(Value::as_u64).unwrap_or(0);
    let (cache_read, cache_write) = (n("cache_read_input_tokens"), n("cache_creation_input_tokens"));
    let prompt = n("input_tokens").saturating_add(cache_read).saturating_add(cache_write);
    let completion = n("output_tokens");
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        cost: None,
        prompt_tokens_details: (cache_read > 0 || cache_write > 0)
            .then_some(PromptDetails { cached_tokens: cache_read, cache_write_tokens: cache_write }),
        completion_tokens_details: None,
    }
}

/// The OpenAI answer for an Anthropic message; `model` is the id the client asked for.
pub fn chat_completion(message: &Value, model: &str, created: i64) -> Value {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in message.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => tool_calls.push(translate::tool_call(
                block.get("id").cloned().unwrap_or_default(),
                block.get("name").cloned().unwrap_or_default(),
                block.get("input"),
            )),
            _ => {} // thinking is read below; other blocks have no OpenAI equivalent
        }
    }
    let finish = finish_reason(message.get("stop_reason").and_then(Value::as_str));
    let usage = usage(message.get("usage").unwrap_or(&Value::Null));
    let mut answer = translate::chat_completion(
        message.get("id").cloned().unwrap_or_default(),
        model,
        created,
        text,
        tool_calls,
        finish,
        &usage,
    );
    if let Some(choice) = answer.pointer_mut("/choices/0") {
        stopped_by_sequence(choice, message.get("stop_reason"), message.get("stop_sequence"));
    }
    let details =
        reasoning::details_from_blocks(message.get("content").and_then(Value::as_array).into_iter().flatten());
    if let (false, Some(reply)) = (details.is_empty(), answer.pointer_mut("/choices/0/message")) {
        reply["reasoning"] = reasoning::text_of(&details).into();
        reply["reasoning_details"] = details.into();
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).expect("fixture")
    }

    #[test]
    fn tool_use_message_becomes_an_openai_completion_with_cache_tokens_counted() {
        let message = fixture(include_str!("../../../tests/fixtures/anthropic/message_tool_use.json"));
        let expected = fixture(include_str!("../../../tests/fixtures/anthropic/message_tool_use.openai.json"));
        assert_eq!(chat_completion(&message, "anthropic/claude-3-5-haiku-20241022", 1_764_460_800), expected);
    }

    #[test]
    fn thinking_becomes_reasoning_with_its_signature() {
        let message = json!({"id": "msg_1", "stop_reason": "end_turn", "usage": {"input_tokens": 5, "output_tokens": 9},
            "content": [{"type": "thinking", "thinking": "Hm.", "signature": "sig"}, {"type": "text", "text": "Yes."}]});
        let answer = chat_completion(&message, "anthropic/claude", 0);
        let reply = &answer["choices"][0]["message"];
        assert_eq!((reply["content"].as_str(), reply["reasoning"].as_str()), (Some("Yes."), Some("Hm.")));
        assert_eq!(reply["reasoning_details"][0]["signature"], "sig");
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        assert_eq!(finish_reason(Some("end_turn")), "stop");
        assert_eq!(finish_reason(Some("stop_sequence")), "stop");
        assert_eq!(finish_reason(Some("max_tokens")), "length");
        assert_eq!(finish_reason(Some("tool_use")), "tool_calls");
        assert_eq!(finish_reason(Some("refusal")), "content_filter");
        assert_eq!(finish_reason(None), "stop");
    }

    #[test]
    fn a_stop_sequence_is_told_as_openrouter_tells_it_and_named() {
        let message = json!({"id":"msg_1","content":[{"type":"text","text":"a"}],"stop_reason":"stop_sequence",
            "stop_sequence":"END","usage":{"input_tokens":1,"output_tokens":1}});
        let answer = chat_completion(&message, "anthropic/claude", 0);
        assert_eq!(answer["choices"][0]["finish_reason"], "stop");
        assert_eq!(answer["choices"][0]["native_finish_reason"], "stop_sequence");
        assert_eq!(answer["choices"][0]["stop_sequence"], "END");
        let ended = json!({"id":"msg_1","content":[],"stop_reason":"end_turn","usage":{}});
        assert!(chat_completion(&ended, "anthropic/claude", 0)["choices"][0].get("native_finish_reason").is_none());
    }

    #[test]
    fn plain_usage_has_no_details() {
        let u = usage(&json!({"input_tokens": 7, "output_tokens": 3}));
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (7, 3, 10));
        assert_eq!(u.prompt_tokens_details, None);
        let priced = u.tokens();
        assert_eq!((priced.cache_read, priced.cache_write), (0, 0));
    }
}
