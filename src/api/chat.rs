//! POST /v1/chat/completions: authenticate → validate → price → reserve →
//! send → relay → settle. Once money is reserved, the request runs as a task
//! of its own (`ctx.wait_until`) to its settlement, whether or not the client
//! stays to read the answer; the handler only waits for the answer to give.

use std::rc::Rc;

use futures_channel::oneshot;
use worker::{Headers, Response};

use super::auth::{authenticate_for_inference, Caller};
use super::error::ApiError;
use super::incoming::Incoming;
use super::meter::{charge, price_table, Heartbeat, Meter, Outcome};
use super::relay::{relay_stream, Relay, StreamOutcome};
use super::request_log::LogContext;
use super::respond::{read_body, Call};
use super::served::{answer_names, costliest, ServedPrices};
use super::upstream;
use crate::cache::keys as key_cache;
use crate::cache::prices::PriceTable;
use crate::domain::chat::ChatRequest;
use crate::domain::keys::Permission;
use crate::domain::money::micros_to_usd;
use crate::domain::routing::{self, Attempt, Routing};
use crate::domain::time::to_iso;
use crate::providers::openai_compat::completion_usage;
use crate::providers::sse::{set_usage_cost, SseRelay};
use crate::providers::transport;
use crate::providers::wire::{self, StreamAdapter};
use crate::store::prices::PriceRow;
use crate::{env, store};

/// Chat bodies may carry images as data URLs.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Output tokens asked of Anthropic (which requires a number) when neither the client nor the price table gives one.
const ANTHROPIC_DEFAULT_MAX_TOKENS: u64 = 4_096;

pub async fn create_chat_completion(mut req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let auth = authenticate_for_inference(&req, call).await?;
    auth.caller.require(Permission::Write)?;
    let mut chat = ChatRequest::parse(&read_body(&mut req, MAX_BODY_BYTES).await?)?;
    chat.refuse_unpriced_fees()?;
    let prices = price_table(call).await?;
    let row = costliest(&prices, &chat)?;
    let direct = call.config.direct_providers();
    let tenant = Routing { direct: &direct, openrouter: call.config.upstream_api_key.is_some() };
    let plan = routing::plan(&chat.model, &chat.fallbacks, |m| prices.get(m).and_then(PriceRow::pin), &tenant);
    let meter = match (&auth.caller, &auth.hash) {
        (Caller::Key(key), Some(hash)) => {
            let meter = Meter::reserve(call, key, hash, &mut chat, &row).await?;
            touch_key(call, &key.id);
            Some(meter)
        }
        _ => None, // the operator's own requests are not billed to anyone
    };
    let timing = format!("auth;desc={};dur={:.2}", auth.source.map_or("admin", |s| s.as_str()), call.elapsed_ms());
    let job = Job { call: call.clone(), caller: auth.caller, chat, plan, prices, meter, timing };
    let (answer, answered) = oneshot::channel();
    call.ctx.wait_until(job.run(answer));
    answered.await.unwrap_or_else(|_| Err(ApiError::internal("the request ended without an answer")))
}

/// A reserved request, from sending it upstream to its settlement.
struct Job {
    call: Call,
    caller: Caller,
    chat: ChatRequest,
    plan: Vec<Attempt>,
    prices: PriceTable,
    meter: Option<Meter>,
    timing: String,
}

type Answer = oneshot::Sender<Result<Response, ApiError>>;

