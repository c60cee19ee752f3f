//! OpenAI chat request → Anthropic Messages request (`POST /v1/messages`).
//!
//! System and developer messages become the top-level `system` (as blocks, each
//! keeping its `cache_control`, so prompt caching works on this route); text parts
//! keep their `cache_control` too; tool results
//! become `tool_result` blocks in a user turn; consecutive turns of one role are
//! merged (Anthropic wants user and assistant to alternate); `max_tokens` is
//! required there, so it defaults from the model's limit. `reasoning.max_tokens`
//! turns on extended thinking with that budget, and an assistant turn's
//! `reasoning_details` go back as its thinking blocks (`providers::reasoning`).
//! OpenAI-only fields
//! with no equivalent (`logprobs`, penalties, `n`, `seed`, …) are dropped.

use serde_json::{json, Map, Value};

use crate::domain::chat::ChatRequest;
use crate::domain::InvalidRequest;
use crate::providers::reasoning;
use crate::providers::translate::{
    check_nested_json, data_url, image_url, push_turn, stop_sequences, text_of, tool_calls, unfit, Unfit,
};

/// Builds the Anthropic body for `chat`, addressed to `native_model`.
pub fn messages_request(
    chat: &ChatRequest,
    native_model: &str,
    default_max_tokens: u64,
) -> Result<Value, InvalidRequest> {
    let body = &chat.body;
    check_nested_json(body, false)?;
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for (i, message) in body.get("messages").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        match role {
            "system" | "developer" => system.extend(system_blocks(message.get("content"))),
            "user" => push_turn(&mut turns, "user", content_blocks(message.get("content"), i)?),
            "assistant" => {
                // Earlier thinking goes back first, as Anthropic wants it on tool-use turns.
                let details = message.get("reasoning_details").and_then(Value::as_array);
                let mut blocks = details.map_or_else(Vec::new, |d| reasoning::blocks_from_details(d, true));
                blocks.extend(content_blocks(message.get("content"), i)?);
                blocks.extend(
                    tool_calls(message, i)?
                        .into_iter()
                        .map(|c| json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments})),
                );
                if !blocks.is_empty() {
                    push_turn(&mut turns, "assistant", blocks);
                }
            }
            "tool" | "function" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                // Parts (text, images, cache breakpoints) stay blocks; a plain text stays text. A result the
                // Messages API marked `is_error` (its first part says "[error]") is marked so again.
                let mut content = match message.get("content") {
                    Some(Value::Array(_)) => Value::Array(content_blocks(message.get("content"), i)?),
                    other => Value::from(text_of(other)),
                };
                let failed = content.pointer("/0/text").and_then(Value::as_str) == Some(super::inbound::TOOL_ERROR);
                let mut breakpoint = None;
                if let (true, Some(parts)) = (failed, content.as_array_mut()) {
                    // The marker goes; a cache breakpoint it carried (the result had nothing else) stays.
                    breakpoint = parts.remove(0).get("cache_control").cloned();
                }
                // An empty result has no content (an empty text block is refused by Anthropic).
                let empty = match &content {
                    Value::String(text) => text.is_empty(),
                    Value::Array(parts) => parts.is_empty(),
                    _ => false,
                };
                let mut result = json!({"type": "tool_result", "tool_use_id": id});
                if !empty {
                    result["content"] = content;
                }
                if failed {
                    result["is_error"] = Value::Bool(true);
                }
                if let Some(cache) = breakpoint {
                    result["cache_control"] = cache;
                }
                push_turn(&mut turns, "user", vec![result]);
            }
            other => return Err(unfit(i, Unfit::Role(other))),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), native_model.into());
    if !system.is_empty() {
        out.insert("system".into(), system.into());
    }
    let messages: Vec<Value> =
        turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    out.insert("messages".into(), messages.into());
    out.insert("max_tokens".into(), chat.max_tokens.unwrap_or(default_max_tokens).into());
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        out.insert("tools".into(), tools.iter().filter_map(tool).collect::<Vec<_>>().into());
    }
    let mut choice = body.get("tool_choice").and_then(tool_choice);
    // One call at a time: Anthropic says it on the choice.
    let offered = out.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) && offered {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    if let Some(stop) = stop_sequences(body) {
        out.insert("stop_sequences".into(), stop);
    }
    for field in ["temperature", "top_p", "top_k"] {
        if let Some(v) = body.get(field).filter(|v| v.is_number()) {
            out.insert(field.into(), v.clone());
        }
    }
    if let Some(thinking) = reasoning::anthropic_thinking(body.get("reasoning")) {
        out.insert("thinking".into(), thinking);
    }
    // OpenRouter's `verbosity` is Anthropic's effort (what a Messages client's `output_config.effort` became),
    // and a JSON Schema response format is Anthropic's structured output (`output_config.format`): a model
    // too old for it answers Anthropic's 400, where it used to be dropped and the answer was prose.
    let mut config = Map::new();
    if let Some(effort) = body.get("verbosity").filter(|v| v.is_string()) {
        config.insert("effort".into(), effort.clone());
    }
    let format = body.get("response_format");
    if let Some(schema) = format
        .and_then(|f| f.pointer("/json_schema/schema"))
        .filter(|_| format.and_then(|f| f.get("type")).and_then(Value::as_str) == Some("json_schema"))
    {
        config.insert("format".into(), json!({"type": "json_schema", "schema": schema}));
    }
    if !config.is_empty() {
        out.insert("output_config".into(), Value::Object(config));
    }
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if chat.stream {
        out.insert("stream".into(), true.into());
    }
    Ok(Value::Object(out))
}

fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, InvalidRequest> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => parts.iter().enumerate().map(|(j, p)| part(p, i, j)).collect(),
        Some(_) => Err(unfit(i, Unfit::Content)),
    }
}

/// A system message's content as Anthropic text blocks, each part keeping its `cache_control`.
fn system_blocks(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .map(|p| {
                with_cache_control(
                    json!({"type": "text", "text": p.get("text").and_then(Value::as_str).unwrap_or_default()}),
                    p,
                )
            })
            .collect(),
        other => {
            let text = text_of(other);
            if text.is_empty() {
                Vec::new()
            } else {
                vec![json!({"type": "text", "text": text})]
            }
        }
    }
}

/// The block with the part's `cache_control` (a prompt-caching breakpoint), when it has one.
fn with_cache_control(mut block: Value, part: &Value) -> Value {
    if let (Some(cache), Some(fields)) = (part.get("cache_control"), block.as_object_mut()) {
        fields.insert("cache_control".into(), cache.clone());
    }
    block
}

fn part(p: &Value, i: usize, j: usize) -> Result<Value, InvalidRequest> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => Ok(with_cache_control(
            json!({"type": "text", "text": p.get("text").and_then(Value::as_str).unwrap_or_default()}),
            p,
        )),
        Some("image_url") => Ok(with_cache_control(json!({"type": "image", "source": image_source(image_url(p))}), p)),
        // A file inline (`data:application/pdf;base64,…`) is a document; chat refuses one by URL before this.
        Some("file") => match p.pointer("/file/file_data").and_then(Value::as_str).and_then(data_url) {
            Some((media_type, data)) => Ok(with_cache_control(
                json!({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}),
                p,
            )),
            None => Err(unfit(i, Unfit::Part(j, Some("file")))),
        },
        other => Err(unfit(i, Unfit::Part(j, other))),
    }
}

/// `data:<type>;base64,<data>` becomes an inline image; anything else is fetched by URL.
fn image_source(url: &str) -> Value {
    match data_url(url) {
        Some((media_type, data)) => json!({"type": "base64", "media_type": media_type, "data": data}),
        None => json!({"type": "url", "url": url}),
    }
}

