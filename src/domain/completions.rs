//! Legacy completions (`POST /v1/completions`: `prompt` → `choices[].text`) as a
//! dialect of chat: the request becomes a chat request with the prompt as the one
//! user message, served, billed and routed like any chat; the answer and each
//! stream chunk are turned back into completion shapes. Pure and host-tested.
//!
//! Lost in translation (refused with a 400 naming the field, never silently
//! dropped): several prompts in one request, token-id prompts, `echo`, `suffix`,
//! `best_of`, `logprobs` and tools (a tool call is no text). Every other field
//! passes on as on chat. A chat model's template wraps the prompt.

use serde_json::{Map, Value};

use super::chat::ChatRequest;
use super::InvalidRequest;

/// OpenAI's default output bound for legacy completions.
pub const DEFAULT_MAX_TOKENS: u64 = 16;

/// Fields of a completion request that are not chat's: the prompt (which becomes the one message) and those
/// refused unless off. Every other field passes on to the chat as it is (OpenRouter's `reasoning`, `top_k`,
/// `provider`, …), as on chat completions.
const NOT_CHAT: &[&str] = &["prompt", "echo", "suffix", "best_of", "logprobs"];

/// Chat fields a completion cannot carry: `messages` (the prompt is the one message), and tools (a tool call
/// is no text). Refused by name unless off (`null`, an empty list, `"none"`).
const NO_TEXT: &[&str] = &["messages", "tools", "functions", "tool_choice", "function_call"];

/// The chat request a completion request stands for.
pub fn to_chat(bytes: &[u8]) -> Result<ChatRequest, InvalidRequest> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| InvalidRequest::new(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(InvalidRequest::new("request body must be a JSON object"));
    };
    for field in ["echo", "suffix", "best_of", "logprobs"] {
        // Each field's "off" value passes: `false`, one candidate (`best_of: 1`, OpenAI's default), no suffix
        // (`suffix: ""`).
        let off = |v: &Value| {
            v.is_null()
                || v == &Value::Bool(false)
                || (field == "best_of" && v.as_u64() == Some(1))
                || (field == "suffix" && v.as_str() == Some(""))
        };
        if body.get(field).is_some_and(|v| !off(v)) {
            return Err(InvalidRequest::param(
                format!("`{field}` is not supported: completions are served through chat models"),
                field,
            ));
        }
    }
    let off = |v: &Value| v.is_null() || v.as_array().is_some_and(Vec::is_empty) || v.as_str() == Some("none");
    if let Some(field) = NO_TEXT.iter().find(|f| body.get(**f).is_some_and(|v| !off(v))) {
        return Err(InvalidRequest::param(
            format!("`{field}` is not supported on completions: use /v1/chat/completions"),
            *field,
        ));
    }
    let prompt = match body.get("prompt") {
        Some(Value::String(p)) => p.clone(),
        Some(Value::Array(list)) if list.len() == 1 && list[0].is_string() => {
            list[0].as_str().unwrap_or_default().into()
        }
        Some(_) => return Err(InvalidRequest::param("`prompt` must be one string (one prompt per request)", "prompt")),
        None => return Err(InvalidRequest::param("you must provide a `prompt` parameter", "prompt")),
    };
    if prompt.is_empty() {
        return Err(InvalidRequest::param("`prompt` must not be empty", "prompt"));
    }
    let mut chat: Map<String, Value> = body.into_iter().filter(|(k, _)| !NOT_CHAT.contains(&k.as_str())).collect();
    chat.insert("messages".into(), serde_json::json!([{ "role": "user", "content": prompt }]));
    let bound = |field: &str| chat.get(field).is_some_and(|v| !v.is_null());
    if !bound("max_tokens") && !bound("max_completion_tokens") {
        chat.insert("max_tokens".into(), Value::from(DEFAULT_MAX_TOKENS));
    }
    ChatRequest::parse(&serde_json::to_vec(&chat).unwrap_or_default())
}

/// A chat completion answer as a text completion.
pub fn answer_from_chat(body: Vec<u8>) -> Vec<u8> {
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(&body) else { return body };
    as_text_completion(&mut answer, "message");
    serde_json::to_vec(&answer).unwrap_or(body)
}

/// Stream bytes (whole SSE lines) of chat chunks as text completion chunks; other lines unchanged.
pub fn stream_from_chat(bytes: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&bytes);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (content, newline) = line.strip_suffix('\n').map_or((line, ""), |l| (l, "\n"));
        // `data:` then optional white space, as the SSE format reads it (OpenRouter relays some lines unspaced).
        match content.strip_prefix("data:").map(str::trim_start).filter(|d| d.starts_with('{')) {
            Some(data) => {
                out.push_str("data: ");
                out.push_str(&chunk_from_chat(data));
            }
            None => out.push_str(content),
        }
        out.push_str(newline);
    }
    out.into_bytes()
}

