//! OpenAI-compatible wire format (OpenRouter, OpenAI): the models list, the
//! usage in a non-streamed answer, and upstream error classification.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::chat::Usage;
use crate::domain::pricing::{from_usd_per_token, parse_usd_per_token, PromptSizeOverride};

/// Why an upstream call did not give a usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The upstream refused the request itself (400, 404, 413, 422): the client's to fix.
    #[error("upstream rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("upstream rate limited the request")]
    RateLimited { message: String, retry_after_secs: Option<u64> },
    /// 401/402/403 from upstream: the tenant's upstream key or account is the problem.
    #[error("upstream refused the gateway's credentials ({status})")]
    CredentialsRejected { status: u16, message: String },
    #[error("upstream failed ({status})")]
    Unavailable { status: u16, message: String },
    #[error("upstream answer could not be read: {0}")]
    Malformed(String),
    /// The upstream said it timed out (408, 504, 524).
    #[error("upstream did not answer in time")]
    Timeout,
    /// The gateway's own deadline (`REQUEST_TIMEOUT`) passed while it waited for the upstream.
    #[error("upstream did not answer within the gateway's deadline")]
    Deadline,
    #[error("could not reach upstream: {0}")]
    Network(String),
}

impl ProviderError {
    /// Worth another try on the same route: 429, 500, 502, 503, 529 (Anthropic's "overloaded") and connection errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Network(_) => true,
            Self::Unavailable { status, .. } => matches!(status, 500 | 502 | 503 | 529),
            Self::Rejected { .. }
            | Self::CredentialsRejected { .. }
            | Self::Malformed(_)
            | Self::Timeout
            | Self::Deadline => false,
        }
    }

    /// Worth trying the next route or model: anything but a request the provider refused as the client's mistake.
    pub fn moves_on(&self) -> bool {
        !matches!(self, Self::Rejected { status, .. } if *status != 404)
    }

    /// The provider's `Retry-After`, in seconds.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs, .. } => *retry_after_secs,
            _ => None,
        }
    }
}

/// The `error.message` of an OpenAI/OpenRouter error body, else a short excerpt.
pub fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => e.error.message,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let excerpt: String = text.chars().take(200).collect();
            if excerpt.trim().is_empty() {
                "no details".to_string()
            } else {
                excerpt
            }
        }
    }
}

/// Classifies a non-2xx upstream answer.
pub fn classify_error(status: u16, retry_after: Option<&str>, body: &[u8]) -> ProviderError {
    let message = error_message(body);
    match status {
        // OpenRouter's 403 for an input a moderated model's provider flagged (the reasons in `metadata`): the
        // client's request, refused, not the operator's key.
        403 if flagged_by_moderation(body) => ProviderError::Rejected { status, message },
        401..=403 => ProviderError::CredentialsRejected { status, message },
        429 => ProviderError::RateLimited {
            message,
            retry_after_secs: retry_after.and_then(|v| v.trim().parse::<f64>().ok()).map(|s| s.max(0.0).ceil() as u64),
        },
        408 | 504 | 524 => ProviderError::Timeout,
        // Gemini answers a wrong key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID).
        400 if String::from_utf8_lossy(body).contains("API_KEY_INVALID") => {
            ProviderError::CredentialsRejected { status, message }
        }
        400..=499 => ProviderError::Rejected { status, message },
        _ => ProviderError::Unavailable { status, message },
    }
}

/// An OpenRouter error naming why moderation flagged the input.
fn flagged_by_moderation(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        metadata: Option<Map<String, Value>>,
    }
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.error.metadata)
        .is_some_and(|m| m.contains_key("reasons") || m.contains_key("flagged_input"))
}

/// Picks the usage out of a non-streamed chat answer, with the bytes of content it delivered (to estimate
/// its output from when it reports no usage); refuses a body that is not a chat completion.
pub fn completion_usage(body: &[u8]) -> Result<(Option<Usage>, u64), ProviderError> {
    usage_of(body, "choices", |_| {}).map(|(usage, choices)| (usage, content_bytes(&choices)))
}

