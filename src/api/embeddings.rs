//! POST /v1/embeddings: authenticate → validate → price → reserve (the input at
//! the model's input price) → send → answer with `usage.cost` → settle. Served
//! natively by OpenRouter and by OpenAI on the direct route; a model another
//! direct provider would serve goes through OpenRouter. Like chat, once money is
//! reserved the request runs to its settlement whether or not the client stays.

use futures_channel::oneshot;
use worker::{Headers, Method, Response};

use super::auth::{note_key_use, Authenticated, Caller};
use super::error::ApiError;
use super::incoming::Incoming;
use super::meter::{charge, price_table, Demand, Meter, Outcome};
use super::request_log::LogContext;
use super::respond::{read_body, Call};
use crate::domain::embeddings::EmbeddingsRequest;
use crate::domain::routing::{self, Provider};
use crate::providers::openai_compat::{embeddings_usage, ProviderError};
use crate::providers::sse::set_usage_cost;
use crate::providers::transport;
use crate::store::prices::PriceRow;

/// Up to 2,048 inputs of text.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

pub async fn create_embeddings(mut req: Incoming, call: &Call, auth: Authenticated) -> Result<Response, ApiError> {
    let request = EmbeddingsRequest::parse(&read_body(&mut req, MAX_BODY_BYTES).await?)?;
    let prices = price_table(call).await?;
    let row = prices
        .get(&request.model)
        .filter(|r| r.is_active != 0)
        .ok_or_else(|| ApiError::ModelNotFound(format!("no price configured for {}", request.model)))?
        .clone();
    let (provider, native) = route(call, &request.model, &row)?;
    let meter = match (&auth.caller, &auth.hash) {
        (Caller::Key(key), Some(hash)) => {
            let demand = Demand { model: &request.model, prompt: request.token_bound, output: 0 };
            let (mut meter, _) = Meter::reserve_tokens(call, key, hash, &row, demand).await?;
            meter.provider = provider.as_str();
            note_key_use(call, &key.id);
            Some(meter)
        }
        _ => None,
    };
    let log = LogContext::new(call, &auth.caller, &request.model, provider, 1);
    let (answer, answered) = oneshot::channel();
    let job = Job { call: call.clone(), request, provider, native, meter, log };
    call.ctx.wait_until(job.run(answer));
    answered.await.unwrap_or_else(|_| Err(ApiError::internal("the request ended without an answer")))
}

/// Only OpenAI-compatible providers have the endpoint: OpenRouter, and OpenAI on a direct route.
fn route(call: &Call, model: &str, row: &PriceRow) -> Result<(Provider, String), ApiError> {
    let direct = call.config.direct_providers();
    let chosen = routing::route(model, row.pin().as_ref(), &direct);
    match chosen.provider {
        Provider::OpenRouter if call.config.upstream_api_key.is_none() => Err(ApiError::bad_request(
            "this gateway has no OpenRouter key (AI_GATEWAY_API_KEY) to send embeddings through",
        )),
        Provider::OpenRouter | Provider::OpenAi => Ok((chosen.provider, chosen.native_model)),
        _ if call.config.upstream_api_key.is_some() => Ok((Provider::OpenRouter, model.to_string())),
        other => Err(ApiError::bad_request(format!(
            "embeddings are not served on the {} route, and this gateway has no OpenRouter key to send them through",
            other.as_str()
        ))),
    }
}

struct Job {
    call: Call,
    request: EmbeddingsRequest,
    provider: Provider,
    native: String,
    meter: Option<Meter>,
    log: LogContext,
}

impl Job {
    async fn run(self, answer: oneshot::Sender<Result<Response, ApiError>>) {
        let Job { call, request, provider, native, meter, log } = self;
        let result = send(&call, &request, provider, &native).await;
        let (body, usage) = match result {
            Ok(read) => read,
            Err(error) => {
                let status = error.status();
                log.finished(status, (0, 0), None, false);
                let _ = answer.send(Err(error));
                if let Some(m) = meter {
                    m.settle(&call.env, Outcome::failed(status)).await;
                }
                return;
            }
        };
        let outcome = Outcome { usage, delivered_bytes: Some(0), status: 200, streamed: false, cancelled: false };
        let tokens = outcome.usage.as_ref().map_or((0, 0), |u| (u.prompt_tokens, 0));
        let body = match &meter {
            Some(m) => {
                let charged = charge(&m.price, m.reserved, m.prompt_bytes, outcome.usage.as_ref(), Some(0));
                log.finished(200, tokens, Some((charged.usd(), 0.0)), false);
                with_model_and_cost(body, &request.model, Some(charged.usd()), call.config.show_upstream_cost)
            }
            None => {
                log.finished(200, tokens, None, false);
                with_model_and_cost(body, &request.model, None, true)
            }
        };
        let headers = Headers::new();
        let _ = headers.set("content-type", "application/json");
        let _ = headers.set("x-tollgate-provider", provider.as_str());
        let response = Response::from_bytes(body).map(|r| r.with_headers(headers)).map_err(ApiError::internal);
        let _ = answer.send(response);
        if let Some(m) = meter {
            m.settle(&call.env, outcome).await;
        }
    }
}

/// One call to the provider's `/embeddings`, inside `REQUEST_TIMEOUT`.
async fn send(
    call: &Call,
    request: &EmbeddingsRequest,
    provider: Provider,
    native: &str,
) -> Result<(Vec<u8>, Option<crate::domain::chat::Usage>), ApiError> {
    let endpoint = call
        .config
        .endpoint(provider)
        .ok_or_else(|| ApiError::from(ProviderError::CredentialsRejected { status: 401, message: "no key".into() }))?;
    let url = format!("{}/embeddings", endpoint.base_url);
    let auth = format!("Bearer {}", endpoint.key);
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let timeout = call.config.request_timeout_ms;
    let mut upstream =
        transport::send(Method::Post, &url, &headers, Some(&request.upstream_body(native)), timeout).await?;
    let left = (call.started_ms + timeout as f64 - js_sys::Date::now()).max(1.0) as u64;
    let body = transport::read_all(&mut upstream, left).await?;
    // Embeddings have input tokens only; an upstream that reports just `total_tokens` means those.
    let usage = embeddings_usage(&body)?.map(|mut u| {
        if u.prompt_tokens == 0 {
            u.prompt_tokens = u.total_tokens;
        }
        u
    });
    Ok((body, usage))
}

/// The answer under the client's model id, with `usage.cost` the charge (when billed).
fn with_model_and_cost(body: Vec<u8>, model: &str, cost: Option<f64>, show_upstream_cost: bool) -> Vec<u8> {
    let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&body) else { return body };
    if let Some(fields) = answer.as_object_mut() {
        fields.insert("model".into(), serde_json::Value::from(model));
    }
    if let Some(cost) = cost {
        set_usage_cost(&mut answer, cost, show_upstream_cost);
    }
    serde_json::to_vec(&answer).unwrap_or(body)
}