fn tool(t: &Value) -> Option<Value> {
    let f = t.get("function")?;
    let mut out = Map::new();
    out.insert("name".into(), f.get("name")?.clone());
    if let Some(d) = f.get("description") {
        out.insert("description".into(), d.clone());
    }
    out.insert("input_schema".into(), f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})));
    Some(Value::Object(out))
}

fn tool_choice(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            _ => None,
        },
        Value::Object(o) => {
            let name = o.get("function")?.get("name")?.as_str()?;
            Some(json!({"type": "tool", "name": name}))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(json: &str) -> ChatRequest {
        ChatRequest::parse(json.as_bytes()).expect("a valid OpenAI request")
    }

    #[test]
    fn translates_system_history_tools_images_and_options() {
        let request = chat(include_str!("../../../tests/fixtures/anthropic/chat_with_tools.openai.json"));
        let expected: Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/anthropic/chat_with_tools.anthropic.json"))
                .expect("fixture");
        let body = messages_request(&request, "claude-3-5-haiku-20241022", 8192).expect("translates");
        assert_eq!(body, expected);
    }

    #[test]
    fn a_failed_tool_result_reaches_anthropic_marked_as_failed() {
        let body = br#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"run it"},
            {"role":"assistant","content":[{"type":"tool_use","id":"u","name":"f","input":{}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"u","is_error":true,"content":[{"type":"text","text":"exit 1"}]}]}]}"#;
        let request = crate::providers::anthropic::inbound::to_chat(body).expect("valid");
        let sent = messages_request(&request, "claude", 8192).expect("translates");
        let result = &sent["messages"][2]["content"][0];
        assert_eq!(result["is_error"], true);
        assert_eq!(result["content"], serde_json::json!([{"type": "text", "text": "exit 1"}]));
        // An empty failed result carrying the agent's cache breakpoint keeps it.
        let body = br#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"run it"},
            {"role":"assistant","content":[{"type":"tool_use","id":"u","name":"f","input":{}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"u","is_error":true,"cache_control":{"type":"ephemeral"}}]}]}"#;
        let request = crate::providers::anthropic::inbound::to_chat(body).expect("valid");
        let sent = messages_request(&request, "claude", 8192).expect("translates");
        let result = &sent["messages"][2]["content"][0];
        assert_eq!(
            (result["is_error"].clone(), result["cache_control"].clone()),
            (json!(true), json!({"type": "ephemeral"}))
        );
        assert_eq!(result.get("content"), None, "no empty content");
    }

    #[test]
    fn an_empty_tool_result_reaches_anthropic_without_an_empty_text_block() {
        for result in [r#""content":"""#, r#""content":[]"#, r#""cache_control":{"type":"ephemeral"}"#] {
            let body = format!(
                r#"{{"model":"m","max_tokens":8,"messages":[{{"role":"user","content":"run it"}},
                {{"role":"assistant","content":[{{"type":"tool_use","id":"u","name":"f","input":{{}}}}]}},
                {{"role":"user","content":[{{"type":"tool_result","tool_use_id":"u",{result}}}]}}]}}"#
            );
            let request = crate::providers::anthropic::inbound::to_chat(body.as_bytes()).expect("valid");
            // The chat form (what OpenRouter and OpenAI get) has an empty text, not an empty text part.
            assert_eq!(request.body["messages"][2]["content"], json!(""), "{result}");
            let sent = messages_request(&request, "claude", 8192).expect("translates");
            assert_eq!(
                sent["messages"][2]["content"],
                json!([{"type": "tool_result", "tool_use_id": "u"}]),
                "{result}"
            );
        }
    }

    #[test]
    fn a_pdf_reaches_anthropic_as_a_document_in_a_turn_and_in_a_tool_result() {
        let body = br#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":[
              {"type":"document","cache_control":{"type":"ephemeral"},"source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0x"}},
              {"type":"text","text":"read it"}]},
            {"role":"assistant","content":[{"type":"tool_use","id":"u","name":"Read","input":{}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"u","content":[
              {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0y"}}]}]}]}"#;
        let request = crate::providers::anthropic::inbound::to_chat(body).expect("valid");
        let sent = messages_request(&request, "claude", 8192).expect("translates");
        assert_eq!(
            sent["messages"][0]["content"][0],
            json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
                   "cache_control": {"type": "ephemeral"}})
        );
        assert_eq!(
            sent["messages"][2]["content"][0]["content"],
            json!([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0y"}}])
        );
    }

    #[test]
    fn max_tokens_defaults_from_the_model_and_roles_alternate() {
        let request = chat(r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}"#);
        let body = messages_request(&request, "claude", 8192).expect("translates");
        assert_eq!(body["max_tokens"], 8192);
        assert_eq!(
            body["messages"],
            json!([{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}])
        );
        assert!(body.get("system").is_none());
        assert!(body.get("stream").is_none());
    }

    #[test]
    fn a_thinking_budget_and_earlier_thinking_go_to_anthropic() {
        let request = chat(
            r#"{"model":"m","reasoning":{"max_tokens":2048},"max_tokens":4096,"messages":[{"role":"user","content":"q"},
            {"role":"assistant","content":null,"reasoning_details":[{"type":"reasoning.text","text":"hm","signature":"s1","index":0}],
             "tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"t1","content":"42"}]}"#,
        );
        let body = messages_request(&request, "claude", 10).expect("translates");
        assert_eq!(body["thinking"], json!({"type": "enabled", "budget_tokens": 2048}));
        assert_eq!(body["messages"][1]["content"][0], json!({"type": "thinking", "thinking": "hm", "signature": "s1"}));
        assert_eq!(body["messages"][1]["content"][1]["type"], "tool_use");
    }

    #[test]
    fn tool_choice_forms() {
        assert_eq!(tool_choice(&json!("auto")), Some(json!({"type":"auto"})));
        assert_eq!(tool_choice(&json!("none")), Some(json!({"type":"none"})));
        assert_eq!(
            tool_choice(&json!({"type":"function","function":{"name":"f"}})),
            Some(json!({"type":"tool","name":"f"}))
        );
        assert_eq!(tool_choice(&json!(3)), None);
        // `parallel_tool_calls: false` is Anthropic's `disable_parallel_tool_use`, on whatever choice there is.
        let tools = r#""tools":[{"type":"function","function":{"name":"f"}}]"#;
        let sent = |extra: &str| {
            let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools}{extra}}}"#);
            messages_request(&chat(&body), "c", 10).expect("valid").get("tool_choice").cloned()
        };
        assert_eq!(
            sent(r#","parallel_tool_calls":false"#),
            Some(json!({"type":"auto","disable_parallel_tool_use":true}))
        );
        assert_eq!(
            sent(r#","parallel_tool_calls":false,"tool_choice":"required""#),
            Some(json!({"type":"any","disable_parallel_tool_use":true}))
        );
        assert_eq!(sent(r#","parallel_tool_calls":false,"tool_choice":"none""#), Some(json!({"type":"none"})));
        assert_eq!(sent(r#","parallel_tool_calls":true"#), None);
        // No tool left to offer (a custom tool is not Anthropic's): no choice is made up.
        let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"custom","custom":{"name":"p"}}],"parallel_tool_calls":false}"#;
        assert_eq!(messages_request(&chat(body), "c", 10).expect("valid").get("tool_choice"), None);
    }

    #[test]
    fn bad_tool_arguments_and_parts_are_400s() {
        let request = chat(
            r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}"#,
        );
        let err = messages_request(&request, "c", 10).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].tool_calls[0].function.arguments"));
        assert_eq!(err.message, "`messages[0].tool_calls[0].function.arguments` must be JSON");
        let request =
            chat(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#);
        assert!(messages_request(&request, "c", 10).unwrap_err().message.contains("input_audio"));
    }
}
