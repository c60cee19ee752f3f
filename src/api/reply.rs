//! The answer to a metered request, once an upstream has answered: relayed as
//! a stream or read whole, its charge written into `usage.cost`, then settled
//! at the price of the model that served it, with the request's log line.

use std::rc::Rc;

use futures_channel::oneshot;
use worker::{Headers, Response};

use super::auth::Caller;
use super::error::ApiError;
use super::log_line::LogContext;
use super::meter::{charge, Heartbeat, Meter, Outcome};
use super::relay::{relay_stream, Relay, StreamOutcome};
use super::respond::Call;
use super::served::{answer_names, ServedPrices};
use super::upstream::{Failed, Served};
use crate::cache::prices::PriceTable;
use crate::domain::money::micros_to_usd;
use crate::domain::routing::{Attempt, Provider};
use crate::providers::openai_compat::{completion_usage, ProviderError};
use crate::providers::sse::{set_usage_cost, SseRelay};
use crate::providers::transport::{self, Upstream};
use crate::providers::wire::{self, StreamAdapter};
use crate::timer::IdleLimit;

/// The shape the client asked in: chat, legacy completions (a chat answered as text), or
/// Anthropic's Messages (a chat answered as a message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialect {
    Chat,
    Completions,
    /// With the client's stop sequence when it gave exactly one (an answer that stopped at it names it).
    Messages(Option<String>),
    Responses(crate::providers::responses::CustomTools),
}

impl Dialect {
    /// A whole answer in this dialect.
    pub fn answer(&self, body: Vec<u8>) -> Vec<u8> {
        match self {
            Self::Chat => body,
            Self::Completions => crate::domain::completions::answer_from_chat(body),
            Self::Messages(stop) => crate::providers::anthropic::inbound::answer_from_chat(body, stop.as_deref()),
            Self::Responses(custom) => crate::providers::responses::answer_from_chat(body, custom),
        }
    }

    /// What turns the relayed chat stream into this dialect's.
    /// The stream's translation for the gateway's request `request_id` of `model` (the id and model a
    /// Responses stream starts under when the upstream is silent at first).
    pub fn stream(&self, request_id: &str, model: &str) -> StreamDialect {
        match self {
            Self::Chat => StreamDialect::Chat,
            Self::Completions => StreamDialect::Completions,
            Self::Messages(stop) => {
                StreamDialect::Messages(crate::providers::anthropic::inbound::MessagesStream::new(stop.clone()))
            }
            Self::Responses(custom) => StreamDialect::Responses(
                crate::providers::responses::ResponsesStream::new(custom.clone()).for_request(request_id, model),
            ),
        }
    }
}

/// A stream's translation, with the state it needs (Anthropic's events number their blocks).
pub enum StreamDialect {
    Chat,
    Completions,
    Messages(crate::providers::anthropic::inbound::MessagesStream),
    Responses(crate::providers::responses::ResponsesStream),
}

impl StreamDialect {
    /// Relayed stream lines in this dialect.
    pub fn feed(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        // The translators turn some lines into nothing: an upstream's keep-alive comment (OpenRouter's,
        // while a model thinks), thinking the dialect does not tell (Messages has no block for OpenAI's
        // encrypted reasoning; the Responses API's, details with nothing to read). The client
        // still gets a comment for them, or a long silence would let its read time out.
        let silent_if_empty = !bytes.is_empty();
        let mut out = match self {
            Self::Chat => bytes,
            Self::Completions => crate::domain::completions::stream_from_chat(bytes),
            Self::Messages(state) => state.feed(bytes),
            Self::Responses(state) => state.feed(bytes),
        };
        if silent_if_empty && out.is_empty() {
            out = match self {
                Self::Responses(state) => state.keep_alive(js_sys::Date::now() as u64),
                _ => b": keep-alive\n\n".to_vec(),
            };
        }
        out
    }
}

/// Where the handler waits for the answer to give the client.
pub type Answer = oneshot::Sender<Result<Response, ApiError>>;

