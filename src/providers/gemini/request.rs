//! OpenAI chat request → Gemini `generateContent` request.
//!
//! System and developer messages become `systemInstruction`; `assistant` is
//! Gemini's `model` role; assistant tool calls become `functionCall` parts and
//! tool results `functionResponse` parts (named after the call they answer,
//! since Gemini has no call ids); consecutive turns of one role are merged.
//! Sampling options go in `generationConfig`, and so does `response_format` (JSON mode, a JSON Schema);
//! OpenAI-only fields are dropped.
//!
//! Thought signatures: Gemini 3 refuses a model turn whose first function call lacks the signature its
//! answer carried. The answer gives it as the tool call's `extra_content.google.thought_signature`
//! (Google's own OpenAI-compatible spelling), which goes back as the part's `thoughtSignature`; clients
//! that keep only the call's id, name and arguments (most agents, and every client of the Messages and
//! Responses APIs, whose shapes have no room for it) get Google's documented stand-in, which skips the
//! check.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::domain::chat::ChatRequest;
use crate::domain::InvalidRequest;
use crate::providers::translate::{data_url, image_url, push_turn, stop_sequences, text_of, tool_calls, unfit, Unfit};

/// What Gemini takes in place of a thought signature the history lost.
const NO_SIGNATURE: &str = "skip_thought_signature_validator";

/// Whether `native` (a Gemini model id) may require thought signatures on function calls: any but a
/// model known to come before Gemini 3 (an alias such as `gemini-flash-latest` names no version).
fn requires_signatures(native: &str) -> bool {
    let version = native.strip_prefix("gemini-").unwrap_or(native);
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    major.parse::<u32>().map_or(true, |m| m >= 3)
}

pub fn generate_request(chat: &ChatRequest, native: &str) -> Result<Value, InvalidRequest> {
    let signatures = requires_signatures(native);
    let body = &chat.body;
    crate::providers::translate::check_nested_json(body, true)?;
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, message) in body.get("messages").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        match role {
            "system" | "developer" => system.push(text_of(message.get("content"))),
            "user" => push_turn(&mut turns, "user", parts(message.get("content"), i)?),
            "assistant" => {
                let mut p = parts(message.get("content"), i)?;
                let raw = message.get("tool_calls").and_then(Value::as_array);
                for (j, call) in tool_calls(message, i)?.into_iter().enumerate() {
                    call_names.insert(call.id, call.name.clone());
                    let mut part = json!({"functionCall": {"name": call.name, "args": call.arguments}});
                    let kept = raw
                        .and_then(|calls| calls.get(j))
                        .and_then(|c| c.pointer("/extra_content/google/thought_signature"))
                        .and_then(Value::as_str);
                    // The first call of a step carries the step's signature (parallel calls share it).
                    if let Some(signature) = kept.or((signatures && j == 0).then_some(NO_SIGNATURE)) {
                        part["thoughtSignature"] = signature.into();
                    }
                    p.push(part);
                }
                if !p.is_empty() {
                    push_turn(&mut turns, "model", p);
                }
            }
            "tool" | "function" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let name = call_names
                    .get(id)
                    .cloned()
                    .or_else(|| message.get("name").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_default();
                let text = text_of(message.get("content"));
                // Gemini wants an object: a JSON object result passes as is, anything else is wrapped.
                let response = match serde_json::from_slice::<Value>(text.as_bytes()) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({ "content": text }),
                };
                // Its images and files follow it in the same turn, as inline data (the response holds text).
                let mut parts = vec![json!({"functionResponse": {"name": name, "response": response}})];
                let media = message.get("content").and_then(Value::as_array).into_iter().flatten().enumerate();
                for (j, p) in media.filter(|(_, p)| p.get("type").and_then(Value::as_str) != Some("text")) {
                    parts.push(part(p, i, j)?);
                }
                push_turn(&mut turns, "user", parts);
            }
            other => return Err(unfit(i, Unfit::Role(other))),
        }
    }
    let mut out = Map::new();
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": [{"text": system.join("\n\n")}]}));
    }
    let contents: Vec<Value> = turns.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect();
    out.insert("contents".into(), contents.into());
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let declarations: Vec<Value> = tools.iter().filter_map(declaration).collect();
        if !declarations.is_empty() {
            out.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
        }
    }
    if let Some(config) = body.get("tool_choice").and_then(tool_config) {
        out.insert("toolConfig".into(), config);
    }
    let mut generation = Map::new();
    if let Some(max) = chat.max_tokens {
        generation.insert("maxOutputTokens".into(), max.into());
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK")] {
        if let Some(v) = body.get(from).filter(|v| v.is_number()) {
            generation.insert(to.into(), v.clone());
        }
    }
    if let Some(stop) = stop_sequences(body) {
        generation.insert("stopSequences".into(), stop);
    }
    // JSON mode, and a JSON Schema for the answer (Gemini takes JSON Schema as `responseJsonSchema`).
    let format = body.get("response_format");
    if matches!(format.and_then(|f| f.get("type")).and_then(Value::as_str), Some("json_object" | "json_schema")) {
        generation.insert("responseMimeType".into(), "application/json".into());
        if let Some(schema) = format.and_then(|f| f.get("json_schema")?.get("schema")) {
            generation.insert("responseJsonSchema".into(), schema.clone());
        }
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(Value::Object(out))
}

