//! The one error type handlers return, and its OpenAI-shaped body.
//! Pure: rendering it as an HTTP response happens in `api::respond`.

use serde_json::{json, Map, Value};

use crate::domain::ledger::LimitSource;
use crate::domain::time::to_iso;
use crate::domain::InvalidRequest;

fn insufficient_message(source: LimitSource) -> &'static str {
    match source {
        LimitSource::Balance => "insufficient balance for this request; add credits or lower max_tokens",
        LimitSource::KeyLimit => "this key's spend limit is reached for the current window",
        LimitSource::OrgLimit => "the organization's monthly cost limit is reached",
        LimitSource::EndUserLimit => "this end user's budget on this key is reached for the current window",
    }
}
use crate::providers::openai_compat::ProviderError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    InvalidRequest(#[from] InvalidRequest),
    #[error("request body is larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    /// The key's (or its organization's) allowlist does not name the model or a provider serving it: 403.
    #[error("{0}")]
    ModelNotAllowed(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    ModelNotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// A protocol the route does not speak (a WebSocket upgrade on the Responses API): 426.
    #[error("{0}")]
    UpgradeRequired(String),
    #[error("{}", insufficient_message(*limit))]
    InsufficientCredits { limit: LimitSource, resets_at_ms: Option<i64> },
    /// A key's requests or tokens per minute, an organization's monthly request or token limit, an
    /// in-flight cap, or failed authentications; `limit_source` is the `metadata.limit_source`.
    /// `lasting`: a client's retries cannot wait it out (a request larger than its key's tokens per
    /// minute), so the answer says `x-should-retry: false`, which the OpenAI and Anthropic SDKs (and the
    /// agents built on them) obey instead of retrying 429s for minutes.
    #[error("{message}")]
    LimitReached { message: String, retry_after_secs: u64, limit_source: &'static str, lasting: bool },
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A management call to an upstream API (OpenRouter's key management) failed; the operator sees why.
    #[error("{0}")]
    UpstreamFailed(String),
    /// A bug or an outage of our own storage: details go to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn unauthenticated(msg: impl Into<String>) -> Self {
        Self::Unauthenticated(msg.into())
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::Forbidden(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::InvalidRequest(InvalidRequest::new(msg))
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidRequest(_) => 400,
            Self::PayloadTooLarge { .. } => 413,
            Self::Unauthenticated(_) => 401,
            Self::Forbidden(_) | Self::ModelNotAllowed(_) => 403,
            Self::NotFound(_) | Self::ModelNotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::InsufficientCredits { .. } => 402,
            Self::LimitReached { .. } => 429,
            Self::MethodNotAllowed { .. } => 405,
            Self::UpgradeRequired(_) => 426,
            Self::Provider(p) => match p {
                ProviderError::Rejected { status, .. } => *status,
                ProviderError::RateLimited { .. } => 429,
                ProviderError::CredentialsRejected { .. }
                | ProviderError::Unavailable { .. }
                | ProviderError::Malformed(_)
                | ProviderError::Network(_) => 502,
                ProviderError::Timeout | ProviderError::Deadline => 504,
            },
            Self::UpstreamFailed(_) => 502,
            Self::Internal(_) => 500,
        }
    }

    /// Stable, low-cardinality code (API.md's table).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_)
            | Self::PayloadTooLarge { .. }
            | Self::MethodNotAllowed { .. }
            | Self::UpgradeRequired(_) => "invalid_request",
            Self::Unauthenticated(_) => "authentication_error",
            Self::Forbidden(_) => "permission_error",
            Self::ModelNotAllowed(_) => "model_not_allowed",
            Self::NotFound(_) => "not_found",
            Self::ModelNotFound(_) => "model_not_found",
            Self::Conflict(_) => "conflict",
            Self::InsufficientCredits { .. } => "insufficient_credits",
            Self::LimitReached { .. } => "rate_limit_error",
            Self::Provider(p) => match p {
                ProviderError::Rejected { status: 404, .. } => "model_not_found",
                // OpenAI's code, which agents (Codex) read to compact their history and go on.
                ProviderError::Rejected { message, .. } if too_long_for_context(message) => "context_length_exceeded",
                ProviderError::Rejected { .. } => "invalid_request",
                ProviderError::RateLimited { .. } => "rate_limit_error",
                ProviderError::Timeout | ProviderError::Deadline => "timeout_error",
                ProviderError::CredentialsRejected { .. }
                | ProviderError::Unavailable { .. }
                | ProviderError::Malformed(_)
                | ProviderError::Network(_) => "upstream_error",
            },
            Self::UpstreamFailed(_) => "upstream_error",
            Self::Internal(_) => "server_error",
        }
    }

    /// OpenAI's `type` field.
    fn kind(&self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            402 => "insufficient_quota",
            409 => "conflict_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            504 => "timeout_error",
            _ => "api_error",
        }
    }

    /// Seconds for a `retry-after` header, on 429s.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Provider(ProviderError::RateLimited { retry_after_secs, .. }) => Some(retry_after_secs.unwrap_or(1)),
            Self::LimitReached { retry_after_secs, .. } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Whether retrying may help (see `LimitReached::lasting`). Not after the gateway's own deadline: the same
    /// request would take as long again, and the upstream had it, so each try is charged its prompt (the
    /// SDKs retry a 504 twice unless told not to).
    pub fn retry_may_help(&self) -> bool {
        !matches!(self, Self::LimitReached { lasting: true, .. } | Self::Provider(ProviderError::Deadline))
    }

    /// What the client reads. 5xx messages are generic: details stay in the log.
    pub fn public_message(&self, request_id: &str) -> String {
        match self {
            Self::Provider(p) => match p {
                ProviderError::Rejected { message, .. } => format!("upstream rejected the request: {message}"),
                ProviderError::RateLimited { .. } => "upstream rate limit reached; retry later".into(),
                ProviderError::CredentialsRejected { status, .. } => format!(
                    "the gateway's upstream credentials were refused (upstream status {status}); the operator must fix the provider key (AI_GATEWAY_API_KEY, or the direct provider's) (request {request_id})"
                ),
                ProviderError::Unavailable { status, .. } => {
                    format!("upstream failed with status {status} (request {request_id})")
                }
                ProviderError::Malformed(_) => format!("upstream sent an answer that could not be read (request {request_id})"),
                ProviderError::Network(_) => format!("could not reach upstream (request {request_id})"),
                ProviderError::Timeout | ProviderError::Deadline => {
                    format!("upstream did not answer in time (request {request_id})")
                }
            },
            Self::Internal(_) => format!("internal error (request {request_id})"),
            other => other.to_string(),
        }
    }

    /// Anthropic's error body (`{"type":"error","error":{"type","message"}}`), for the Messages API.
    /// The status in Anthropic's dialect: an upstream overloaded or unavailable (529, 503) is 529, as Anthropic
    /// says it and as Claude Code's overload handling (retry, fall back to another model) keys on; else `status`.
    pub fn anthropic_status(&self) -> u16 {
        match self {
            Self::Provider(ProviderError::Unavailable { status: 503 | 529, .. }) => 529,
            _ => self.status(),
        }
    }

    pub fn anthropic_body(&self, request_id: &str) -> Value {
        let kind = crate::providers::anthropic::inbound::error_type(self.anthropic_status());
        json!({ "type": "error", "error": { "type": kind, "message": self.public_message(request_id) } })
    }

    /// `{"error": {message, type, code, param?, metadata?}}`
    pub fn body(&self, request_id: &str) -> Value {
        let mut error = Map::new();
        error.insert("message".into(), self.public_message(request_id).into());
        error.insert("type".into(), self.kind().into());
        error.insert("code".into(), self.code().into());
        if let Self::InvalidRequest(InvalidRequest { param: Some(p), .. }) = self {
            error.insert("param".into(), p.clone().into());
        }
        let mut metadata = Map::new();
        if let Self::Provider(
            ProviderError::Rejected { status, .. }
            | ProviderError::CredentialsRejected { status, .. }
            | ProviderError::Unavailable { status, .. },
        ) = self
        {
            metadata.insert("upstream_status".into(), (*status).into());
        }
        if let Some(secs) = self.retry_after_secs() {
            metadata.insert("retry_after_seconds".into(), secs.into());
        }
        if let Self::LimitReached { limit_source, .. } = self {
            metadata.insert("limit_source".into(), (*limit_source).into());
        }
        if let Self::InsufficientCredits { limit, resets_at_ms } = self {
            metadata.insert("limit_source".into(), serde_json::to_value(limit).unwrap_or_default());
            if let Some(at) = resets_at_ms {
                metadata.insert("resets_at".into(), to_iso(*at).into());
            }
        }
        if !metadata.is_empty() {
            error.insert("metadata".into(), Value::Object(metadata));
        }
        json!({ "error": error })
    }
}