/// How the answer ended, for the settlement.
pub struct Ended {
    outcome: Outcome,
    /// The model and the upstream's id the answer named.
    model: Option<String>,
    upstream_id: Option<String>,
}

pub struct Reply<'a> {
    call: &'a Call,
    meter: Option<Meter>,
    prices: Rc<ServedPrices>,
    log: LogContext,
    headers: Headers,
    timing: String,
    attempt: &'a Attempt,
    upstream: Upstream,
    created: i64,
    dialect: Dialect,
}

impl<'a> Reply<'a> {
    pub fn new(
        call: &'a Call,
        caller: &Caller,
        served: Served<'a>,
        table: &PriceTable,
        fallbacks: &[String],
        mut meter: Option<Meter>,
        timing: &str,
    ) -> Self {
        let attempt = served.attempt;
        let provider = attempt.route.provider;
        let prices = ServedPrices::new(table, attempt, fallbacks);
        if let Some(m) = meter.as_mut() {
            (m.model, m.price) = prices.of(None);
            m.provider = provider.as_str();
        }
        let headers = Headers::new();
        let _ = headers.set("x-tollgate-provider", provider.as_str());
        Self {
            call,
            meter,
            prices: Rc::new(prices),
            log: LogContext::new(call, caller, &attempt.model, provider, served.tries),
            headers,
            timing: format!("{timing}, upstream;dur={}", call.elapsed_ms()),
            attempt,
            upstream: served.upstream,
            created: call.now_ms() / 1000,
            dialect: Dialect::Chat,
        }
    }

    /// Answers in `dialect` (chat unless said).
    pub fn in_dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    fn provider(&self) -> Provider {
        self.attempt.route.provider
    }

    pub fn is_stream(&self) -> bool {
        self.upstream.header("content-type").is_some_and(|ct| ct.starts_with("text/event-stream"))
    }

    /// Relays the stream to the client chunk by chunk; returns when it has ended (or the client left).
    pub async fn relay(&mut self, answer: Answer, hide_usage: bool) -> Option<Ended> {
        let body = match self.upstream.stream() {
            Ok(body) => body,
            Err(e) => return self.failed(answer, e, false, None),
        };
        let sse = match &self.meter {
            Some(m) => {
                let (prices, reserved, prompt) = (self.prices.clone(), m.reserved, m.prompt_bytes);
                let report = move |usage: &crate::domain::chat::Usage, model: Option<&str>| {
                    charge(&prices.of(model).1, reserved, prompt, Some(usage), None).usd()
                };
                SseRelay::reporting_cost(Box::new(report), self.call.config.show_upstream_cost)
            }
            None => SseRelay::new(),
        };
        let config = &self.call.config;
        let (ended_tx, ended) = oneshot::channel::<StreamOutcome>();
        let relay = Relay {
            upstream: Some(body),
            adapter: StreamAdapter::new(self.provider(), &self.attempt.model, self.created),
            sse: sse.hiding_usage(hide_usage),
            line: Default::default(),
            idle: IdleLimit::new(config.request_timeout_ms),
            first_content_by_ms: js_sys::Date::now() + FIRST_CONTENT_WAIT_MS,
            request_id: self.call.request_id.clone(),
            heartbeat: self.meter.as_ref().map(|m| {
                let every_ms = config.heartbeat_every_ms();
                Heartbeat::start(m, &self.call.env, every_ms, every_ms)
            }),
            dialect: self.dialect.stream(&self.call.request_id, &self.attempt.model),
            ended: false,
            outcome: Some(ended_tx),
            log: self.call.request_log.clone(),
        };
        let _ = self.headers.set("content-type", "text/event-stream; charset=utf-8");
        let _ = self.headers.set("cache-control", "no-cache");
        let _ = self.headers.set("server-timing", &self.timing);
        let response = Response::from_stream(relay_stream(relay)).map(|r| r.with_headers(self.headers.clone()));
        let _ = answer.send(response.map_err(ApiError::internal));
        let ended = ended.await.unwrap_or_else(|_| StreamOutcome::lost());
        let outcome = Outcome {
            status: if ended.failed { 502 } else { 200 },
            usage: ended.usage,
            delivered_bytes: Some(ended.content_bytes),
            streamed: true,
            cancelled: ended.cancelled,
            usage_so_far: ended.usage_so_far,
            unanswered: false,
            from_record: false,
        };
        Some(Ended { outcome, model: ended.model, upstream_id: ended.id })
    }

