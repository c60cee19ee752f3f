//! POST /v1/embeddings: authenticate → validate → price → reserve (the input at
//! the model's input price) → send → answer with `usage.cost` → settle. Served
//! natively by OpenRouter and by OpenAI on the direct route, retried and handed
//! over to OpenRouter as chat is (`upstream::send`); a model another direct
//! provider would serve goes through OpenRouter. Like chat, once money is
//! reserved the request runs to its settlement whether or not the client stays.

use futures_channel::oneshot;
use worker::{Headers, Response};

use super::auth::{note_key_use, Authenticated, Caller};
use super::error::ApiError;
use super::incoming::Incoming;
use super::log_line::LogContext;
use super::meter::{charge, price_table, Demand, Heartbeat, Meter, Outcome};
use super::reply::fail;
use super::respond::{read_body, Call};
use super::upstream::{self, Failed};
use crate::domain::embeddings::EmbeddingsRequest;
use crate::domain::routing::{self, Attempt, Provider, Routing};
use crate::providers::openai_compat::{embeddings_usage, ProviderError};
use crate::providers::sse::set_usage_cost;
use crate::providers::transport;
use crate::providers::wire::Outbound;
use crate::store::prices::PriceRow;

/// Up to 2,048 inputs of text.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

pub async fn create_embeddings(mut req: Incoming, call: &Call, auth: Authenticated) -> Result<Response, ApiError> {
    let bytes = read_body(&mut req, MAX_BODY_BYTES).await?;
    crate::domain::parsed_size::check(&bytes)?;
    let request = EmbeddingsRequest::parse(&bytes)?;
    let prices = price_table(call).await?;
    let row = prices
        .get(&request.model)
        .filter(|r| r.is_active != 0)
        .ok_or_else(|| ApiError::ModelNotFound(format!("no price configured for {}", request.model)))?
        .clone();
    let plan = plan(call, &request.model, &row)?;
    let plan = super::allowed::check_plan(call, &auth.caller, [request.model.as_str()], plan).await?;
    let mut job_call = call.clone();
    let user = request.body.get("user").and_then(serde_json::Value::as_str);
    job_call.end_user = call.end_user.clone().or_else(|| crate::domain::chat::end_user_id(user));
    let call = &job_call;
    let meter = match (&auth.caller, &auth.hash) {
        (Caller::Key(key), Some(hash)) => {
            let demand = Demand { model: &request.model, prompt: request.token_bound, output: 0 };
            let (mut meter, _) = Meter::reserve_tokens(call, key, hash, &row, demand).await?;
            // Reserved at its bound; an answer without usage is charged the input's estimate.
            meter.prompt_bytes = request.estimate_bytes;
            note_key_use(call, &key.id);
            Some(meter)
        }
        _ => None,
    };
    let (answer, answered) = oneshot::channel();
    let job = Job { call: job_call.clone(), caller: auth.caller, request, plan, meter };
    call.ctx.wait_until(job.run(answer));
    answered.await.unwrap_or_else(|_| Err(ApiError::internal("the request ended without an answer")))
}

/// The routes to try: only OpenAI-compatible providers have the endpoint (OpenRouter, and OpenAI on a
/// direct route, with OpenRouter behind it as for chat); a model another direct provider would serve
/// goes through OpenRouter.
fn plan(call: &Call, model: &str, row: &PriceRow) -> Result<Vec<Attempt>, ApiError> {
    let direct: Vec<Provider> = call.config.direct_providers().into_iter().filter(|p| *p == Provider::OpenAi).collect();
    let openrouter = call.config.upstream_api_key.is_some();
    let plan = routing::plan(model, &[], |_| row.pin(), &Routing { direct: &direct, openrouter });
    let plan: Vec<Attempt> = plan
        .into_iter()
        .filter(|a| matches!(a.route.provider, Provider::OpenRouter | Provider::OpenAi))
        .filter(|a| a.route.provider != Provider::OpenRouter || openrouter)
        .collect();
    if plan.is_empty() {
        return Err(ApiError::bad_request(
            "embeddings are served by OpenRouter or OpenAI, and this gateway has no key for either route (AI_GATEWAY_API_KEY)",
        ));
    }
    Ok(plan)
}

struct Job {
    call: Call,
    caller: Caller,
    request: EmbeddingsRequest,
    plan: Vec<Attempt>,
    meter: Option<Meter>,
}