fn parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, InvalidRequest> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"text": s})]),
        Some(Value::Array(items)) => items.iter().enumerate().map(|(j, p)| part(p, i, j)).collect(),
        Some(_) => Err(unfit(i, Unfit::Content)),
    }
}

fn part(p: &Value, i: usize, j: usize) -> Result<Value, InvalidRequest> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({"text": p.get("text").and_then(Value::as_str).unwrap_or_default()})),
        Some("image_url") => {
            let url = image_url(p);
            Ok(match data_url(url) {
                Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
                None if !fetched_as_an_image(url) => {
                    let param = format!("messages[{i}].content[{j}].image_url.url");
                    let why = "names what Gemini would read as a video or a document (a YouTube link, a file of \
                               Gemini's Files API, another scheme or a media file's extension), billed by its \
                               length, which the gateway cannot bound before the call: send the image inline as a \
                               data URL, or an https link to the image";
                    return Err(InvalidRequest::param(format!("`{param}` {why}"), param));
                }
                None => json!({"fileData": {"mimeType": image_type(url), "fileUri": url}}),
            })
        }
        // A file inline (a PDF, say) is inline data of its type; chat refuses one by URL before this.
        Some("file") => match p.pointer("/file/file_data").and_then(Value::as_str).and_then(data_url) {
            Some((mime, data)) => Ok(json!({"inlineData": {"mimeType": mime, "data": data}})),
            None => Err(unfit(i, Unfit::Part(j, Some("file")))),
        },
        other => Err(unfit(i, Unfit::Part(j, other))),
    }
}

/// Whether Gemini, given `url` as `fileUri`, reads no more than an image: it also takes YouTube links
/// (a video, billed per second), its own Files API's files (`generativelanguage.googleapis.com`: anything
/// the tenant's project uploaded) and any public link, so only an http(s) link elsewhere whose path does
/// not name a video, audio or a document is sent. (An image part is held at an image's allowance; the video part is refused for the
/// same reason.)
fn fetched_as_an_image(url: &str) -> bool {
    let url = url.trim().to_ascii_lowercase();
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default().split(':').next().unwrap_or_default();
    let host = host.trim_end_matches('.');
    let on = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    if ["youtube.com", "youtu.be", "youtube-nocookie.com", "generativelanguage.googleapis.com"].iter().any(|d| on(d)) {
        return false;
    }
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    let extension = path.rsplit_once('/').map_or("", |(_, name)| name).rsplit_once('.').map_or("", |(_, ext)| ext);
    !matches!(
        extension,
        "mp4"
            | "mov"
            | "webm"
            | "mkv"
            | "avi"
            | "mpeg"
            | "mpg"
            | "3gp"
            | "flv"
            | "wmv"
            | "m4v"
            | "mp3"
            | "wav"
            | "aac"
            | "ogg"
            | "flac"
            | "m4a"
            | "aiff"
            | "opus"
            | "pdf"
            | "txt"
            | "html"
            | "htm"
            | "csv"
            | "md"
            | "xml"
            | "json"
            | "js"
            | "py"
            | "rtf"
    )
}

