//! What the translators to other providers (Anthropic, Gemini) share: reading
//! the parts of an OpenAI request, and writing OpenAI stream chunks; and what
//! the translators from other APIs (Responses, Messages) share: naming a chat
//! field in an error as the client wrote it.

use serde_json::{json, Map, Value};

use crate::domain::InvalidRequest;

/// `text` with every chat message field in it (`messages[m]…`) named by `field` (as it stays when `None`).
pub fn rename_message_fields(text: &str, field: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("messages[") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let path_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']');
        let end = tail.find(|c: char| !path_chars(c)).unwrap_or(tail.len());
        let path = &tail[..end];
        out.push_str(&field(path).unwrap_or_else(|| path.to_string()));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `messages[m]` and what follows it in a chat field's path: `(m, rest)`.
pub fn message_index(param: &str) -> Option<(usize, &str)> {
    let (m, rest) = param.strip_prefix("messages[")?.split_once(']')?;
    Some((m.parse().ok()?, rest))
}

/// `[k]` and what follows it at the start of `rest`, after `prefix` (`.content`, `.tool_calls`).
pub fn indexed<'a>(rest: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let (k, after) = rest.strip_prefix(prefix)?.strip_prefix('[')?.split_once(']')?;
    Some((k.parse().ok()?, after))
}

/// The text of a string, or of the text parts of an array (other parts ignored).
pub fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Appends parts to the last turn when it has the same role, else starts a turn
/// (both providers want user and assistant turns to alternate).
pub fn push_turn<R: PartialEq>(turns: &mut Vec<(R, Vec<Value>)>, role: R, parts: Vec<Value>) {
    match turns.last_mut() {
        Some((last, content)) if *last == role => content.extend(parts),
        _ => turns.push((role, parts)),
    }
}

/// The URL of an `image_url` part (the object form or the bare string).
pub fn image_url(part: &Value) -> &str {
    part.get("image_url").and_then(|u| u.get("url").or(Some(u))).and_then(Value::as_str).unwrap_or_default()
}

/// `data:<type>;base64,<data>` as (type, data).
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    Some((meta.strip_suffix(";base64")?, data))
}

/// One assistant tool call: its id, function name and parsed arguments.
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// A chat message a provider's request cannot carry, found while building it: named by its field
/// (`messages[i].role`, `messages[i].content`, `messages[i].content[j]`), in the message too.
pub enum Unfit<'a> {
    Role(&'a str),
    Content,
    Part(usize, Option<&'a str>),
}

pub fn unfit(i: usize, what: Unfit) -> InvalidRequest {
    let (param, why) = match what {
        Unfit::Role(role) => (format!("messages[{i}].role"), format!("is `{role}`, a role this model does not take")),
        Unfit::Content => (format!("messages[{i}].content"), "must be a string or an array".to_string()),
        Unfit::Part(j, kind) => (
            format!("messages[{i}].content[{j}]"),
            format!("is a content part of type `{}`, which this model does not take", kind.unwrap_or("?")),
        ),
    };
    InvalidRequest::param(format!("`{param}` {why}"), param)
}

/// Refuses a request whose JSON inside strings (tool calls' arguments, which the direct routes parse; tool
/// results too when `results`, as the Gemini route parses them) would take more than `parsed_size::MAX_BYTES`
/// parsed, all together: the body's own check skips strings, and a string of small objects parses to many
/// times its bytes.
pub fn check_nested_json(body: &Map<String, Value>, results: bool) -> Result<(), InvalidRequest> {
    let messages = body.get("messages").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let mut parsed = 0usize;
    for message in messages {
        let calls = message.get("tool_calls").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let estimate = |text: &str| crate::domain::parsed_size::estimate(text.as_bytes());
        let arguments = calls.iter().filter_map(|c| c.get("function")?.get("arguments")?.as_str());
        parsed = arguments.map(estimate).fold(parsed, usize::saturating_add);
        let role = message.get("role").and_then(Value::as_str);
        if results && matches!(role, Some("tool" | "function")) {
            parsed = parsed.saturating_add(estimate(&text_of(message.get("content"))));
        }
    }
    if parsed > crate::domain::parsed_size::MAX_BYTES {
        return Err(InvalidRequest::param(
            "the tool calls' arguments and tool results hold too many JSON values or objects to translate",
            "messages",
        ));
    }
    Ok(())
}

/// The tool calls of the assistant message at `messages[i]`; arguments must be JSON.
pub fn tool_calls(message: &Value, i: usize) -> Result<Vec<ToolCall>, InvalidRequest> {
    let Some(calls) = message.get("tool_calls").and_then(Value::as_array) else { return Ok(Vec::new()) };
    calls
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let function = call.get("function").cloned().unwrap_or_default();
            let raw = function.get("arguments").and_then(Value::as_str).unwrap_or("{}");
            let arguments = serde_json::from_slice((if raw.trim().is_empty() { "{}" } else { raw }).as_bytes())
                .map_err(|_| {
                    let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
                    InvalidRequest::param(format!("`{param}` must be JSON"), param)
                })?;
            Ok(ToolCall {
                id: call.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                name: function.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                arguments,
            })
        })
        .collect()
}

