//! Anthropic's Messages API spoken *to* the gateway (`POST /v1/messages`, what
//! Claude Code and the Anthropic SDKs send): a request becomes an OpenAI chat
//! request, served, routed and billed like any chat; the chat answer and its
//! stream are turned back into Anthropic's shapes. Pure and host-tested.
//!
//! Kept: system as text or blocks, `cache_control` on system, content and tool
//! result blocks, images (base64 and URL), documents (a base64 PDF becomes a chat
//! `file` part, plain text or a list of blocks their parts), tools and `tool_use` / `tool_result`
//! round trips, `tool_choice`, `stop_sequences`, and extended thinking: `thinking`
//! becomes the chat's `reasoning.max_tokens`, and thinking blocks (with their
//! signatures) travel as `reasoning_details`, in the history and in answers
//! (`providers::reasoning`).
//! Refused by name: server tools, documents by URL or by Files API id (the gateway cannot bound their
//! price before the call), and other block types.

use serde_json::{json, Map, Value};

use crate::domain::chat::ChatRequest;
use crate::domain::InvalidRequest;
use crate::providers::reasoning;
use crate::providers::sse::{error_message, ChatStep, ChatSteps};
use crate::providers::translate::{indexed, message_index, rename_message_fields};

fn invalid(message: impl Into<String>, param: &str) -> InvalidRequest {
    InvalidRequest::param(message.into(), param)
}

/// A text part keeping its `cache_control`.
fn text_part(block: &Value) -> Value {
    let mut part = json!({"type": "text", "text": block.get("text").and_then(Value::as_str).unwrap_or_default()});
    if let (Some(cache), Some(fields)) = (block.get("cache_control"), part.as_object_mut()) {
        fields.insert("cache_control".into(), cache.clone());
    }
    part
}

fn image_part(block: &Value, param: &str) -> Result<Value, InvalidRequest> {
    let source = block.get("source").ok_or_else(|| invalid("an image block needs a `source`", param))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
            source.get("data").and_then(Value::as_str).unwrap_or_default()
        ),
        Some("url") => source.get("url").and_then(Value::as_str).unwrap_or_default().to_string(),
        _ => return Err(invalid("an image `source` must be base64 or url", param)),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A `document` block as chat parts: a base64 PDF as a `file` part (priced with a file's allowance, as
/// chat prices one), plain text as a text part, a list of blocks (`content`) as their text and image
/// parts; the block's `cache_control` kept on the last part. A document by URL or by Files API id is
/// refused by name: the gateway cannot see how many pages it would be billed for.
fn document_parts(block: &Value, param: &str) -> Result<Vec<Value>, InvalidRequest> {
    let source =
        block.get("source").ok_or_else(|| invalid(format!("{param}: a document block needs a `source`"), param))?;
    let string = |field: &str| source.get(field).and_then(Value::as_str);
    let mut parts = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = string("media_type").unwrap_or("application/pdf");
            let data = string("data").ok_or_else(|| invalid(format!("{param}.source.data: Field required"), param))?;
            let name = block.get("title").and_then(Value::as_str).unwrap_or("document.pdf");
            vec![json!({"type": "file", "file": {"filename": name, "file_data": format!("data:{media_type};base64,{data}")}})]
        }
        Some("text") => vec![json!({"type": "text", "text": string("data").unwrap_or_default()})],
        Some("content") => match source.get("content") {
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(blocks)) => blocks
                .iter()
                .map(|b| match b.get("type").and_then(Value::as_str) {
                    Some("text") => Ok(text_part(b)),
                    Some("image") => image_part(b, param),
                    _ => Err(invalid(format!("{param}.source.content: only text and image blocks are supported"), param)),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(invalid(format!("{param}.source.content: Input should be a valid string or list"), param)),
        },
        Some(kind @ ("url" | "file")) => {
            return Err(invalid(
                format!("{param}: a document by `{kind}` is fetched and billed by its pages, which the gateway cannot bound before the call; send it as base64 or text"),
                param,
            ))
        }
        _ => return Err(invalid(format!("{param}.source.type: expected base64, text, content, url or file"), param)),
    };
    if let (Some(cache), Some(last)) = (block.get("cache_control"), parts.last_mut().and_then(Value::as_object_mut)) {
        last.insert("cache_control".into(), cache.clone());
    }
    Ok(parts)
}

/// The chat's `reasoning` with the thinking's `display` (`summarized` or `omitted`: whether thinking blocks
/// carry their text; Opus 4.7 and later omit it unless asked), which only a direct Anthropic route sends on.
fn with_display(mut reasoning: Value, thinking: &Value) -> Value {
    if let (Some(display), Some(fields)) =
        (thinking.get("display").filter(|d| d.is_string()), reasoning.as_object_mut())
    {
        fields.insert("display".into(), display.clone());
    }
    reasoning
}

/// How a tool result marked `is_error` says so in the chat form (its first part), which has no such mark.
pub const TOOL_ERROR: &str = "[error]";

/// A tool result's content as chat parts: its text and images, an error marked, and the block's
/// `cache_control` (an agent's moving cache breakpoint usually sits on the last tool result) kept on
/// its last part.
fn tool_result_parts(block: &Value, param: &str) -> Result<Value, InvalidRequest> {
    let mut parts = match block.get("content") {
        Some(Value::String(s)) if !s.is_empty() => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(blocks)) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => parts.push(text_part(b)),
                    Some("image") => parts.push(image_part(b, param)?),
                    // A PDF Claude Code's Read tool returns, say.
                    Some("document") => parts.extend(document_parts(b, param)?),
                    // A search result the model would be handed as nothing: refused, not dropped.
                    Some(other) => {
                        return Err(invalid(
                            format!("{param}: a tool result's `{other}` blocks are not supported"),
                            param,
                        ))
                    }
                    None => {}
                }
            }
            parts
        }
        _ => Vec::new(),
    };
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        parts.insert(0, json!({"type": "text", "text": TOOL_ERROR}));
    }
    // Nothing to give back (a command that printed nothing): an empty text, not an empty text part, which
    // Anthropic refuses ("text content blocks must be non-empty"), whichever route reaches it. A cache
    // breakpoint on such a result has no part to sit on, and goes (the agent's earlier ones stay).
    if parts.is_empty() {
        return Ok(Value::String(String::new()));
    }
    if let (Some(cache), Some(last)) = (block.get("cache_control"), parts.last_mut().and_then(Value::as_object_mut)) {
        last.insert("cache_control".into(), cache.clone());
    }
    Ok(Value::Array(parts))
}