/// The bytes of content a whole answer's choices delivered, counted as a stream's deltas are (`sse`): each
/// message's text (a string, or its parts' texts), reasoning and refusal, and its tool calls' names and
/// arguments; not the JSON around them (ids, field names, log probabilities).
fn content_bytes(choices: &[Value]) -> u64 {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.len(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).map(str::len).sum()
        }
        _ => 0,
    };
    let message = |m: &Value| {
        let tools: usize = (m.get("tool_calls").and_then(Value::as_array).into_iter().flatten())
            .filter_map(|t| t.get("function"))
            .map(|f| text(f.get("name")) + text(f.get("arguments")))
            .sum();
        text(m.get("content")) + text(m.get("reasoning")) + text(m.get("refusal")) + tools
    };
    choices.iter().filter_map(|c| c.get("message")).map(message).sum::<usize>() as u64
}

/// Picks the usage out of an embeddings answer; refuses a body without `data`. Embeddings have input tokens
/// only: an upstream that reports just `total_tokens` means those (read before a usage counting no prompt
/// is taken for none).
pub fn embeddings_usage(body: &[u8]) -> Result<Option<Usage>, ProviderError> {
    usage_of(body, "data", |u| {
        if u.prompt_tokens == 0 {
            u.prompt_tokens = u.total_tokens;
        }
    })
    .map(|(usage, _)| usage)
}

/// The usage of an answer that must carry the array `field` (as `read` reads it; none when it counts no
/// prompt), with that array's items; an `error` object is classified.
fn usage_of(body: &[u8], field: &str, read: impl Fn(&mut Usage)) -> Result<(Option<Usage>, Vec<Value>), ProviderError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        choices: Option<Vec<Value>>,
        #[serde(default)]
        data: Option<Vec<Value>>,
        #[serde(default)]
        usage: Option<Usage>,
        #[serde(default)]
        error: Option<Value>,
    }
    let probe: Probe = serde_json::from_slice(body).map_err(|e| ProviderError::Malformed(format!("not JSON: {e}")))?;
    if let Some(err) = probe.error {
        let message = err.get("message").and_then(Value::as_str).unwrap_or("upstream error").to_string();
        // An error code that is no HTTP status (a provider's own number) is an upstream failure.
        let status = err
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..=599).contains(c))
            .unwrap_or(502);
        return Err(match status {
            400..=499 => classify_error(status, None, body),
            _ => ProviderError::Unavailable { status, message },
        });
    }
    let Some(items) = (if field == "data" { probe.data } else { probe.choices }) else {
        return Err(ProviderError::Malformed(format!("answer has no `{field}`")));
    };
    let usage = probe.usage.map(|mut u| {
        read(&mut u);
        u
    });
    Ok((usage.filter(Usage::counts), items))
}

