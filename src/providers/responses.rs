//! OpenAI's Responses API spoken to the gateway (`POST /v1/responses`: Codex,
//! `client.responses.create`), stateless: a request becomes a chat request,
//! served, routed and billed like any chat; the answer and its stream are turned
//! into Responses shapes. Pure and host-tested.
//!
//! Carried: `input` as a string or items (messages, `function_call`,
//! `function_call_output`), `instructions`, function tools and `tool_choice`,
//! `max_output_tokens`, `reasoning`, `text.format`. Refused by name: `store: true`
//! and `previous_response_id` (the gateway keeps no conversations: send the
//! history, as Codex does), built-in tools (they add fees the gateway cannot price).
//! Dropped: `reasoning` items sent back in the history, and the model's thinking
//! in answers (no reasoning items are given out, so none come back).

use serde_json::{json, Map, Value};

use crate::domain::chat::ChatRequest;
use crate::domain::InvalidRequest;
use crate::providers::sse::{ChatStep, ChatSteps};

fn invalid(message: impl Into<String>, param: &str) -> InvalidRequest {
    InvalidRequest::param(message.into(), param)
}

/// A message item's content as chat content parts (or a plain string).
fn content_of(content: Option<&Value>, param: &str) -> Result<Value, InvalidRequest> {
    match content {
        Some(Value::String(s)) => Ok(Value::from(s.as_str())),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => out.push(
                        json!({"type": "text", "text": part.get("text").and_then(Value::as_str).unwrap_or_default()}),
                    ),
                    Some("input_image") => {
                        let url = part.get("image_url").and_then(Value::as_str).ok_or_else(|| {
                            invalid(
                                "an `input_image` needs an `image_url` (files by id are not kept by this gateway)",
                                param,
                            )
                        })?;
                        out.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                    Some(other) => return Err(invalid(format!("content of type `{other}` is not supported"), param)),
                    None => return Err(invalid("a content part needs a `type`", param)),
                }
            }
            Ok(Value::Array(out))
        }
        _ => Err(invalid("`content` must be a string or a list of parts", param)),
    }
}

/// The chat request a Responses request stands for.
pub fn to_chat(bytes: &[u8]) -> Result<ChatRequest, InvalidRequest> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| InvalidRequest::new(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else { return Err(InvalidRequest::new("request body must be a JSON object")) };
    if body.get("store").and_then(Value::as_bool) == Some(true) {
        return Err(invalid(
            "this gateway is stateless: `store` must be false (send the whole conversation in `input`)",
            "store",
        ));
    }
    if body.get("previous_response_id").is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "this gateway is stateless: `previous_response_id` is not supported (send the whole conversation in `input`)",
            "previous_response_id",
        ));
    }
    let mut messages = Vec::new();
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match body.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let param = format!("input[{i}]");
                match item.get("type").and_then(Value::as_str).unwrap_or("message") {
                    "message" => {
                        let role = match item.get("role").and_then(Value::as_str) {
                            Some(r @ ("user" | "assistant" | "system" | "developer")) => r,
                            _ => return Err(invalid(format!("`{param}.role` must be user, assistant, system or developer"), &param)),
                        };
                        messages.push(json!({"role": role, "content": content_of(item.get("content"), &param)?}));
                    }
                    "function_call" => {
                        let call = json!({"id": item.get("call_id").cloned().unwrap_or_default(), "type": "function",
                            "function": {"name": item.get("name").cloned().unwrap_or_default(),
                                         "arguments": item.get("arguments").cloned().unwrap_or(Value::from("{}"))}});
                        // Calls in a row belong to one assistant turn.
                        match messages.last_mut() {
                            Some(last) if last["role"] == "assistant" && last.get("tool_calls").is_some() => {
                                if let Some(calls) = last["tool_calls"].as_array_mut() {
                                    calls.push(call);
                                }
                            }
                            _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                        }
                    }
                    "function_call_output" => messages.push(json!({"role": "tool",
                        "tool_call_id": item.get("call_id").cloned().unwrap_or_default(),
                        "content": match item.get("output") { Some(Value::String(s)) => s.clone(), Some(other) => other.to_string(), None => String::new() }})),
                    "reasoning" => {}
                    other => return Err(invalid(format!("`{param}`: items of type `{other}` are not supported"), &param)),
                }
            }
        }
        _ => return Err(invalid("`input` must be a string or a list of items", "input")),
    }
    let mut chat = Map::new();
    chat.insert(
        "model".into(),
        body.get("model").cloned().ok_or_else(|| invalid("you must provide a `model` parameter", "model"))?,
    );
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(max) = body.get("max_output_tokens").filter(|v| !v.is_null()) {
        chat.insert("max_tokens".into(), max.clone());
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let mut out = Vec::new();
        for tool in tools {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                let kind = tool.get("type").and_then(Value::as_str).unwrap_or("?");
                return Err(invalid(format!("built-in tools (`{kind}`) add fees the gateway cannot price"), "tools"));
            }
            let mut function = json!({"name": tool.get("name").cloned().unwrap_or_default(),
                "parameters": tool.get("parameters").cloned().unwrap_or(json!({"type": "object"}))});
            for field in ["description", "strict"] {
                if let Some(v) = tool.get(field).filter(|v| !v.is_null()) {
                    function[field] = v.clone();
                }
            }
            out.push(json!({"type": "function", "function": function}));
        }
        chat.insert("tools".into(), Value::Array(out));
    }
    match body.get("tool_choice") {
        Some(Value::Object(c)) if c.get("type").and_then(Value::as_str) == Some("function") => {
            chat.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": c.get("name").cloned().unwrap_or_default()}}),
            );
        }
        Some(choice @ Value::String(_)) => {
            chat.insert("tool_choice".into(), choice.clone());
        }
        _ => {}
    }
    if let Some(format) = body.get("text").and_then(|t| t.get("format")) {
        match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                let mut schema = json!({"name": format.get("name").cloned().unwrap_or(Value::from("output")),
                    "schema": format.get("schema").cloned().unwrap_or(json!({}))});
                if let Some(strict) = format.get("strict") {
                    schema["strict"] = strict.clone();
                }
                chat.insert("response_format".into(), json!({"type": "json_schema", "json_schema": schema}));
            }
            Some("json_object") => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            _ => {}
        }
    }
    for field in ["temperature", "top_p", "stream", "user", "parallel_tool_calls", "reasoning"] {
        if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
            chat.insert(field.into(), v.clone());
        }
    }
    ChatRequest::parse(&serde_json::to_vec(&chat).unwrap_or_default())
}

