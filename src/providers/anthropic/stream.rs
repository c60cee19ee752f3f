//! Anthropic's streamed events → OpenAI `chat.completion.chunk`s.
//!
//! Text deltas become `delta.content`; a `tool_use` block becomes a tool call
//! whose first chunk carries its id and name and whose `input_json_delta`
//! pieces stream as `function.arguments`. Events with no OpenAI equivalent
//! (`ping`, `content_block_stop`, empty JSON pieces) produce nothing. The
//! end (`message_stop`) produces the finish chunk and, as OpenRouter does, a
//! last chunk with `choices: []` and the usage (cache tokens counted as in
//! `response::usage`); the SSE writer then sends `data: [DONE]`.

use serde_json::{json, Value};

use super::response::{finish_reason, stopped_by_sequence, usage};
use crate::domain::chat::Usage;
use crate::providers::reasoning;
use crate::providers::sse::{data_event, DataLines};
use crate::providers::translate::Chunks;

/// What one Anthropic event turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Translated {
    /// OpenAI chunks to send (possibly none).
    Chunks(Vec<Value>),
    /// The provider reported an error mid-stream: `(type, message)`.
    Error(String, String),
}

/// The state of one streamed answer.
#[derive(Debug, Clone)]
pub struct StreamTranslator {
    chunks: Chunks,
    /// Anthropic's `message_start` usage (input and cache tokens).
    start_usage: Value,
    output_tokens: u64,
    stop_reason: Option<String>,
    /// The stop sequence the answer ended at (`message_delta`'s).
    stop_sequence: Option<Value>,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_calls: Vec<(u64, usize)>,
    /// Thinking blocks so far (each one `reasoning_details` index).
    thinking_blocks: usize,
}

impl StreamTranslator {
    /// `model` is the id the client asked for; `created` the answer's Unix time.
    pub fn new(model: &str, created: i64) -> Self {
        Self {
            chunks: Chunks::new(model, created),
            start_usage: Value::Null,
            output_tokens: 0,
            stop_reason: None,
            stop_sequence: None,
            tool_calls: Vec::new(),
            thinking_blocks: 0,
        }
    }

    /// A chunk carrying one piece of thinking (`reasoning_details`, and its text as `reasoning`).
    fn reasoning_chunk(&mut self, text: Option<&str>, detail: Value) -> Value {
        let mut delta = json!({ "reasoning_details": [detail] });
        if let Some(text) = text {
            delta["reasoning"] = text.into();
        }
        self.chunk(delta, None)
    }

    fn chunk(&mut self, delta: Value, finish: Option<&str>) -> Value {
        self.chunks.delta(delta, finish)
    }

    /// The usage so far: input and cache tokens from the start, output from the last `message_delta`.
    pub fn usage(&self) -> Usage {
        let mut u = self.start_usage.clone();
        if u.is_object() {
            u["output_tokens"] = self.output_tokens.into();
        }
        usage(&u)
    }

