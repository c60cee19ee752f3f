//! POST /v1/chat/completions, and the dialects served as a chat: POST /v1/completions,
//! /v1/messages (Anthropic) and /v1/responses (all under /api/v1 too); plus
//! POST /v1/messages/count_tokens, never billed. A chat goes authenticate → validate →
//! price → reserve → send → relay → settle. Once money is reserved, the request runs as a
//! task of its own (`ctx.wait_until`) to its settlement, whether or not the client stays
//! to read the answer; the handler only waits for the answer to give.

use futures_channel::oneshot;
use worker::Response;

use super::allowed;
use super::auth::{note_key_use, Authenticated, Caller};
use super::error::ApiError;
use super::incoming::Incoming;
use super::log_line::LogContext;
use super::meter::{price_table, Heartbeat, Meter};
use super::reply::{fail, Answer, Dialect, Reply};
use super::respond::{read_body, Call};
use super::served::costliest;
use super::upstream;
use crate::cache::prices::PriceTable;
use crate::domain::chat::ChatRequest;
use crate::domain::completions;
use crate::domain::routing::{self, Attempt, Routing};
use crate::providers::wire::ANTHROPIC_VERSION;
use crate::providers::{anthropic, responses};
use crate::store::prices::PriceRow;

/// Chat bodies may carry images as data URLs.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Output tokens asked of Anthropic (which requires a number) when neither the client nor the price table gives one.
const ANTHROPIC_DEFAULT_MAX_TOKENS: u64 = 4_096;

pub async fn create_chat_completion(mut req: Incoming, call: &Call, auth: Authenticated) -> Result<Response, ApiError> {
    let chat = ChatRequest::parse(&body(&mut req, call, &auth).await?)?;
    serve(call, auth, chat, Dialect::Chat).await
}

/// The request's body (kept for the key's request log when it has one).
async fn body(req: &mut Incoming, call: &Call, auth: &Authenticated) -> Result<Vec<u8>, ApiError> {
    let bytes = read_body(req, MAX_BODY_BYTES).await?;
    crate::domain::parsed_size::check(&bytes)?;
    super::request_log::keep_request(call, &auth.caller, &bytes);
    Ok(bytes)
}

/// POST /v1/completions: a legacy completion is a chat with the prompt as its one message,
/// answered in completion shapes (`domain::completions`).
pub async fn create_completion(mut req: Incoming, call: &Call, auth: Authenticated) -> Result<Response, ApiError> {
    let chat = completions::to_chat(&body(&mut req, call, &auth).await?)?;
    serve(call, auth, chat, Dialect::Completions).await
}

/// POST /v1/messages: Anthropic's Messages API (Claude Code, the Anthropic SDKs) served as a chat
/// and answered as messages (`providers::anthropic::inbound`).
pub async fn create_message(mut req: Incoming, call: &Call, auth: Authenticated) -> Result<Response, ApiError> {
    let beta = anthropic_beta(&req)?;
    let (mut chat, origins) = anthropic::inbound::to_chat_traced(&body(&mut req, call, &auth).await?)?;
    chat.anthropic_beta = beta;
    (chat.model, chat.asked_as) = priced_id(call, chat.model).await?;
    // A rule of the chat request checked later names a chat field: named here as the client wrote it.
    let stop = anthropic::inbound::sole_stop_sequence(&chat);
    serve(call, auth, chat, Dialect::Messages(stop)).await.map_err(|e| match e {
        ApiError::InvalidRequest(invalid) => {
            ApiError::InvalidRequest(anthropic::inbound::as_written(invalid, &origins))
        }
        other => other,
    })
}

/// The model id the price table knows for the one a Messages client named: Anthropic's own ids
/// (`claude-sonnet-4-5-20250929`, Claude Code's defaults, its background model's too) stand for the table's
/// `anthropic/…` id (`routing::anthropic_ids`), so Claude Code works with no model set. An id the table has,
/// or none of whose forms it has, is left as it is (and refused as unpriced, by its own name).
/// Answers the id and, when it was read as another, the id the client asked for.
async fn priced_id(call: &Call, model: String) -> Result<(String, Option<String>), ApiError> {
    let prices = price_table(call).await?;
    if prices.contains_key(&model) {
        return Ok((model, None));
    }
    Ok(match routing::anthropic_ids(&model).into_iter().find(|id| prices.contains_key(id)) {
        Some(id) => (id, Some(model)),
        None => (model, None),
    })
}