impl Job {
    async fn run(self, answer: oneshot::Sender<Result<Response, ApiError>>) {
        let Job { call, caller, request, plan, mut meter } = self;
        let waiting = meter.as_ref().map(|m| Heartbeat::waiting(m, &call));
        let result = send(&call, &request, &plan).await;
        drop(waiting);
        let (provider, tries) = match &result {
            Ok((_, _, served)) => (served.provider, served.tries),
            Err(failed) => (plan[0].route.provider, failed.tries),
        };
        let log = LogContext::new(&call, &caller, &request.model, provider, tries);
        if let Some(m) = meter.as_mut() {
            m.provider = provider.as_str();
        }
        let (body, usage) = match result {
            Ok((body, usage, _)) => (body, usage),
            Err(failed) => return fail(&call, meter, answer, failed, log).await,
        };
        let outcome = Outcome {
            usage,
            delivered_bytes: Some(0),
            status: 200,
            streamed: false,
            cancelled: false,
            usage_so_far: None,
            unanswered: false,
            from_record: false,
        };
        let tokens = outcome.usage.as_ref().map_or((0, 0), |u| (u.prompt_tokens, 0));
        let base64 = request.body.get("encoding_format").and_then(serde_json::Value::as_str) == Some("base64");
        let body = match &meter {
            Some(m) => {
                let charged = charge(&m.price, m.reserved, m.prompt_bytes, outcome.usage.as_ref(), Some(0));
                log.finished(200, tokens, Some((charged.usd(), 0.0)), false);
                let billed = Some((charged.usd(), charged.tokens.prompt));
                with_model_and_cost(body, &request.model, billed, call.config.show_upstream_cost, base64)
            }
            None => {
                log.finished(200, tokens, None, false);
                with_model_and_cost(body, &request.model, None, true, base64)
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

/// Who served, after how many upstream calls.
struct ServedBy {
    provider: Provider,
    tries: u32,
}

/// The request along its plan (retries and the OpenRouter safety net as for chat), inside
/// `REQUEST_TIMEOUT`; the answer, its usage, and who served it (or the error and the calls made).
async fn send(
    call: &Call,
    request: &EmbeddingsRequest,
    plan: &[Attempt],
) -> Result<(Vec<u8>, Option<crate::domain::chat::Usage>, ServedBy), Failed> {
    let served = upstream::send(call, plan, |attempt, endpoint| {
        Ok(Outbound {
            url: format!("{}/embeddings", endpoint.base_url),
            headers: vec![
                ("authorization", format!("Bearer {}", endpoint.key)),
                ("content-type", "application/json".to_string()),
            ],
            body: request.upstream_body(
                &attempt.route.native_model,
                match attempt.route.provider {
                    Provider::OpenAi => crate::providers::openai::OPENROUTER_ONLY,
                    _ => &[],
                },
            ),
        })
    })
    .await?;
    let by = ServedBy { provider: served.attempt.route.provider, tries: served.tries };
    let mut upstream = served.upstream;
    let read = async {
        let body = transport::read_all(&mut upstream).await?;
        let usage = embeddings_usage(&body)?;
        Ok::<_, ProviderError>((body, usage))
    };
    match read.await {
        Ok((body, usage)) => Ok((body, usage, by)),
        // An answer whose body broke off, did not come by the deadline, or is an error under a 2xx status:
        // the upstream had the input, and bills it.
        Err(e) => Err(Failed { unanswered: true, error: e.into(), tries: by.tries }),
    }
}

/// The answer under the client's model id, with `usage.cost` the charge (when billed: the charge and the
/// tokens it was for, which an answer without usage is given as its usage).
/// A client that asked for base64 (`base64`) gets it, whatever the upstream answered.
fn with_model_and_cost(
    body: Vec<u8>,
    model: &str,
    billed: Option<(f64, u64)>,
    show_upstream_cost: bool,
    base64: bool,
) -> Vec<u8> {
    let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&body) else { return body };
    if base64 {
        crate::domain::embeddings::encode_vectors(&mut answer);
    }
    if let Some(fields) = answer.as_object_mut() {
        fields.insert("model".into(), serde_json::Value::from(model));
        if let (Some((_, tokens)), false) = (billed, fields.get("usage").is_some_and(serde_json::Value::is_object)) {
            fields.insert("usage".into(), serde_json::json!({"prompt_tokens": tokens, "total_tokens": tokens}));
        }
    }
    if let Some((cost, _)) = billed {
        set_usage_cost(&mut answer, cost, show_upstream_cost);
    }
    serde_json::to_vec(&answer).unwrap_or(body)
}
