//! The provider abstraction: for each provider, where a chat request goes,
//! with which headers and body, and how its answer and stream come back in
//! OpenAI's form. Pure: `api::upstream` sends what this builds.
//!
//! A closed enum (`Provider`) with one `match` per step, rather than a trait
//! object: four providers, no dynamic registration, and no vtables in the wasm.

use serde_json::{Map, Value};

use super::openai_compat::ProviderError;
use super::{anthropic, gemini, openai};
use crate::domain::chat::ChatRequest;
use crate::domain::routing::{Attempt, Provider};
use crate::domain::InvalidRequest;

/// The Messages API version this gateway speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A provider's address and the tenant's key for it.
pub struct Endpoint<'a> {
    pub base_url: &'a str,
    pub key: &'a str,
}

/// What else a request needs that the client did not send.
pub struct Extras<'a> {
    /// Anthropic requires `max_tokens`: this, when the client gave none.
    pub default_max_tokens: u64,
    /// OpenRouter's app attribution headers.
    pub title: &'a str,
    pub referer: Option<&'a str>,
}

/// One HTTP request to a provider.
#[derive(Debug)]
pub struct Outbound {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The request for one attempt.
pub fn outbound(
    attempt: &Attempt,
    chat: &ChatRequest,
    endpoint: &Endpoint,
    extras: &Extras,
) -> Result<Outbound, InvalidRequest> {
    let native = attempt.route.native_model.as_str();
    let json = ("content-type", "application/json".to_string());
    Ok(match attempt.route.provider {
        Provider::OpenRouter => {
            let mut headers = vec![
                ("authorization", format!("Bearer {}", endpoint.key)),
                json,
                ("x-title", extras.title.to_string()),
            ];
            if let Some(referer) = extras.referer {
                headers.push(("http-referer", referer.to_string()));
            }
            let body = openrouter_body(chat, native, attempt.keep_fallbacks);
            Outbound { url: format!("{}/chat/completions", endpoint.base_url), headers, body }
        }
        Provider::OpenAi => Outbound {
            url: format!("{}/chat/completions", endpoint.base_url),
            headers: vec![("authorization", format!("Bearer {}", endpoint.key)), json],
            body: openai::chat_request(chat, native),
        },
        Provider::Anthropic => {
            let mut headers = vec![
                ("x-api-key", endpoint.key.to_string()),
                ("anthropic-version", ANTHROPIC_VERSION.to_string()),
                json,
            ];
            if let Some(beta) = &chat.anthropic_beta {
                headers.push(("anthropic-beta", beta.clone()));
            }
            Outbound {
                url: format!("{}/v1/messages", endpoint.base_url),
                headers,
                body: anthropic::request::messages_request(chat, native, extras.default_max_tokens)?
                    .to_string()
                    .into_bytes(),
            }
        }
        Provider::Google => {
            let method = if chat.stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
            Outbound {
                url: format!("{}/v1beta/models/{}:{method}", endpoint.base_url, path_segment(native)),
                headers: vec![("x-goog-api-key", endpoint.key.to_string()), json],
                body: gemini::request::generate_request(chat, native)?.to_string().into_bytes(),
            }
        }
    })
}

/// OpenRouter's body for `model` (the client's, a pin's, or a fallback's). When the gateway walks the
/// fallbacks itself, OpenRouter gets no `models` list.
fn openrouter_body(chat: &ChatRequest, model: &str, keep_fallbacks: bool) -> Vec<u8> {
    let mut body: Map<String, Value> = chat.body.clone();
    if !keep_fallbacks {
        body.remove("models");
    }
    body.insert("model".into(), Value::from(model));
    // Anthropic's thinking `display` is the direct route's alone: OpenRouter does not document it.
    if let Some(reasoning) = body.get_mut("reasoning").and_then(Value::as_object_mut) {
        reasoning.remove("display");
    }
    // OpenRouter documents `max_tokens` for every provider; a body giving only OpenAI's newer
    // `max_completion_tokens` (what today's OpenAI SDKs send) carries it under both names, so the cap the
    // reservation was made for binds whichever the route reads.
    if let (Some(cap), None) = (body.get("max_completion_tokens").cloned(), body.get("max_tokens")) {
        body.insert("max_tokens".into(), cap);
    }
    if chat.stream {
        crate::domain::chat::ask_for_usage(&mut body);
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A whole 2xx answer as an OpenAI `chat.completion` naming `model` (the id the client used).
pub fn answer(provider: Provider, body: Vec<u8>, model: &str, created: i64) -> Result<Vec<u8>, ProviderError> {
    let parse = |body: &[u8]| -> Result<Value, ProviderError> {
        serde_json::from_slice(body).map_err(|e| ProviderError::Malformed(format!("not JSON: {e}")))
    };
    Ok(match provider {
        Provider::OpenRouter => body,
        Provider::OpenAi => openai::rename_model(body, model),
        Provider::Anthropic => {
            anthropic::response::chat_completion(&parse(&body)?, model, created).to_string().into_bytes()
        }
        Provider::Google => gemini::response::chat_completion(&parse(&body)?, model, created).to_string().into_bytes(),
    })
}

/// Turns a provider's stream into OpenAI's before it is metered and relayed.
pub enum StreamAdapter {
    OpenAi(openai::RenameModelSse),
    Anthropic(anthropic::stream::ToOpenAiSse),
    Gemini(gemini::stream::ToOpenAiSse),
}

impl StreamAdapter {
    /// None: OpenRouter's stream is relayed as it comes.
    pub fn new(provider: Provider, model: &str, created: i64) -> Option<Self> {
        match provider {
            Provider::OpenRouter => None,
            Provider::OpenAi => Some(Self::OpenAi(openai::RenameModelSse::new(model))),
            Provider::Anthropic => Some(Self::Anthropic(anthropic::stream::ToOpenAiSse::new(model, created))),
            Provider::Google => Some(Self::Gemini(gemini::stream::ToOpenAiSse::new(model, created))),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Self::OpenAi(a) => a.feed(bytes),
            Self::Anthropic(a) => a.feed(bytes),
            Self::Gemini(g) => g.feed(bytes),
        }
    }

    /// The usage a direct provider reported before its stream ended (for a stream cut short).
    pub fn usage_so_far(&self) -> Option<crate::domain::chat::Usage> {
        match self {
            Self::OpenAi(_) => None,
            Self::Anthropic(a) => a.usage_so_far(),
            Self::Gemini(g) => g.usage_so_far(),
        }
    }

    /// What to send once the upstream stream has ended cleanly (Gemini has no end event).
    pub fn end(&self) -> Vec<u8> {
        match self {
            Self::OpenAi(_) | Self::Anthropic(_) => Vec::new(),
            Self::Gemini(g) => g.end(),
        }
    }
}

/// A model id as one URL path segment: unreserved characters as they are, every other byte
/// percent-encoded (so an id cannot add a path, a query or a fragment).
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::routing::Route;

    fn attempt(model: &str, provider: Provider, native: &str, keep_fallbacks: bool) -> Attempt {
        Attempt {
            model: model.into(),
            route: Route { provider, native_model: native.into(), fallback_to_openrouter: false },
            keep_fallbacks,
        }
    }

    const EXTRAS: Extras = Extras { default_max_tokens: 1000, title: "Tollgate", referer: Some("https://app.example") };

    fn header<'a>(out: &'a Outbound, name: &str) -> Option<&'a str> {
        out.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    fn chat(json: &str) -> ChatRequest {
        ChatRequest::parse(json.as_bytes()).expect("valid")
    }

    #[test]
    fn openrouter_is_given_the_output_cap_under_the_name_it_documents() {
        let endpoint = Endpoint { base_url: "https://p.example", key: "k-1" };
        // The client's own model with OpenRouter walking its fallbacks (the common case), and a gateway's walk.
        for keep_fallbacks in [true, false] {
            let sent = |json: &str, cap: Option<u64>| {
                let mut req = chat(json);
                if let Some(cap) = cap {
                    req.cap_output(cap);
                }
                let out = outbound(
                    &attempt("openai/o4-mini", Provider::OpenRouter, "openai/o4-mini", keep_fallbacks),
                    &req,
                    &endpoint,
                    &EXTRAS,
                )
                .expect("ok");
                let body: Value = serde_json::from_slice(&out.body).expect("JSON");
                (body["max_tokens"].clone(), body["max_completion_tokens"].clone())
            };
            let newer = r#"{"model":"openai/o4-mini","max_completion_tokens":4000,"messages":[{"role":"user","content":"hi"}]}"#;
            assert_eq!(sent(newer, None), (Value::from(4000), Value::from(4000)));
            assert_eq!(sent(newer, Some(12)), (Value::from(12), Value::from(12)), "the reservation's cap, under both");
            let both = r#"{"model":"openai/o4-mini","max_tokens":7,"max_completion_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#;
            assert_eq!(sent(both, None), (Value::from(7), Value::from(9)), "a client's own two are its own");
            let neither = r#"{"model":"openai/o4-mini","messages":[{"role":"user","content":"hi"}]}"#;
            assert_eq!(sent(neither, None).1, Value::Null);
        }
    }

    #[test]
    fn each_provider_gets_its_own_address_auth_and_body() {
        let req = chat(
            r#"{"model":"anthropic/claude-3-5-haiku","stream":true,"models":["openai/gpt-4o"],"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let endpoint = Endpoint { base_url: "https://p.example", key: "k-1" };
        let body = |out: &Outbound| serde_json::from_slice::<Value>(&out.body).expect("JSON");

        let a = outbound(
            &attempt("anthropic/claude-3-5-haiku", Provider::Anthropic, "claude-3-5-haiku", false),
            &req,
            &endpoint,
            &EXTRAS,
        )
        .expect("ok");
        assert_eq!(a.url, "https://p.example/v1/messages");
        assert_eq!((header(&a, "x-api-key"), header(&a, "anthropic-version")), (Some("k-1"), Some("2023-06-01")));
        assert_eq!(header(&a, "authorization"), None, "the key travels only in the provider's own header");
        assert_eq!(
            (body(&a)["model"].clone(), body(&a)["max_tokens"].clone()),
            (Value::from("claude-3-5-haiku"), Value::from(1000))
        );

        let g = outbound(
            &attempt("google/gemini-2.0-flash", Provider::Google, "gemini-2.0-flash", false),
            &req,
            &endpoint,
            &EXTRAS,
        )
        .expect("ok");
        assert_eq!(g.url, "https://p.example/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse");
        assert_eq!(path_segment("../x?y#z/é"), "..%2Fx%3Fy%23z%2F%C3%A9");
        assert_eq!(header(&g, "x-goog-api-key"), Some("k-1"));

        let o = outbound(&attempt("openai/gpt-4o", Provider::OpenAi, "gpt-4o", false), &req, &endpoint, &EXTRAS)
            .expect("ok");
        assert_eq!(
            (o.url.as_str(), header(&o, "authorization")),
            ("https://p.example/chat/completions", Some("Bearer k-1"))
        );
        assert_eq!(header(&o, "x-title"), None, "attribution headers are OpenRouter's");
        assert!(body(&o).get("models").is_none());

        let r = outbound(
            &attempt("anthropic/claude-3-5-haiku", Provider::OpenRouter, "anthropic/claude-3-5-haiku", true),
            &req,
            &endpoint,
            &EXTRAS,
        )
        .expect("ok");
        assert_eq!(
            (header(&r, "x-title"), header(&r, "http-referer")),
            (Some("Tollgate"), Some("https://app.example"))
        );
        assert_eq!(body(&r)["models"][0], "openai/gpt-4o", "OpenRouter walks the client's list itself");
        assert_eq!(body(&r)["stream_options"]["include_usage"], true);

        let fallback =
            outbound(&attempt("openai/gpt-4o", Provider::OpenRouter, "openai/gpt-4o", false), &req, &endpoint, &EXTRAS)
                .expect("ok");
        assert_eq!(body(&fallback)["model"], "openai/gpt-4o");
        assert!(body(&fallback).get("models").is_none(), "the gateway is walking the list: OpenRouter gets one model");
    }

    #[test]
    fn every_streamed_attempt_asks_for_the_usage_chunk_whatever_the_client_said() {
        let endpoint = Endpoint { base_url: "https://p.example", key: "k-1" };
        for options in
            [r#""stream_options":null,"#, r#""stream_options":{"include_usage":false},"#, r#""stream_options":7,"#]
        {
            let req = chat(&format!(
                r#"{{"model":"openai/gpt-4o","stream":true,{options}"messages":[{{"role":"user","content":"hi"}}]}}"#
            ));
            for (provider, native, keep_fallbacks) in [
                (Provider::OpenRouter, "openai/gpt-4o", false),
                (Provider::OpenRouter, "openai/gpt-4o", true),
                (Provider::OpenAi, "gpt-4o", false),
            ] {
                let out =
                    outbound(&attempt("openai/gpt-4o", provider, native, keep_fallbacks), &req, &endpoint, &EXTRAS)
                        .expect("ok");
                let sent: Value = serde_json::from_slice(&out.body).expect("JSON");
                assert_eq!(sent["stream_options"]["include_usage"], true, "{provider:?} with {options}");
            }
        }
    }

    #[test]
    fn anthropic_beta_goes_to_anthropic_only() {
        let mut req = chat(r#"{"model":"anthropic/claude-3-5-haiku","messages":[{"role":"user","content":"hi"}]}"#);
        req.anthropic_beta = Some("interleaved-thinking-2025-05-14".into());
        let endpoint = Endpoint { base_url: "https://p.example", key: "k" };
        let to = |provider, native| outbound(&attempt("m", provider, native, false), &req, &endpoint, &EXTRAS);
        let a = to(Provider::Anthropic, "claude-3-5-haiku").expect("ok");
        assert_eq!(header(&a, "anthropic-beta"), Some("interleaved-thinking-2025-05-14"));
        for (provider, native) in [
            (Provider::OpenRouter, "anthropic/claude-3-5-haiku"),
            (Provider::OpenAi, "gpt-4o"),
            (Provider::Google, "g"),
        ] {
            assert_eq!(header(&to(provider, native).expect("ok"), "anthropic-beta"), None, "{provider:?}");
        }
    }

    #[test]
    fn answers_name_the_model_the_client_used() {
        let openai = include_bytes!("../../tests/fixtures/openai/chat.json").to_vec();
        let out = answer(Provider::OpenAi, openai, "openai/gpt-4o-mini", 1).expect("ok");
        assert_eq!(serde_json::from_slice::<Value>(&out).expect("JSON")["model"], "openai/gpt-4o-mini");
        let claude = include_bytes!("../../tests/fixtures/anthropic/message_tool_use.json").to_vec();
        let out = answer(Provider::Anthropic, claude, "anthropic/claude-3-5-haiku", 1).expect("ok");
        assert_eq!(serde_json::from_slice::<Value>(&out).expect("JSON")["object"], "chat.completion");
        assert!(matches!(answer(Provider::Google, b"<html>".to_vec(), "m", 1), Err(ProviderError::Malformed(_))));
        assert_eq!(answer(Provider::OpenRouter, b"as is".to_vec(), "m", 1).expect("ok"), b"as is");
    }
}