    /// Reads the whole answer (inside what is left of `REQUEST_TIMEOUT`) and gives it with its charge.
    pub async fn read(&mut self, answer: Answer) -> Option<Ended> {
        let call = self.call;
        // Whatever fails after a 2xx status (the body broke off, did not come in time, or is an error: OpenRouter
        // answers 200 with the error in the body once the model has started) failed a request the upstream had.
        let read = transport::read_all(&mut self.upstream)
            .await
            .and_then(|body| wire::answer(self.provider(), body, &self.attempt.model, self.created));
        let body = match read {
            Ok(body) => body,
            Err(e) => return self.failed(answer, e, true, None),
        };
        let (usage, content_bytes) = match completion_usage(&body) {
            Ok(read) => read,
            // An error body names its generation: its record says what the upstream used before failing.
            Err(e) => return self.failed(answer, e, true, answer_names(&body).0),
        };
        let (upstream_id, model) = answer_names(&body);
        let outcome = Outcome {
            usage,
            delivered_bytes: Some(content_bytes),
            status: 200,
            streamed: false,
            cancelled: false,
            usage_so_far: None,
            unanswered: false,
            from_record: false,
        };
        let body = match &self.meter {
            Some(m) => {
                let price = self.prices.of(model.as_deref()).1;
                let cost =
                    charge(&price, m.reserved, m.prompt_bytes, outcome.usage.as_ref(), outcome.delivered_bytes).usd();
                with_cost(body, cost, call.config.show_upstream_cost)
            }
            None => body,
        };
        let body = self.dialect.answer(body);
        super::request_log::keep_response(&call.request_log, &body);
        let _ = self.headers.set("content-type", "application/json");
        let _ = self.headers.set("server-timing", &format!("{}, total;dur={}", self.timing, call.elapsed_ms()));
        let response = Response::from_bytes(body).map(|r| r.with_headers(self.headers.clone()));
        let _ = answer.send(response.map_err(ApiError::internal));
        Some(Ended { outcome, model, upstream_id })
    }

    /// The answer could not be given: the client gets the error; the settlement releases the reservation,
    /// or, when the upstream had generated it (`generated`: it answered 2xx), charges what its record of
    /// `upstream_id` says it used, else the prompt, estimated.
    fn failed(
        &mut self,
        answer: Answer,
        error: ProviderError,
        generated: bool,
        upstream_id: Option<String>,
    ) -> Option<Ended> {
        let unanswered = generated;
        let error = ApiError::from(error);
        let status = error.status();
        super::request_log::keep_response(
            &self.call.request_log,
            error.body(&self.call.request_id).to_string().as_bytes(),
        );
        let _ = answer.send(Err(error));
        let outcome = if unanswered { Outcome::unanswered(status) } else { Outcome::failed(status) };
        Some(Ended { outcome, model: None, upstream_id })
    }