impl Job {
    async fn run(self, answer: Answer) {
        let Job { call, caller, chat, plan, prices: table, mut meter, timing } = self;
        let call = &call;
        let max_output = |m: &str| {
            table.get(m).and_then(|r| r.max_completion_tokens).map_or(ANTHROPIC_DEFAULT_MAX_TOKENS, |m| m as u64)
        };
        let served = match upstream::send(call, &chat, &plan, max_output).await {
            Ok(served) => served,
            Err(failed) => {
                let log = LogContext::new(call, &caller, &chat.model, plan[0].route.provider, failed.tries);
                return fail(call, meter, answer, failed.error, log).await;
            }
        };
        let (attempt, mut upstream) = (served.attempt, served.upstream);
        let log = LogContext::new(call, &caller, &attempt.model, attempt.route.provider, served.tries);
        let prices = ServedPrices::new(&table, attempt, &chat.fallbacks);
        let provider = attempt.route.provider;
        if let Some(m) = meter.as_mut() {
            (m.model, m.price) = prices.of(None);
            m.provider = provider.as_str();
        }
        let headers = Headers::new();
        let _ = headers.set("x-tollgate-provider", provider.as_str());
        let timing = format!("{timing}, upstream;dur={:.2}", call.elapsed_ms());
        let created = call.now_ms() / 1000;
        let is_sse = upstream.header("content-type").is_some_and(|ct| ct.starts_with("text/event-stream"));
        if chat.stream && is_sse {
            let body = match upstream.stream() {
                Ok(body) => body,
                Err(e) => return fail(call, meter, answer, e.into(), log).await,
            };
            let _ = headers.set("content-type", "text/event-stream; charset=utf-8");
            let _ = headers.set("cache-control", "no-cache");
            let _ = headers.set("server-timing", &timing);
            let prices = Rc::new(prices);
            let sse = match &meter {
                Some(m) => {
                    let (prices, reserved, prompt) = (prices.clone(), m.reserved, m.prompt_bytes);
                    SseRelay::reporting_cost(Box::new(move |usage, model| {
                        charge(&prices.of(model).1, reserved, prompt, Some(usage), None).usd()
                    }))
                }
                None => SseRelay::new(),
            };
            let (ended_tx, ended) = oneshot::channel::<StreamOutcome>();
            let relay = Relay {
                upstream: body,
                adapter: StreamAdapter::new(provider, &attempt.model, created),
                sse: sse.hiding_usage(chat.hide_usage),
                controller: upstream.controller,
                idle_timeout_ms: call.config.request_timeout_ms,
                request_id: call.request_id.clone(),
                heartbeat: meter.as_ref().map(|m| Heartbeat::start(m, &call.env, call.config.heartbeat_every_ms())),
                ended: false,
                outcome: Some(ended_tx),
            };
            let response = Response::from_stream(relay_stream(relay)).map(|r| r.with_headers(headers));
            let _ = answer.send(response.map_err(ApiError::internal));
            let ended = ended.await.unwrap_or_else(|_| StreamOutcome::lost());
            let outcome = Outcome {
                status: if ended.failed { 502 } else { 200 },
                usage: ended.usage,
                delivered_bytes: Some(ended.content_bytes),
                streamed: true,
                cancelled: ended.cancelled,
            };
            return settle(call, meter, outcome, ended.model.as_deref(), ended.id, &prices, log).await;
        }

        let left_ms = (call.started_ms + call.config.request_timeout_ms as f64 - js_sys::Date::now()).max(1.0) as u64;
        let read = transport::read_all(&mut upstream, left_ms)
            .await
            .and_then(|body| wire::answer(provider, body, &attempt.model, created))
            .and_then(|body| completion_usage(&body).map(|usage| (body, usage)));
        let (body, usage) = match read {
            Ok(read) => read,
            Err(e) => return fail(call, meter, answer, e.into(), log).await,
        };
        let (id, model) = answer_names(&body);
        let outcome =
            Outcome { usage, delivered_bytes: Some(body.len() as u64), status: 200, streamed: false, cancelled: false };
        let body = match &meter {
            Some(m) => {
                let price = prices.of(model.as_deref()).1;
                with_cost(body, charge(&price, m.reserved, m.prompt_bytes, outcome.usage.as_ref(), None).usd())
            }
            None => body,
        };
        let _ = headers.set("content-type", "application/json");
        let _ = headers.set("server-timing", &format!("{timing}, total;dur={:.2}", call.elapsed_ms()));
        let response = Response::from_bytes(body).map(|r| r.with_headers(headers));
        let _ = answer.send(response.map_err(ApiError::internal));
        settle(call, meter, outcome, model.as_deref(), id, &prices, log).await;
    }
}

/// The request failed before any answer: the client gets the error, the reservation goes back.
async fn fail(call: &Call, meter: Option<Meter>, answer: Answer, error: ApiError, log: LogContext) {
    let status = error.status();
    log.finished(status, (0, 0), None, false);
    let _ = answer.send(Err(error));
    if let Some(m) = meter {
        m.settle(&call.env, Outcome::failed(status)).await;
    }
}

/// Charges the request at the price of the model that served it, and writes its log line.
async fn settle(
    call: &Call,
    meter: Option<Meter>,
    outcome: Outcome,
    model: Option<&str>,
    upstream_id: Option<String>,
    prices: &ServedPrices,
    log: LogContext,
) {
    let tokens = outcome.usage.as_ref().map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
    let Some(mut m) = meter else {
        return log.finished(outcome.status, tokens, None, outcome.streamed);
    };
    (m.model, m.price) = prices.of(model);
    m.upstream_id = upstream_id;
    let charged = m.charge(&outcome);
    let uncollected = micros_to_usd(charged.cost - charged.amount);
    log.finished(outcome.status, tokens, Some((charged.usd(), uncollected)), outcome.streamed);
    m.settle(&call.env, outcome).await;
}

/// The answer with `usage.cost` set to what the gateway charged (the upstream's own kept as `upstream_cost`).
fn with_cost(body: Vec<u8>, charged_usd: f64) -> Vec<u8> {
    let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&body) else { return body };
    if !set_usage_cost(&mut answer, charged_usd) {
        return body;
    }
    serde_json::to_vec(&answer).unwrap_or(body)
}

/// Records `last_used_at` after the response, at most once a minute per key.
fn touch_key(call: &Call, key_id: &str) {
    let now = call.now_ms();
    if !key_cache::due_for_touch(key_id, now) {
        return;
    }
    let Ok(db) = env::db(&call.env) else { return };
    let (id, now_iso, unless_after) = (key_id.to_string(), to_iso(now), to_iso(now - key_cache::TOUCH_EVERY_MS));
    call.ctx.wait_until(async move {
        let _ = store::keys::touch(&db, &id, &now_iso, &unless_after).await;
    });
}