/// The chat request an Anthropic Messages request stands for.
pub fn to_chat(bytes: &[u8]) -> Result<ChatRequest, InvalidRequest> {
    to_chat_traced(bytes).map(|(chat, _)| chat)
}

/// Where each chat message of a translated Messages request came from (a system prompt becomes the first
/// message, a turn's tool results messages of their own, and its other blocks one message), so an error
/// found after translation names the block as the client wrote it, in Anthropic's spelling
/// (`messages.2.content.1`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Origins(Vec<Origin>);

#[derive(Debug, PartialEq, Eq)]
enum Origin {
    /// The system prompt: chat part `j` is its block `blocks[j]`.
    System { blocks: Vec<usize> },
    /// A user turn's text and image blocks: chat part `j` is block `blocks[j]`.
    User { index: usize, blocks: Vec<usize> },
    /// A `tool_result` block.
    ToolResult { index: usize, block: usize },
    /// An assistant turn: text part `j` is block `texts[j]`, tool call `k` block `calls[k]`.
    Assistant { index: usize, texts: Vec<usize>, calls: Vec<usize> },
}

impl Origins {
    /// A chat message's field (`messages[m]…`) as the Messages field it came from (`None`: not one).
    fn field(&self, param: &str) -> Option<String> {
        let (m, rest) = message_index(param)?;
        let part = |blocks: &[usize]| indexed(rest, ".content").and_then(|(j, _)| blocks.get(j).copied());
        Some(match self.0.get(m)? {
            Origin::System { blocks } => part(blocks).map_or_else(|| "system".into(), |b| format!("system.{b}")),
            Origin::User { index, blocks } => match part(blocks) {
                Some(b) => format!("messages.{index}.content.{b}"),
                None => format!("messages.{index}"),
            },
            Origin::ToolResult { index, block } => format!("messages.{index}.content.{block}"),
            Origin::Assistant { index, texts, calls } => {
                let call = indexed(rest, ".tool_calls").and_then(|(k, _)| calls.get(k).copied());
                match call.or_else(|| part(texts)) {
                    Some(b) => format!("messages.{index}.content.{b}"),
                    None => format!("messages.{index}"),
                }
            }
        })
    }
}

/// An error found once the request was translated, named as the client wrote the request; Anthropic's
/// errors have no `param`, so the field leads the message, as Anthropic's own do (`messages.0.content.1: …`).
pub fn as_written(mut invalid: InvalidRequest, origins: &Origins) -> InvalidRequest {
    invalid.message = rename_message_fields(&invalid.message, |path| origins.field(path));
    invalid.param = invalid.param.map(|param| origins.field(&param).unwrap_or(param));
    if let Some(param) = invalid.param.as_deref().filter(|p| !invalid.message.contains(p)) {
        invalid.message = format!("{param}: {}", invalid.message);
    }
    invalid
}