    /// Charges the request at the price of the model that served it, and writes its log line; answers
    /// the status the client got and whether it was streamed.
    pub async fn settle(self, ended: Option<Ended>) -> Option<(u16, bool)> {
        let Ended { mut outcome, model, upstream_id } = ended?;
        // No usage report: a stream that ended without its usage chunk (its client hung up, the upstream broke
        // off, or it ended with an error event, even one followed by `[DONE]`), an answer that failed under
        // 2xx, or one whose usage said nothing. OpenRouter's record says what it used.
        if outcome.usage.is_none() && self.meter.is_some() {
            let delivered = outcome.delivered_bytes.unwrap_or(0);
            outcome.usage = self.generation_usage(upstream_id.as_deref(), delivered).await;
            outcome.from_record = outcome.usage.is_some();
        }
        let tokens = outcome.usage.as_ref().map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
        let answered = (outcome.status, outcome.streamed);
        let Some(mut m) = self.meter else {
            self.log.finished(outcome.status, tokens, None, outcome.streamed);
            return Some(answered);
        };
        (m.model, m.price) = self.prices.of(model.as_deref());
        m.upstream_id = upstream_id;
        let charged = m.charge(&outcome);
        let uncollected = micros_to_usd(charged.cost - charged.amount);
        // The tokens charged (a cut stream's reported prompt and estimated output, when no usage came).
        let tokens = (charged.tokens.prompt, charged.tokens.completion);
        self.log.finished(outcome.status, tokens, Some((charged.usd(), uncollected)), outcome.streamed);
        m.settle(&self.call.env, outcome).await;
        Some(answered)
    }

    /// A stream the client hung up on (or the upstream broke off) never got its usage chunk: OpenRouter's
    /// record of the generation says what it really used (hidden reasoning included), so that is charged,
    /// not the estimate from the text delivered. Other providers keep no such record.
    async fn generation_usage(
        &self,
        upstream_id: Option<&str>,
        delivered_bytes: u64,
    ) -> Option<crate::domain::chat::Usage> {
        let id = upstream_id.filter(|_| self.provider() == Provider::OpenRouter)?;
        let config = &self.call.config;
        let endpoint = config.endpoint(Provider::OpenRouter)?;
        // Well inside what is left of the reservation's life (no heartbeat extends it once the stream has
        // ended, and the last one may be a beat old), and of the task's after the answer.
        let left_ms = (config.reservation_lease_ms() as u64).saturating_sub(config.heartbeat_every_ms());
        let wait_ms = GENERATION_WAIT_MS.min(left_ms / 2);
        let usage = crate::providers::generation::usage(endpoint.base_url, endpoint.key, id, wait_ms).await?;
        // A record with no output for a stream that delivered some is not believed (the estimate is charged).
        (usage.completion_tokens > 0 || delivered_bytes == 0).then_some(usage)
    }
}

/// How long a stream may wait for its first content (a model reasoning first), the client kept alive
/// meanwhile: as long as OpenAI's and Anthropic's SDKs wait for an answer by default.
const FIRST_CONTENT_WAIT_MS: f64 = 600_000.0;

/// How long a settlement waits for OpenRouter's record of a generation the client hung up on (with the
/// settlement's own 20 s of retries, inside the 30 s the runtime gives a task after its answer).
const GENERATION_WAIT_MS: u64 = 6_000;

/// No upstream answered: the client gets the error; the reservation goes back (or, when the last
/// upstream had the request and did not answer in time, the prompt is charged: `Outcome::unanswered`).
pub async fn fail(call: &Call, meter: Option<Meter>, answer: Answer, failed: Failed, log: LogContext) {
    let outcome = failed.outcome();
    let status = outcome.status;
    let error = failed.error;
    super::request_log::keep_response(&call.request_log, error.body(&call.request_id).to_string().as_bytes());
    match meter.as_ref().filter(|_| failed.unanswered).map(|m| m.charge(&outcome)) {
        Some(c) => log.finished(status, (c.tokens.prompt, 0), Some((c.usd(), micros_to_usd(c.cost - c.amount))), false),
        None => log.finished(status, (0, 0), None, false),
    }
    let _ = answer.send(Err(error));
    if let Some(m) = meter {
        m.settle(&call.env, outcome).await;
    }
}

/// The answer with `usage.cost` set to what the gateway charged (the upstream's own kept as `upstream_cost`).
fn with_cost(body: Vec<u8>, charged_usd: f64, show_upstream_cost: bool) -> Vec<u8> {
    let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&body) else { return body };
    if !set_usage_cost(&mut answer, charged_usd, show_upstream_cost) {
        return body;
    }
    serde_json::to_vec(&answer).unwrap_or(body)
}