/// `stop` (a string or a list) as a list, when there is one.
pub fn stop_sequences(body: &Map<String, Value>) -> Option<Value> {
    match body.get("stop") {
        Some(Value::String(s)) => Some(json!([s])),
        Some(Value::Array(list)) if !list.is_empty() => Some(list.clone().into()),
        _ => None,
    }
}

/// One tool call in OpenAI's answer form (`arguments` as JSON text).
pub fn tool_call(id: Value, name: Value, arguments: Option<&Value>) -> Value {
    json!({
        "id": id, "type": "function",
        "function": { "name": name, "arguments": arguments.map_or_else(|| "{}".to_string(), Value::to_string) },
    })
}

/// A whole OpenAI answer from a provider's id, text, tool calls, finish reason and usage.
pub fn chat_completion(
    id: Value,
    model: &str,
    created: i64,
    text: String,
    tool_calls: Vec<Value>,
    finish: &str,
    usage: &crate::domain::chat::Usage,
) -> Value {
    let content = if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { text.into() };
    let mut reply = json!({ "role": "assistant", "content": content });
    if !tool_calls.is_empty() {
        reply["tool_calls"] = tool_calls.into();
    }
    json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{ "index": 0, "message": reply, "finish_reason": finish }],
        "usage": usage,
    })
}

/// Writes the OpenAI chunks of one streamed answer; the first carries the role.
#[derive(Debug, Clone)]
pub struct Chunks {
    pub id: String,
    pub model: String,
    pub created: i64,
    role_sent: bool,
}

impl Chunks {
    pub fn new(model: &str, created: i64) -> Self {
        Self { id: String::new(), model: model.to_string(), created, role_sent: false }
    }

    pub fn delta(&mut self, mut delta: Value, finish: Option<&str>) -> Value {
        if !self.role_sent {
            delta["role"] = "assistant".into();
            self.role_sent = true;
        }
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    }

    /// The last chunk: no choices, the usage.
    pub fn usage(&self, usage: &crate::domain::chat::Usage) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [], "usage": usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_inside_strings_is_bounded_all_together() {
        // Each string alone is within the bound; together they are past it.
        let some = format!("[{}]", vec![r#"{"a":0}"#; 25_000].join(","));
        assert!(crate::domain::parsed_size::estimate(some.as_bytes()) < crate::domain::parsed_size::MAX_BYTES);
        let call = |args: &str| json!({ "role": "assistant", "tool_calls": [{ "function": { "name": "f", "arguments": args } }] });
        let result = json!({ "role": "tool", "content": some });
        let body = json!({ "messages": [call(&some), result.clone(), call(&some)] });
        let body = body.as_object().expect("object");
        assert_eq!(check_nested_json(body, false).err().and_then(|e| e.param).as_deref(), Some("messages"));
        // Tool results count only where they are parsed (Gemini): two calls and a result for it, one call alone not.
        let one = json!({ "messages": [call(&some), result.clone(), result] });
        assert!(check_nested_json(one.as_object().expect("object"), false).is_ok());
        assert!(check_nested_json(one.as_object().expect("object"), true).is_err());
    }

    #[test]
    fn reads_request_parts() {
        assert_eq!(
            text_of(Some(&json!([{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b"}]))),
            "a\nb"
        );
        assert_eq!(data_url("data:image/png;base64,AAA"), Some(("image/png", "AAA")));
        assert_eq!(data_url("https://x.test/a.png"), None);
        assert_eq!(image_url(&json!({"type":"image_url","image_url":"https://x"})), "https://x");
        let mut body = Map::new();
        body.insert("stop".into(), json!("END"));
        assert_eq!(stop_sequences(&body), Some(json!(["END"])));
        let message = json!({"tool_calls":[{"id":"c","function":{"name":"f","arguments":""}}]});
        let calls = tool_calls(&message, 0).expect("parses");
        assert_eq!((calls[0].id.as_str(), calls[0].name.as_str(), &calls[0].arguments), ("c", "f", &json!({})));
        let mut turns = Vec::new();
        push_turn(&mut turns, "user", vec![json!(1)]);
        push_turn(&mut turns, "user", vec![json!(2)]);
        push_turn(&mut turns, "model", vec![json!(3)]);
        assert_eq!(turns, vec![("user", vec![json!(1), json!(2)]), ("model", vec![json!(3)])]);
    }
}
