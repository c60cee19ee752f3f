//! OpenAI's Responses API spoken to the gateway (`POST /v1/responses`: Codex,
//! `client.responses.create`), stateless: a request becomes a chat request,
//! served, routed and billed like any chat; the answer and its stream are turned
//! into Responses shapes. Pure and host-tested.
//!
//! Carried: `input` as a string or items (messages, `function_call`,
//! `function_call_output` with a string or parts as its output), `instructions`,
//! function tools and `tool_choice` (an `allowed_tools` choice offers only the tools it allows),
//! `max_output_tokens`, `reasoning`, `text.format`,
//! `text.verbosity`, `prompt_cache_key`, and custom (freeform) tools such as Codex's
//! `apply_patch`: each becomes a function taking one string, `input`, and its calls
//! come back as `custom_tool_call` items (streamed input arrives in one delta, when
//! the call is whole), `service_tier` (held to the chat rules: a tier the price table does not hold is
//! refused). Refused by name: `store: true`, `background: true`, `previous_response_id` and `conversation` (the
//! gateway keeps no conversations: send the history, as Codex does), a stored `prompt`, and a
//! `tool_choice` forcing a built-in tool. Dropped: built-in tools (`web_search`, which
//! Codex offers on every turn, and the like: the gateway runs none, so the model is
//! not offered them and no fee is incurred).
//!
//! Reasoning: an answer's thinking is given out as a `reasoning` item (its readable text as the summary,
//! streamed as `response.reasoning_summary_text.delta`s), its `encrypted_content` the chat's
//! `reasoning_details` as they came (`REASONING_PREFIX` and JSON: opaque to the client). Sent back in the
//! history, such an item goes with the next assistant turn as its `reasoning_details`, so a model that
//! wants its reasoning back on a tool turn (OpenAI's through OpenRouter, Claude's) gets it. Details that
//! come while a message or call is written (Gemini's thought signature, with its call) follow that item
//! as a reasoning item of their own (`LATE_REASONING_PREFIX`), which goes back with the turn before it. Other
//! reasoning items (a session recorded against OpenAI itself) are dropped.

use serde_json::{json, Map, Value};

use crate::domain::chat::ChatRequest;
use crate::domain::InvalidRequest;
use crate::providers::sse::{error_message, ChatStep, ChatSteps};
use crate::providers::translate::{indexed, message_index, rename_message_fields};

fn invalid(message: impl Into<String>, param: &str) -> InvalidRequest {
    InvalidRequest::param(message.into(), param)
}

/// How a reasoning item's `encrypted_content` from this gateway starts: the chat's details as JSON follow.
const REASONING_PREFIX: &str = "tollgate.reasoning_details.v1:";
/// The same for details that came while a message or call was written (a thought signature that comes
/// with its tool call): they belong to the assistant turn before the item, not the next one.
const LATE_REASONING_PREFIX: &str = "tollgate.reasoning_details.v1.after:";

/// The details a reasoning item sent back carries, and whether they belong to the turn before it (`None`:
/// not one of this gateway's, or too large to read).
fn details_sent_back(item: &Value) -> Option<(Value, bool)> {
    let content = item.get("encrypted_content")?.as_str()?;
    let (json, late) = match content.strip_prefix(LATE_REASONING_PREFIX) {
        Some(json) => (json, true),
        None => (content.strip_prefix(REASONING_PREFIX)?, false),
    };
    if crate::domain::parsed_size::estimate(json.as_bytes()) > crate::domain::parsed_size::MAX_BYTES {
        return None;
    }
    let details = serde_json::from_slice::<Value>(json.as_bytes()).ok()?;
    details.as_array().is_some_and(|d| !d.is_empty()).then_some((details, late))
}

/// A reasoning item: its readable text as the summary, its details (if any) as its `encrypted_content`
/// (`late`: details of the turn before it).
fn reasoning_item(id: &str, text: &str, details: &[Value], status: &str, late: bool) -> Value {
    let summary = if text.is_empty() { json!([]) } else { json!([{"type": "summary_text", "text": text}]) };
    let prefix = if late { LATE_REASONING_PREFIX } else { REASONING_PREFIX };
    let encrypted = match details {
        [] => Value::Null,
        _ => Value::from(format!("{prefix}{}", Value::from(details.to_vec()))),
    };
    json!({"type": "reasoning", "id": id, "status": status, "summary": summary, "encrypted_content": encrypted})
}

/// An `allowed_tools` choice's mode and the tools it allows, as (custom, name).
type Allowed<'a> = (&'a str, Vec<(bool, &'a str)>);

/// A `tool_choice` of type `allowed_tools`: its mode (`auto` or `required`) and the function and custom
/// tools it allows (built-in ones are not offered anyway).
fn allowed_tools(choice: Option<&Value>) -> Result<Option<Allowed<'_>>, InvalidRequest> {
    let Some(choice) = choice.filter(|c| c.get("type").and_then(Value::as_str) == Some("allowed_tools")) else {
        return Ok(None);
    };
    let mode = match choice.get("mode").and_then(Value::as_str) {
        Some(mode @ ("auto" | "required")) => mode,
        _ => return Err(invalid("`tool_choice.mode` must be `auto` or `required`", "tool_choice.mode")),
    };
    let Some(tools) = choice.get("tools").and_then(Value::as_array) else {
        return Err(invalid("`tool_choice.tools` must be a list of tools", "tool_choice.tools"));
    };
    let allowed = tools
        .iter()
        .filter_map(|t| {
            let custom = match t.get("type").and_then(Value::as_str) {
                Some("function") => false,
                Some("custom") => true,
                _ => return None,
            };
            Some((custom, t.get("name").and_then(Value::as_str)?))
        })
        .collect();
    Ok(Some((mode, allowed)))
}

/// Where each chat message of a translated request came from in the Responses request (a message's index
/// is not its item's: instructions come first, a turn's calls are one message, reasoning items none).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Origins {
    messages: Vec<Origin>,
    /// The items of every call, in order (a turn's calls are `Calls(start)` onwards).
    calls: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Instructions,
    /// `input` as one string.
    Input,
    /// A message item: its content parts are the message's, one for one.
    Message(usize),
    /// A turn's calls, from this one in `Origins::calls`.
    Calls(usize),
    /// An assistant's message item and the calls right after it (from this one in `Origins::calls`), one turn.
    MessageAndCalls(usize, usize),
    /// A tool output item: its `output` parts are the message's content, one for one.
    Output(usize),
}

impl Origins {
    /// `messages[m]…` as the Responses field it came from (`None`: not a message's field).
    fn field(&self, param: &str) -> Option<String> {
        if param == "messages" {
            return Some("input".into());
        }
        let (m, rest) = message_index(param)?;
        Some(match self.messages.get(m).copied() {
            Some(Origin::Instructions) => "instructions".into(),
            Some(Origin::Message(i)) => format!("input[{i}]{rest}"),
            Some(Origin::Output(i)) => match rest.strip_prefix(".content") {
                Some(part) => format!("input[{i}].output{part}"),
                None => format!("input[{i}]"),
            },
            Some(Origin::Calls(start)) => self
                .call_field(start, rest)
                .unwrap_or_else(|| format!("input[{}]", self.calls.get(start).copied().unwrap_or_default())),
            Some(Origin::MessageAndCalls(i, start)) => {
                self.call_field(start, rest).unwrap_or_else(|| format!("input[{i}]{rest}"))
            }
            Some(Origin::Input) | None => "input".into(),
        })
    }

    /// `.tool_calls[k].function.arguments` of a turn whose calls start at `start`: the k-th call item's
    /// `arguments` (`None`: not a call's field).
    fn call_field(&self, start: usize, rest: &str) -> Option<String> {
        let (k, after) = indexed(rest, ".tool_calls")?;
        let item = self.calls.get(start + k)?;
        Some(format!("input[{item}]{}", after.strip_prefix(".function").unwrap_or(after)))
    }

    /// `text` with every `messages[m]…` in it named as the Responses field it came from.
    fn rewrite(&self, text: &str) -> String {
        rename_message_fields(text, |path| self.field(path))
    }
}

/// An error found once the request was translated, named as the client wrote the request: a chat field
/// in `param`, and in the message where it names it.
pub fn as_written(mut invalid: InvalidRequest, origins: &Origins) -> InvalidRequest {
    invalid.message = origins.rewrite(&invalid.message);
    if let Some(param) = invalid.param.take() {
        let written = origins.field(&param).unwrap_or_else(|| param_as_written(&param));
        // A bare `messages` only where quoted (the word is also plain English); another chat field as it is.
        if param == "messages" {
            invalid.message = invalid.message.replace("`messages`", &format!("`{written}`"));
        } else if !param.starts_with("messages") && written != param {
            invalid.message = invalid.message.replace(&param, &written);
        }
        invalid.param = Some(written);
    }
    invalid
}

