//! POST /v1/chat/completions: authenticate → validate → price → reserve →
//! forward → relay → settle.

use std::rc::Rc;

use futures_channel::oneshot;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use worker::{ByteStream, Headers, Response};

use super::auth::{authenticate_for_inference, Caller};
use super::error::ApiError;
use super::incoming::Incoming;
use super::meter::{price_table, Meter, Outcome};
use super::respond::{read_body, Call};
use super::upstream;
use crate::cache::keys as key_cache;
use crate::cache::prices::PriceTable;
use crate::domain::chat::{ChatRequest, Usage};
use crate::domain::keys::Permission;
use crate::domain::ledger;
use crate::domain::pricing::{self, Price};
use crate::domain::routing::{self, Provider, Routing};
use crate::domain::time::to_iso;
use crate::log::{self, Level};
use crate::providers::openai_compat::{completion_usage, ProviderError};
use crate::providers::sse::{SseRelay, StreamSummary};
use crate::providers::transport::{self, within};
use crate::providers::wire::{self, StreamAdapter};
use crate::store::prices::PriceRow;
use crate::{env, store};

/// Chat bodies may carry images as data URLs.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

pub async fn create_chat_completion(mut req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let auth = authenticate_for_inference(&req, call).await?;
    auth.caller.require(Permission::Write)?;
    let bytes = read_body(&mut req, MAX_BODY_BYTES).await?;
    let mut chat = ChatRequest::parse(&bytes)?;
    let prices = price_table(call).await?;
    let row = costliest(&prices, &chat)?;
    let direct = call.config.direct_providers();
    let tenant = Routing { direct: &direct, openrouter: call.config.upstream_api_key.is_some() };
    let plan = routing::plan(&chat.model, &chat.fallbacks, |m| prices.get(m).and_then(PriceRow::pin), &tenant);
    let mut meter = match (&auth.caller, &auth.hash) {
        (Caller::Key(key), Some(hash)) => {
            let meter = Meter::reserve(call, key, hash, &mut chat, &row).await?;
            touch_key(call, &key.id);
            Some(meter)
        }
        _ => None, // the operator's own requests are not billed to anyone
    };
    let auth_ms = call.elapsed_ms();

    let max_output = |model: &str| {
        prices.get(model).and_then(|r| r.max_completion_tokens).map_or(ANTHROPIC_DEFAULT_MAX_TOKENS, |m| m as u64)
    };
    let served = match upstream::send(call, &chat, &plan, max_output).await {
        Ok(served) => served,
        Err(failed) => {
            if let Some(m) = meter {
                m.release(call, failed.error.status());
            }
            let log = log_context(call, &auth.caller, &chat.model, plan[0].route.provider, failed.tries, None);
            let status = failed.error.status();
            let line = request_line(&log, status, None, call.elapsed_ms(), chat.stream);
            let level = if status >= 500 { Level::Error } else { Level::Info };
            log::after_response(&call.ctx, call.config.log_level, level, line);
            return Err(failed.error);
        }
    };
    let (attempt, tries, mut upstream) = (served.attempt, served.tries, served.upstream);
    let provider = attempt.route.provider;
    // Reserved at the costliest candidate's price; charged at the price of the model that served. When
    // OpenRouter walks the client's `models` list, the answer names which one that was.
    let served = ServedPrices::new(&prices, attempt, &chat.fallbacks);
    if let Some(m) = meter.as_mut() {
        (m.model, m.price) = served.of(None);
        m.provider = provider.as_str();
    }
    let log =
        log_context(call, &auth.caller, &attempt.model, provider, tries, meter.as_ref().map(|m| (m.price, m.reserved)));
    let headers = Headers::new();
    let _ = headers.set("x-tollgate-provider", provider.as_str());
    let created = call.now_ms() / 1000;
    let auth_source = auth.source.map_or("admin", |s| s.as_str());
    let upstream_ms = call.elapsed_ms() - auth_ms;
    let timing = format!("auth;desc={auth_source};dur={auth_ms:.2}, upstream;dur={upstream_ms:.2}");
    let _ = headers.set("server-timing", &timing);

    let is_sse = upstream.header("content-type").is_some_and(|ct| ct.starts_with("text/event-stream"));
    if chat.stream && is_sse {
        let body = match upstream.stream() {
            Ok(body) => body,
            Err(e) => {
                let err = ApiError::from(e);
                if let Some(m) = meter {
                    m.release(call, err.status());
                }
                return Err(err);
            }
        };
        let _ = headers.set("content-type", "text/event-stream; charset=utf-8");
        let _ = headers.set("cache-control", "no-cache");
        let (outcome_tx, outcome_rx) = oneshot::channel::<StreamOutcome>();
        let served = Rc::new(served);
        let sse = match &meter {
            Some(m) => {
                let (served, reserved) = (served.clone(), m.reserved);
                SseRelay::reporting_cost(Box::new(move |usage, model| {
                    let price = served.of(model).1;
                    Meter::charged_usd(ledger::charge(pricing::cost(&price, &usage.tokens()), reserved))
                }))
            }
            None => SseRelay::new(),
        };
        if let Some(m) = meter {
            settle_stream_later(call, m, served, outcome_rx);
        }
        let adapter = StreamAdapter::new(provider, &attempt.model, created);
        let relay = Relay {
            upstream: body,
            adapter,
            sse,
            controller: upstream.controller,
            idle_timeout_ms: call.config.request_timeout_ms,
            request_id: call.request_id.clone(),
            log,
            ended: false,
            outcome: Some(outcome_tx),
        };
        return Response::from_stream(relay_stream(relay)).map(|r| r.with_headers(headers)).map_err(ApiError::internal);
    }

    let left_ms = (call.started_ms + call.config.request_timeout_ms as f64 - js_sys::Date::now()).max(1.0) as u64;
    let answer = transport::read_all(&mut upstream, left_ms)
        .await
        .and_then(|body| wire::answer(provider, body, &attempt.model, created))
        .and_then(|body| completion_usage(&body).map(|usage| (body, usage)));
    let (body, usage) = match answer {
        Ok(answer) => answer,
        Err(e) => {
            let err = ApiError::from(e);
            if let Some(m) = meter {
                m.release(call, err.status());
            }
            let line = request_line(&log, err.status(), None, call.elapsed_ms(), false);
            log::after_response(&call.ctx, call.config.log_level, Level::Error, line);
            return Err(err);
        }
    };
    let body = match meter {
        Some(mut m) => {
            if served.has_choices() {
                (m.model, m.price) = served.of(answer_model(&body).as_deref());
            }
            let outcome = Outcome {
                usage: usage.clone(),
                delivered_bytes: Some(body.len() as u64),
                status: 200,
                streamed: false,
                cancelled: false,
            };
            let charge = m.charge(&outcome).amount;
            m.settle_later(call, outcome);
            report_cost(body, Meter::charged_usd(charge))
        }
        None => body,
    };
    let line = request_line(&log, 200, usage.as_ref(), call.elapsed_ms(), false);
    log::after_response(&call.ctx, call.config.log_level, Level::Info, line);
    let _ = headers.set("content-type", "application/json");
    let _ = headers.set("server-timing", &format!("{timing}, total;dur={:.2}", call.elapsed_ms()));
    Ok(Response::from_bytes(body).map_err(ApiError::internal)?.with_headers(headers))
}