/// The image type a URL's extension names (JPEG when it names none).
fn image_type(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or_default().to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("heic") => "image/heic",
        _ => "image/jpeg",
    }
}

/// A function tool as Gemini declares it. Its parameters go in `parametersJsonSchema`, which takes
/// JSON Schema as OpenAI clients write it (`additionalProperties`, `$ref`, strict schemas); Gemini's
/// `parameters` takes only its OpenAPI subset and refuses those.
fn declaration(t: &Value) -> Option<Value> {
    let f = t.get("function")?;
    let mut out = Map::new();
    out.insert("name".into(), f.get("name")?.clone());
    if let Some(v) = f.get("description") {
        out.insert("description".into(), v.clone());
    }
    if let Some(v) = f.get("parameters") {
        out.insert("parametersJsonSchema".into(), v.clone());
    }
    Some(Value::Object(out))
}

fn tool_config(choice: &Value) -> Option<Value> {
    let mode = |m: &str| json!({"functionCallingConfig": {"mode": m}});
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Some(mode("AUTO")),
            "none" => Some(mode("NONE")),
            "required" => Some(mode("ANY")),
            _ => None,
        },
        Value::Object(o) => {
            let name = o.get("function")?.get("name")?.as_str()?;
            Some(json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}))
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
    fn only_links_gemini_reads_as_images_are_sent_by_url() {
        let sent = |url: &str| {
            let body = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"image_url","image_url":{{"url":"{url}"}}}}]}}]}}"#
            );
            generate_request(&chat(&body), "gemini-2.5-flash")
                .map(|b| b["contents"][0]["parts"][0]["fileData"]["fileUri"].clone())
        };
        for image in [
            "https://example.com/cat.png",
            "http://img.example/a?x=1.mp4",
            "HTTPS://cdn.example/photo",
            "https://e.com/a.b/c.webp",
            "https://storage.googleapis.com/bucket/cat.png",
            "https://lh3.googleusercontent.com/a/photo",
        ] {
            assert_eq!(sent(image).expect("sent"), Value::from(image), "{image}");
        }
        for refused in [
            "https://www.youtube.com/watch?v=abc",
            "https://youtu.be/abc",
            "https://m.youtube.com/shorts/abc",
            "https://generativelanguage.googleapis.com/v1beta/files/abc",
            "https://user@YouTube.com:443/watch?v=1",
            "https://youtube.com./watch",
            "gs://bucket/video.mp4",
            "files/abc",
            "https://example.com/talk.mp4",
            "https://example.com/report.PDF?download=1",
            "https://example.com/song.mp3#t=1",
        ] {
            let refused = sent(refused).expect_err(refused);
            assert_eq!(refused.param.as_deref(), Some("messages[0].content[0].image_url.url"));
        }
    }

    #[test]
    fn translates_system_roles_tool_calls_results_images_and_options() {
        let request = chat(include_str!("../../../tests/fixtures/gemini/chat_with_tools.openai.json"));
        let expected: Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/gemini/chat_with_tools.gemini.json"))
                .expect("fixture");
        assert_eq!(generate_request(&request, "gemini-2.0-flash-001").expect("translates"), expected);
    }

    #[test]
    fn a_gemini_3_function_call_goes_back_with_its_thought_signature_or_the_stand_in() {
        let request = chat(
            r#"{"model":"m","messages":[{"role":"user","content":"weather?"},
                {"role":"assistant","content":null,"tool_calls":[
                    {"id":"a","type":"function","function":{"name":"f","arguments":"{}"},"extra_content":{"google":{"thought_signature":"c2ln"}}},
                    {"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"a","content":"sunny"},{"role":"tool","tool_call_id":"b","content":"warm"},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c","content":"still sunny"}]}"#,
        );
        let signatures = |native: &str| -> Vec<Value> {
            let body = generate_request(&request, native).expect("translates");
            let contents = body["contents"].as_array().cloned().unwrap_or_default();
            contents
                .iter()
                .filter(|c| c["role"] == "model")
                .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
                .map(|p| p.get("thoughtSignature").cloned().unwrap_or(Value::Null))
                .collect()
        };
        // Kept where the client sent it back; the stand-in on a step's first call where it did not.
        assert_eq!(signatures("gemini-3-pro-preview"), [json!("c2ln"), Value::Null, json!(NO_SIGNATURE)]);
        assert_eq!(signatures("gemini-3.1-flash"), [json!("c2ln"), Value::Null, json!(NO_SIGNATURE)]);
        // Before Gemini 3 a signature is optional: none is made up.
        assert_eq!(signatures("gemini-2.5-pro"), [json!("c2ln"), Value::Null, Value::Null]);
        assert!(requires_signatures("gemini-flash-latest") && requires_signatures("gemini-10-ultra"));
        assert!(!requires_signatures("gemini-1.5-pro") && !requires_signatures("gemini-2.0-flash-001"));
    }

    #[test]
    fn a_response_format_is_gemini_json_mode_with_its_schema() {
        let config = |format: &str| {
            let request = chat(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"response_format":{format}}}"#
            ));
            generate_request(&request, "gemini-2.0-flash-001").expect("translates").get("generationConfig").cloned()
        };
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false});
        assert_eq!(
            config(
                &json!({"type": "json_schema", "json_schema": {"name": "s", "strict": true, "schema": schema}})
                    .to_string()
            ),
            Some(json!({"responseMimeType": "application/json", "responseJsonSchema": schema}))
        );
        assert_eq!(config(r#"{"type":"json_object"}"#), Some(json!({"responseMimeType": "application/json"})));
        assert_eq!(config(r#"{"type":"text"}"#), None);
    }

    #[test]
    fn assistant_is_model_and_a_forced_function_is_allowed_alone() {
        let request = chat(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"again"}],
                "tool_choice":{"type":"function","function":{"name":"f"}}}"#,
        );
        let body = generate_request(&request, "gemini-2.0-flash-001").expect("translates");
        let roles: Vec<&str> =
            body["contents"].as_array().expect("contents").iter().map(|c| c["role"].as_str().unwrap_or("")).collect();
        assert_eq!(roles, ["user", "model", "user"]);
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}})
        );
        assert!(body.get("generationConfig").is_none());
        assert!(body.get("systemInstruction").is_none());
    }

    #[test]
    fn a_json_object_tool_result_passes_as_is() {
        let request = chat(
            r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"{\"temp\":18}"}]}"#,
        );
        let body = generate_request(&request, "gemini-2.0-flash-001").expect("translates");
        assert_eq!(
            body["contents"][1]["parts"][0],
            json!({"functionResponse": {"name": "f", "response": {"temp": 18}}})
        );
        assert_eq!(image_type("https://x.test/a.PNG?size=2"), "image/png");
    }

    #[test]
    fn a_tool_results_files_and_images_follow_its_response() {
        let request = chat(
            r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"read","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c1","content":[{"type":"text","text":"a.pdf"},{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBE"}}]}]}"#,
        );
        let body = generate_request(&request, "gemini-2.0-flash-001").expect("translates");
        assert_eq!(
            body["contents"][1]["parts"],
            json!([{"functionResponse": {"name": "read", "response": {"content": "a.pdf"}}},
                   {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}])
        );
    }

    #[test]
    fn an_inline_pdf_is_inline_data() {
        let request = chat(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBE"}},{"type":"text","text":"sum up"}]}]}"#,
        );
        let body = generate_request(&request, "gemini-2.0-flash-001").expect("translates");
        assert_eq!(
            body["contents"][0]["parts"][0],
            json!({"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}})
        );
    }
}