/// A chat field (not a message's) an error names after translation, as the Responses API names it.
fn param_as_written(param: &str) -> String {
    let field = |name: &str| param.strip_prefix(name).filter(|rest| rest.is_empty() || rest.starts_with(['[', '.']));
    for (chat, responses) in
        [("max_tokens", "max_output_tokens"), ("response_format", "text.format"), ("verbosity", "text.verbosity")]
    {
        if let Some(rest) = field(chat) {
            return format!("{responses}{rest}");
        }
    }
    param.to_string()
}

/// A message item's content as chat content parts (or a plain string).
fn content_of(content: Option<&Value>, param: &str) -> Result<Value, InvalidRequest> {
    match content {
        Some(Value::String(s)) => Ok(Value::from(s.as_str())),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    // Text, or a refusal an earlier answer gave (its `output` sent back as `input`): what it said.
                    Some(kind @ ("input_text" | "output_text" | "text" | "refusal")) => {
                        let field = if kind == "refusal" { "refusal" } else { "text" };
                        out.push(json!({"type": "text", "text": part.get(field).and_then(Value::as_str).unwrap_or_default()}))
                    }
                    Some("input_image") => {
                        let url = part.get("image_url").and_then(Value::as_str).ok_or_else(|| {
                            invalid(
                                "an `input_image` needs an `image_url` (files by id are not kept by this gateway)",
                                param,
                            )
                        })?;
                        out.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                    // A file inline (a PDF, say) is a chat file part, priced as chat prices one.
                    Some("input_file") => {
                        let data = part.get("file_data").and_then(Value::as_str).ok_or_else(|| {
                            invalid(
                                "an `input_file` needs its `file_data` inline (files by id or URL are not kept or fetched by this gateway)",
                                param,
                            )
                        })?;
                        let name = part.get("filename").and_then(Value::as_str).unwrap_or("document.pdf");
                        out.push(json!({"type": "file", "file": {"filename": name, "file_data": data}}));
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

/// The names of a request's custom (freeform) tools: their calls are answered as `custom_tool_call`s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomTools(Vec<String>);

impl CustomTools {
    fn includes(&self, name: &Value) -> bool {
        name.as_str().is_some_and(|n| self.0.iter().any(|c| c == n))
    }
}

/// The one parameter a custom tool's stand-in function takes.
fn custom_parameters() -> Value {
    json!({"type": "object", "properties": {"input": {"type": "string", "description": "The tool's whole input, as free text."}},
        "required": ["input"], "additionalProperties": false})
}

/// A custom tool's input from its stand-in function's arguments (the arguments as they are, should the
/// model not have kept to the schema).
fn custom_input(arguments: &str) -> String {
    serde_json::from_slice::<Value>(arguments.as_bytes())
        .ok()
        .and_then(|a| a.get("input").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| arguments.to_string())
}

/// A custom tool as a chat function tool: its grammar, if any, goes into the description.
fn custom_tool(tool: &Value) -> Value {
    let mut description = tool.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
    let format = tool.get("format");
    if let Some(definition) = format.and_then(|f| f.get("definition")).and_then(Value::as_str) {
        let syntax = format.and_then(|f| f.get("syntax")).and_then(Value::as_str).unwrap_or("lark");
        description.push_str(&format!("\n\nThe input must follow this {syntax} grammar:\n{definition}"));
    }
    json!({"type": "function", "function": {"name": tool.get("name").cloned().unwrap_or_default(),
        "description": description, "parameters": custom_parameters()}})
}

/// The chat request a Responses request stands for, and its custom tools.
pub fn to_chat(bytes: &[u8]) -> Result<(ChatRequest, CustomTools, Origins), InvalidRequest> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| InvalidRequest::new(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else { return Err(InvalidRequest::new("request body must be a JSON object")) };
    if body.get("store").and_then(Value::as_bool) == Some(true) {
        return Err(invalid(
            "this gateway is stateless: `store` must be false (send the whole conversation in `input`)",
            "store",
        ));
    }
    if body.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(invalid(
            "this gateway is stateless: `background` must be false (a response is answered on its own request)",
            "background",
        ));
    }
    for field in ["previous_response_id", "conversation"] {
        if body.get(field).is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                format!(
                    "this gateway is stateless: `{field}` is not supported (send the whole conversation in `input`)"
                ),
                field,
            ));
        }
    }
    if body.get("prompt").is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "a stored prompt (`prompt`) lives at OpenAI, which this gateway does not read: send its text in `instructions` and `input`",
            "prompt",
        ));
    }
    let mut messages = Vec::new();
    let mut origins = Origins::default();
    let mut custom = CustomTools::default();
    // The reasoning of the assistant turn that comes next.
    let mut reasoning: Option<Value> = None;
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": instructions}));
        origins.messages.push(Origin::Instructions);
    }
    match body.get("input") {
        Some(Value::String(s)) => {
            messages.push(json!({"role": "user", "content": s}));
            origins.messages.push(Origin::Input);
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let param = format!("input[{i}]");
                match item.get("type").and_then(Value::as_str).unwrap_or("message") {
                    "message" => {
                        let role = match item.get("role").and_then(Value::as_str) {
                            Some(r @ ("user" | "assistant" | "system" | "developer")) => r,
                            _ => {
                                return Err(invalid(
                                    format!("`{param}.role` must be user, assistant, system or developer"),
                                    &param,
                                ))
                            }
                        };
                        let mut message = json!({"role": role, "content": content_of(item.get("content"), &param)?});
                        // Reasoning goes with the assistant's turn after it; another's message ends its turn.
                        if let (true, Some(details)) = (role == "assistant", reasoning.take()) {
                            message["reasoning_details"] = details;
                        }
                        messages.push(message);
                        origins.messages.push(Origin::Message(i));
                    }
                    kind @ ("function_call" | "custom_tool_call") => {
                        let arguments = if kind == "custom_tool_call" {
                            let input = item.get("input").and_then(Value::as_str).unwrap_or_default();
                            Value::from(json!({ "input": input }).to_string())
                        } else {
                            item.get("arguments").cloned().unwrap_or(Value::from("{}"))
                        };
                        let call = json!({"id": item.get("call_id").cloned().unwrap_or_default(), "type": "function",
                            "function": {"name": item.get("name").cloned().unwrap_or_default(), "arguments": arguments}});
                        // Calls in a row, and the text right before them, belong to one assistant turn.
                        origins.calls.push(i);
                        match messages.last_mut() {
                            Some(last) if last["role"] == "assistant" => {
                                match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                                    Some(calls) => calls.push(call),
                                    None => {
                                        last["tool_calls"] = json!([call]);
                                        // The message's errors still name its item; its calls', theirs.
                                        if let Some(Origin::Message(item)) = origins.messages.last().copied() {
                                            let start = origins.calls.len() - 1;
                                            if let Some(origin) = origins.messages.last_mut() {
                                                *origin = Origin::MessageAndCalls(item, start);
                                            }
                                        }
                                    }
                                }
                                // Reasoning between calls of one turn (thinking interleaved with them) joins it.
                                if let Some(Value::Array(more)) = reasoning.take() {
                                    match last.get_mut("reasoning_details").and_then(Value::as_array_mut) {
                                        Some(details) => details.extend(more),
                                        None => last["reasoning_details"] = Value::Array(more),
                                    }
                                }
                            }
                            _ => {
                                let mut turn = json!({"role": "assistant", "content": null, "tool_calls": [call]});
                                if let Some(details) = reasoning.take() {
                                    turn["reasoning_details"] = details;
                                }
                                messages.push(turn);
                                origins.messages.push(Origin::Calls(origins.calls.len() - 1));
                            }
                        }
                    }
                    // An output is a string, or parts (text and images, as a message's content).
                    "function_call_output" | "custom_tool_call_output" => {
                        reasoning = None;
                        let content = match item.get("output") {
                            None | Some(Value::Null) => Value::from(""),
                            output @ Some(Value::String(_) | Value::Array(_)) => {
                                content_of(output, &format!("{param}.output"))?
                            }
                            Some(other) => Value::from(other.to_string()),
                        };
                        messages.push(json!({"role": "tool",
                            "tool_call_id": item.get("call_id").cloned().unwrap_or_default(), "content": content}));
                        origins.messages.push(Origin::Output(i));
                    }
                    // Reasoning this gateway gave out goes with the next assistant turn; details that came
                    // late (while a message or call was written) join the assistant turn before them.
                    "reasoning" => match details_sent_back(item) {
                        Some((Value::Array(late), true))
                            if messages.last().is_some_and(|m| m["role"] == "assistant") =>
                        {
                            if let Some(last) = messages.last_mut() {
                                match last.get_mut("reasoning_details").and_then(Value::as_array_mut) {
                                    Some(details) => crate::providers::reasoning::merge_details(details, &late),
                                    None => last["reasoning_details"] = Value::Array(late),
                                }
                            }
                        }
                        sent_back => reasoning = sent_back.map(|(details, _)| details),
                    },
                    // The calls of OpenAI's own tools (a session recorded against OpenAI): what they did is in
                    // the messages after them; this gateway does not run those tools.
                    "web_search_call" | "file_search_call" | "image_generation_call" | "code_interpreter_call" => {}
                    other => {
                        return Err(invalid(format!("`{param}`: items of type `{other}` are not supported"), &param))
                    }
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
    // Checked here, so a bad value is named as the client wrote it.
    if let Some(max) = crate::domain::chat::positive_int(&body, "max_output_tokens")? {
        chat.insert("max_tokens".into(), Value::from(max));
    }
    let mut offered = false;
    let asked = body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    let allowed = allowed_tools(body.get("tool_choice"))?;
    // An `allowed_tools` choice allowing none of the tools given: all are offered, with a choice of none
    // (a history of calls to them needs them defined, for some upstreams).
    let mut none_allowed = false;
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        // (name, custom, as a chat tool)
        let mut out: Vec<(&str, bool, Value)> = Vec::new();
        for tool in tools {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
            match tool.get("type").and_then(Value::as_str) {
                Some("custom") => out.push((name, true, custom_tool(tool))),
                Some("function") => {
                    let mut function = json!({"name": name,
                        "parameters": tool.get("parameters").filter(|p| !p.is_null()).cloned().unwrap_or(json!({"type": "object"}))});
                    for field in ["description", "strict"] {
                        if let Some(v) = tool.get(field).filter(|v| !v.is_null()) {
                            function[field] = v.clone();
                        }
                    }
                    out.push((name, false, json!({"type": "function", "function": function})));
                }
                // A built-in tool (web search and the like) is not offered: the gateway runs none.
                _ => {}
            }
        }
        // `allowed_tools`: the model may call only these; the others are not offered.
        if let Some((_, tools)) = &allowed {
            let (kept, left): (Vec<_>, Vec<_>) =
                out.into_iter().partition(|(name, custom, _)| tools.contains(&(*custom, *name)));
            none_allowed = kept.is_empty() && !left.is_empty();
            out = if none_allowed { left } else { kept };
        }
        custom.0.extend(out.iter().filter(|(_, custom, _)| *custom).map(|(name, ..)| name.to_string()));
        // With only built-in tools asked, none is offered (an empty list, or a choice among none, is refused).
        offered = !out.is_empty();
        if offered {
            chat.insert("tools".into(), out.into_iter().map(|(.., tool)| tool).collect());
        }
    }
    match body.get("tool_choice") {
        Some(Value::Object(c)) if matches!(c.get("type").and_then(Value::as_str), Some("function" | "custom")) => {
            chat.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": c.get("name").cloned().unwrap_or_default()}}),
            );
        }
        Some(Value::Object(c)) if c.get("type").and_then(Value::as_str) == Some("allowed_tools") => {
            match allowed.map(|(mode, _)| mode) {
                Some("required") if !offered || none_allowed => {
                    return Err(invalid(
                        "`tool_choice` requires a call, and none of the tools it allows is a function or custom tool in `tools`",
                        "tool_choice",
                    ));
                }
                Some(_) if none_allowed => {
                    chat.insert("tool_choice".into(), Value::from("none"));
                }
                Some(mode) if offered => {
                    chat.insert("tool_choice".into(), Value::from(mode));
                }
                _ => {}
            }
        }
        Some(Value::Object(c)) => {
            let kind = c.get("type").and_then(Value::as_str).unwrap_or("?");
            return Err(invalid(
                format!("`tool_choice` forces a built-in tool (`{kind}`), which this gateway does not run"),
                "tool_choice",
            ));
        }
        Some(choice @ Value::String(_)) if offered => {
            chat.insert("tool_choice".into(), choice.clone());
        }
        // A call required among built-in tools alone: one of them forced.
        Some(Value::String(choice)) if choice == "required" && asked => {
            return Err(invalid(
                "`tool_choice` requires a call, and the only tools are built-in ones, which this gateway does not run",
                "tool_choice",
            ));
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
    // OpenAI's verbosity (how long the answer), not carried to a model whose `verbosity` is an effort.
    let effort =
        body.get("model").and_then(Value::as_str).is_some_and(crate::providers::anthropic::verbosity_is_effort);
    if let Some(verbosity) = body.get("text").and_then(|t| t.get("verbosity")).filter(|v| !v.is_null() && !effort) {
        chat.insert("verbosity".into(), verbosity.clone());
    }
    for field in [
        "temperature",
        "top_p",
        "stream",
        "user",
        "safety_identifier",
        "parallel_tool_calls",
        "reasoning",
        "prompt_cache_key",
        "service_tier",
    ] {
        if field == "parallel_tool_calls" && !offered {
            continue; // refused without tools
        }
        if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
            chat.insert(field.into(), v.clone());
        }
    }
    let chat =
        ChatRequest::parse(&serde_json::to_vec(&chat).unwrap_or_default()).map_err(|e| as_written(e, &origins))?;
    Ok((chat, custom, origins))
}