/// `to_chat`, with where each chat message came from.
pub fn to_chat_traced(bytes: &[u8]) -> Result<(ChatRequest, Origins), InvalidRequest> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| InvalidRequest::new(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else { return Err(InvalidRequest::new("request body must be a JSON object")) };
    let model = body.get("model").cloned().ok_or_else(|| invalid("model: Field required", "model"))?;
    let max_tokens =
        body.get("max_tokens").cloned().ok_or_else(|| invalid("max_tokens: Field required", "max_tokens"))?;
    // Tools that run at Anthropic (remote MCP servers, a code-execution container): dropped, the model would
    // answer without them; and what they cost besides tokens the gateway cannot price.
    for field in ["mcp_servers", "container"] {
        if body.get(field).is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                format!("{field}: tools run by Anthropic are not available through this gateway"),
                field,
            ));
        }
    }
    let mut messages = Vec::new();
    let mut origins = Origins::default();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => {
            messages.push(json!({"role": "system", "content": s}));
            origins.0.push(Origin::System { blocks: Vec::new() });
        }
        Some(Value::Array(blocks)) => {
            let texts: Vec<usize> =
                (0..blocks.len()).filter(|&b| blocks[b].get("type").and_then(Value::as_str) == Some("text")).collect();
            let parts: Vec<Value> = texts.iter().map(|&b| text_part(&blocks[b])).collect();
            messages.push(json!({"role": "system", "content": parts}));
            origins.0.push(Origin::System { blocks: texts });
        }
        Some(_) => return Err(invalid("system: Input should be a valid string or a list of text blocks", "system")),
    }
    let list = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages: Field required", "messages"))?;
    for (i, message) in list.iter().enumerate() {
        let param = format!("messages.{i}");
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        let blocks = match message.get("content") {
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(blocks)) => blocks.clone(),
            _ => return Err(invalid(format!("{param}.content: Input should be a valid string or list"), &param)),
        };
        match role {
            "user" => {
                let (mut parts, mut from) = (Vec::new(), Vec::new());
                for (b, block) in blocks.iter().enumerate() {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            parts.push(text_part(block));
                            from.push(b);
                        }
                        Some("image") => {
                            parts.push(image_part(block, &param)?);
                            from.push(b);
                        }
                        Some("document") => {
                            let document = document_parts(block, &format!("{param}.content.{b}"))?;
                            from.extend(std::iter::repeat_n(b, document.len()));
                            parts.extend(document);
                        }
                        Some("tool_result") => {
                            let id = block.get("tool_use_id").and_then(Value::as_str).unwrap_or_default();
                            let content = tool_result_parts(block, &format!("{param}.content.{b}"))?;
                            messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                            origins.0.push(Origin::ToolResult { index: i, block: b });
                        }
                        Some(other) => {
                            return Err(invalid(
                                format!("{param}: `{other}` blocks are not supported by this gateway"),
                                &param,
                            ))
                        }
                        None => return Err(invalid(format!("{param}: a content block needs a `type`"), &param)),
                    }
                }
                if !parts.is_empty() {
                    messages.push(json!({"role": "user", "content": parts}));
                    origins.0.push(Origin::User { index: i, blocks: from });
                }
            }
            "assistant" => {
                let mut text = Vec::new();
                let mut calls = Vec::new();
                let (mut texts_from, mut calls_from) = (Vec::new(), Vec::new());
                let thinking = reasoning::details_from_blocks(&blocks);
                for (b, block) in blocks.iter().enumerate() {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            text.push(text_part(block));
                            texts_from.push(b);
                        }
                        Some("tool_use") => {
                            calls.push(json!({
                                "id": block.get("id").cloned().unwrap_or_default(),
                                "type": "function",
                                "function": {
                                    "name": block.get("name").cloned().unwrap_or_default(),
                                    "arguments": block.get("input").map_or("{}".to_string(), Value::to_string),
                                }
                            }));
                            calls_from.push(b);
                        }
                        Some("thinking" | "redacted_thinking") => {} // in `thinking`
                        Some(other) => {
                            return Err(invalid(
                                format!("{param}: `{other}` blocks are not supported by this gateway"),
                                &param,
                            ))
                        }
                        None => return Err(invalid(format!("{param}: a content block needs a `type`"), &param)),
                    }
                }
                let mut turn = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::Array(text) }});
                if !calls.is_empty() {
                    turn["tool_calls"] = Value::Array(calls);
                }
                if !thinking.is_empty() {
                    turn["reasoning_details"] = Value::Array(thinking);
                }
                messages.push(turn);
                origins.0.push(Origin::Assistant { index: i, texts: texts_from, calls: calls_from });
            }
            _ => return Err(invalid(format!("{param}.role: Input should be 'user' or 'assistant'"), &param)),
        }
    }
    // Only Claude has an effort: another model's `verbosity` is something else, or refused (OpenAI's).
    let claude = model.as_str().is_some_and(super::verbosity_is_effort);
    let mut chat = Map::new();
    chat.insert("model".into(), model);
    chat.insert("messages".into(), Value::Array(messages));
    chat.insert("max_tokens".into(), max_tokens);
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let mut out = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            if let Some(kind) = tool.get("type").and_then(Value::as_str).filter(|t| *t != "custom") {
                // Tools Anthropic defines and the client runs (bash, the text editor, computer use, memory)
                // come without a schema, which no other route's function could be given.
                let client_run = ["bash_", "text_editor_", "computer_", "memory_"].iter().any(|p| kind.starts_with(p));
                let why = if client_run {
                    format!("tools.{i}: `{kind}` is defined by Anthropic without an input schema, which this gateway cannot carry: give the tool a `name` and an `input_schema` instead")
                } else {
                    format!("tools.{i}: server tools (`{kind}`) add fees the gateway cannot price")
                };
                return Err(invalid(why, "tools"));
            }
            out.push(json!({"type": "function", "function": {
                "name": tool.get("name").cloned().unwrap_or_default(),
                "description": tool.get("description").cloned().unwrap_or(Value::from("")),
                "parameters": tool.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
            }}));
        }
        chat.insert("tools".into(), Value::Array(out));
    }
    if let Some(choice) = body.get("tool_choice") {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or_default()}})
            }
            _ => return Err(invalid("tool_choice: type must be auto, any, tool or none", "tool_choice")),
        };
        chat.insert("tool_choice".into(), mapped);
        let offered = chat.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) && offered {
            chat.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    if let Some(stop) = body.get("stop_sequences") {
        chat.insert("stop".into(), stop.clone());
    }
    for field in ["temperature", "top_p", "top_k", "stream"] {
        if let Some(v) = body.get(field) {
            chat.insert(field.into(), v.clone());
        }
    }
    if let Some(user) = body.get("metadata").and_then(|m| m.get("user_id")) {
        chat.insert("user".into(), user.clone());
    }
    match body.get("thinking") {
        None | Some(Value::Null) => {}
        Some(t) => match t.get("type").and_then(Value::as_str) {
            Some("disabled") => {}
            Some("enabled") => {
                let budget = t.get("budget_tokens").filter(|b| b.is_u64()).ok_or_else(|| {
                    invalid("thinking.budget_tokens: a whole number of tokens is required", "thinking")
                })?;
                chat.insert("reasoning".into(), with_display(json!({ "max_tokens": budget }), t));
            }
            // Claude 4.6 and later decide how much to think (Claude Code asks so of them): OpenRouter gives
            // reasoning enabled without a budget as adaptive thinking.
            Some("adaptive") => {
                chat.insert("reasoning".into(), with_display(json!({ "enabled": true }), t));
            }
            _ => return Err(invalid("thinking.type: Input should be 'enabled', 'adaptive' or 'disabled'", "thinking")),
        },
    }
    // A structured output (what the SDK's `messages.parse` asks): the chat's JSON Schema response format, which
    // every route carries (a direct Anthropic one as `output_config.format` again).
    // (`output_format` at the top: the same, as the structured-outputs beta and older SDKs send it.)
    let format = body.get("output_config").and_then(|c| c.get("format")).or_else(|| body.get("output_format"));
    match format {
        None | Some(Value::Null) => {}
        Some(format) => match (format.get("type").and_then(Value::as_str), format.get("schema")) {
            (Some("json_schema"), Some(schema)) if schema.is_object() => {
                chat.insert(
                    "response_format".into(),
                    // Not `strict`: OpenAI's strict mode refuses schemas Anthropic takes (optional properties).
                    json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
                );
            }
            _ => {
                return Err(invalid(
                    "output_config.format: a `json_schema` format with an object `schema` is expected",
                    "output_config",
                ))
            }
        },
    }
    // How much the model may spend (Claude 4.5 and later): OpenRouter passes `verbosity` on as
    // `output_config.effort`. Thinking within it stays bounded by `max_tokens`, as the reservation is.
    match body.get("output_config").and_then(|c| c.get("effort")) {
        None | Some(Value::Null) => {}
        Some(Value::String(effort)) => {
            if claude {
                chat.insert("verbosity".into(), effort.as_str().into());
            }
        }
        Some(_) => return Err(invalid("output_config.effort: Input should be a valid string", "output_config")),
    }
    let chat =
        ChatRequest::parse(&serde_json::to_vec(&chat).unwrap_or_default()).map_err(|e| as_written(e, &origins))?;
    Ok((chat, origins))
}