/// The answer with `usage.cost` set to what the gateway charged (the upstream's own kept as `upstream_cost`).
fn report_cost(body: Vec<u8>, charged_usd: f64) -> Vec<u8> {
    let Ok(mut answer) = serde_json::from_slice::<Value>(&body) else { return body };
    let Some(usage) = answer.get_mut("usage").and_then(Value::as_object_mut) else { return body };
    if let Some(upstream) = usage.remove("cost") {
        usage.insert("upstream_cost".into(), upstream);
    }
    usage.insert("cost".into(), Value::from(charged_usd));
    serde_json::to_vec(&answer).unwrap_or(body)
}

/// How a stream ended, for its settlement.
struct StreamOutcome {
    usage: Option<Usage>,
    content_bytes: u64,
    /// The client went away before the end.
    cancelled: bool,
    /// The upstream broke or timed out mid-stream.
    failed: bool,
    /// The model the chunks named.
    model: Option<String>,
}

/// Settles a stream once it ends — or once it is dropped because the client hung up.
fn settle_stream_later(
    call: &Call,
    mut meter: Meter,
    served: Rc<ServedPrices>,
    outcome: oneshot::Receiver<StreamOutcome>,
) {
    let env = call.env.clone();
    call.ctx.wait_until(async move {
        let ended = outcome.await.unwrap_or(StreamOutcome {
            usage: None,
            content_bytes: 0,
            cancelled: true,
            failed: false,
            model: None,
        });
        (meter.model, meter.price) = served.of(ended.model.as_deref());
        let outcome = Outcome {
            usage: ended.usage,
            delivered_bytes: Some(ended.content_bytes),
            status: if ended.failed { 502 } else { 200 },
            streamed: true,
            cancelled: ended.cancelled,
        };
        meter.settle(&env, outcome).await;
    });
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

/// The price the served answer is charged at. Usually the serving attempt's model's; when the attempt
/// handed the client's `models` list to OpenRouter, whichever of those models the answer names.
struct ServedPrices {
    /// The attempt's model first, then the client's fallbacks (only when OpenRouter chose among them).
    choices: Vec<(String, Price)>,
}

impl ServedPrices {
    fn new(prices: &PriceTable, attempt: &routing::Attempt, fallbacks: &[String]) -> Self {
        let price = |m: &str| prices.get(m).map(PriceRow::price).unwrap_or_default();
        let mut choices = vec![(attempt.model.clone(), price(&attempt.model))];
        if attempt.keep_fallbacks {
            choices.extend(fallbacks.iter().map(|m| (m.clone(), price(m))));
        }
        Self { choices }
    }

    /// OpenRouter may have served another model than the first.
    fn has_choices(&self) -> bool {
        self.choices.len() > 1
    }

    /// The model and price for an answer naming `model`. An answer that names none of the choices is
    /// charged at the costliest (the reservation covers it; the client is never charged below cost).
    fn of(&self, model: Option<&str>) -> (String, Price) {
        let ids: Vec<&str> = self.choices.iter().map(|(m, _)| m.as_str()).collect();
        match model.and_then(|m| routing::served_by(&ids, m)) {
            Some(i) => self.choices[i].clone(),
            None => {
                let costliest = self.choices.iter().skip(1).fold(self.choices[0].1, |p, (_, q)| p.costlier(q));
                (self.choices[0].0.clone(), costliest)
            }
        }
    }
}

/// The `model` a whole answer names.
fn answer_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        model: Option<String>,
    }
    serde_json::from_slice::<Probe>(body).ok()?.model
}

