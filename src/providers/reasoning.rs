//! A model's thinking, carried across dialects. The chat form holds it as
//! OpenRouter does: an assistant message's `reasoning` (the text) and
//! `reasoning_details` (the pieces, each with what its provider needs back on
//! the next turn). Anthropic holds it as `thinking` blocks with a `signature`
//! and `redacted_thinking` blocks with opaque `data`; with extended thinking on,
//! Anthropic wants them back, unchanged, on every tool-use turn.

use serde_json::{json, Value};

/// The `format` of details that came from (and can go back to) Anthropic.
pub const ANTHROPIC_FORMAT: &str = "anthropic-claude-v1";

/// A thinking text (and its signature, when known) as one detail.
pub fn text_detail(text: &str, signature: Option<&str>, index: usize) -> Value {
    let mut detail = json!({"type": "reasoning.text", "text": text, "format": ANTHROPIC_FORMAT, "index": index});
    if let Some(signature) = signature {
        detail["signature"] = signature.into();
    }
    detail
}

/// Redacted (encrypted) thinking as one detail.
pub fn encrypted_detail(data: &str, index: usize) -> Value {
    json!({"type": "reasoning.encrypted", "data": data, "format": ANTHROPIC_FORMAT, "index": index})
}

/// Anthropic content blocks' thinking as details (other blocks skipped).
pub fn details_from_blocks<'a>(blocks: impl IntoIterator<Item = &'a Value>) -> Vec<Value> {
    let str_of = |b: &Value, f: &str| b.get(f).and_then(Value::as_str).map(str::to_string);
    let mut details = Vec::new();
    for block in blocks {
        let index = details.len();
        match block.get("type").and_then(Value::as_str) {
            Some("thinking") => details.push(text_detail(
                &str_of(block, "thinking").unwrap_or_default(),
                str_of(block, "signature").as_deref(),
                index,
            )),
            Some("redacted_thinking") => {
                details.push(encrypted_detail(&str_of(block, "data").unwrap_or_default(), index))
            }
            _ => {}
        }
    }
    details
}

/// Details as Anthropic blocks, in order. Pieces of one `index` (a streamed answer's deltas, as a chat
/// client may send them back) are joined. `signed_only`: drop thinking Anthropic would refuse (no
/// signature: it came from another provider), as a request to Anthropic must.
pub fn blocks_from_details(details: &[Value], signed_only: bool) -> Vec<Value> {
    let mut blocks: Vec<(Option<u64>, Value)> = Vec::new();
    for detail in details {
        let index = detail.get("index").and_then(Value::as_u64);
        let field = |f: &str| detail.get(f).and_then(Value::as_str).unwrap_or_default();
        match detail.get("type").and_then(Value::as_str) {
            Some("reasoning.text") => match blocks.last_mut() {
                Some((i, block)) if index.is_some() && *i == index && block["type"] == "thinking" => {
                    // Appended in place: pieces copied whole each time would be quadratic in a long thought.
                    if let Some(Value::String(thinking)) = block.get_mut("thinking") {
                        thinking.push_str(field("text"));
                    }
                    if !field("signature").is_empty() {
                        block["signature"] = field("signature").into();
                    }
                }
                _ => blocks.push((
                    index,
                    json!({"type": "thinking", "thinking": field("text"), "signature": field("signature")}),
                )),
            },
            // Another provider's encrypted reasoning (OpenAI's, Google's) is no redacted thinking of Anthropic's:
            // sent back to Anthropic it would be refused, and read back it would be taken for Anthropic's.
            Some("reasoning.encrypted") if matches!(field("format"), "" | ANTHROPIC_FORMAT) => {
                blocks.push((index, json!({"type": "redacted_thinking", "data": field("data")})))
            }
            _ => {} // summaries and other providers' forms have no Anthropic block
        }
    }
    blocks
        .into_iter()
        .map(|(_, block)| block)
        .filter(|b| !signed_only || b["type"] != "thinking" || b["signature"].as_str().is_some_and(|s| !s.is_empty()))
        .collect()
}

/// The readable text of details (the chat answer's `reasoning`).
pub fn text_of(details: &[Value]) -> String {
    details.iter().filter_map(|d| d.get("text").and_then(Value::as_str)).collect()
}

/// What a reader may see of a detail: a thinking text or a summary (OpenAI's models give summaries).
pub fn readable(detail: &Value) -> Option<&str> {
    match detail.get("type").and_then(Value::as_str) {
        Some("reasoning.text") => detail.get("text").and_then(Value::as_str),
        Some("reasoning.summary") => detail.get("summary").and_then(Value::as_str),
        _ => None,
    }
}

/// Streamed details joined into whole ones: a piece with the `index` and `type` of one before adds to
/// its text, summary or data and sets its other fields (a signature comes last, alone).
pub fn merge_details(details: &mut Vec<Value>, pieces: &[Value]) {
    for piece in pieces {
        let Some(fields) = piece.as_object() else { continue };
        let index = piece.get("index").and_then(Value::as_u64);
        let same = index.and_then(|i| {
            details
                .iter_mut()
                .find(|d| d.get("index").and_then(Value::as_u64) == Some(i) && d.get("type") == piece.get("type"))
        });
        let Some(whole) = same.and_then(Value::as_object_mut) else {
            details.push(piece.clone());
            continue;
        };
        for (field, value) in fields {
            match (field.as_str(), value, whole.get_mut(field)) {
                (_, Value::Null, _) => {}
                // (An encrypted block repeated whole is not doubled.)
                ("data", Value::String(more), Some(Value::String(so_far))) if so_far == more => {}
                ("text" | "summary" | "data", Value::String(more), Some(Value::String(so_far))) => {
                    so_far.push_str(more)
                }
                (_, Value::String(s), Some(_)) if s.is_empty() => {}
                _ => {
                    whole.insert(field.clone(), value.clone());
                }
            }
        }
    }
}