/// Anthropic's error type for a status, as the Messages API answers it.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 409 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Anthropic's error type for a chat stream's error event: the one a direct Anthropic stream said (its
/// adapter keeps it), else the one of the event's status code (this gateway's own error events name
/// their code, not a status).
fn stream_error_type(error: &Value) -> Value {
    if let Some(kind) = error.get("metadata").and_then(|m| m.get("provider_error_type")).filter(|t| t.is_string()) {
        return kind.clone();
    }
    let status = match error.get("code") {
        Some(Value::Number(n)) => n.as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or(500),
        Some(Value::String(code)) if code == "timeout_error" => 504,
        Some(Value::String(code)) if code == "rate_limit_error" => 429,
        _ => 500,
    };
    error_type(status).into()
}

fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's usage from an OpenAI usage object (cache reads and writes are part of OpenAI's prompt).
fn usage_of(usage: Option<&Value>) -> Value {
    let n = |path: &str| usage.and_then(|u| u.pointer(path)).and_then(Value::as_u64).unwrap_or(0);
    let (read, write) = (n("/prompt_tokens_details/cached_tokens"), n("/prompt_tokens_details/cache_write_tokens"));
    let mut out = json!({
        "input_tokens": n("/prompt_tokens").saturating_sub(read.saturating_add(write)),
        "output_tokens": n("/completion_tokens"),
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
    });
    if let Some(cost) = usage.and_then(|u| u.get("cost")) {
        out["cost"] = cost.clone();
    }
    out
}

fn message_id(chat_id: Option<&str>) -> String {
    format!("msg_{}", chat_id.unwrap_or("tollgate").trim_start_matches("chatcmpl-").trim_start_matches("gen-"))
}

/// An answer's thinking as Anthropic blocks: from its `reasoning_details`, else its `reasoning` text
/// (another provider's thinking, unsigned).
fn thinking_blocks(message: Option<&Value>) -> Vec<Value> {
    let Some(message) = message else { return Vec::new() };
    match message.get("reasoning_details").and_then(Value::as_array) {
        Some(details) => reasoning::blocks_from_details(details, false),
        None => match message.get("reasoning").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            Some(text) => vec![json!({"type": "thinking", "thinking": text, "signature": ""})],
            None => Vec::new(),
        },
    }
}

/// The client's stop sequence when it gave exactly one: the one an answer that stopped at a stop sequence
/// stopped at, should the upstream not name it (OpenRouter does not).
pub fn sole_stop_sequence(chat: &ChatRequest) -> Option<String> {
    match chat.body.get("stop")?.as_array()?.as_slice() {
        [Value::String(only)] => Some(only.clone()),
        _ => None,
    }
}

/// Anthropic's `stop_reason` and `stop_sequence` for a choice that ended with `finish_reason`, and at a stop
/// sequence when `at_sequence` (named, or `None`: the client's sole one, if it gave one).
fn stop_of(
    finish_reason: Option<&str>,
    at_sequence: Option<Option<&Value>>,
    sole: Option<&str>,
) -> (&'static str, Value) {
    match at_sequence {
        Some(named) => ("stop_sequence", named.cloned().or_else(|| sole.map(Value::from)).unwrap_or(Value::Null)),
        None => (stop_reason(finish_reason), Value::Null),
    }
}

/// A chat completion answer as an Anthropic message (`stop`: the client's sole stop sequence).
pub fn answer_from_chat(body: Vec<u8>, stop: Option<&str>) -> Vec<u8> {
    let Ok(answer) = serde_json::from_slice::<Value>(&body) else { return body };
    let choice = answer.pointer("/choices/0");
    let mut content = thinking_blocks(choice.and_then(|c| c.get("message")));
    // A refusal (structured outputs) is the answer's text: Anthropic's shape has no refusal part.
    for field in ["/message/content", "/message/refusal"] {
        if let Some(text) = choice.and_then(|c| c.pointer(field)).and_then(Value::as_str).filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": text}));
        }
    }
    for call in choice.and_then(|c| c.pointer("/message/tool_calls")).and_then(Value::as_array).into_iter().flatten() {
        let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or_default(),
            "name": call.pointer("/function/name").cloned().unwrap_or_default(),
            "input": serde_json::from_slice::<Value>(arguments.as_bytes()).unwrap_or(json!({})),
        }));
    }
    let finish = choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str);
    let at_sequence = choice
        .filter(|c| c.get("native_finish_reason").and_then(Value::as_str) == Some("stop_sequence"))
        .map(|c| c.get("stop_sequence").filter(|s| s.is_string()));
    let (stop_reason, stop_sequence) = stop_of(finish, at_sequence, stop);
    let message = json!({
        "id": message_id(answer.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": answer.get("model").cloned().unwrap_or_default(),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_of(answer.get("usage")),
    });
    serde_json::to_vec(&message).unwrap_or(body)
}

/// Turns a chat stream (whole SSE lines) into Anthropic's events: `message_start`, then
/// `content_block_start` / `content_block_delta` / `content_block_stop` per text or tool block,
/// `message_delta` with the stop reason and usage, and `message_stop`.
#[derive(Debug, Default)]
pub struct MessagesStream {
    steps: ChatSteps,
    started: bool,
    /// The block being written: its index and kind.
    open: Option<(u64, Block)>,
    next_index: u64,
    stop_reason: Option<&'static str>,
    /// The stop sequence the answer ended at, and the client's sole one (named when the upstream does not).
    stop_sequence: Option<Option<Value>>,
    sole_stop: Option<String>,
    usage: Option<Value>,
    finished: bool,
}

impl MessagesStream {
    /// `sole_stop`: the client's stop sequence when it gave exactly one.
    pub fn new(sole_stop: Option<String>) -> Self {
        Self { sole_stop, ..Default::default() }
    }
}