/// Whether an upstream's refusal says the prompt is longer than the model's context, as each provider words
/// it (OpenAI's and OpenRouter's "maximum context length", Anthropic's "prompt is too long", Gemini's
/// "exceeds the maximum number of tokens").
fn too_long_for_context(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["context_length_exceeded", "maximum context length", "prompt is too long", "exceeds the maximum number of tokens"]
        .iter()
        .any(|p| m.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_status_code_and_openai_body() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (InvalidRequest::param("bad", "model").into(), 400, "invalid_request"),
            (ApiError::PayloadTooLarge { limit_bytes: 10 }, 413, "invalid_request"),
            (ApiError::unauthenticated("no key"), 401, "authentication_error"),
            (ApiError::forbidden("no write"), 403, "permission_error"),
            (ApiError::not_found("no such key"), 404, "not_found"),
            (ApiError::ModelNotFound("no price".into()), 404, "model_not_found"),
            (ApiError::Conflict("dup".into()), 409, "conflict"),
            (
                ApiError::InsufficientCredits { limit: LimitSource::Balance, resets_at_ms: None },
                402,
                "insufficient_credits",
            ),
            (ApiError::MethodNotAllowed { method: "PUT".into(), path: "/health".into() }, 405, "invalid_request"),
            (ProviderError::Rejected { status: 422, message: "m".into() }.into(), 422, "invalid_request"),
            (ProviderError::Rejected { status: 404, message: "m".into() }.into(), 404, "model_not_found"),
            (
                ProviderError::Rejected { status: 400, message: "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.".into() }.into(),
                400,
                "context_length_exceeded",
            ),
            (
                ProviderError::Rejected { status: 400, message: "prompt is too long: 210000 tokens > 200000 maximum".into() }.into(),
                400,
                "context_length_exceeded",
            ),
            (
                ProviderError::RateLimited { message: "m".into(), retry_after_secs: Some(7) }.into(),
                429,
                "rate_limit_error",
            ),
            (ProviderError::CredentialsRejected { status: 401, message: "m".into() }.into(), 502, "upstream_error"),
            (ProviderError::Unavailable { status: 503, message: "m".into() }.into(), 502, "upstream_error"),
            (ProviderError::Malformed("m".into()).into(), 502, "upstream_error"),
            (ProviderError::Network("m".into()).into(), 502, "upstream_error"),
            (ProviderError::Timeout.into(), 504, "timeout_error"),
            (ApiError::internal("db exploded"), 500, "server_error"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status(), status, "{err:?}");
            let body = err.body("req-1");
            assert_eq!(body["error"]["code"], code, "{err:?}");
            assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(body["error"]["type"].is_string());
        }
    }

    #[test]
    fn server_errors_hide_details_and_name_the_request() {
        let msg = ApiError::internal("D1_ERROR: secret table").public_message("req-9");
        assert!(!msg.contains("secret") && msg.contains("req-9"));
        let upstream = ApiError::from(ProviderError::Unavailable { status: 500, message: "stack trace".into() });
        assert!(!upstream.public_message("r").contains("stack trace"));
    }

    #[test]
    fn refusals_for_money_name_the_limit_and_when_it_resets() {
        let err = ApiError::InsufficientCredits { limit: LimitSource::KeyLimit, resets_at_ms: Some(0) };
        let body = err.body("r");
        assert_eq!(body["error"]["metadata"]["limit_source"], "key_limit");
        assert_eq!(body["error"]["metadata"]["resets_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(body["error"]["type"], "insufficient_quota");
    }

    #[test]
    fn rate_limits_carry_retry_after_and_params_are_named() {
        let err = ApiError::from(ProviderError::RateLimited { message: "slow".into(), retry_after_secs: None });
        assert_eq!(err.retry_after_secs(), Some(1));
        assert_eq!(err.body("r")["error"]["metadata"]["retry_after_seconds"], 1);
        let err = ApiError::from(InvalidRequest::param("x", "messages[0].role"));
        assert_eq!(err.body("r")["error"]["param"], "messages[0].role");
        assert_eq!(ApiError::unauthenticated("x").retry_after_secs(), None);
    }
}