/// Output tokens asked of Anthropic (which requires a number) when neither the client nor the price table gives one.
const ANTHROPIC_DEFAULT_MAX_TOKENS: u64 = 4_096;

/// The price row to reserve against: the model's, or — when the client lists
/// fallback `models` — one at least as costly as each of theirs. Every model
/// the request may use must have a price.
fn costliest(prices: &PriceTable, chat: &ChatRequest) -> Result<PriceRow, ApiError> {
    let priced = |model: &str| {
        prices
            .get(model)
            .filter(|r| r.is_active != 0)
            .ok_or_else(|| ApiError::ModelNotFound(format!("no price configured for {model}")))
    };
    let mut row = priced(&chat.model)?.clone();
    for model in &chat.fallbacks {
        let other = priced(model)?;
        let price = row.price().costlier(&other.price());
        row.input_per_mtok = price.input;
        row.output_per_mtok = price.output;
        row.cache_read_per_mtok = price.cache_read;
        row.cache_write_per_mtok = price.cache_write;
        row.reasoning_per_mtok = price.reasoning;
        // No limit is the largest limit: the reservation must cover the least bounded candidate.
        let larger = |a: Option<i64>, b: Option<i64>| a.zip(b).map(|(a, b)| a.max(b));
        row.max_completion_tokens = larger(row.max_completion_tokens, other.max_completion_tokens);
        row.context_length = larger(row.context_length, other.context_length);
    }
    Ok(row)
}

struct Relay {
    upstream: ByteStream,
    /// Translates a direct provider's events into OpenAI's before they are metered and relayed.
    adapter: Option<StreamAdapter>,
    sse: SseRelay,
    controller: worker::AbortController,
    idle_timeout_ms: u64,
    request_id: String,
    log: LogContext,
    ended: bool,
    /// Told how the stream ended, exactly once (at the end, or on drop).
    outcome: Option<oneshot::Sender<StreamOutcome>>,
}

impl Relay {
    fn report(&mut self, cancelled: bool, failed: bool) {
        if let Some(tx) = self.outcome.take() {
            let summary = self.sse.summary();
            let _ = tx.send(StreamOutcome {
                usage: summary.usage.clone(),
                content_bytes: summary.content_bytes,
                cancelled,
                failed,
                model: summary.model.clone(),
            });
        }
    }
}