/// One model as OpenRouter's `/models` lists it (the fields we use).
#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamModel {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub context_length: Option<u64>,
    #[serde(default)]
    pub pricing: Option<UpstreamPricing>,
    #[serde(default)]
    pub top_provider: Option<TopProvider>,
    /// Filled from `top_provider.max_completion_tokens` by `parse_model_list`.
    #[serde(skip)]
    pub max_completion_tokens: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TopProvider {
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct UpstreamPricing {
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub completion: Option<String>,
    #[serde(default, skip_serializing)]
    pub input_cache_read: Option<String>,
    #[serde(default, skip_serializing)]
    pub input_cache_write: Option<String>,
    #[serde(default, skip_serializing)]
    pub internal_reasoning: Option<String>,
    /// A fee per request, in USD (a search model's, for one).
    #[serde(default, skip_serializing)]
    pub request: Option<String>,
    /// Conditional prices (`[{min_prompt_tokens, prompt, completion, …}]`, or a time window): read by
    /// `prompt_size_overrides`; kept unread here, so a drifted entry costs nothing but itself.
    #[serde(default, skip_serializing)]
    pub overrides: Option<Value>,
}

impl UpstreamPricing {
    /// The overrides that apply from a prompt size on (and on no other condition, such as a time of
    /// day), their rates in µ$/Mtok. A rate that does not read is the base's.
    pub fn prompt_size_overrides(&self) -> Vec<PromptSizeOverride> {
        let entries = self.overrides.as_ref().and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        entries
            .iter()
            .filter_map(Value::as_object)
            .filter(|o| !o.keys().any(|k| k.starts_with("utc_")))
            .filter_map(|o| {
                let rate = |key: &str| match o.get(key)? {
                    Value::String(v) => parse_usd_per_token(key, v).ok(),
                    Value::Number(n) => n.as_f64().and_then(|v| from_usd_per_token(key, v).ok()),
                    _ => None,
                };
                // A size past what a limit is kept as (`catalogue_limit`) is never reached.
                let min_prompt_tokens = o.get("min_prompt_tokens")?.as_u64().filter(|n| u32::try_from(*n).is_ok())?;
                Some(PromptSizeOverride {
                    min_prompt_tokens,
                    input: rate("prompt"),
                    output: rate("completion"),
                    cache_read: rate("input_cache_read").filter(|r| *r > 0),
                    cache_write: rate("input_cache_write").filter(|r| *r > 0),
                    reasoning: rate("internal_reasoning").filter(|r| *r > 0),
                })
            })
            .collect()
    }

    /// Whether the model costs a fee per request on top of its tokens, which the price table does not
    /// hold: such a model is synced inactive (an operator may price it by hand, and enable it).
    pub fn has_request_fee(&self) -> bool {
        self.request.as_deref().and_then(|v| v.trim().parse::<f64>().ok()).is_some_and(|fee| fee > 0.0)
    }
}

#[derive(Debug, Deserialize)]
struct UpstreamModelList {
    data: Vec<UpstreamModel>,
}

pub fn parse_model_list(body: &[u8]) -> Result<Vec<UpstreamModel>, ProviderError> {
    serde_json::from_slice::<UpstreamModelList>(body)
        .map(|l| {
            l.data
                .into_iter()
                .map(|mut m| {
                    m.max_completion_tokens = m.top_provider.as_ref().and_then(|t| t.max_completion_tokens);
                    m
                })
                .collect()
        })
        .map_err(|e| ProviderError::Malformed(format!("models list: {e}")))
}

/// A model in the list this gateway answers `GET /v1/models` with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListedModel {
    pub id: String,
    /// The upstream's display name (OpenRouter's list has one; Anthropic's shape shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub object: String,
    pub created: i64,
    pub owned_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    pub pricing: ListedPricing,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListedPricing {
    pub prompt: String,
    pub completion: String,
}

impl From<UpstreamModel> for ListedModel {
    fn from(m: UpstreamModel) -> Self {
        let owned_by = m.id.split_once('/').map_or("openrouter", |(p, _)| p).to_string();
        let pricing = m.pricing.unwrap_or_default();
        Self {
            owned_by,
            object: "model".into(),
            created: m.created.unwrap_or(0),
            context_length: m.context_length,
            pricing: ListedPricing {
                prompt: pricing.prompt.unwrap_or_else(|| "0".into()),
                completion: pricing.completion.unwrap_or_else(|| "0".into()),
            },
            id: m.id,
            name: m.name,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fee_per_request_is_told_apart_from_a_free_request() {
        let pricing = |request: Option<&str>| super::UpstreamPricing {
            prompt: Some("0.000001".into()),
            completion: Some("0.000001".into()),
            request: request.map(Into::into),
            ..Default::default()
        };
        assert!(pricing(Some("0.005")).has_request_fee());
        // Prompt-size overrides are read; one on a time window, or without a size, is not.
        let listed: UpstreamPricing = serde_json::from_str(
            r#"{"prompt":"0.00000125","completion":"0.00001","overrides":[
                {"min_prompt_tokens":200000,"prompt":"0.0000025","completion":"0.000015","input_cache_read":"bad"},
                {"utc_start":"16:30","utc_end":"00:30","prompt":"0.0000005"},{"prompt":"1"},3,
                {"min_prompt_tokens":99999999999,"prompt":"1"},{"min_prompt_tokens":300000,"prompt":0.000005}]}"#,
        )
        .expect("reads");
        assert_eq!(
            listed.prompt_size_overrides(),
            [
                PromptSizeOverride {
                    min_prompt_tokens: 200_000,
                    input: Some(2_500_000),
                    output: Some(15_000_000),
                    ..PromptSizeOverride::default()
                },
                PromptSizeOverride {
                    min_prompt_tokens: 300_000,
                    input: Some(5_000_000),
                    ..PromptSizeOverride::default()
                }
            ]
        );
        let drifted: UpstreamPricing = serde_json::from_str(r#"{"prompt":"0.1","overrides":{"x":1}}"#).expect("reads");
        assert!(drifted.prompt_size_overrides().is_empty());
        for free in [None, Some("0"), Some("0.0"), Some(""), Some("n/a"), Some("-1")] {
            assert!(!pricing(free).has_request_fee(), "{free:?}");
        }
    }

    #[test]
    fn anthropic_and_gemini_error_bodies_classify_like_openais() {
        let body = |text: &str| text.as_bytes().to_vec();
        let overloaded = include_str!("../../tests/fixtures/anthropic/error_overloaded.json");
        assert_eq!(
            classify_error(529, None, &body(overloaded)),
            ProviderError::Unavailable { status: 529, message: "Overloaded".into() },
            "Anthropic's 529 is a retryable 5xx"
        );
        let invalid = include_str!("../../tests/fixtures/anthropic/error_invalid.json");
        assert_eq!(
            classify_error(400, None, &body(invalid)),
            ProviderError::Rejected { status: 400, message: "max_tokens: Field required".into() }
        );
        let unavailable = include_str!("../../tests/fixtures/gemini/error_unavailable.json");
        assert!(matches!(
            classify_error(503, None, &body(unavailable)),
            ProviderError::Unavailable { status: 503, .. }
        ));
        let role = include_str!("../../tests/fixtures/gemini/error_invalid.json");
        assert_eq!(
            classify_error(400, None, &body(role)),
            ProviderError::Rejected { status: 400, message: "Please use a valid role: user, model.".into() }
        );
        assert!(matches!(
            classify_error(401, None, &body(invalid)),
            ProviderError::CredentialsRejected { status: 401, .. }
        ));
        let bad_key = include_str!("../../tests/fixtures/gemini/error_api_key_invalid.json");
        assert!(
            matches!(classify_error(400, None, &body(bad_key)), ProviderError::CredentialsRejected { status: 400, .. }),
            "Gemini's wrong key is the tenant's misconfiguration, not the client's"
        );
        let unknown = include_str!("../../tests/fixtures/openai/error_unknown_argument.json");
        assert_eq!(
            classify_error(400, None, &body(unknown)),
            ProviderError::Rejected {
                status: 400,
                message: "Unrecognized request argument supplied: transforms".into()
            }
        );
    }

    #[test]
    fn retries_and_fallbacks_follow_the_kind_of_failure() {
        let unavailable = |status| ProviderError::Unavailable { status, message: String::new() };
        for status in [500, 502, 503, 529] {
            assert!(unavailable(status).is_retryable(), "{status}");
        }
        assert!(!unavailable(501).is_retryable());
        assert!(unavailable(501).moves_on());
        let limited = ProviderError::RateLimited { message: String::new(), retry_after_secs: Some(2) };
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after_secs(), Some(2));
        assert!(ProviderError::Network("reset".into()).is_retryable());
        let rejected = |status| ProviderError::Rejected { status, message: String::new() };
        assert!(!rejected(400).is_retryable() && !rejected(400).moves_on(), "the client's mistake stays the client's");
        assert!(rejected(404).moves_on(), "a model one provider lacks may exist elsewhere");
        let creds = ProviderError::CredentialsRejected { status: 401, message: String::new() };
        assert!(!creds.is_retryable() && creds.moves_on(), "a misconfigured direct key falls back to OpenRouter");
    }

    use super::*;

    #[test]
    fn classifies_upstream_statuses_as_the_error_table_says() {
        let body = br#"{"error":{"code":400,"message":"bad model"}}"#;
        assert_eq!(
            classify_error(400, None, body),
            ProviderError::Rejected { status: 400, message: "bad model".into() }
        );
        assert!(matches!(classify_error(401, None, body), ProviderError::CredentialsRejected { status: 401, .. }));
        assert!(matches!(classify_error(403, None, body), ProviderError::CredentialsRejected { .. }));
        let flagged = br#"{"error":{"code":403,"message":"m requires moderation","metadata":{"reasons":["violence"],"flagged_input":"..."}}}"#;
        assert!(matches!(classify_error(403, None, flagged), ProviderError::Rejected { status: 403, .. }));
        let odd = br#"{"error":{"code":403,"message":"m","metadata":{"provider_name":"x"}}}"#;
        assert!(
            matches!(classify_error(403, None, odd), ProviderError::CredentialsRejected { .. }),
            "only named flags"
        );
        assert_eq!(
            classify_error(429, Some("2.5"), body),
            ProviderError::RateLimited { message: "bad model".into(), retry_after_secs: Some(3) }
        );
        assert!(
            matches!(classify_error(503, None, b"<html>down</html>"), ProviderError::Unavailable { status: 503, ref message } if message == "<html>down</html>")
        );
        assert_eq!(classify_error(504, None, b""), ProviderError::Timeout);
    }

    #[test]
    fn an_answer_without_usage_is_estimated_from_its_content_not_its_json() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"logprobs":{"content":[{"token":"Hi","logprob":-0.1,"top_logprobs":[{"token":"Hi","logprob":-0.1},{"token":"Hey","logprob":-2.5}]}]},
            "message":{"role":"assistant","content":"Hi","reasoning":"greet","refusal":null,
              "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}},
            {"index":1,"message":{"role":"assistant","content":[{"type":"text","text":"yo"}]}}]}"#;
        assert_eq!(completion_usage(body).expect("readable"), (None, 2 + 5 + 1 + 7 + 2));
    }

    #[test]
    fn completion_usage_requires_a_chat_completion() {
        let ok = br#"{"id":"x","choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"cost":0.1}}"#;
        assert_eq!(completion_usage(ok).expect("ok").0.map(|u| u.total_tokens), Some(4));
        assert!(matches!(completion_usage(b"<html>"), Err(ProviderError::Malformed(_))));
        assert!(matches!(completion_usage(b"{}"), Err(ProviderError::Malformed(_))));
        let err = br#"{"error":{"code":502,"message":"provider returned error"}}"#;
        assert!(matches!(completion_usage(err), Err(ProviderError::Unavailable { status: 502, .. })));
        let odd_code = br#"{"error":{"code":65936,"message":"provider's own code"}}"#;
        assert!(matches!(completion_usage(odd_code), Err(ProviderError::Unavailable { status: 502, .. })), "not 400");
        let null_detail = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":null}}}"#;
        let usage = completion_usage(null_detail).expect("an odd usage field does not make the answer unreadable");
        assert_eq!(usage.0.map(|u| u.tokens().prompt), Some(3));
        let empty = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{}}"#;
        assert_eq!(
            completion_usage(empty).expect("readable"),
            (None, 2),
            "no report: charged as an answer without usage"
        );
    }

    #[test]
    fn an_embeddings_usage_of_only_total_tokens_counts_them_as_input() {
        let total_only = br#"{"data":[{"embedding":[0.1]}],"usage":{"total_tokens":7}}"#;
        let usage = embeddings_usage(total_only).expect("readable").expect("a report");
        assert_eq!((usage.prompt_tokens, usage.tokens().prompt), (7, 7));
        let both = br#"{"data":[],"usage":{"prompt_tokens":5,"total_tokens":5}}"#;
        assert_eq!(embeddings_usage(both).expect("readable").map(|u| u.prompt_tokens), Some(5));
        let none = br#"{"data":[],"usage":{"total_tokens":0}}"#;
        assert_eq!(embeddings_usage(none).expect("readable"), None, "no report");
        // A chat answer's total alone is not its prompt.
        let chat = br#"{"choices":[],"usage":{"total_tokens":7}}"#;
        assert_eq!(completion_usage(chat).expect("readable"), (None, 0));
    }

    #[test]
    fn lists_models_in_openai_shape_with_owner_from_the_prefix() {
        let body = br#"{"data":[{"id":"anthropic/claude-3.5-sonnet","name":"Claude","created":1700000000,"context_length":200000,"pricing":{"prompt":"0.000003","completion":"0.000015","request":"0"}}]}"#;
        let models: Vec<ListedModel> = parse_model_list(body).expect("list").into_iter().map(Into::into).collect();
        assert_eq!(models[0].owned_by, "anthropic");
        assert_eq!(models[0].pricing, ListedPricing { prompt: "0.000003".into(), completion: "0.000015".into() });
        let json = serde_json::to_value(&models[0]).expect("json");
        assert_eq!(json["object"], "model");
        assert_eq!(json["name"], "Claude", "the display name an Anthropic client is shown");
        assert!(parse_model_list(b"nope").is_err());
    }
}