    /// Translates one event (`data` parsed as JSON).
    pub fn event(&mut self, data: &Value) -> Translated {
        let kind = data.get("type").and_then(Value::as_str).unwrap_or_default();
        let chunks = match kind {
            "message_start" => {
                let message = data.get("message").cloned().unwrap_or_default();
                self.chunks.id = message.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
                self.start_usage = message.get("usage").cloned().unwrap_or_else(|| json!({}));
                self.output_tokens = self.start_usage.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
                vec![]
            }
            "content_block_start" => {
                let block = data.get("content_block").cloned().unwrap_or_default();
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {}
                    Some("thinking") => {
                        self.thinking_blocks += 1;
                        return Translated::Chunks(vec![]);
                    }
                    Some("redacted_thinking") => {
                        self.thinking_blocks += 1;
                        let data = block.get("data").and_then(Value::as_str).unwrap_or_default();
                        let detail = reasoning::encrypted_detail(data, self.thinking_blocks - 1);
                        return Translated::Chunks(vec![self.reasoning_chunk(None, detail)]);
                    }
                    _ => return Translated::Chunks(vec![]),
                }
                let index = self.tool_calls.len();
                self.tool_calls.push((data.get("index").and_then(Value::as_u64).unwrap_or(0), index));
                let call = json!({
                    "index": index, "id": block.get("id").cloned().unwrap_or_default(), "type": "function",
                    "function": { "name": block.get("name").cloned().unwrap_or_default(), "arguments": "" },
                });
                vec![self.chunk(json!({ "tool_calls": [call] }), None)]
            }
            "content_block_delta" => {
                let delta = data.get("delta").cloned().unwrap_or_default();
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or_default();
                        vec![self.chunk(json!({ "content": text }), None)]
                    }
                    Some("input_json_delta") => {
                        let piece = delta.get("partial_json").and_then(Value::as_str).unwrap_or_default();
                        let block = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                        match self.tool_calls.iter().find(|(b, _)| *b == block) {
                            Some(&(_, index)) if !piece.is_empty() => {
                                let call = json!({ "index": index, "function": { "arguments": piece } });
                                vec![self.chunk(json!({ "tool_calls": [call] }), None)]
                            }
                            _ => vec![],
                        }
                    }
                    Some("thinking_delta") => {
                        let text = delta.get("thinking").and_then(Value::as_str).unwrap_or_default();
                        let detail = reasoning::text_detail(text, None, self.thinking_blocks.saturating_sub(1));
                        vec![self.reasoning_chunk(Some(text), detail)]
                    }
                    Some("signature_delta") => {
                        let signature = delta.get("signature").and_then(Value::as_str).unwrap_or_default();
                        let detail =
                            reasoning::text_detail("", Some(signature), self.thinking_blocks.saturating_sub(1));
                        vec![self.reasoning_chunk(None, detail)]
                    }
                    _ => vec![], // deltas added later
                }
            }
            "message_delta" => {
                if let Some(reason) = data.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_string());
                }
                if let Some(sequence) = data.pointer("/delta/stop_sequence").filter(|s| s.is_string()) {
                    self.stop_sequence = Some(sequence.clone());
                }
                if let Some(usage) = data.get("usage") {
                    if let Some(n) = usage.get("output_tokens").and_then(Value::as_u64) {
                        self.output_tokens = n;
                    }
                    // Its input and cache counts are cumulative too (they can grow within one message): the
                    // larger of the start's and the delta's.
                    for field in ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"] {
                        let Some(n) = usage.get(field).and_then(Value::as_u64) else { continue };
                        let at_start = self.start_usage.get(field).and_then(Value::as_u64).unwrap_or(0);
                        if n > at_start && self.start_usage.is_object() {
                            self.start_usage[field] = n.into();
                        }
                    }
                }
                vec![]
            }
            "message_stop" => {
                let finish = finish_reason(self.stop_reason.as_deref());
                let mut last = self.chunk(json!({}), Some(finish));
                let reason = self.stop_reason.as_deref().map(Value::from);
                if let Some(choice) = last.pointer_mut("/choices/0") {
                    stopped_by_sequence(choice, reason.as_ref(), self.stop_sequence.as_ref());
                }
                vec![last, self.chunks.usage(&self.usage())]
            }
            "error" => {
                let error = data.get("error").cloned().unwrap_or_default();
                let text = |f: &str| error.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
                return Translated::Error(text("type"), text("message"));
            }
            _ => vec![], // ping, content_block_stop, and events added later
        };
        Translated::Chunks(chunks)
    }
}

/// Anthropic's SSE bytes in, OpenAI SSE bytes out (ending `data: [DONE]`), so
/// the OpenAI relay (`sse::SseRelay`) meters and forwards them unchanged.
pub struct ToOpenAiSse {
    lines: DataLines,
    translator: StreamTranslator,
    ended: bool,
}

