//! Gemini's streamed answers (`:streamGenerateContent?alt=sse`, each event a
//! partial `GenerateContentResponse`) → OpenAI chunks. Text parts stream as
//! `delta.content`; a function call arrives whole and is sent as one tool-call
//! delta; the chunk with `finishReason` gives the finish chunk. Gemini has no
//! end event: `finish` is called when the upstream stream ends and gives the
//! last chunk, `choices: []` with the usage (from the latest `usageMetadata`).

use serde_json::{json, Value};

use super::response::{content_of, finish_reason, usage};
use crate::domain::chat::Usage;
use crate::providers::sse::{data_event, DataLines};
use crate::providers::translate::Chunks;

#[derive(Debug, Clone)]
pub struct StreamTranslator {
    chunks: Chunks,
    usage: Value,
    calls: usize,
    /// A `finishReason` arrived: the answer is complete.
    finished: bool,
}

impl StreamTranslator {
    pub fn new(model: &str, created: i64) -> Self {
        Self { chunks: Chunks::new(model, created), usage: Value::Null, calls: 0, finished: false }
    }

    fn chunk(&mut self, delta: Value, finish: Option<&str>) -> Value {
        self.chunks.delta(delta, finish)
    }

    pub fn usage(&self) -> Usage {
        usage(&self.usage)
    }

    /// Translates one streamed response.
    pub fn event(&mut self, data: &Value) -> Vec<Value> {
        if let Some(id) = data.get("responseId").and_then(Value::as_str) {
            self.chunks.id = id.to_string();
        }
        if let Some(meta) = data.get("usageMetadata") {
            self.usage = meta.clone();
        }
        let Some(candidate) = data.get("candidates").and_then(|c| c.get(0)) else {
            // A prompt Gemini blocked comes back as one event without candidates: the answer ends filtered.
            if super::response::prompt_blocked(data) && !self.finished {
                self.finished = true;
                return vec![self.chunk(json!({}), Some("content_filter"))];
            }
            return vec![];
        };
        let (text, calls) = content_of(candidate, self.calls, &self.chunks.id);
        let mut out = Vec::new();
        if !text.is_empty() {
            out.push(self.chunk(json!({ "content": text }), None));
        }
        for (i, mut call) in calls.into_iter().enumerate() {
            call["index"] = (self.calls + i).into();
            out.push(self.chunk(json!({ "tool_calls": [call] }), None));
        }
        self.calls += out.iter().filter(|c| c["choices"][0]["delta"].get("tool_calls").is_some()).count();
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finished = true;
            let finish = finish_reason(Some(reason), self.calls > 0);
            out.push(self.chunk(json!({}), Some(finish)));
        }
        out
    }

    /// The last chunk, once the upstream stream has ended.
    pub fn finish(&self) -> Value {
        self.chunks.usage(&self.usage())
    }
}

/// Gemini's SSE bytes in, OpenAI SSE bytes out; `end` adds the usage chunk and
/// `data: [DONE]` once the upstream stream has ended after a finish reason.
pub struct ToOpenAiSse {
    lines: DataLines,
    translator: StreamTranslator,
}

impl ToOpenAiSse {
    pub fn new(model: &str, created: i64) -> Self {
        Self { lines: DataLines::default(), translator: StreamTranslator::new(model, created) }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in self.lines.feed(bytes) {
            let Ok(event) = serde_json::from_slice::<Value>(payload.as_bytes()) else { continue };
            if let Some(error) = event.get("error") {
                let message = error.get("message").and_then(Value::as_str).unwrap_or("upstream error");
                let body = json!({"error": {"message": message, "type": "api_error", "code": "upstream_error"}});
                out.extend(data_event(&body.to_string()));
                continue;
            }
            for chunk in self.translator.event(&event) {
                out.extend(data_event(&chunk.to_string()));
            }
        }
        out
    }

    /// The usage Gemini has reported so far (its latest `usageMetadata`), for a stream cut before its end.
    pub fn usage_so_far(&self) -> Option<Usage> {
        Some(self.translator.usage()).filter(|u| self.translator.usage.is_object() && u.prompt_tokens > 0)
    }

    /// Nothing when no `finishReason` arrived: the stream was cut, and the relay reports it.
    pub fn end(&self) -> Vec<u8> {
        if !self.translator.finished {
            return Vec::new();
        }
        let mut out = data_event(&self.translator.finish().to_string());
        out.extend(data_event("[DONE]"));
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_blocked_prompt_ends_the_stream_filtered_with_its_usage() {
        let mut t = super::StreamTranslator::new("google/gemini-2.5-flash", 1);
        let blocked = serde_json::json!({"promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}, "responseId": "r1"});
        let out = t.event(&blocked);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["choices"][0]["finish_reason"], "content_filter");
        assert!(t.finished, "the answer is complete: usage and [DONE] follow");
        assert_eq!(t.usage().prompt_tokens, 7);
    }

    use crate::providers::sse::SseRelay;

    #[test]
    fn the_adapter_feeds_the_openai_relay_which_sees_usage_and_done() {
        let capture = include_str!("../../../tests/fixtures/gemini/stream_text.sse").as_bytes();
        let mut adapter = ToOpenAiSse::new("google/gemini-2.0-flash-001", 0);
        let mut relay = SseRelay::new();
        for piece in capture.chunks(5) {
            relay.feed(&adapter.feed(piece));
        }
        relay.feed(&adapter.end());
        let summary = relay.summary();
        let mut cut = ToOpenAiSse::new("m", 0);
        assert_eq!(cut.usage_so_far(), None);
        cut.feed(&capture[..capture.len() / 2]);
        assert!(cut.end().is_empty(), "a stream cut before its finish reason gets no clean end");
        let so_far = cut.usage_so_far().expect("the usage metadata of the chunks before the cut");
        assert_eq!(so_far.prompt_tokens, 12);
        assert!(summary.done);
        assert_eq!(summary.usage.as_ref().map(|u| (u.prompt_tokens, u.completion_tokens)), Some((12, 4)));
        assert_eq!(summary.content_bytes, "Hello, world!".len() as u64);
    }

    use super::*;

    #[test]
    fn text_streams_as_content_and_ends_with_finish_then_usage() {
        let mut t = StreamTranslator::new("google/gemini-2.0-flash-001", 0);
        let mut chunks = Vec::new();
        for line in include_str!("../../../tests/fixtures/gemini/stream_text.sse").lines() {
            if let Some(data) = line.strip_prefix("data: ") {
                chunks.extend(t.event(&serde_json::from_str(data).expect("event JSON")));
            }
        }
        chunks.push(t.finish());
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "Hello, world!");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[4]["choices"], json!([]));
        assert_eq!(
            (chunks[4]["usage"]["prompt_tokens"].as_u64(), chunks[4]["usage"]["completion_tokens"].as_u64()),
            (Some(12), Some(4))
        );
        assert!(chunks.iter().all(|c| c["id"] == "r-1"));
    }

    #[test]
    fn a_function_call_is_one_tool_call_delta_and_finishes_as_tool_calls() {
        let mut t = StreamTranslator::new("m", 0);
        let out = t.event(&json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]}, "finishReason": "STOP"}]}));
        assert_eq!(
            out[0]["choices"][0]["delta"]["tool_calls"][0]["function"],
            json!({"name": "f", "arguments": "{\"a\":1}"})
        );
        assert_eq!(out[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(out[1]["choices"][0]["finish_reason"], "tool_calls");
    }
}