fn usage_of(usage: Option<&Value>) -> Value {
    let n = |path: &str| usage.and_then(|u| u.pointer(path)).and_then(Value::as_u64).unwrap_or(0);
    let mut out = json!({
        "input_tokens": n("/prompt_tokens"),
        "input_tokens_details": {"cached_tokens": n("/prompt_tokens_details/cached_tokens")},
        "output_tokens": n("/completion_tokens"),
        "output_tokens_details": {"reasoning_tokens": n("/completion_tokens_details/reasoning_tokens")},
        "total_tokens": n("/prompt_tokens") + n("/completion_tokens"),
    });
    if let Some(cost) = usage.and_then(|u| u.get("cost")) {
        out["cost"] = cost.clone();
    }
    out
}

fn response_id(chat_id: Option<&str>) -> String {
    format!("resp_{}", chat_id.unwrap_or("tollgate").trim_start_matches("chatcmpl-").trim_start_matches("gen-"))
}

fn response(id: &str, model: &Value, created: &Value, status: &str, output: Vec<Value>, usage: Value) -> Value {
    json!({
        "id": id, "object": "response", "created_at": created, "status": status, "model": model,
        "output": output, "usage": usage, "error": null,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": null, "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
        "metadata": {}, "store": false, "text": {"format": {"type": "text"}},
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(id: &str, call_id: &Value, name: &Value, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status})
}

/// A chat completion answer as a Responses `response`.
pub fn answer_from_chat(body: Vec<u8>) -> Vec<u8> {
    let Ok(answer) = serde_json::from_slice::<Value>(&body) else { return body };
    let id = response_id(answer.get("id").and_then(Value::as_str));
    let choice = answer.pointer("/choices/0");
    let mut output = Vec::new();
    if let Some(text) =
        choice.and_then(|c| c.pointer("/message/content")).and_then(Value::as_str).filter(|t| !t.is_empty())
    {
        output.push(message_item(&format!("msg_{id}"), text, "completed"));
    }
    for (i, call) in choice
        .and_then(|c| c.pointer("/message/tool_calls"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        let name = call.pointer("/function/name").cloned().unwrap_or_default();
        output.push(call_item(
            &format!("fc_{i}_{id}"),
            call.get("id").unwrap_or(&Value::Null),
            &name,
            arguments,
            "completed",
        ));
    }
    let status = if choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str) == Some("length") {
        "incomplete"
    } else {
        "completed"
    };
    let created = answer.get("created").cloned().unwrap_or(Value::from(0));
    let model = answer.get("model").cloned().unwrap_or_default();
    serde_json::to_vec(&response(&id, &model, &created, status, output, usage_of(answer.get("usage")))).unwrap_or(body)
}

/// An output item being written in a stream.
#[derive(Debug)]
struct Open {
    index: u64,
    id: String,
    /// A function call (else the message's text).
    tool: bool,
    call_id: Value,
    name: Value,
    text: String,
}

/// Turns a chat stream (whole SSE lines) into Responses events with rising `sequence_number`s:
/// `response.created`, `response.in_progress`, per item `response.output_item.added` … `.done`
/// (with `content_part` and `output_text` events for text, `function_call_arguments` for calls),
/// then `response.completed` (or `response.incomplete`) carrying the whole response and its usage.
#[derive(Debug, Default)]
pub struct ResponsesStream {
    steps: ChatSteps,
    sequence: u64,
    id: String,
    model: Value,
    created: Value,
    started: bool,
    open: Option<Open>,
    done: Vec<Value>,
    usage: Option<Value>,
    incomplete: bool,
    finished: bool,
}

impl ResponsesStream {
    fn emit(&mut self, out: &mut String, mut data: Value) {
        data["sequence_number"] = Value::from(self.sequence);
        self.sequence += 1;
        let name = data["type"].as_str().unwrap_or("event").to_string();
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }

    pub fn feed(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let mut out = String::new();
        for step in self.steps.feed(&bytes) {
            match step {
                ChatStep::Start(chunk) => self.start(&chunk, &mut out),
                ChatStep::Text(delta) => {
                    if !matches!(&self.open, Some(o) if !o.tool) {
                        self.open_item(false, Value::Null, Value::Null, &mut out);
                    }
                    let (id, index) = self.append(&delta);
                    self.emit(&mut out, json!({"type": "response.output_text.delta", "item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}));
                }
                ChatStep::ToolStart { id, name } => self.open_item(true, id, name, &mut out),
                ChatStep::ToolArgs(args) => {
                    let (id, index) = self.append(&args);
                    self.emit(&mut out, json!({"type": "response.function_call_arguments.delta", "item_id": id, "output_index": index, "delta": args}));
                }
                ChatStep::Finish(reason) => self.incomplete = reason == "length",
                ChatStep::Usage(usage) => self.usage = Some(usage),
                ChatStep::Error(message) => self.fail(message, &mut out),
                ChatStep::Done => self.finish(&mut out),
                // Thinking is not given back as reasoning items (see the module's notes).
                ChatStep::Thinking(_) | ChatStep::Signature(_) | ChatStep::Redacted(_) => {}
            }
        }
        out.into_bytes()
    }

    /// Adds to the open item's text or arguments; answers its id and output index.
    fn append(&mut self, more: &str) -> (String, u64) {
        match self.open.as_mut() {
            Some(open) => {
                open.text.push_str(more);
                (open.id.clone(), open.index)
            }
            None => (String::new(), 0),
        }
    }

    fn start(&mut self, chunk: &Value, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = response_id(chunk.get("id").and_then(Value::as_str));
        self.model = chunk.get("model").cloned().unwrap_or_default();
        self.created = chunk.get("created").cloned().unwrap_or(Value::from(0));
        let r = response(&self.id, &self.model, &self.created, "in_progress", Vec::new(), Value::Null);
        self.emit(out, json!({"type": "response.created", "response": r.clone()}));
        self.emit(out, json!({"type": "response.in_progress", "response": r}));
    }

    fn open_item(&mut self, tool: bool, call_id: Value, name: Value, out: &mut String) {
        self.close_item(out);
        let index = self.done.len() as u64;
        let id = if tool { format!("fc_{index}_{}", self.id) } else { format!("msg_{index}_{}", self.id) };
        let item = if tool {
            call_item(&id, &call_id, &name, "", "in_progress")
        } else {
            json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []})
        };
        self.emit(out, json!({"type": "response.output_item.added", "output_index": index, "item": item}));
        if !tool {
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            self.emit(out, json!({"type": "response.content_part.added", "item_id": id, "output_index": index, "content_index": 0, "part": part}));
        }
        self.open = Some(Open { index, id, tool, call_id, name, text: String::new() });
    }

    fn close_item(&mut self, out: &mut String) {
        let Some(open) = self.open.take() else { return };
        let item = match open.tool {
            false => {
                self.emit(out, json!({"type": "response.output_text.done", "item_id": open.id, "output_index": open.index, "content_index": 0, "text": open.text, "logprobs": []}));
                let part = json!({"type": "output_text", "text": open.text, "annotations": []});
                self.emit(out, json!({"type": "response.content_part.done", "item_id": open.id, "output_index": open.index, "content_index": 0, "part": part}));
                message_item(&open.id, &open.text, "completed")
            }
            true => {
                self.emit(out, json!({"type": "response.function_call_arguments.done", "item_id": open.id, "output_index": open.index, "arguments": open.text}));
                call_item(&open.id, &open.call_id, &open.name, &open.text, "completed")
            }
        };
        self.emit(out, json!({"type": "response.output_item.done", "output_index": open.index, "item": item.clone()}));
        self.done.push(item);
    }

    /// The stream failed: an `error` event, then `response.failed` (never `completed`).
    fn fail(&mut self, message: Value, out: &mut String) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.start(&json!({}), out);
        self.emit(out, json!({"type": "error", "code": "upstream_error", "message": message, "param": null}));
        let mut r =
            response(&self.id, &self.model, &self.created, "failed", self.done.clone(), usage_of(self.usage.as_ref()));
        r["error"] = json!({"code": "server_error", "message": message});
        self.emit(out, json!({"type": "response.failed", "response": r}));
    }

    fn finish(&mut self, out: &mut String) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.start(&json!({}), out);
        self.close_item(out);
        let status = if self.incomplete { "incomplete" } else { "completed" };
        let r =
            response(&self.id, &self.model, &self.created, status, self.done.clone(), usage_of(self.usage.as_ref()));
        self.emit(out, json!({"type": format!("response.{status}"), "response": r}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_codex_style_request_becomes_chat() {
        let body = br#"{"model":"openai/gpt-4o","instructions":"You are Codex.","store":false,"stream":true,"max_output_tokens":300,
            "tools":[{"type":"function","name":"shell","description":"run","parameters":{"type":"object"},"strict":true}],
            "input":[{"role":"user","content":[{"type":"input_text","text":"list files"}]},
              {"type":"function_call","call_id":"c1","name":"shell","arguments":"{\"cmd\":\"ls\"}"},
              {"type":"function_call","call_id":"c2","name":"shell","arguments":"{\"cmd\":\"pwd\"}"},
              {"type":"function_call_output","call_id":"c1","output":"a.txt"},
              {"type":"function_call_output","call_id":"c2","output":"/"},
              {"type":"reasoning","summary":[]}]}"#;
        let chat = to_chat(body).expect("valid");
        let m = &chat.body["messages"];
        assert_eq!(m[0], json!({"role": "system", "content": "You are Codex."}));
        assert_eq!(m[1]["content"][0]["text"], "list files");
        assert_eq!(m[2]["tool_calls"].as_array().map(Vec::len), Some(2), "calls in a row are one turn");
        assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "c1", "content": "a.txt"}));
        assert_eq!(chat.body["tools"][0]["function"]["strict"], true);
        assert_eq!(chat.max_tokens, Some(300));
    }

    #[test]
    fn refuses_state_and_builtin_tools_by_name() {
        for (json, param) in [
            (r#"{"model":"m","input":"x","store":true}"#, "store"),
            (r#"{"model":"m","input":"x","previous_response_id":"resp_1"}"#, "previous_response_id"),
            (r#"{"model":"m","input":"x","tools":[{"type":"web_search"}]}"#, "tools"),
            (r#"{"model":"m"}"#, "input"),
        ] {
            assert_eq!(to_chat(json.as_bytes()).err().and_then(|e| e.param).as_deref(), Some(param), "{json}");
        }
    }

    #[test]
    fn a_failed_stream_ends_failed_never_completed() {
        let stream = "data: {\"id\":\"gen-1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"error\":{\"message\":\"cut\"}}\n\ndata: [DONE]\n\n";
        let out = String::from_utf8(ResponsesStream::default().feed(stream.as_bytes().to_vec())).expect("utf8");
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(names.last(), Some(&"response.failed"), "{out}");
        assert!(!names.contains(&"response.completed"));
    }

    #[test]
    fn a_stream_becomes_numbered_response_events() {
        let stream = "data: {\"id\":\"gen-1\",\"model\":\"m\",\"created\":5,\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"shell\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"cost\":0.1}}\n\ndata: [DONE]\n\n";
        let mut s = ResponsesStream::default();
        let out = String::from_utf8(s.feed(stream.as_bytes().to_vec())).expect("utf8");
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(names.first(), Some(&"response.created"));
        assert_eq!(names.last(), Some(&"response.completed"));
        assert!(
            names.contains(&"response.output_text.delta") && names.contains(&"response.function_call_arguments.done")
        );
        let numbers: Vec<u64> = out
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["sequence_number"].as_u64())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert!(out.contains("\"output_tokens\":3") && !out.contains("[DONE]"));
    }
}