/// The client's `anthropic-beta` header (features it opts into), passed on to Anthropic only.
fn anthropic_beta(req: &Incoming) -> Result<Option<String>, ApiError> {
    let Some(beta) = req.headers().get("anthropic-beta").ok().flatten() else { return Ok(None) };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ',' | ' ');
    if beta.len() > 1024 || !beta.chars().all(plain) {
        return Err(ApiError::bad_request("anthropic-beta: a comma-separated list of feature names".to_string()));
    }
    // A feature that changes what tokens cost, at rates the price table does not hold.
    if let Some(priced) = beta.split(',').map(str::trim).find(|f| f.to_ascii_lowercase().starts_with("context-1m")) {
        return Err(ApiError::bad_request(format!(
            "anthropic-beta: `{priced}` bills prompts over 200K tokens at long-context rates the price table does not hold, so it is not accepted"
        )));
    }
    Ok(Some(beta))
}

/// POST /v1/messages/count_tokens, never billed: Anthropic's own count for a model served by the direct
/// Anthropic route, else (or should Anthropic not answer) an estimate: a token per four bytes of the
/// request's messages and tools.
pub async fn count_message_tokens(mut req: Incoming, call: &Call, caller: &Caller) -> Result<Response, ApiError> {
    let beta = anthropic_beta(&req)?;
    let bytes = read_body(&mut req, MAX_BODY_BYTES).await?;
    crate::domain::parsed_size::check(&bytes)?;
    // `max_tokens` is not part of a count request; the translation wants one.
    let mut body: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    if let Some(fields) = body.as_object_mut() {
        fields.entry("max_tokens").or_insert(serde_json::Value::from(1));
    }
    let mut chat = anthropic::inbound::to_chat(&serde_json::to_vec(&body).unwrap_or_default())?;
    chat.anthropic_beta = beta;
    (chat.model, chat.asked_as) = priced_id(call, chat.model).await?;
    let lists = allowed::check_models(call, caller, [chat.model.as_str()]).await?;
    // Anthropic is asked only when the caller may use it; else (and should it not answer) the estimate.
    let may_ask = lists.iter().all(|l| l.allows_provider(routing::Provider::Anthropic.as_str()));
    let route = anthropic_route(call, &chat.model).await?;
    // Anthropic's own id, as the client asked, unless an operator pinned one (as a message is sent).
    let route = route.map(|(native, pinned)| if pinned { native } else { chat.asked_as.clone().unwrap_or(native) });
    let counted = match route.filter(|_| may_ask) {
        Some(native) => count_with_anthropic(call, &chat, &native).await,
        None => None,
    };
    let input_tokens = counted.unwrap_or_else(|| anthropic::inbound::estimate_input_tokens(&chat));
    super::respond::json(200, &serde_json::json!({ "input_tokens": input_tokens }))
}

/// The Anthropic model id, when `model` is served by the direct Anthropic route here, and whether an
/// operator pinned it.
async fn anthropic_route(call: &Call, model: &str) -> Result<Option<(String, bool)>, ApiError> {
    let prices = price_table(call).await?;
    let pin = prices.get(model).and_then(PriceRow::pin);
    let pinned = pin.as_ref().is_some_and(|p| p.native_model.is_some());
    let route = routing::route(model, pin.as_ref(), &call.config.direct_providers());
    Ok((route.provider == routing::Provider::Anthropic).then_some((route.native_model, pinned)))
}

/// Anthropic's count of the request's input tokens (`None` when it cannot be had).
async fn count_with_anthropic(call: &Call, chat: &ChatRequest, native: &str) -> Option<u64> {
    let endpoint = call.config.endpoint(routing::Provider::Anthropic)?;
    let mut body = anthropic::request::messages_request(chat, native, 1).ok()?;
    if let Some(fields) = body.as_object_mut() {
        fields.retain(|k, _| matches!(k.as_str(), "model" | "messages" | "system" | "tools" | "tool_choice"));
    }
    let url = format!("{}/v1/messages/count_tokens", endpoint.base_url);
    let mut headers = vec![
        ("x-api-key", endpoint.key),
        ("anthropic-version", ANTHROPIC_VERSION),
        ("content-type", "application/json"),
    ];
    if let Some(beta) = &chat.anthropic_beta {
        headers.push(("anthropic-beta", beta));
    }
    let bytes = body.to_string().into_bytes();
    let mut answer =
        crate::providers::transport::send(worker::Method::Post, &url, &headers, Some(&bytes), 10_000).await.ok()?;
    let text = crate::providers::transport::read_all(&mut answer).await.ok()?;
    serde_json::from_slice::<serde_json::Value>(&text).ok()?.get("input_tokens")?.as_u64()
}