impl ToOpenAiSse {
    pub fn new(model: &str, created: i64) -> Self {
        Self { lines: DataLines::default(), translator: StreamTranslator::new(model, created), ended: false }
    }

    /// The usage Anthropic has reported so far (from `message_start` on: the prompt's and the cache's
    /// tokens, and the output so far), for a stream cut before its end.
    pub fn usage_so_far(&self) -> Option<Usage> {
        // Only once it names the prompt's tokens: a start without them tells nothing to charge.
        Some(self.translator.usage()).filter(|u| self.translator.start_usage.is_object() && u.prompt_tokens > 0)
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in self.lines.feed(bytes) {
            if self.ended {
                break;
            }
            let Ok(event) = serde_json::from_slice::<Value>(payload.as_bytes()) else { continue };
            let stop = event.get("type").and_then(Value::as_str) == Some("message_stop");
            match self.translator.event(&event) {
                Translated::Chunks(chunks) => {
                    for chunk in chunks {
                        out.extend(data_event(&chunk.to_string()));
                    }
                }
                Translated::Error(kind, message) => {
                    let error = json!({"error": {"message": message, "type": "api_error", "code": "upstream_error", "metadata": {"provider_error_type": kind}}});
                    out.extend(data_event(&error.to_string()));
                    out.extend(data_event("[DONE]"));
                    self.ended = true;
                }
            }
            if stop {
                out.extend(data_event("[DONE]"));
                self.ended = true;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::providers::sse::SseRelay;

    #[test]
    fn the_adapter_feeds_the_openai_relay_which_sees_usage_done_and_content() {
        let capture = include_str!("../../../tests/fixtures/anthropic/stream_tool_use.sse").as_bytes();
        for size in [1, 7, 64, capture.len()] {
            let mut adapter = ToOpenAiSse::new("anthropic/claude-3-5-haiku-20241022", 0);
            let mut relay = SseRelay::new();
            let mut client = Vec::new();
            for piece in capture.chunks(size) {
                client.extend(relay.feed(&adapter.feed(piece)));
            }
            let summary = relay.summary();
            assert!(summary.done, "ends with [DONE]");
            assert_eq!(summary.usage.as_ref().map(|u| (u.prompt_tokens, u.completion_tokens)), Some((572, 89)));
            assert!(summary.content_bytes > 0);
            let text = String::from_utf8(client).expect("utf-8");
            assert!(text.ends_with("data: [DONE]\n\n"));
            assert!(!text.contains("ping"), "Anthropic-only events never reach the client");
        }
    }

    #[test]
    fn a_mid_stream_error_becomes_an_error_event_then_done() {
        let mut adapter = ToOpenAiSse::new("m", 0);
        let out = adapter.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with("data: {\"error\":"));
        assert!(text.contains("Overloaded"));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    use super::*;

    /// The `data:` payloads of an SSE capture.
    fn events(capture: &str) -> Vec<Value> {
        capture
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).expect("event JSON"))
            .collect()
    }

    fn run(capture: &str) -> Vec<Value> {
        let mut t = StreamTranslator::new("anthropic/claude-3-5-haiku-20241022", 1_764_460_800);
        let mut out = Vec::new();
        for e in events(capture) {
            match t.event(&e) {
                Translated::Chunks(chunks) => out.extend(chunks),
                Translated::Error(kind, message) => panic!("unexpected error {kind}: {message}"),
            }
        }
        out
    }

    #[test]
    fn a_streamed_tool_call_becomes_openai_chunks_ending_with_usage() {
        let chunks = run(include_str!("../../../tests/fixtures/anthropic/stream_tool_use.sse"));
        let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"].get(0).map(|ch| &ch["delta"])).collect();
        assert_eq!(
            deltas[0],
            &json!({"role": "assistant", "content": "Okay, let"}),
            "the role rides on the first chunk"
        );
        assert_eq!(deltas[1], &json!({"content": "'s check."}));
        assert_eq!(
            deltas[2],
            &json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]})
        );
        let arguments: String =
            deltas[3..].iter().filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str()).collect();
        assert_eq!(arguments, r#"{"location": "Paris"}"#);
        assert_eq!(chunks.len(), 7, "ping, empty JSON pieces and block stops produce nothing");
        let finish = &chunks[5];
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        let last = &chunks[6];
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], 572, "cache reads are part of the prompt");
        assert_eq!(last["usage"]["completion_tokens"], 89);
        assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
        assert!(chunks
            .iter()
            .all(|c| c["id"] == "msg_014p7gG3wDgGV9EUtLvnow3U" && c["model"] == "anthropic/claude-3-5-haiku-20241022"));
    }

    #[test]
    fn streamed_thinking_becomes_reasoning_details_that_go_back_as_the_same_block() {
        let mut t = StreamTranslator::new("m", 0);
        let mut chunks = Vec::new();
        for e in [
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "see."}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "xx"}}),
        ] {
            if let Translated::Chunks(c) = t.event(&e) {
                chunks.extend(c);
            }
        }
        let details: Vec<Value> = chunks
            .iter()
            .flat_map(|c| c["choices"][0]["delta"]["reasoning_details"].as_array().cloned().unwrap_or_default())
            .collect();
        assert_eq!(
            reasoning::blocks_from_details(&details, true),
            vec![
                json!({"type": "thinking", "thinking": "Let me see.", "signature": "sig"}),
                json!({"type": "redacted_thinking", "data": "xx"})
            ]
        );
        assert_eq!(chunks[0]["choices"][0]["delta"]["reasoning"], "Let me ");
    }

    #[test]
    fn an_error_event_is_reported() {
        let mut t = StreamTranslator::new("m", 0);
        let e = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        assert_eq!(t.event(&e), Translated::Error("overloaded_error".into(), "Overloaded".into()));
    }

    #[test]
    fn a_cut_stream_still_knows_its_usage_so_far() {
        let mut t = StreamTranslator::new("m", 0);
        t.event(&json!({"type": "message_start", "message": {"id": "x", "usage": {"input_tokens": 10, "output_tokens": 1}}}));
        t.event(&json!({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 5}}));
        let u = t.usage();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (10, 5));
    }

    #[test]
    fn the_delta_s_cumulative_input_counts_win_when_larger() {
        let mut t = StreamTranslator::new("m", 0);
        t.event(&json!({"type": "message_start", "message": {"id": "x", "usage": {"input_tokens": 472, "output_tokens": 1}}}));
        t.event(&json!({"type": "message_delta", "delta": {}, "usage": {"input_tokens": 900, "cache_read_input_tokens": 100, "output_tokens": 5}}));
        let u = t.usage();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens),
            (1000, 5),
            "the prompt as the delta counted it, cache included"
        );
        t.event(&json!({"type": "message_delta", "delta": {}, "usage": {"input_tokens": 3, "output_tokens": 6}}));
        assert_eq!(t.usage().prompt_tokens, 1000, "never less than counted before");
    }

    #[test]
    fn a_stream_cut_after_its_start_tells_the_prompt_and_cache_it_used() {
        let mut adapter = super::ToOpenAiSse::new("m", 0);
        assert_eq!(adapter.usage_so_far(), None, "nothing heard yet");
        let start = json!({"type": "message_start", "message": {"id": "x", "usage": {"input_tokens": 10, "cache_creation_input_tokens": 120_000, "output_tokens": 1}}});
        let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}});
        adapter.feed(
            format!("event: message_start\ndata: {start}\n\nevent: content_block_delta\ndata: {delta}\n\n").as_bytes(),
        );
        let u = adapter.usage_so_far().expect("the start's usage");
        assert_eq!((u.prompt_tokens, u.tokens().cache_write, u.completion_tokens), (120_010, 120_000, 1));
    }
}