impl Drop for Relay {
    /// The client hung up mid-stream: stop the upstream and bill what was delivered.
    fn drop(&mut self) {
        if !self.ended {
            std::mem::take(&mut self.controller).abort();
            self.report(true, false);
        }
    }
}

/// Pipes upstream SSE to the client chunk by chunk. A failure after the
/// first byte ends the stream with an error event and `[DONE]`.
fn relay_stream(relay: Relay) -> impl futures_util::Stream<Item = worker::Result<Vec<u8>>> {
    stream::unfold(relay, |mut s| async move {
        if s.ended {
            return None;
        }
        loop {
            let failure = match within(s.idle_timeout_ms, s.upstream.next()).await {
                Some(Some(Ok(chunk))) => {
                    let out = match &mut s.adapter {
                        Some(adapter) => {
                            let translated = adapter.feed(&chunk);
                            s.sse.feed(&translated)
                        }
                        None => s.sse.feed(&chunk),
                    };
                    if out.is_empty() {
                        continue;
                    }
                    return Some((Ok(out), s));
                }
                Some(None) => {
                    if let Some(adapter) = &s.adapter {
                        let tail = adapter.end();
                        let out = s.sse.feed(&tail);
                        if !out.is_empty() {
                            s.adapter = None; // its end is sent; the next turn finishes the stream
                            return Some((Ok(out), s));
                        }
                    }
                    (!s.sse.summary().done).then_some(ProviderError::Network("stream ended before [DONE]".into()))
                }
                Some(Some(Err(e))) => Some(ProviderError::Network(format!("stream broke: {e}"))),
                None => {
                    std::mem::take(&mut s.controller).abort();
                    Some(ProviderError::Timeout)
                }
            };
            s.ended = true;
            let tail = match &failure {
                Some(err) => s.sse.finish(Some(&ApiError::from(err.clone()).body(&s.request_id).to_string())),
                None => s.sse.finish(None),
            };
            s.report(false, failure.is_some());
            stream_finished(&s.log, s.sse.summary(), failure.as_ref());
            return (!tail.is_empty()).then_some((Ok(tail), s));
        }
    })
}

/// What the per-request log line says about the caller and request.
struct LogContext {
    request_id: String,
    key_id: Option<String>,
    user_id: Option<String>,
    model: String,
    provider: Provider,
    /// Upstream calls made (retries and fallbacks included).
    tries: u32,
    /// The serving model's price and the amount reserved, to state the cost.
    pricing: Option<(Price, i64)>,
    started_ms: f64,
    level: Level,
}

fn log_context(
    call: &Call,
    caller: &Caller,
    model: &str,
    provider: Provider,
    tries: u32,
    pricing: Option<(Price, i64)>,
) -> LogContext {
    let (key_id, user_id) = match caller {
        Caller::Operator => (None, None),
        Caller::Key(k) => (Some(k.id.clone()), Some(k.user_id.clone())),
    };
    LogContext {
        request_id: call.request_id.clone(),
        key_id,
        user_id,
        model: model.to_string(),
        provider,
        tries,
        pricing,
        started_ms: call.started_ms,
        level: call.config.log_level,
    }
}

fn stream_finished(log: &LogContext, summary: &StreamSummary, failure: Option<&ProviderError>) {
    let status = if failure.is_some() { 502 } else { 200 };
    let line = request_line(log, status, summary.usage.as_ref(), js_sys::Date::now() - log.started_ms, true);
    log::write(log.level, if failure.is_some() { Level::Error } else { Level::Info }, line);
}

/// One structured line per request; never message contents or secrets.
fn request_line(log: &LogContext, status: u16, usage: Option<&Usage>, latency_ms: f64, streamed: bool) -> Value {
    let (prompt, completion) = usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
    let cost = usage
        .zip(log.pricing)
        .map(|(u, (price, reserved))| Meter::charged_usd(ledger::charge(pricing::cost(&price, &u.tokens()), reserved)));
    json!({
        "request_id": log.request_id, "key_id": log.key_id, "user_id": log.user_id,
        "model": log.model, "provider": log.provider.as_str(), "status": status, "streamed": streamed,
        "attempts": log.tries, "latency_ms": latency_ms.round(), "prompt_tokens": prompt,
        "completion_tokens": completion, "cost": cost,
    })
}