/// POST /v1/responses: OpenAI's Responses API (Codex, `client.responses.create`), stateless,
/// served as a chat and answered as a response (`providers::responses`).
pub async fn create_response(mut req: Incoming, call: &Call, auth: Authenticated) -> Result<Response, ApiError> {
    if req.headers().get("upgrade").ok().flatten().is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(ApiError::UpgradeRequired(
            "this gateway serves the Responses API over HTTP only: send a POST".into(),
        ));
    }
    // GET is routed here for the WebSocket upgrade alone.
    if req.method() != "POST" {
        return Err(ApiError::MethodNotAllowed { method: req.method(), path: req.path() });
    }
    let body = body(&mut req, call, &auth).await?;
    let (chat, custom_tools, origins) = responses::to_chat(&body)?;
    // A rule of the chat request checked later names a chat field: named here as the client wrote it.
    serve(call, auth, chat, Dialect::Responses(custom_tools)).await.map_err(|e| match e {
        ApiError::InvalidRequest(invalid) => ApiError::InvalidRequest(responses::as_written(invalid, &origins)),
        other => other,
    })
}

/// Price → reserve → send → relay → settle, for a chat in the client's dialect.
async fn serve(
    call: &Call,
    auth: Authenticated,
    mut chat: ChatRequest,
    dialect: Dialect,
) -> Result<Response, ApiError> {
    chat.refuse_unpriced_fees()?;
    chat.parse_files_free();
    let prices = price_table(call).await?;
    let row = costliest(&prices, &chat)?;
    let direct = call.config.direct_providers();
    let tenant = Routing { direct: &direct, openrouter: call.config.upstream_api_key.is_some() };
    let pin_of = |m: &str| prices.get(m).and_then(PriceRow::pin);
    let mut plan = routing::plan(&chat.model, &chat.fallbacks, pin_of, &tenant);
    if let Some(asked) = &chat.asked_as {
        let pinned_native = pin_of(&chat.model).is_some_and(|p| p.native_model.is_some());
        routing::send_as_asked(&mut plan, &chat.model, asked, pinned_native);
    }
    let named = std::iter::once(chat.model.as_str()).chain(chat.fallbacks.iter().map(String::as_str));
    let plan = allowed::check_plan(call, &auth.caller, named, plan).await?;
    // Whom the request is made for: its budget binds the reservation, and the log line names it.
    let mut job_call = call.clone();
    job_call.end_user = chat.end_user(call.end_user.as_deref());
    let call = &job_call;
    let meter = match (&auth.caller, &auth.hash) {
        (Caller::Key(key), Some(hash)) => {
            let meter = Meter::reserve(call, key, hash, &mut chat, &row).await?;
            note_key_use(call, &key.id);
            Some(meter)
        }
        _ => None, // the operator's own requests are not billed to anyone
    };
    if call.config.faults.panic_model.as_deref() == Some(chat.model.as_str()) {
        panic!("FAULT_PANIC_MODEL: a chat for {} panics with its money held", chat.model);
    }
    let held_by = match &meter {
        Some(m) if m.lease.is_some() => "lease",
        Some(_) => "account",
        None => "none",
    };
    let source = auth.source.map_or("admin", |s| s.as_str());
    let timing = format!("auth;desc={source};dur={}, reserve;desc={held_by}", call.elapsed_ms());
    let job = Job { call: job_call.clone(), caller: auth.caller, chat, plan, prices, meter, timing, dialect };
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
    dialect: Dialect,
}

impl Job {
    async fn run(self, answer: Answer) {
        let Job { call, caller, chat, plan, prices, meter, timing, dialect } = self;
        let max_output =
            |m: &str| prices.get(m).and_then(PriceRow::output_limit).unwrap_or(ANTHROPIC_DEFAULT_MAX_TOKENS);
        let waiting = meter.as_ref().map(|m| Heartbeat::waiting(m, &call));
        let served = match upstream::send_chat(&call, &chat, &plan, max_output).await {
            Ok(served) => served,
            Err(failed) => {
                let log = LogContext::new(&call, &caller, &chat.model, plan[0].route.provider, failed.tries);
                let status = failed.error.status();
                fail(&call, meter, answer, failed, log).await;
                return super::request_log::write(&call, &caller, &chat.model, status, false).await;
            }
        };
        let mut reply =
            Reply::new(&call, &caller, served, &prices, &chat.fallbacks, meter, &timing).in_dialect(dialect);
        let ended = if chat.stream && reply.is_stream() {
            drop(waiting);
            reply.relay(answer, chat.hide_usage).await
        } else {
            let ended = reply.read(answer).await;
            drop(waiting);
            ended
        };
        if let Some((status, streamed)) = reply.settle(ended).await {
            super::request_log::write(&call, &caller, &chat.model, status, streamed).await;
        }
    }
}