fn chunk_from_chat(data: &str) -> String {
    let Ok(Value::Object(mut chunk)) = serde_json::from_slice::<Value>(data.as_bytes()) else {
        return data.to_string();
    };
    if chunk.contains_key("error") {
        return data.to_string();
    }
    as_text_completion(&mut chunk, "delta");
    serde_json::to_string(&chunk).unwrap_or_else(|_| data.to_string())
}

/// A chat answer or chunk as a text completion: each choice's `message` (or `delta`) content becomes `text`.
fn as_text_completion(answer: &mut Map<String, Value>, carrier: &str) {
    answer.insert("object".into(), Value::from("text_completion"));
    for choice in answer.get_mut("choices").and_then(Value::as_array_mut).into_iter().flatten() {
        let Some(fields) = choice.as_object_mut() else { continue };
        // A refusal (a chat answer's own field) is the text: a completion has nowhere else to say it.
        let said = |c: &Value, field: &str| c.get(field).and_then(Value::as_str).map(String::from);
        let text = fields.remove(carrier).and_then(|c| said(&c, "content").or_else(|| said(&c, "refusal")));
        fields.insert("text".into(), Value::from(text.unwrap_or_default()));
        fields.entry("logprobs").or_insert(Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_becomes_one_user_message_with_the_legacy_default_bound() {
        let chat = to_chat(br#"{"model":"m","prompt":"Say hi","temperature":0.2,"stream":true}"#).expect("valid");
        assert_eq!(chat.body["messages"][0]["content"], "Say hi");
        assert_eq!(chat.max_tokens, Some(DEFAULT_MAX_TOKENS));
        assert!(chat.stream);
        assert_eq!(chat.body["temperature"], 0.2);
        assert!(chat.body.get("prompt").is_none());
    }

    #[test]
    fn other_fields_pass_on_as_on_chat() {
        let chat =
            to_chat(br#"{"model":"m","prompt":"x","reasoning":{"effort":"low"},"top_k":4,"max_completion_tokens":90}"#)
                .expect("valid");
        assert_eq!(chat.body["reasoning"]["effort"], "low");
        assert_eq!(chat.body["top_k"], 4);
        assert_eq!(chat.max_tokens, Some(90), "a bound the client set is no default's business");
        assert_eq!(chat.body["messages"].as_array().map(Vec::len), Some(1), "the prompt is the one message");
        assert_eq!(chat.body["messages"][0]["content"], "x");
    }

    #[test]
    fn what_cannot_be_translated_is_refused_by_name() {
        for (json, param) in [
            (r#"{"model":"m"}"#, "prompt"),
            (r#"{"model":"m","prompt":["a","b"]}"#, "prompt"),
            (r#"{"model":"m","prompt":[1,2]}"#, "prompt"),
            (r#"{"model":"m","prompt":"x","echo":true}"#, "echo"),
            (r#"{"model":"m","prompt":"x","suffix":"y"}"#, "suffix"),
            (r#"{"model":"m","prompt":"x","logprobs":2}"#, "logprobs"),
            (r#"{"model":"m","prompt":"x","best_of":2}"#, "best_of"),
            (r#"{"model":"m","prompt":"x","tools":[{"type":"function"}]}"#, "tools"),
            (r#"{"model":"m","prompt":"x","messages":[{"role":"user","content":"y"}]}"#, "messages"),
        ] {
            assert_eq!(to_chat(json.as_bytes()).err().and_then(|e| e.param).as_deref(), Some(param), "{json}");
        }
        // Their "off" values are what SDKs send by default.
        assert!(to_chat(
            br#"{"model":"m","prompt":"x","best_of":1,"echo":false,"logprobs":null,"suffix":"","tools":[],"tool_choice":"none"}"#
        )
        .is_ok());
    }

    #[test]
    fn answers_and_chunks_come_back_as_text() {
        let answer = br#"{"id":"gen-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let out: Value = serde_json::from_slice(&answer_from_chat(answer.to_vec())).expect("json");
        assert_eq!(out["object"], "text_completion");
        assert_eq!(out["choices"][0]["text"], "Hi!");
        assert!(out["choices"][0].get("message").is_none());
        assert_eq!(out["usage"]["completion_tokens"], 2);
        let refused = br#"{"id":"gen-2","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}"#;
        let out: Value = serde_json::from_slice(&answer_from_chat(refused.to_vec())).expect("json");
        assert_eq!(out["choices"][0]["text"], "I can't help with that.", "a refusal is said, not an empty text");
        let stream =
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"He\"}}]}\n\n: keep-alive\n\ndata: [DONE]\n\n";
        let text = String::from_utf8(stream_from_chat(stream.to_vec())).expect("utf8");
        assert!(text.starts_with("data: {"), "{text}");
        assert!(text.contains("\"text\":\"He\"") && text.contains("text_completion"), "{text}");
        assert!(text.contains(": keep-alive\n\n") && text.ends_with("data: [DONE]\n\n"));
        let unspaced = stream_from_chat(b"data:{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n".to_vec());
        assert!(String::from_utf8(unspaced).expect("utf8").contains("text_completion"), "`data:` without its space");
    }
}