/// Anthropic's `thinking` for a chat request's `reasoning`: an explicit budget (`reasoning.max_tokens`)
/// turns it on with that budget; `enabled: true` without one asks for adaptive thinking (Claude 4.6 and
/// later decide how much to think), as OpenRouter reads it. An `effort` alone does not, since with
/// thinking on Anthropic refuses a tool-use turn whose earlier thinking is not sent back, and a client
/// that only names an effort (Codex) sends it back only if its history kept the reasoning items (it may not).
/// A `display` the client asked for (a Messages client's `thinking.display`) goes with it.
pub fn anthropic_thinking(reasoning: Option<&Value>) -> Option<Value> {
    let reasoning = reasoning?;
    let mut thinking = match (reasoning.get("enabled"), reasoning.get("max_tokens").and_then(Value::as_u64)) {
        (Some(Value::Bool(false)), _) => return None,
        (_, Some(budget)) => json!({"type": "enabled", "budget_tokens": budget}),
        (Some(Value::Bool(true)), None) => json!({"type": "adaptive"}),
        _ => return None,
    };
    if let Some(display) = reasoning.get("display").filter(|d| d.is_string()) {
        thinking["display"] = display.clone();
    }
    Some(thinking)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_details_join_into_whole_ones() {
        let mut whole = Vec::new();
        let pieces = [
            json!([{"type": "reasoning.summary", "summary": "Look", "format": "openai-responses-v1", "index": 0}]),
            json!([{"type": "reasoning.summary", "summary": "ing.", "format": "openai-responses-v1", "index": 0}]),
            json!([{"type": "reasoning.text", "text": "", "signature": "sig", "index": 0}]),
            json!([{"type": "reasoning.encrypted", "data": "gAAA", "id": "rs_1", "format": "openai-responses-v1", "index": 1}]),
            json!([{"type": "reasoning.encrypted", "data": "BBB", "index": 1}, "not a detail"]),
        ];
        for piece in &pieces {
            merge_details(&mut whole, piece.as_array().expect("list"));
        }
        assert_eq!(
            whole,
            vec![
                json!({"type": "reasoning.summary", "summary": "Looking.", "format": "openai-responses-v1", "index": 0}),
                json!({"type": "reasoning.text", "text": "", "signature": "sig", "index": 0}),
                json!({"type": "reasoning.encrypted", "data": "gAAABBB", "id": "rs_1", "format": "openai-responses-v1", "index": 1}),
            ]
        );
        assert_eq!(whole.iter().filter_map(readable).collect::<String>(), "Looking.");
    }

    #[test]
    fn thinking_blocks_survive_the_round_trip_through_details() {
        let blocks = vec![
            json!({"type": "thinking", "thinking": "Let me see.", "signature": "sig-1"}),
            json!({"type": "text", "text": "ignored"}),
            json!({"type": "redacted_thinking", "data": "opaque"}),
        ];
        let details = details_from_blocks(&blocks);
        assert_eq!(details.len(), 2);
        assert_eq!(text_of(&details), "Let me see.");
        assert_eq!(blocks_from_details(&details, true), vec![blocks[0].clone(), blocks[2].clone()]);
        // OpenAI's encrypted reasoning (through OpenRouter) is not Anthropic's redacted thinking.
        let foreign =
            [json!({"type": "reasoning.encrypted", "data": "gAAA", "format": "openai-responses-v1", "index": 0})];
        assert!(blocks_from_details(&foreign, false).is_empty());
    }

    #[test]
    fn streamed_pieces_of_one_index_are_joined_and_unsigned_thinking_is_dropped_for_anthropic() {
        let details = vec![
            json!({"type": "reasoning.text", "text": "Let ", "index": 0}),
            json!({"type": "reasoning.text", "text": "me see.", "index": 0}),
            json!({"type": "reasoning.text", "signature": "sig", "index": 0}),
            json!({"type": "reasoning.text", "text": "no signature", "index": 1}),
            json!({"type": "reasoning.summary", "summary": "s", "index": 2}),
        ];
        assert_eq!(
            blocks_from_details(&details, true),
            vec![json!({"type": "thinking", "thinking": "Let me see.", "signature": "sig"})]
        );
        assert_eq!(blocks_from_details(&details, false).len(), 2);
    }

    #[test]
    fn a_budget_or_an_explicit_enabled_turns_thinking_on() {
        assert_eq!(
            anthropic_thinking(Some(&json!({"max_tokens": 2048}))),
            Some(json!({"type": "enabled", "budget_tokens": 2048}))
        );
        assert_eq!(anthropic_thinking(Some(&json!({"effort": "high"}))), None);
        assert_eq!(anthropic_thinking(Some(&json!({"enabled": true}))), Some(json!({"type": "adaptive"})));
        assert_eq!(anthropic_thinking(Some(&json!({"max_tokens": 2048, "enabled": false}))), None);
        assert_eq!(anthropic_thinking(None), None);
    }
}