/// The kind of content block a stream is writing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    Tool,
    /// Thinking, until its signature has come.
    Thinking {
        signed: bool,
    },
    Redacted,
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

impl MessagesStream {
    pub fn feed(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let mut out = String::new();
        for step in self.steps.feed(&bytes) {
            // After its error (or `message_stop`) a stream says nothing more: the relay's own error event
            // after an upstream's would be a second one.
            if self.finished {
                continue;
            }
            match step {
                ChatStep::Start(chunk) => self.start(&chunk, &mut out),
                // Anthropic's shape has no refusal part: the refusal is the answer's text.
                ChatStep::Text(text) | ChatStep::Refusal(text) => {
                    if !matches!(self.open, Some((_, Block::Text))) {
                        self.open_block(json!({"type": "text", "text": ""}), Block::Text, &mut out);
                    }
                    self.delta(json!({"type": "text_delta", "text": text}), &mut out);
                }
                ChatStep::ToolStart { id, name } => self.open_block(
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    Block::Tool,
                    &mut out,
                ),
                ChatStep::Thinking(text) => {
                    self.open_thinking(&mut out);
                    self.delta(json!({"type": "thinking_delta", "thinking": text}), &mut out);
                }
                ChatStep::Signature(signature) => {
                    self.open_thinking(&mut out);
                    self.delta(json!({"type": "signature_delta", "signature": signature}), &mut out);
                    self.open = self.open.map(|(i, _)| (i, Block::Thinking { signed: true }));
                }
                ChatStep::Redacted(data) => {
                    self.open_block(json!({"type": "redacted_thinking", "data": data}), Block::Redacted, &mut out)
                }
                ChatStep::ToolArgs(args) => {
                    self.delta(json!({"type": "input_json_delta", "partial_json": args}), &mut out);
                }
                ChatStep::StopSequence(named) => self.stop_sequence = Some(named),
                ChatStep::Details(_) => {} // read as thinking steps
                ChatStep::Finish(reason) => self.stop_reason = Some(stop_reason(Some(&reason))),
                ChatStep::Usage(usage) => self.usage = Some(usage),
                ChatStep::Error(error) => {
                    // The stream failed: the error is its last word (no `message_stop` to pass for success),
                    // of the type Claude Code decides by whether to try again.
                    let error = json!({"type": stream_error_type(&error), "message": error_message(&error)});
                    out.push_str(&event("error", json!({"type": "error", "error": error})));
                    self.finished = true;
                }
                ChatStep::Done => self.finish(&mut out),
            }
        }
        out.into_bytes()
    }

    fn index(&self) -> u64 {
        self.open.map_or(0, |(i, _)| i)
    }

