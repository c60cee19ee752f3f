//! OpenAI's own API, spoken directly: the same wire as OpenRouter's
//! (`openai_compat`), minus OpenRouter's extensions. OpenAI refuses fields it
//! does not know ("Unrecognized request argument"), so OpenRouter-only fields
//! are dropped, `reasoning.effort` becomes `reasoning_effort`, and streams ask
//! for the usage chunk. Answers name the served snapshot
//! (`gpt-4o-mini-2024-07-18`); the client gets back the id it asked for.

use serde_json::{json, Map, Value};

use super::sse::{data_event, DataLines};
use crate::domain::chat::ChatRequest;

/// OpenRouter's request fields that OpenAI's API does not accept.
pub const OPENROUTER_ONLY: &[&str] = &[
    "models",
    "provider",
    "transforms",
    "route",
    "reasoning",
    "usage",
    "plugins",
    "top_k",
    "top_a",
    "min_p",
    "repetition_penalty",
    "session_id",
    "debug",
];

/// The body for OpenAI's `/chat/completions`, under OpenAI's own model id.
pub fn chat_request(chat: &ChatRequest, native_model: &str) -> Vec<u8> {
    let mut body: Map<String, Value> = chat
        .body
        .iter()
        .filter(|(k, _)| !OPENROUTER_ONLY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    body.insert("model".into(), Value::from(native_model));
    // OpenAI's reasoning models refuse `max_tokens`; every chat model takes `max_completion_tokens`.
    if let Some(max) = body.remove("max_tokens") {
        body.entry("max_completion_tokens").or_insert(max);
    }
    // Prompt-caching breakpoints are Anthropic's (OpenAI caches by itself), thinking sent back is
    // OpenRouter's (`reasoning_details`), and a tool call's `extra_content` is Google's (a Gemini 3
    // thought signature): none is sent to OpenAI, which refuses fields it does not know.
    if let Some(Value::Array(messages)) = body.get_mut("messages") {
        for message in messages.iter_mut().filter_map(Value::as_object_mut) {
            message.remove("reasoning_details");
            message.remove("reasoning");
            for call in message.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(call) = call.as_object_mut() {
                    call.remove("extra_content");
                }
            }
        }
        for part in messages.iter_mut().filter_map(|m| m.get_mut("content")).filter_map(Value::as_array_mut).flatten() {
            if let Some(fields) = part.as_object_mut() {
                fields.remove("cache_control");
            }
        }
        lift_tool_images(messages);
    }
    let effort = chat.body.get("reasoning").and_then(|r| r.get("effort")).and_then(Value::as_str);
    if let (Some(effort), false) = (effort, body.contains_key("reasoning_effort")) {
        body.insert("reasoning_effort".into(), Value::from(effort));
    }
    if chat.stream {
        crate::domain::chat::ask_for_usage(&mut body);
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// OpenAI's tool messages take text only: the images and files of a turn's tool results (a Responses
/// `function_call_output` or a Messages `tool_result` may hold some) go in a user message right
/// after those results, each result saying so where they were.
fn lift_tool_images(messages: &mut Vec<Value>) {
    let is_image = |p: &Value| matches!(p.get("type").and_then(Value::as_str), Some("image_url" | "file"));
    let is_tool = |m: &Value| m.get("role").and_then(Value::as_str) == Some("tool");
    let tool_images =
        |m: &Value| is_tool(m) && m.get("content").and_then(Value::as_array).is_some_and(|p| p.iter().any(is_image));
    if !messages.iter().any(tool_images) {
        return;
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    let mut images = Vec::new();
    for mut message in std::mem::take(messages) {
        let tool = is_tool(&message);
        if !tool && !images.is_empty() {
            out.push(json!({"role": "user", "content": std::mem::take(&mut images)}));
        }
        if let Some(parts) = message.get_mut("content").and_then(Value::as_array_mut).filter(|_| tool) {
            let (lifted, text): (Vec<Value>, Vec<Value>) = std::mem::take(parts).into_iter().partition(is_image);
            *parts = text;
            if !lifted.is_empty() {
                parts.push(json!({"type": "text", "text": "[the images and files this tool returned are in the next message]"}));
                images.extend(lifted);
            }
        }
        out.push(message);
    }
    if !images.is_empty() {
        out.push(json!({"role": "user", "content": images}));
    }
    *messages = out;
}

/// A whole answer with `model` set to the client's id (the body unchanged when it is not JSON).
pub fn rename_model(body: Vec<u8>, model: &str) -> Vec<u8> {
    let Ok(mut answer) = serde_json::from_slice::<Value>(&body) else { return body };
    match answer.as_object_mut() {
        Some(fields) if fields.contains_key("model") => {
            fields.insert("model".into(), Value::from(model));
            serde_json::to_vec(&answer).unwrap_or(body)
        }
        _ => body,
    }
}

/// OpenAI's SSE in, the same events out with `model` renamed; comments and
/// other fields are dropped, `[DONE]` passes.
pub struct RenameModelSse {
    lines: DataLines,
    model: Value,
}

impl RenameModelSse {
    pub fn new(model: &str) -> Self {
        Self { lines: DataLines::default(), model: Value::from(model) }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in self.lines.feed(bytes) {
            match serde_json::from_slice::<Value>(payload.as_bytes()) {
                Ok(Value::Object(mut event)) => {
                    if event.contains_key("model") {
                        event.insert("model".into(), self.model.clone());
                    }
                    out.extend(data_event(&Value::Object(event).to_string()));
                }
                _ => out.extend(data_event(&payload)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(json: &str) -> ChatRequest {
        ChatRequest::parse(json.as_bytes()).expect("valid request")
    }

    fn body_of(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("JSON")
    }

    #[test]
    fn reasoning_models_get_max_completion_tokens_and_no_cache_breakpoints() {
        let req = chat(
            r#"{"model":"openai/o3","max_tokens":50,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]},
                {"role":"assistant","content":"ok","reasoning":"hm","reasoning_details":[{"type":"reasoning.text","text":"hm"}]}]}"#,
        );
        let body = body_of(&chat_request(&req, "o3"));
        assert_eq!(body["max_completion_tokens"], 50);
        assert!(body.get("max_tokens").is_none());
        assert!(body["messages"][0]["content"][0].get("cache_control").is_none());
        assert_eq!(
            body["messages"][1],
            serde_json::json!({"role": "assistant", "content": "ok"}),
            "thinking stays home"
        );
        let gemini_call = chat(
            r#"{"model":"openai/o3","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[
                {"id":"c","type":"function","function":{"name":"f","arguments":"{}"},"extra_content":{"google":{"thought_signature":"s"}}}]},
                {"role":"tool","tool_call_id":"c","content":"ok"}]}"#,
        );
        let body = body_of(&chat_request(&gemini_call, "o3"));
        assert!(body["messages"][1]["tool_calls"][0].get("extra_content").is_none(), "Google's field stays home");
    }

    #[test]
    fn openrouter_fields_are_dropped_and_openai_fields_kept() {
        let req = chat(
            r#"{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}],
                "models":["openai/gpt-4o"],"provider":{"order":["OpenAI"]},"transforms":["middle-out"],
                "usage":{"include":true},"top_k":3,"reasoning":{"effort":"low"},
                "temperature":0.2,"seed":7,"user":"u-1","response_format":{"type":"json_object"}}"#,
        );
        let body = body_of(&chat_request(&req, "gpt-4o-mini"));
        assert_eq!(body["model"], "gpt-4o-mini");
        for gone in ["models", "provider", "transforms", "usage", "top_k", "reasoning"] {
            assert!(body.get(gone).is_none(), "{gone} must not reach OpenAI");
        }
        assert_eq!(body["reasoning_effort"], "low");
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["seed"], 7);
        assert_eq!(body["user"], "u-1");
        assert_eq!(body["response_format"]["type"], "json_object");
        assert!(body.get("stream_options").is_none(), "only streams ask for the usage chunk");
    }

    #[test]
    fn a_tool_results_images_and_files_follow_it_in_a_user_message() {
        let req = chat(
            r#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"look"},
                {"role":"assistant","content":null,"tool_calls":[{"id":"a","type":"function","function":{"name":"see","arguments":"{}"}},
                    {"id":"b","type":"function","function":{"name":"see","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"a","content":[{"type":"text","text":"one"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]},
                {"role":"tool","tool_call_id":"b","content":[{"type":"text","text":"two"},{"type":"file","file":{"filename":"b.pdf","file_data":"data:application/pdf;base64,JVBE"}}]},
                {"role":"user","content":"and?"}]}"#,
        );
        let body = body_of(&chat_request(&req, "gpt-4o"));
        let roles: Vec<&str> =
            body["messages"].as_array().expect("messages").iter().filter_map(|m| m["role"].as_str()).collect();
        assert_eq!(
            roles,
            ["user", "assistant", "tool", "tool", "user", "user"],
            "after the turn's results, before what came next"
        );
        let first = &body["messages"][2]["content"];
        assert!(first.as_array().expect("parts").iter().all(|p| p["type"] == "text"), "{first}");
        assert_eq!(body["messages"][3]["content"][0]["text"], "two");
        assert_eq!(body["messages"][4]["content"][0]["image_url"]["url"], "data:image/png;base64,AA==");
        assert_eq!(body["messages"][4]["content"][1]["file"]["file_data"], "data:application/pdf;base64,JVBE");

        let plain = chat(r#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(body_of(&chat_request(&plain, "gpt-4o"))["messages"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn streams_always_ask_for_the_usage_chunk() {
        let req = chat(r#"{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(body_of(&chat_request(&req, "gpt-4o"))["stream_options"]["include_usage"], true);
        let req = chat(
            r#"{"model":"openai/gpt-4o","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"hi"}]}"#,
        );
        assert_eq!(
            body_of(&chat_request(&req, "gpt-4o"))["stream_options"]["include_usage"],
            true,
            "billing needs the usage chunk"
        );
    }

    #[test]
    fn answers_and_chunks_name_the_model_the_client_asked_for() {
        let fixture = include_bytes!("../../tests/fixtures/openai/chat.json");
        let renamed = body_of(&rename_model(fixture.to_vec(), "openai/gpt-4o-mini"));
        assert_eq!(renamed["model"], "openai/gpt-4o-mini");
        assert_eq!(renamed["choices"][0]["message"]["content"], "Hello! How can I help you today?");
        assert_eq!(rename_model(b"<html>".to_vec(), "x"), b"<html>");

        let stream = include_bytes!("../../tests/fixtures/openai/chat.sse");
        for size in [1, 7, stream.len()] {
            let mut sse = RenameModelSse::new("openai/gpt-4o-mini");
            let out: Vec<u8> = stream.chunks(size).flat_map(|c| sse.feed(c)).collect();
            let mut lines = DataLines::default();
            let events = lines.feed(&out);
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "chunks of {size}");
            let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| body_of(e.as_bytes())).collect();
            assert!(chunks.iter().all(|c| c["model"] == "openai/gpt-4o-mini"));
            assert_eq!(chunks.last().expect("usage chunk")["usage"]["total_tokens"], 19);
        }
    }
}