fn usage_of(usage: Option<&Value>) -> Value {
    let n = |path: &str| usage.and_then(|u| u.pointer(path)).and_then(Value::as_u64).unwrap_or(0);
    let mut out = json!({
        "input_tokens": n("/prompt_tokens"),
        "input_tokens_details": {"cached_tokens": n("/prompt_tokens_details/cached_tokens")},
        "output_tokens": n("/completion_tokens"),
        "output_tokens_details": {"reasoning_tokens": n("/completion_tokens_details/reasoning_tokens")},
        "total_tokens": n("/prompt_tokens").saturating_add(n("/completion_tokens")),
    });
    if let Some(cost) = usage.and_then(|u| u.get("cost")) {
        out["cost"] = cost.clone();
    }
    out
}

fn response_id(chat_id: Option<&str>) -> String {
    format!("resp_{}", chat_id.unwrap_or("tollgate").trim_start_matches("chatcmpl-").trim_start_matches("gen-"))
}

/// Why an answer is incomplete, as the Responses API says it, from the chat's finish reason.
fn incomplete_reason(finish: Option<&str>) -> Option<&'static str> {
    match finish {
        Some("length") => Some("max_output_tokens"),
        Some("content_filter") => Some("content_filter"),
        _ => None,
    }
}

/// A response, `status` (or "incomplete", with why: `incomplete`).
fn response(
    id: &str,
    model: &Value,
    created: &Value,
    status: &str,
    incomplete: Option<&str>,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    json!({
        "id": id, "object": "response", "created_at": created, "status": incomplete.map_or(status, |_| "incomplete"),
        "model": model, "output": output, "usage": usage, "error": null,
        "incomplete_details": incomplete.map_or(Value::Null, |reason| json!({"reason": reason})),
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

fn custom_call_item(id: &str, call_id: &Value, name: &Value, input: &str, status: &str) -> Value {
    json!({"type": "custom_tool_call", "id": id, "call_id": call_id, "name": name, "input": input, "status": status})
}

/// A chat completion answer as a Responses `response`.
pub fn answer_from_chat(body: Vec<u8>, custom: &CustomTools) -> Vec<u8> {
    let Ok(answer) = serde_json::from_slice::<Value>(&body) else { return body };
    let id = response_id(answer.get("id").and_then(Value::as_str));
    let choice = answer.pointer("/choices/0");
    let mut output = Vec::new();
    let details = choice.and_then(|c| c.pointer("/message/reasoning_details")).and_then(Value::as_array);
    let details = details.map_or(&[][..], Vec::as_slice);
    let thought: String = match details {
        [] => choice.and_then(|c| c.pointer("/message/reasoning")).and_then(Value::as_str).unwrap_or_default().into(),
        _ => details.iter().filter_map(crate::providers::reasoning::readable).collect(),
    };
    if !thought.is_empty() || !details.is_empty() {
        output.push(reasoning_item(&format!("rs_{id}"), &thought, details, "completed", false));
    }
    if let Some(text) =
        choice.and_then(|c| c.pointer("/message/content")).and_then(Value::as_str).filter(|t| !t.is_empty())
    {
        output.push(message_item(&format!("msg_{id}"), text, "completed"));
    }
    if let Some(refusal) =
        choice.and_then(|c| c.pointer("/message/refusal")).and_then(Value::as_str).filter(|t| !t.is_empty())
    {
        output.push(json!({"type": "message", "id": format!("msg_r_{id}"), "status": "completed", "role": "assistant",
            "content": [{"type": "refusal", "refusal": refusal}]}));
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
        let (item_id, call_id) = (format!("fc_{i}_{id}"), call.get("id").unwrap_or(&Value::Null));
        output.push(match custom.includes(&name) {
            true => custom_call_item(&item_id, call_id, &name, &custom_input(arguments), "completed"),
            false => call_item(&item_id, call_id, &name, arguments, "completed"),
        });
    }
    let incomplete = incomplete_reason(choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str));
    // A cut answer's last item is the one cut short.
    if let (Some(_), Some(last)) = (incomplete, output.last_mut()) {
        last["status"] = Value::from("incomplete");
    }
    let created = answer.get("created").cloned().unwrap_or(Value::from(0));
    let model = answer.get("model").cloned().unwrap_or_default();
    let usage = usage_of(answer.get("usage"));
    serde_json::to_vec(&response(&id, &model, &created, "completed", incomplete, output, usage)).unwrap_or(body)
}

/// What kind of output item a stream is writing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Message,
    /// A message whose part is a refusal (the model declined a structured output).
    Refusal,
    Function,
    /// A custom tool's call: its input is given whole when the call ends.
    Custom,
    /// The model's reasoning: its text as the summary, its details kept for `encrypted_content`.
    Reasoning,
}

/// An output item being written in a stream.
#[derive(Debug)]
struct Open {
    index: u64,
    id: String,
    kind: Kind,
    call_id: Value,
    name: Value,
    /// The message's text, or the call's arguments.
    text: String,
}

/// Turns a chat stream (whole SSE lines) into Responses events with rising `sequence_number`s:
/// `response.created`, `response.in_progress`, per item `response.output_item.added` … `.done`
/// (with `content_part` and `output_text` events for text, `function_call_arguments` for calls),
/// then `response.completed` (or `response.incomplete`) carrying the whole response and its usage.
#[derive(Debug, Default)]
pub struct ResponsesStream {
    custom: CustomTools,
    steps: ChatSteps,
    sequence: u64,
    id: String,
    model: Value,
    created: Value,
    started: bool,
    open: Option<Open>,
    done: Vec<Value>,
    usage: Option<Value>,
    /// Why the answer stopped short (`incomplete_details.reason`), if it did.
    incomplete: Option<&'static str>,
    /// The open reasoning item's details, joined as they stream; and whether the stream gives details
    /// (then its thinking steps, read from them, are not told twice).
    details: Vec<Value>,
    details_seen: bool,
    finished: bool,
    /// When the last `response.in_progress` for a silence went out (ms; 0: none yet).
    progress_ms: u64,
    /// The gateway's request id and the model asked for: what a response started before the upstream's
    /// first chunk is named (`for_request`).
    request_id: String,
    asked_model: String,
}

/// How often a silence (a model thinking, with nothing readable to tell) is told as `response.in_progress`.
const PROGRESS_EVERY_MS: u64 = 5_000;

impl ResponsesStream {
    pub fn new(custom: CustomTools) -> Self {
        Self { custom, steps: ChatSteps::with_details(), ..Self::default() }
    }

    /// The stream of the gateway's request `request_id` for `model`: a silence before the upstream's first
    /// chunk starts the response under them (`keep_alive`).
    pub fn for_request(self, request_id: &str, model: &str) -> Self {
        Self { request_id: request_id.to_string(), asked_model: model.to_string(), ..self }
    }

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
                    if !matches!(&self.open, Some(o) if o.kind == Kind::Message) {
                        self.open_item(Kind::Message, Value::Null, Value::Null, &mut out);
                    }
                    let (id, index) = self.append(&delta);
                    self.emit(&mut out, json!({"type": "response.output_text.delta", "item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}));
                }
                ChatStep::Refusal(delta) => {
                    if !matches!(&self.open, Some(o) if o.kind == Kind::Refusal) {
                        self.open_item(Kind::Refusal, Value::Null, Value::Null, &mut out);
                    }
                    let (id, index) = self.append(&delta);
                    self.emit(&mut out, json!({"type": "response.refusal.delta", "item_id": id, "output_index": index, "content_index": 0, "delta": delta}));
                }
                ChatStep::ToolStart { id, name } => {
                    let kind = if self.custom.includes(&name) { Kind::Custom } else { Kind::Function };
                    self.open_item(kind, id, name, &mut out)
                }
                ChatStep::ToolArgs(args) => {
                    // Arguments belong to a call (none open: a call whose start never came, dropped).
                    let Some(kind) = self.open.as_ref().map(|o| o.kind) else { continue };
                    if !matches!(kind, Kind::Function | Kind::Custom) {
                        continue;
                    }
                    let (id, index) = self.append(&args);
                    if kind == Kind::Function {
                        self.emit(&mut out, json!({"type": "response.function_call_arguments.delta", "item_id": id, "output_index": index, "delta": args}));
                    }
                }
                ChatStep::Finish(reason) => self.incomplete = incomplete_reason(Some(&reason)),
                ChatStep::Usage(usage) => self.usage = Some(usage),
                ChatStep::Error(error) => self.fail(&error, &mut out),
                ChatStep::Done => self.finish(&mut out),
                ChatStep::Details(pieces) => {
                    self.details_seen = true;
                    let text: String = pieces.iter().filter_map(crate::providers::reasoning::readable).collect();
                    // Details with nothing to read that come while a message or call is written (a thought
                    // signature with its call) open no item there: they follow it as a reasoning item of their
                    // own, marked as its turn's (`close_item`).
                    let reasoning_open = matches!(&self.open, None | Some(Open { kind: Kind::Reasoning, .. }));
                    if !text.is_empty() || reasoning_open {
                        self.think(&text, &mut out);
                    }
                    crate::providers::reasoning::merge_details(&mut self.details, &pieces);
                }
                ChatStep::Thinking(text) if !self.details_seen => self.think(&text, &mut out),
                // Read from the details, which carry them.
                ChatStep::Thinking(_) | ChatStep::Signature(_) | ChatStep::Redacted(_) => {}
                ChatStep::StopSequence(_) => {} // a completed response says no more
            }
        }
        out.into_bytes()
    }

    /// What the client gets for upstream bytes that made no event (a keep-alive comment, details with nothing
    /// to read): a comment, and at most every `PROGRESS_EVERY_MS` a `response.in_progress`
    /// once the response has started. Codex's idle limit (5 minutes) counts events, not comments, so a
    /// long thought would otherwise end its stream and make it ask again (and pay again). A silence before
    /// the upstream's first chunk starts the response, under the gateway's request id, for the same reason.
    pub fn keep_alive(&mut self, now_ms: u64) -> Vec<u8> {
        let mut out = String::from(": keep-alive\n\n");
        if !self.started && !self.finished && !self.request_id.is_empty() {
            let chunk = json!({"id": self.request_id, "model": self.asked_model, "created": now_ms / 1000});
            self.start(&chunk, &mut out);
            self.progress_ms = now_ms;
        } else if self.started && !self.finished {
            if self.progress_ms == 0 {
                self.progress_ms = now_ms;
            } else if now_ms.saturating_sub(self.progress_ms) >= PROGRESS_EVERY_MS {
                self.progress_ms = now_ms;
                let r =
                    response(&self.id, &self.model, &self.created, "in_progress", None, self.done.clone(), Value::Null);
                self.emit(&mut out, json!({"type": "response.in_progress", "response": r}));
            }
        }
        out.into_bytes()
    }

    /// More of the model's reasoning: in the open reasoning item (one is opened), its readable text as
    /// summary deltas.
    fn think(&mut self, text: &str, out: &mut String) {
        if !matches!(&self.open, Some(o) if o.kind == Kind::Reasoning) {
            self.open_item(Kind::Reasoning, Value::Null, Value::Null, out);
        }
        if text.is_empty() {
            return;
        }
        let first = self.open.as_ref().is_some_and(|o| o.text.is_empty());
        let (id, index) = self.append(text);
        if first {
            let part = json!({"type": "summary_text", "text": ""});
            self.emit(out, json!({"type": "response.reasoning_summary_part.added", "item_id": id, "output_index": index, "summary_index": 0, "part": part}));
        }
        self.emit(out, json!({"type": "response.reasoning_summary_text.delta", "item_id": id, "output_index": index, "summary_index": 0, "delta": text}));
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
        let r = response(&self.id, &self.model, &self.created, "in_progress", None, Vec::new(), Value::Null);
        self.emit(out, json!({"type": "response.created", "response": r.clone()}));
        self.emit(out, json!({"type": "response.in_progress", "response": r}));
    }

    fn open_item(&mut self, kind: Kind, call_id: Value, name: Value, out: &mut String) {
        self.close_item(out, "completed");
        let index = self.done.len() as u64;
        let id = match kind {
            Kind::Message | Kind::Refusal => format!("msg_{index}_{}", self.id),
            Kind::Function | Kind::Custom => format!("fc_{index}_{}", self.id),
            Kind::Reasoning => format!("rs_{index}_{}", self.id),
        };
        let item = match kind {
            Kind::Reasoning => reasoning_item(&id, "", &[], "in_progress", false),
            Kind::Message | Kind::Refusal => {
                json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []})
            }
            Kind::Function => call_item(&id, &call_id, &name, "", "in_progress"),
            Kind::Custom => custom_call_item(&id, &call_id, &name, "", "in_progress"),
        };
        self.emit(out, json!({"type": "response.output_item.added", "output_index": index, "item": item}));
        let part = match kind {
            Kind::Message => Some(json!({"type": "output_text", "text": "", "annotations": []})),
            Kind::Refusal => Some(json!({"type": "refusal", "refusal": ""})),
            Kind::Function | Kind::Custom | Kind::Reasoning => None,
        };
        if let Some(part) = part {
            self.emit(out, json!({"type": "response.content_part.added", "item_id": id, "output_index": index, "content_index": 0, "part": part}));
        }
        self.open = Some(Open { index, id, kind, call_id, name, text: String::new() });
    }

    /// Closes the open item with `status` ("incomplete" for one an answer cut short).
    fn close_item(&mut self, out: &mut String, status: &str) {
        let Some(open) = self.open.take() else { return };
        let item = match open.kind {
            Kind::Reasoning => {
                if !open.text.is_empty() {
                    self.emit(out, json!({"type": "response.reasoning_summary_text.done", "item_id": open.id, "output_index": open.index, "summary_index": 0, "text": open.text}));
                    let part = json!({"type": "summary_text", "text": open.text});
                    self.emit(out, json!({"type": "response.reasoning_summary_part.done", "item_id": open.id, "output_index": open.index, "summary_index": 0, "part": part}));
                }
                reasoning_item(&open.id, &open.text, &std::mem::take(&mut self.details), status, false)
            }
            Kind::Message => {
                self.emit(out, json!({"type": "response.output_text.done", "item_id": open.id, "output_index": open.index, "content_index": 0, "text": open.text, "logprobs": []}));
                let part = json!({"type": "output_text", "text": open.text, "annotations": []});
                self.emit(out, json!({"type": "response.content_part.done", "item_id": open.id, "output_index": open.index, "content_index": 0, "part": part}));
                message_item(&open.id, &open.text, status)
            }
            Kind::Refusal => {
                self.emit(out, json!({"type": "response.refusal.done", "item_id": open.id, "output_index": open.index, "content_index": 0, "refusal": open.text}));
                let part = json!({"type": "refusal", "refusal": open.text});
                self.emit(out, json!({"type": "response.content_part.done", "item_id": open.id, "output_index": open.index, "content_index": 0, "part": part.clone()}));
                json!({"type": "message", "id": open.id, "status": status, "role": "assistant", "content": [part]})
            }
            Kind::Function => {
                self.emit(out, json!({"type": "response.function_call_arguments.done", "item_id": open.id, "output_index": open.index, "name": open.name, "arguments": open.text}));
                call_item(&open.id, &open.call_id, &open.name, &open.text, status)
            }
            Kind::Custom => {
                let input = custom_input(&open.text);
                self.emit(out, json!({"type": "response.custom_tool_call_input.delta", "item_id": open.id, "output_index": open.index, "delta": input}));
                self.emit(out, json!({"type": "response.custom_tool_call_input.done", "item_id": open.id, "output_index": open.index, "input": input}));
                custom_call_item(&open.id, &open.call_id, &open.name, &input, status)
            }
        };
        self.emit(out, json!({"type": "response.output_item.done", "output_index": open.index, "item": item.clone()}));
        self.done.push(item);
        // Details that came while this message or call was written (a thought signature with its call): a
        // reasoning item of their own, marked as the turn's before it, so a client keeping the items it was
        // given (Codex keeps each `output_item.done`) sends them back with that turn.
        if open.kind != Kind::Reasoning && !self.details.is_empty() {
            let index = self.done.len() as u64;
            let id = format!("rs_{index}_{}", self.id);
            let late = reasoning_item(&id, "", &std::mem::take(&mut self.details), "completed", true);
            self.emit(out, json!({"type": "response.output_item.added", "output_index": index, "item": late.clone()}));
            self.emit(out, json!({"type": "response.output_item.done", "output_index": index, "item": late.clone()}));
            self.done.push(late);
        }
    }

    /// The stream failed: an `error` event, then `response.failed` (never `completed`).
    fn fail(&mut self, error: &Value, out: &mut String) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.start(&json!({}), out);
        // Codex decides by the code whether (and when) to ask again.
        let code =
            if error.get("code").and_then(Value::as_u64) == Some(429) { "rate_limit_exceeded" } else { "server_error" };
        let message = error_message(error);
        self.emit(out, json!({"type": "error", "code": "upstream_error", "message": message, "param": null}));
        let usage = usage_of(self.usage.as_ref());
        let mut r = response(&self.id, &self.model, &self.created, "failed", None, self.done.clone(), usage);
        r["error"] = json!({"code": code, "message": message});
        self.emit(out, json!({"type": "response.failed", "response": r}));
    }

    fn finish(&mut self, out: &mut String) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.start(&json!({}), out);
        self.close_item(out, if self.incomplete.is_some() { "incomplete" } else { "completed" });
        let usage = usage_of(self.usage.as_ref());
        let r = response(&self.id, &self.model, &self.created, "completed", self.incomplete, self.done.clone(), usage);
        let status = if self.incomplete.is_some() { "incomplete" } else { "completed" };
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
        let (chat, ..) = to_chat(body).expect("valid");
        let m = &chat.body["messages"];
        assert_eq!(m[0], json!({"role": "system", "content": "You are Codex."}));
        assert_eq!(m[1]["content"][0]["text"], "list files");
        assert_eq!(m[2]["tool_calls"].as_array().map(Vec::len), Some(2), "calls in a row are one turn");
        assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "c1", "content": "a.txt"}));
        assert_eq!(chat.body["tools"][0]["function"]["strict"], true);
        assert_eq!(chat.max_tokens, Some(300));
    }

    #[test]
    fn a_bad_output_bound_is_named_as_the_client_wrote_it() {
        for bad in ["0", "-1", "\"5\"", "1.5"] {
            let body = format!(r#"{{"model":"m","input":"hi","max_output_tokens":{bad}}}"#);
            let err = to_chat(body.as_bytes()).expect_err(bad);
            assert_eq!(err.param.as_deref(), Some("max_output_tokens"), "{bad}");
        }
    }

    #[test]
    fn a_custom_tool_is_a_one_string_function_and_its_calls_come_back_custom() {
        let body = br#"{"model":"m","tools":[{"type":"custom","name":"apply_patch","description":"Edit files.",
              "format":{"type":"grammar","syntax":"lark","definition":"start: \"*** Begin Patch\""}}],
            "input":[{"role":"user","content":"fix it"},
              {"type":"custom_tool_call","call_id":"c1","name":"apply_patch","input":"*** Begin Patch"},
              {"type":"custom_tool_call_output","call_id":"c1","output":"Done"}]}"#;
        let (chat, custom, _) = to_chat(body).expect("valid");
        let function = &chat.body["tools"][0]["function"];
        assert_eq!(function["parameters"]["required"], json!(["input"]));
        assert!(function["description"].as_str().is_some_and(|d| d.contains("lark grammar")));
        let m = &chat.body["messages"];
        assert_eq!(m[1]["tool_calls"][0]["function"]["arguments"], r#"{"input":"*** Begin Patch"}"#);
        assert_eq!(m[2], json!({"role": "tool", "tool_call_id": "c1", "content": "Done"}));

        let answer = br#"{"id":"gen-1","choices":[{"message":{"content":null,"tool_calls":[{"id":"c2","type":"function","function":{"name":"apply_patch","arguments":"{\"input\":\"*** Begin Patch\\n*** End Patch\"}"}}]},"finish_reason":"tool_calls"}]}"#;
        let r: Value = serde_json::from_slice(&answer_from_chat(answer.to_vec(), &custom)).expect("json");
        assert_eq!(r["output"][0]["type"], "custom_tool_call");
        assert_eq!(r["output"][0]["input"], "*** Begin Patch\n*** End Patch");

        let stream = "data: {\"id\":\"gen-1\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c2\",\"function\":{\"name\":\"apply_patch\",\"arguments\":\"{\\\"input\\\":\"}}]}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"ok\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
        let out = String::from_utf8(ResponsesStream::new(custom).feed(stream.as_bytes().to_vec())).expect("utf8");
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert!(!names.contains(&"response.function_call_arguments.delta"), "{out}");
        assert!(names.contains(&"response.custom_tool_call_input.done"), "{out}");
        assert!(out.contains(r#""input":"ok""#), "{out}");
    }

    #[test]
    fn refuses_state_and_forced_builtin_tools_by_name() {
        for (json, param) in [
            (r#"{"model":"m","input":"x","store":true}"#, "store"),
            (r#"{"model":"m","input":"x","previous_response_id":"resp_1"}"#, "previous_response_id"),
            (r#"{"model":"m","input":"x","conversation":"conv_1"}"#, "conversation"),
            (r#"{"model":"m","input":"x","background":true}"#, "background"),
            (r#"{"model":"m","input":"x","prompt":{"id":"pmpt_1"}}"#, "prompt"),
            (r#"{"model":"m","input":"x","tool_choice":{"type":"web_search"}}"#, "tool_choice"),
            (r#"{"model":"m","input":"x","tools":[{"type":"web_search"}],"tool_choice":"required"}"#, "tool_choice"),
            (
                r#"{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":[{"type":"input_file","file_id":"f"}]}]}"#,
                "input[0].output",
            ),
            (r#"{"model":"m"}"#, "input"),
            (
                r#"{"model":"m","input":"x","tool_choice":{"type":"allowed_tools","mode":"any","tools":[]}}"#,
                "tool_choice.mode",
            ),
            (
                r#"{"model":"m","input":"x","tools":[{"type":"web_search"}],"tool_choice":{"type":"allowed_tools","mode":"required","tools":[{"type":"web_search"}]}}"#,
                "tool_choice",
            ),
        ] {
            assert_eq!(to_chat(json.as_bytes()).err().and_then(|e| e.param).as_deref(), Some(param), "{json}");
        }
    }

    #[test]
    fn the_service_tier_is_carried_and_held_to_the_chat_rules() {
        let tier = |t: &str| to_chat(format!(r#"{{"model":"m","input":"x","service_tier":"{t}"}}"#).as_bytes());
        let (chat, ..) = tier("priority").expect("valid");
        assert_eq!(chat.refuse_unpriced_fees().expect_err("a dearer tier").param.as_deref(), Some("service_tier"));
        let (chat, ..) = tier("auto").expect("valid");
        assert!(chat.refuse_unpriced_fees().is_ok());
        assert_eq!(chat.body.get("service_tier"), Some(&json!("auto")));
    }

    #[test]
    fn chat_fields_in_errors_are_named_as_the_client_wrote_them() {
        // Chat messages: the instructions, input[0], the calls from input[2] (a reasoning item between),
        // input[4]'s output, input[5].
        let body = r#"{"model":"m","instructions":"be brief","input":[
            {"role":"user","content":[{"type":"input_text","text":"look"},{"type":"input_image","image_url":"https://i/x.png"}]},
            {"type":"reasoning","summary":[]},
            {"type":"function_call","call_id":"a","name":"f","arguments":"{}"},
            {"type":"function_call","call_id":"b","name":"f","arguments":"{}"},
            {"type":"function_call_output","call_id":"a","output":[{"type":"input_text","text":"done"}]},
            {"role":"user","content":"and?"}]}"#;
        let (.., origins) = to_chat(body.as_bytes()).expect("valid");
        for (chat, responses) in [
            ("messages[1].content[1]", "input[0].content[1]"),
            ("messages[0]", "instructions"),
            ("messages[2].tool_calls[1].function.arguments", "input[3].arguments"),
            ("messages[2].tool_calls[0]", "input[2]"),
            ("messages[2].tool_calls[7]", "input[2]"),
            ("messages[2]", "input[2]"),
            ("messages[3].content[0]", "input[4].output[0]"),
            ("messages[4].content", "input[5].content"),
            ("messages[9]", "input"),
            ("messages", "input"),
            ("max_tokens", "max_output_tokens"),
            ("response_format.json_schema", "text.format.json_schema"),
            ("verbosity", "text.verbosity"),
            ("max_tokens_extra", "max_tokens_extra"),
            ("tools[1]", "tools[1]"),
        ] {
            let invalid = InvalidRequest::param(format!("`{chat}` is not allowed here"), chat);
            let written = as_written(invalid, &origins);
            assert_eq!(written.param.as_deref(), Some(responses));
            assert_eq!(written.message, format!("`{responses}` is not allowed here"));
        }
        // An assistant's text and the calls after it are one chat message: its fields name the text's item,
        // its calls' theirs.
        let body = r#"{"model":"m","input":[{"role":"user","content":"look"},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Let me check."}]},
            {"type":"function_call","call_id":"a","name":"f","arguments":"{}"},
            {"type":"function_call","call_id":"b","name":"f","arguments":"{}"}]}"#;
        let (.., merged) = to_chat(body.as_bytes()).expect("valid");
        for (chat, responses) in [
            ("messages[1].tool_calls[1].function.arguments", "input[3].arguments"),
            ("messages[1].tool_calls[0]", "input[2]"),
            ("messages[1].content[0]", "input[1].content[0]"),
            ("messages[1]", "input[1]"),
        ] {
            let written = as_written(InvalidRequest::param("bad", chat), &merged);
            assert_eq!(written.param.as_deref(), Some(responses), "{chat}");
        }
        // Every field the message names, whatever the param; a tool output's content is its `output`.
        let quoted = InvalidRequest::param("messages[3].content[0] and `messages[1].content` differ.", "messages[3]");
        let written = as_written(quoted, &origins);
        assert_eq!(written.message, "input[4].output[0] and `input[0].content` differ.");
        assert_eq!(written.param.as_deref(), Some("input[4]"));
        for odd in ["messages[", "messages[x]", "messages[99999999999999999999999]", "messages]", "messages[]]"] {
            as_written(InvalidRequest::param(odd, odd), &origins);
        }
        // A bare `messages` is replaced where quoted only.
        let empty = InvalidRequest::param("`messages` must contain at least one message", "messages");
        assert_eq!(as_written(empty, &origins).message, "`input` must contain at least one message");
        // `input` as one string is one message.
        let (.., origins) = to_chat(br#"{"model":"m","input":"hi"}"#).expect("valid");
        assert_eq!(origins.field("messages[0].content").as_deref(), Some("input"));
    }

    #[test]
    fn allowed_tools_offer_only_those() {
        let tools = r#"[{"type":"function","name":"a","parameters":{"type":"object"}},
            {"type":"function","name":"b","parameters":{"type":"object"}},{"type":"custom","name":"apply_patch"},
            {"type":"web_search"}]"#;
        let body = |mode: &str, allowed: &str| {
            format!(
                r#"{{"model":"m","input":"x","tools":{tools},"tool_choice":{{"type":"allowed_tools","mode":"{mode}","tools":{allowed}}}}}"#
            )
        };
        let allowed =
            r#"[{"type":"function","name":"b"},{"type":"custom","name":"apply_patch"},{"type":"web_search"}]"#;
        let (chat, custom, _) = to_chat(body("required", allowed).as_bytes()).expect("valid");
        let offered: Vec<&Value> =
            chat.body["tools"].as_array().expect("tools").iter().map(|t| &t["function"]["name"]).collect();
        assert_eq!(offered, [&json!("b"), &json!("apply_patch")]);
        assert_eq!(chat.body["tool_choice"], "required");
        assert_eq!(custom.0, ["apply_patch"]);
        // None of them allowed: all offered, none to be called (a history of calls to them stays valid).
        let (chat, ..) = to_chat(body("auto", r#"[{"type":"function","name":"c"}]"#).as_bytes()).expect("valid");
        assert_eq!(chat.body["tools"].as_array().map(Vec::len), Some(3));
        assert_eq!(chat.body["tool_choice"], "none");
        let required = to_chat(body("required", r#"[{"type":"function","name":"c"}]"#).as_bytes());
        assert_eq!(required.err().and_then(|e| e.param).as_deref(), Some("tool_choice"));
        // A tool is allowed by its kind and name: a function entry does not let through a custom tool.
        let (chat, ..) = to_chat(
            body("auto", r#"[{"type":"function","name":"apply_patch"},{"type":"function","name":"a"}]"#).as_bytes(),
        )
        .expect("valid");
        let offered: Vec<&Value> =
            chat.body["tools"].as_array().expect("tools").iter().map(|t| &t["function"]["name"]).collect();
        assert_eq!(offered, [&json!("a")]);
    }

    #[test]
    fn builtin_tools_are_not_offered_and_codex_fields_are_carried() {
        // What Codex sends on a turn: a function tool beside the cached web search it offers by default.
        let codex = r#"{"model":"m","input":"x","parallel_tool_calls":true,"prompt_cache_key":"conv-1",
            "text":{"verbosity":"low"},"tool_choice":"auto",
            "tools":[{"type":"function","name":"shell","parameters":{"type":"object"}},{"type":"web_search","external_web_access":false}]}"#;
        let (chat, ..) = to_chat(codex.as_bytes()).expect("valid");
        let tools = chat.body["tools"].as_array().expect("tools");
        assert_eq!(tools.len(), 1, "{tools:?}");
        assert_eq!(tools[0]["function"]["name"], "shell");
        assert_eq!((&chat.body["tool_choice"], &chat.body["parallel_tool_calls"]), (&json!("auto"), &json!(true)));
        assert_eq!((&chat.body["verbosity"], &chat.body["prompt_cache_key"]), (&json!("low"), &json!("conv-1")));

        // Claude's `verbosity` is its effort: OpenAI's is not carried to it.
        let claude = r#"{"model":"anthropic/claude-sonnet-4.5","input":"x","text":{"verbosity":"low"}}"#;
        assert!(to_chat(claude.as_bytes()).expect("valid").0.body.get("verbosity").is_none());

        // Only built-in tools: none offered, and nothing that needs tools is sent.
        let only = r#"{"model":"m","input":"x","tool_choice":"auto","parallel_tool_calls":false,"tools":[{"type":"web_search"}]}"#;
        let (chat, ..) = to_chat(only.as_bytes()).expect("valid");
        for field in ["tools", "tool_choice", "parallel_tool_calls"] {
            assert!(chat.body.get(field).is_none(), "{field}: {:?}", chat.body);
        }
    }

    #[test]
    fn a_tool_output_in_parts_keeps_its_text_and_images() {
        let body = r#"{"model":"m","input":[
            {"type":"function_call","call_id":"c1","name":"view_image","arguments":"{}"},
            {"type":"function_call_output","call_id":"c1","output":[{"type":"input_text","text":"the chart"},
                {"type":"input_image","image_url":"data:image/png;base64,iVBORw0KGgo="}]}]}"#;
        let (chat, ..) = to_chat(body.as_bytes()).expect("valid");
        let tool = &chat.body["messages"][1];
        assert_eq!(tool["role"], "tool");
        assert_eq!(tool["content"][0], json!({"type": "text", "text": "the chart"}));
        assert_eq!(tool["content"][1]["image_url"]["url"], "data:image/png;base64,iVBORw0KGgo=");
        let plain = r#"{"model":"m","input":[{"type":"function_call_output","call_id":"c1","output":"ok"}]}"#;
        assert_eq!(to_chat(plain.as_bytes()).expect("valid").0.body["messages"][0]["content"], "ok");
        let object = r#"{"model":"m","input":[{"type":"function_call_output","call_id":"c1","output":{"ok":true}}]}"#;
        assert_eq!(to_chat(object.as_bytes()).expect("valid").0.body["messages"][0]["content"], r#"{"ok":true}"#);
    }

    #[test]
    fn a_silence_is_told_as_progress_and_a_cut_answer_says_why() {
        let mut s = ResponsesStream::new(CustomTools::default());
        assert_eq!(s.keep_alive(1_000), b": keep-alive\n\n", "nothing has started: a comment only");
        s.feed(b"data: {\"id\":\"gen-1\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n".to_vec());
        let told = |s: &mut ResponsesStream, at: u64| String::from_utf8(s.keep_alive(at)).expect("utf8");
        assert!(!told(&mut s, 2_000).contains("event:"), "the first silence starts the clock");
        assert!(!told(&mut s, 6_000).contains("event:"));
        assert!(told(&mut s, 7_000).contains("event: response.in_progress"), "5 s on: an event Codex counts");
        assert!(!told(&mut s, 8_000).contains("event:"));
        // Silent before its first chunk: the response starts at once, under the gateway's request id, and
        // the upstream's start makes no second one.
        let mut early = ResponsesStream::new(CustomTools::default()).for_request("req-7", "openai/o3");
        let first = told(&mut early, 1_000);
        assert!(first.contains("event: response.created") && first.contains(r#""id":"resp_req-7""#), "{first}");
        assert!(first.contains(r#""model":"openai/o3""#), "{first}");
        let out = String::from_utf8(early.feed(
            b"data: {\"id\":\"gen-9\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n".to_vec(),
        ))
        .expect("utf8");
        assert!(!out.contains("response.created") && out.contains(r#""id":"resp_req-7""#), "{out}");
        let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"content_filter\"}]}\n\ndata: [DONE]\n\n";
        let out = String::from_utf8(s.feed(cut.as_bytes().to_vec())).expect("utf8");
        let last: Value =
            serde_json::from_str(out.lines().filter_map(|l| l.strip_prefix("data: ")).next_back().unwrap_or("null"))
                .expect("json");
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["incomplete_details"]["reason"], "content_filter");
        assert_eq!(last["response"]["output"][0]["status"], "incomplete", "the item cut short");
        // A rate-limited upstream fails the stream with the code Codex waits on.
        let mut s = ResponsesStream::new(CustomTools::default());
        let out = String::from_utf8(s.feed(b"data: {\"error\":{\"code\":429,\"message\":\"slow\"}}\n\n".to_vec()))
            .expect("utf8");
        assert!(out.contains(r#""code":"rate_limit_exceeded""#), "{out}");
        // `"error": null` in a chunk is no error.
        let mut s = ResponsesStream::new(CustomTools::default());
        let out = String::from_utf8(s.feed(b"data: {\"id\":\"g\",\"error\":null,\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\ndata: [DONE]\n\n".to_vec())).expect("utf8");
        assert!(out.contains("response.completed") && !out.contains("response.failed"), "{out}");
    }

    #[test]
    fn a_refusal_is_a_refusal_part_whole_or_streamed() {
        let answer = br#"{"id":"c","model":"m","created":1,"choices":[{"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}"#;
        let whole: Value =
            serde_json::from_slice(&answer_from_chat(answer.to_vec(), &CustomTools::default())).expect("json");
        assert_eq!(whole["output"][0]["content"], json!([{"type": "refusal", "refusal": "I can't help with that."}]));
        let stream =
            "data: {\"id\":\"g\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"refusal\":\"I can't\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"refusal\":\" help.\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let out = String::from_utf8(ResponsesStream::new(CustomTools::default()).feed(stream.as_bytes().to_vec()))
            .expect("utf8");
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(names.iter().filter(|n| **n == "response.refusal.delta").count(), 2, "{out}");
        assert!(names.contains(&"response.refusal.done"));
        assert!(out.contains(r#""part":{"refusal":"I can't help.","type":"refusal"}"#), "{out}");
        // The answer's output sent back as input (as an app keeps its history) is taken, the refusal as its text.
        let back = format!(
            r#"{{"model":"m","input":[{{"role":"user","content":"q"}},{}]}}"#,
            serde_json::to_string(&whole["output"][0]).expect("json")
        );
        let (chat, _, _) = to_chat(back.as_bytes()).expect("its own output is valid input");
        assert_eq!(chat.body["messages"][1]["content"], json!([{"type": "text", "text": "I can't help with that."}]));
    }

    #[test]
    fn reasoning_is_given_out_as_an_item_and_sent_back_goes_with_the_next_assistant_turn() {
        let details = json!([
            {"type": "reasoning.summary", "summary": "Checking the files.", "format": "openai-responses-v1", "index": 0},
            {"type": "reasoning.encrypted", "data": "gAAAAB", "id": "rs_x", "format": "openai-responses-v1", "index": 1}
        ]);
        let answer = json!({"id": "gen-7", "model": "openai/gpt-5", "created": 1, "choices": [{"message": {"role": "assistant",
            "content": null, "reasoning": "Checking the files.", "reasoning_details": details,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}]});
        let whole: Value =
            serde_json::from_slice(&answer_from_chat(answer.to_string().into_bytes(), &CustomTools::default()))
                .expect("json");
        let item = &whole["output"][0];
        assert_eq!(
            (item["type"].as_str(), item["summary"][0]["text"].as_str()),
            (Some("reasoning"), Some("Checking the files."))
        );
        assert_eq!(whole["output"][1]["type"], "function_call");
        // The output sent back, as Codex sends it: the calls' turn carries the details unchanged.
        let back = json!({"model": "openai/gpt-5", "input": [{"role": "user", "content": "ls"}, item, whole["output"][1],
            {"type": "function_call_output", "call_id": "c1", "output": "a.txt"}]});
        let (chat, _, _) = to_chat(back.to_string().as_bytes()).expect("valid");
        assert_eq!(chat.body["messages"][1]["reasoning_details"], details);
        assert_eq!(chat.body["messages"][1]["tool_calls"][0]["id"], "c1");
        // Before a message of the assistant's, the same; OpenAI's own encrypted reasoning (not this gateway's) is dropped.
        let foreign = json!({"type": "reasoning", "summary": [], "encrypted_content": "gAAAAB-openai"});
        let back = json!({"model": "m", "input": [{"role": "user", "content": "q"}, item, {"role": "assistant", "content": "a"},
            {"role": "user", "content": "q2"}, foreign, {"role": "assistant", "content": "b"}]});
        let (chat, _, _) = to_chat(back.to_string().as_bytes()).expect("valid");
        assert_eq!(chat.body["messages"][1]["reasoning_details"], details);
        assert!(chat.body["messages"][3].get("reasoning_details").is_none());
        // A reasoning without details (only its text, as some providers give it): a summary, nothing encrypted.
        let plain =
            json!({"id": "g", "choices": [{"message": {"content": "a", "reasoning": "hm"}, "finish_reason": "stop"}]});
        let whole: Value =
            serde_json::from_slice(&answer_from_chat(plain.to_string().into_bytes(), &CustomTools::default()))
                .expect("json");
        assert_eq!(whole["output"][0]["summary"][0]["text"], "hm");
        assert_eq!(whole["output"][0]["encrypted_content"], Value::Null);
    }

    #[test]
    fn reasoning_sent_back_joins_its_own_turn_only() {
        let ours = |text: &str| {
            let details = json!([{"type": "reasoning.text", "text": text, "index": 0}]);
            json!({"type": "reasoning", "summary": [], "encrypted_content": format!("{REASONING_PREFIX}{details}")})
        };
        let call = |id: &str| json!({"type": "function_call", "call_id": id, "name": "f", "arguments": "{}"});
        let output = |id: &str| json!({"type": "function_call_output", "call_id": id, "output": "ok"});
        // Thinking interleaved with one turn's calls: all of it goes with that turn.
        let body = json!({"model": "m", "input": [{"role": "user", "content": "q"}, ours("a"), call("c1"), ours("b"), call("c2"),
            output("c1"), output("c2")]});
        let (chat, _, _) = to_chat(body.to_string().as_bytes()).expect("valid");
        let texts: Vec<&str> = chat.body["messages"][1]["reasoning_details"]
            .as_array()
            .expect("details")
            .iter()
            .filter_map(|d| d["text"].as_str())
            .collect();
        assert_eq!(texts, ["a", "b"]);
        // Reasoning whose turn never came (another's message, or an output, after it) goes nowhere.
        for between in [json!({"role": "user", "content": "stop"}), output("c1")] {
            let body = json!({"model": "m", "input": [{"role": "user", "content": "q"}, call("c1"), ours("lost"), between,
                {"role": "assistant", "content": "a"}]});
            let (chat, _, _) = to_chat(body.to_string().as_bytes()).expect("valid");
            assert!(chat.body["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .all(|m| m.get("reasoning_details").is_none()));
        }
    }

    #[test]
    fn empty_details_beside_content_or_arguments_split_nothing() {
        let chunk =
            |delta: Value| format!("data: {}\n\n", json!({"id": "g", "choices": [{"index": 0, "delta": delta}]}));
        let mut stream = chunk(json!({"reasoning": "hm", "reasoning_details": []}));
        stream.push_str(&chunk(json!({"content": "Hel", "reasoning_details": []})));
        stream.push_str(&chunk(json!({"content": "lo", "reasoning_details": []})));
        stream.push_str(&chunk(json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\":"}}], "reasoning_details": []})));
        stream.push_str(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}], "reasoning_details": []}),
        ));
        stream.push_str(
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n",
        );
        let out =
            String::from_utf8(ResponsesStream::new(CustomTools::default()).feed(stream.into_bytes())).expect("utf8");
        let completed: Value = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).expect("json"))
            .expect("events");
        let output = completed["response"]["output"].as_array().expect("output");
        let kinds: Vec<&str> = output.iter().filter_map(|i| i["type"].as_str()).collect();
        assert_eq!(kinds, ["reasoning", "message", "function_call"], "{out}");
        assert_eq!(output[0]["summary"][0]["text"], "hm", "the reasoning text, with no details beside it");
        assert_eq!(output[1]["content"][0]["text"], "Hello");
        assert_eq!(output[2]["arguments"], "{\"a\":1}");
    }

    #[test]
    fn a_streamed_reasoning_is_told_as_summary_events_and_kept_whole() {
        let chunk = |delta: Value| {
            format!("data: {}\n\n", json!({"id": "gen-1", "model": "m", "choices": [{"index": 0, "delta": delta}]}))
        };
        let mut stream = String::new();
        for piece in ["Look", "ing."] {
            let detail = json!({"type": "reasoning.text", "text": piece, "format": "anthropic-claude-v1", "index": 0});
            stream.push_str(&chunk(json!({"reasoning": piece, "reasoning_details": [detail]})));
        }
        stream.push_str(&chunk(
            json!({"reasoning_details": [{"type": "reasoning.text", "text": "", "signature": "sig", "index": 0}]}),
        ));
        stream.push_str(&chunk(json!({"content": "Done."})));
        stream.push_str(
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        );
        let out =
            String::from_utf8(ResponsesStream::new(CustomTools::default()).feed(stream.into_bytes())).expect("utf8");
        let events: Vec<Value> = out
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).expect("json"))
            .collect();
        let deltas: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "response.reasoning_summary_text.delta")
            .filter_map(|e| e["delta"].as_str())
            .collect();
        assert_eq!(deltas, ["Look", "ing."], "each piece told once");
        let completed = events.last().expect("events");
        assert_eq!(completed["type"], "response.completed");
        let item = &completed["response"]["output"][0];
        assert_eq!((item["type"].as_str(), item["summary"][0]["text"].as_str()), (Some("reasoning"), Some("Looking.")));
        let kept = item["encrypted_content"].as_str().and_then(|c| c.strip_prefix(REASONING_PREFIX)).expect("ours");
        let kept: Value = serde_json::from_str(kept).expect("json");
        assert_eq!(
            kept,
            json!([{"type": "reasoning.text", "text": "Looking.", "format": "anthropic-claude-v1", "index": 0, "signature": "sig"}])
        );
        assert_eq!(completed["response"]["output"][1]["content"][0]["text"], "Done.");
        let order: Vec<&str> =
            events.iter().filter_map(|e| e["type"].as_str()).filter(|t| t.contains("reasoning_summary_part")).collect();
        assert_eq!(order, ["response.reasoning_summary_part.added", "response.reasoning_summary_part.done"]);
    }

    #[test]
    fn an_inline_file_is_a_chat_file_and_one_by_id_is_refused_by_name() {
        let body = br#"{"model":"m","input":[{"role":"user","content":[{"type":"input_file","filename":"a.pdf","file_data":"data:application/pdf;base64,JVBE"},{"type":"input_text","text":"sum up"}]}]}"#;
        let (chat, _, _) = to_chat(body).expect("valid");
        assert_eq!(
            chat.body["messages"][0]["content"][0],
            json!({"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}})
        );
        let by_id = br#"{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-1"}]}]}"#;
        let Err(refused) = to_chat(by_id) else { panic!("a file by id is refused") };
        assert_eq!(refused.param.as_deref(), Some("input[0]"), "{}", refused.message);
    }

    #[test]
    fn details_that_come_with_a_call_go_back_with_that_call() {
        // Text, then a call whose chunk carries the thought signature (as Gemini's through OpenRouter do).
        let signature = json!([{"type": "reasoning.encrypted", "data": "sig-1", "index": 0}]);
        let call = json!({"choices": [{"delta": {"reasoning_details": signature, "tool_calls": [{"index": 0, "id": "c1",
            "function": {"name": "now", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]});
        let stream = format!(
            "data: {{\"id\":\"gen-1\",\"choices\":[{{\"delta\":{{\"content\":\"Let me check.\"}}}}]}}\n\ndata: {call}\n\ndata: [DONE]\n\n"
        );
        let out =
            String::from_utf8(ResponsesStream::new(CustomTools::default()).feed(stream.into_bytes())).expect("utf8");
        let done: Vec<Value> = out
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|e| e["type"] == "response.output_item.done")
            .map(|e| e["item"].clone())
            .collect();
        let kinds: Vec<&str> = done.iter().filter_map(|i| i["type"].as_str()).collect();
        assert!(kinds.contains(&"reasoning"), "the signature is in an item the client keeps: {kinds:?}");
        // Codex sends back the items it was given, then the call's output.
        let mut input = vec![json!({"type": "message", "role": "user", "content": "what time is it"})];
        input.extend(done);
        input.push(json!({"type": "function_call_output", "call_id": "c1", "output": "noon"}));
        let body = json!({"model": "google/gemini-3-pro-preview", "input": input});
        let chat = to_chat(body.to_string().as_bytes()).expect("valid").0;
        let messages = chat.body["messages"].as_array().cloned().unwrap_or_default();
        let turn = messages.iter().find(|m| m["role"] == "assistant").cloned().unwrap_or_default();
        assert_eq!(turn["tool_calls"][0]["id"], "c1");
        assert_eq!(turn["reasoning_details"], signature, "on the call's own turn");
        assert_eq!(messages.iter().filter(|m| m["role"] == "assistant").count(), 1);
    }

    #[test]
    fn text_then_calls_of_one_turn_are_one_assistant_message() {
        let body = r#"{"model":"m","tools":[{"type":"function","name":"now","parameters":null}],"input":[
            {"type":"message","role":"user","content":"what time is it"},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Let me check."}]},
            {"type":"function_call","call_id":"c1","name":"now","arguments":"{}"},
            {"type":"function_call_output","call_id":"c1","output":"noon"}]}"#;
        let chat = to_chat(body.as_bytes()).expect("valid").0;
        let messages = chat.body["messages"].as_array().cloned().unwrap_or_default();
        let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool"]);
        assert_eq!(messages[1]["tool_calls"][0]["id"], "c1");
        assert!(messages[1]["content"].to_string().contains("Let me check."));
        // `parameters: null` (a function without arguments) is an empty object schema, not null.
        assert_eq!(chat.body["tools"][0]["function"]["parameters"], json!({"type": "object"}));
    }

    #[test]
    fn calls_of_openai_built_in_tools_in_the_history_are_dropped() {
        let body = r#"{"model":"m","input":[{"type":"message","role":"user","content":"find it"},
            {"type":"web_search_call","id":"ws_1","status":"completed","action":{"type":"search","query":"q"}},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"found"}]}]}"#;
        let chat = to_chat(body.as_bytes()).expect("valid").0;
        assert_eq!(chat.body["messages"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_failed_stream_ends_failed_never_completed() {
        let stream = "data: {\"id\":\"gen-1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"error\":{\"message\":\"cut\"}}\n\ndata: [DONE]\n\n";
        let out = String::from_utf8(ResponsesStream::new(CustomTools::default()).feed(stream.as_bytes().to_vec()))
            .expect("utf8");
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(names.last(), Some(&"response.failed"), "{out}");
        assert!(!names.contains(&"response.completed"));
    }

    #[test]
    fn a_stream_becomes_numbered_response_events() {
        let stream = "data: {\"id\":\"gen-1\",\"model\":\"m\",\"created\":5,\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"shell\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"cost\":0.1}}\n\ndata: [DONE]\n\n";
        let mut s = ResponsesStream::new(CustomTools::default());
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