    fn start(&mut self, chunk: &Value, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({"id": message_id(chunk.get("id").and_then(Value::as_str)), "type": "message", "role": "assistant",
            "model": chunk.get("model").cloned().unwrap_or_default(), "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}});
        out.push_str(&event("message_start", json!({"type": "message_start", "message": message})));
    }

    fn close_block(&mut self, out: &mut String) {
        if let Some((index, _)) = self.open.take() {
            out.push_str(&event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        }
    }

    fn delta(&self, delta: Value, out: &mut String) {
        let delta = json!({"type": "content_block_delta", "index": self.index(), "delta": delta});
        out.push_str(&event("content_block_delta", delta));
    }

    /// Keeps writing the open thinking block, or opens one (a signature ends a block).
    fn open_thinking(&mut self, out: &mut String) {
        if !matches!(self.open, Some((_, Block::Thinking { signed: false }))) {
            let block = json!({"type": "thinking", "thinking": "", "signature": ""});
            self.open_block(block, Block::Thinking { signed: false }, out);
        }
    }

    fn open_block(&mut self, block: Value, kind: Block, out: &mut String) {
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        out.push_str(&event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
    }

    fn finish(&mut self, out: &mut String) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.start(&json!({}), out);
        self.close_block(out);
        let (reason, sequence) = match &self.stop_sequence {
            Some(named) => stop_of(None, Some(named.as_ref()), self.sole_stop.as_deref()),
            None => (self.stop_reason.unwrap_or("end_turn"), Value::Null),
        };
        let delta = json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage_of(self.usage.as_ref())});
        out.push_str(&event("message_delta", delta));
        out.push_str(&event("message_stop", json!({"type": "message_stop"})));
    }
}

/// An estimate of a request's input tokens (`count_tokens` where the provider is not asked): see
/// `ChatRequest::prompt_token_estimate`.
pub fn estimate_input_tokens(chat: &ChatRequest) -> u64 {
    chat.prompt_token_estimate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_would_be_lost_is_refused_by_name() {
        let refused = |body: &str| to_chat(body.as_bytes()).expect_err("refused").param;
        let document = r#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"},
            {"role":"assistant","content":[{"type":"tool_use","id":"u","name":"f","input":{}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"u","content":[
              {"type":"document","source":{"type":"url","url":"https://x/a.pdf"}}]}]}]}"#;
        assert_eq!(refused(document).as_deref(), Some("messages.2.content.0"), "a PDF by URL, unpriceable");
        let search = document.replace(
            r#""type":"document","source":{"type":"url","url":"https://x/a.pdf"}"#,
            r#""type":"search_result""#,
        );
        assert_eq!(refused(&search).as_deref(), Some("messages.2.content.0"), "a search result handed over as nothing");
        for field in ["mcp_servers", "container"] {
            let body = format!(
                r#"{{"model":"m","max_tokens":8,"{field}":[{{"type":"url"}}],"messages":[{{"role":"user","content":"hi"}}]}}"#
            );
            assert_eq!(refused(&body).as_deref(), Some(field));
        }
        assert_eq!(
            crate::providers::anthropic::response::finish_reason(Some("model_context_window_exceeded")),
            "length"
        );
    }

    #[test]
    fn a_count_leaves_inline_data_out_and_counts_a_typical_image_or_page() {
        let data = "A".repeat(400_000); // 300 KB of a PDF, base64
        let body = format!(
            r#"{{"model":"m","max_tokens":8,"messages":[{{"role":"user","content":[
              {{"type":"document","source":{{"type":"base64","media_type":"application/pdf","data":"{data}"}}}},
              {{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{data}"}}}},
              {{"type":"text","text":"sum it up"}}]}}]}}"#
        );
        let chat = to_chat(body.as_bytes()).expect("valid");
        let counted = estimate_input_tokens(&chat);
        assert!((4_600..5_000).contains(&counted), "a page and an image, not their bytes: {counted}");
        assert!(chat.prompt_token_bound() > 300_000, "money is still held for the worst");
        let plain =
            to_chat(br#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"abcdefgh abcdefgh"}]}"#);
        let plain = estimate_input_tokens(&plain.expect("valid"));
        assert!((5..20).contains(&plain), "{plain}");
    }

    #[test]
    fn documents_become_chat_parts_in_a_turn_and_in_a_tool_result() {
        let body = br#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":[
              {"type":"document","title":"spec.pdf","cache_control":{"type":"ephemeral"},
               "source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0x"}},
              {"type":"document","source":{"type":"text","media_type":"text/plain","data":"plain words"}},
              {"type":"document","source":{"type":"content","content":[{"type":"text","text":"one"},{"type":"text","text":"two"}]}},
              {"type":"text","text":"sum them up"}]},
            {"role":"assistant","content":[{"type":"tool_use","id":"u","name":"Read","input":{"file_path":"a.pdf"}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"u","content":[
              {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0y"}}]}]}]}"#;
        let (chat, origins) = to_chat_traced(body).expect("carried");
        let messages = chat.body["messages"].as_array().expect("messages");
        assert_eq!(
            messages[0]["content"],
            json!([
                {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"},
                 "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "plain words"},
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two"},
                {"type": "text", "text": "sum them up"},
            ])
        );
        assert_eq!(
            messages[2]["content"],
            json!([{"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0y"}}])
        );
        // A chat part found wanting names the block it came from.
        assert_eq!(origins.field("messages[0].content[3]").as_deref(), Some("messages.0.content.2"));
        assert_eq!(origins.field("messages[0].content[4]").as_deref(), Some("messages.0.content.3"));
        // Each PDF is held at a file's allowance, as chat holds one.
        let plain = to_chat(br#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"sum them up"}]}"#);
        assert!(
            chat.prompt_token_bound()
                > plain.expect("valid").prompt_token_bound() + 2 * crate::domain::chat::PER_FILE_TOKENS
        );
    }

    #[test]
    fn an_answer_that_stopped_at_a_stop_sequence_says_so_and_names_it() {
        let chat = to_chat(
            br#"{"model":"m","max_tokens":8,"stop_sequences":["END"],"messages":[{"role":"user","content":"q"}]}"#,
        );
        let sole = sole_stop_sequence(&chat.expect("valid"));
        assert_eq!(sole.as_deref(), Some("END"));
        let two = to_chat(
            br#"{"model":"m","max_tokens":8,"stop_sequences":["A","B"],"messages":[{"role":"user","content":"q"}]}"#,
        );
        assert_eq!(sole_stop_sequence(&two.expect("valid")), None);
        // OpenRouter says a stop sequence ended it, not which; the client's sole one is named.
        let answer = |native: &str, named: &str| {
            format!(
                r#"{{"id":"gen-1","choices":[{{"message":{{"content":"a"}},"finish_reason":"stop","native_finish_reason":"{native}"{named}}}]}}"#
            )
        };
        let stop = |body: String, sole: Option<&str>| {
            let m: Value = serde_json::from_slice(&answer_from_chat(body.into_bytes(), sole)).expect("json");
            (m["stop_reason"].clone(), m["stop_sequence"].clone())
        };
        assert_eq!(stop(answer("stop_sequence", ""), Some("END")), (json!("stop_sequence"), json!("END")));
        assert_eq!(stop(answer("stop_sequence", ""), None), (json!("stop_sequence"), Value::Null));
        // The direct Anthropic route names it.
        assert_eq!(
            stop(answer("stop_sequence", r#","stop_sequence":"B""#), None),
            (json!("stop_sequence"), json!("B"))
        );
        assert_eq!(stop(answer("stop", ""), Some("END")), (json!("end_turn"), Value::Null));
        // A stream the same way.
        let stream = |native: &str, sole: Option<&str>| {
            let text = format!(
                "data: {{\"id\":\"g\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"a\"}}}}]}}\n\n\
                 data: {{\"id\":\"g\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\",\"native_finish_reason\":\"{native}\"}}]}}\n\n\
                 data: [DONE]\n\n"
            );
            let out =
                String::from_utf8(MessagesStream::new(sole.map(str::to_string)).feed(text.into_bytes())).expect("utf8");
            let delta = out
                .lines()
                .find(|l| l.contains("\"message_delta\""))
                .expect("message_delta")
                .trim_start_matches("data: ")
                .to_string();
            let delta: Value = serde_json::from_str(&delta).expect("json");
            (delta["delta"]["stop_reason"].clone(), delta["delta"]["stop_sequence"].clone())
        };
        assert_eq!(stream("stop_sequence", Some("END")), (json!("stop_sequence"), json!("END")));
        assert_eq!(stream("end_turn", Some("END")), (json!("end_turn"), Value::Null));
    }

    #[test]
    fn errors_found_after_translation_name_the_block_as_the_client_wrote_it() {
        // System first (chat message 0); a user turn with a tool result (its own chat message) before text.
        let body = br#"{"model":"m","max_tokens":8,"system":[{"type":"text","text":"be brief"}],"messages":[
            {"role":"user","content":"hi"},
            {"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"ok"},{"type":"tool_use","id":"u","name":"f","input":{}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"u","content":"done"},{"type":"text","text":"and"},
              {"type":"image","source":{"type":"base64","media_type":"application/pdf","data":"AAAA"}}]}]}"#;
        let (chat, origins) = to_chat_traced(body).expect("valid");
        let refused = chat.refuse_unpriced_fees().expect_err("a PDF as an image");
        assert_eq!(refused.param.as_deref(), Some("messages[4].content[1]"), "the chat's numbering");
        let written = as_written(refused, &origins);
        assert_eq!(written.param.as_deref(), Some("messages.2.content.2"));
        assert!(written.message.starts_with("messages.2.content.2: an image part"), "{}", written.message);
        // Where the message quotes a chat field, it is renamed too.
        let quoted =
            as_written(InvalidRequest::param("`messages[2].content[0]` is odd", "messages[2].content[0]"), &origins);
        assert_eq!(quoted.message, "`messages.1.content.1` is odd");
        for (chat, messages) in [
            ("messages[0].content[0]", "system.0"),
            ("messages[1].content", "messages.0"),
            ("messages[2].tool_calls[0].function.arguments", "messages.1.content.2"),
            ("messages[2].content[0]", "messages.1.content.1"),
            ("messages[3].content[0]", "messages.2.content.0"),
            ("messages[9]", "messages[9]"),
            ("model", "model"),
        ] {
            assert_eq!(
                as_written(InvalidRequest::param("x", chat), &origins).param.as_deref(),
                Some(messages),
                "{chat}"
            );
        }
    }

    #[test]
    fn a_claude_code_style_request_becomes_chat_keeping_cache_breakpoints_and_tools() {
        let body = br#"{"model":"anthropic/claude-3.5-sonnet","max_tokens":1024,"stream":true,
            "system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],
            "tools":[{"name":"Read","description":"read a file","input_schema":{"type":"object","properties":{"path":{"type":"string"}}}}],
            "messages":[{"role":"user","content":[{"type":"text","text":"read a.txt","cache_control":{"type":"ephemeral"}}]},
              {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"tool_use","id":"toolu_1","name":"Read","input":{"path":"a.txt"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"hello"},{"type":"text","text":"and now?"}]}]}"#;
        let chat = to_chat(body).expect("valid");
        let m = &chat.body["messages"];
        assert_eq!(m[0]["role"], "system");
        assert_eq!(m[0]["content"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(m[1]["content"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], r#"{"path":"a.txt"}"#);
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": [{"type": "text", "text": "hello"}]})
        );
        assert_eq!(m[4]["content"][0]["text"], "and now?");
        assert_eq!(chat.body["tools"][0]["function"]["parameters"]["properties"]["path"]["type"], "string");
        assert!(chat.stream);
        assert_eq!(chat.max_tokens, Some(1024));
        // One tool call at a time, as OpenAI says it.
        let one = br#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"x"}],
            "tools":[{"name":"Read","input_schema":{"type":"object"}}],"tool_choice":{"type":"auto","disable_parallel_tool_use":true}}"#;
        let chat = to_chat(one).expect("valid");
        assert_eq!((&chat.body["tool_choice"], &chat.body["parallel_tool_calls"]), (&json!("auto"), &json!(false)));
    }

    #[test]
    fn thinking_and_earlier_thinking_blocks_are_carried() {
        let body = br#"{"model":"m","max_tokens":4096,"thinking":{"type":"enabled","budget_tokens":2048},
            "messages":[{"role":"user","content":"q"},
              {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"redacted_thinking","data":"d"},{"type":"tool_use","id":"t","name":"f","input":{}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"1"}]}]}"#;
        let chat = to_chat(body).expect("valid");
        assert_eq!(chat.body["reasoning"], json!({"max_tokens": 2048}));
        let details = chat.body["messages"][1]["reasoning_details"].as_array().cloned().expect("details");
        assert_eq!(
            reasoning::blocks_from_details(&details, true),
            vec![
                json!({"type": "thinking", "thinking": "hm", "signature": "s"}),
                json!({"type": "redacted_thinking", "data": "d"})
            ]
        );
        let bad = br#"{"model":"m","max_tokens":5,"thinking":{"type":"sometimes"},"messages":[{"role":"user","content":"q"}]}"#;
        assert_eq!(to_chat(bad).err().and_then(|e| e.param).as_deref(), Some("thinking"));
    }

    #[test]
    fn adaptive_thinking_and_effort_as_claude_code_asks_for_them() {
        let body =
            br#"{"model":"anthropic/claude-opus-4.6","max_tokens":32000,"thinking":{"type":"adaptive"},"output_config":{"effort":"high"},
            "messages":[{"role":"user","content":"q"}]}"#;
        let chat = to_chat(body).expect("Claude 4.6 and later are asked so");
        assert_eq!(chat.body["reasoning"], json!({"enabled": true}), "OpenRouter's adaptive thinking");
        assert_eq!(chat.body["verbosity"], "high", "OpenRouter's output_config.effort");
        assert_eq!(chat.max_tokens, Some(32_000), "thinking stays within max_tokens, as reserved");
        let other = br#"{"model":"openai/gpt-4o","max_tokens":5,"output_config":{"effort":"max"},"messages":[{"role":"user","content":"q"}]}"#;
        assert!(to_chat(other).expect("valid").body.get("verbosity").is_none(), "OpenAI's verbosity is another thing");
        let bad =
            br#"{"model":"m","max_tokens":5,"output_config":{"effort":3},"messages":[{"role":"user","content":"q"}]}"#;
        assert_eq!(to_chat(bad).err().and_then(|e| e.param).as_deref(), Some("output_config"));
        // A display asked for reaches a direct Anthropic route's thinking, with a budget or without.
        for thinking in [
            r#"{"type":"adaptive","display":"summarized"}"#,
            r#"{"type":"enabled","budget_tokens":2048,"display":"summarized"}"#,
        ] {
            let body = format!(
                r#"{{"model":"m","max_tokens":4096,"thinking":{thinking},"messages":[{{"role":"user","content":"q"}}]}}"#
            );
            let chat = to_chat(body.as_bytes()).expect("valid");
            let sent = reasoning::anthropic_thinking(chat.body.get("reasoning")).expect("thinking on");
            assert_eq!(sent["display"], "summarized", "{thinking}");
        }
    }

    #[test]
    fn thinking_in_an_answer_and_a_stream_comes_back_as_signed_blocks() {
        let answer = br#"{"id":"gen-1","choices":[{"message":{"content":"Yes.","reasoning":"hm","reasoning_details":[{"type":"reasoning.text","text":"hm","signature":"s","index":0}]},"finish_reason":"stop"}]}"#;
        let m: Value = serde_json::from_slice(&answer_from_chat(answer.to_vec(), None)).expect("json");
        assert_eq!(m["content"][0], json!({"type": "thinking", "thinking": "hm", "signature": "s"}));
        assert_eq!(m["content"][1]["text"], "Yes.");

        let stream = "data: {\"id\":\"gen-1\",\"choices\":[{\"delta\":{\"reasoning\":\"h\",\"reasoning_details\":[{\"type\":\"reasoning.text\",\"text\":\"h\",\"index\":0}]}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"reasoning_details\":[{\"type\":\"reasoning.text\",\"signature\":\"s\",\"index\":0}]}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"content\":\"Yes.\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let out = String::from_utf8(MessagesStream::default().feed(stream.as_bytes().to_vec())).expect("utf8");
        let data: Vec<Value> = out
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).expect("json"))
            .collect();
        let kinds: Vec<String> = data
            .iter()
            .map(|e| {
                let delta = e.pointer("/delta/type").or(e.pointer("/content_block/type")).and_then(Value::as_str);
                format!(
                    "{}{}",
                    e["type"].as_str().unwrap_or_default(),
                    delta.map(|d| format!(":{d}")).unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start:thinking",
                "content_block_delta:thinking_delta",
                "content_block_delta:signature_delta",
                "content_block_stop",
                "content_block_start:text",
                "content_block_delta:text_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }

    #[test]
    fn refuses_what_it_cannot_carry_naming_the_field() {
        for (json, param) in [
            (r#"{"messages":[]}"#, "model"),
            (r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#, "max_tokens"),
            (
                r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{}}]}]}"#,
                "messages.0.content.0",
            ),
            (
                r#"{"model":"m","max_tokens":5,"tools":[{"type":"web_search_20250305","name":"web_search"}],"messages":[{"role":"user","content":"x"}]}"#,
                "tools",
            ),
            (r#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#, "messages.0"),
        ] {
            assert_eq!(to_chat(json.as_bytes()).err().and_then(|e| e.param).as_deref(), Some(param), "{json}");
        }
        // A tool the client runs is not called a server tool: the client is told what to send instead.
        let bash = br#"{"model":"m","max_tokens":5,"tools":[{"type":"bash_20250124","name":"bash"}],"messages":[{"role":"user","content":"x"}]}"#;
        let message = to_chat(bash).err().map(|e| e.message).unwrap_or_default();
        assert!(message.contains("input_schema") && !message.contains("fees"), "{message}");
    }

    #[test]
    fn an_answer_with_a_tool_call_becomes_a_message() {
        let answer = br#"{"id":"gen-9","model":"anthropic/claude-3.5-sonnet","choices":[{"message":{"content":"Let me look.","tool_calls":[{"id":"toolu_2","type":"function","function":{"name":"Read","arguments":"{\"path\":\"b\"}"}}]},"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":120,"completion_tokens":9,"cost":0.0005,"prompt_tokens_details":{"cached_tokens":100}}}"#;
        let m: Value = serde_json::from_slice(&answer_from_chat(answer.to_vec(), None)).expect("json");
        assert_eq!(m["type"], "message");
        assert_eq!(m["id"], "msg_9");
        assert_eq!(m["content"][0]["text"], "Let me look.");
        assert_eq!(m["content"][1]["input"]["path"], "b");
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(
            m["usage"],
            json!({"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0, "cost": 0.0005})
        );
    }

    #[test]
    fn a_failed_stream_ends_with_its_error_and_a_tool_call_repeating_its_id_stays_one_block() {
        let stream = "data: {\"id\":\"gen-1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"Read\",\"arguments\":\"{\\\"a\"}}]}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"arguments\":\"\\\":1}\"}}]}}]}\n\n\
            data: {\"error\":{\"message\":\"cut\"}}\n\ndata: [DONE]\n\n";
        let out = String::from_utf8(MessagesStream::default().feed(stream.as_bytes().to_vec())).expect("utf8");
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(names.iter().filter(|n| **n == "content_block_start").count(), 1, "{out}");
        assert_eq!(names.last(), Some(&"error"));
        assert!(!names.contains(&"message_stop"));
        assert!(out.contains(r#""type":"api_error""#), "{out}");
        // An upstream's error event, then the relay's own (the stream ended without `[DONE]`): one error.
        let twice = "data: {\"error\":{\"message\":\"cut\"}}\n\ndata: {\"error\":{\"code\":\"upstream_error\"}}\n\ndata: [DONE]\n\n";
        let out = String::from_utf8(MessagesStream::default().feed(twice.as_bytes().to_vec())).expect("utf8");
        assert_eq!(out.matches("event: error").count(), 1, "{out}");
        let overloaded = "data: {\"error\":{\"code\":529,\"message\":\"busy\"}}\n\n";
        let out = String::from_utf8(MessagesStream::default().feed(overloaded.as_bytes().to_vec())).expect("utf8");
        assert!(out.contains(r#""type":"overloaded_error""#), "the type Claude Code retries by: {out}");
        let kind = |e: Value| stream_error_type(&e);
        assert_eq!(kind(json!({"code": 429, "message": "slow down"})), "rate_limit_error");
        assert_eq!(kind(json!({"code": "timeout_error"})), "timeout_error", "this gateway's own deadline");
        let direct = json!({"code": "upstream_error", "metadata": {"provider_error_type": "overloaded_error"}});
        assert_eq!(kind(direct), "overloaded_error", "a direct Anthropic stream's own type first");
        assert_eq!(kind(json!({"code": 502})), "api_error");
    }

    #[test]
    fn a_stream_becomes_anthropic_events_whatever_the_chunking() {
        let stream = "data: {\"id\":\"gen-1\",\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"Read\",\"arguments\":\"\"}}]}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"p\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"cost\":0.1}}\n\n\
            data: [DONE]\n\n";
        let mut s = MessagesStream::default();
        let out = String::from_utf8(s.feed(stream.as_bytes().to_vec())).expect("utf8");
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ],
            "{out}"
        );
        assert!(out.contains("\"stop_reason\":\"tool_use\""));
        assert!(out.contains("\"output_tokens\":3") && out.contains("\"cost\":0.1"));
        assert!(out.contains("\"partial_json\":\"{\\\"p\\\":1}\""));
    }
}
