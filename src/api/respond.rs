//! Per-request context and response helpers.

use std::cell::Cell;
use std::rc::Rc;

use serde::Serialize;
use serde_json::json;
use worker::{Context, Env, Headers, Response};

use super::error::ApiError;
use super::incoming::Incoming;
use crate::domain::rates::{self, RateStatus};
use crate::env::Config;
use crate::log::{self, Level};

/// What every handler gets besides the request.
#[derive(Clone)]
pub struct Call {
    pub env: Env,
    pub ctx: Rc<Context>,
    pub config: Rc<Config>,
    /// The gateway's own id for this request (random; never taken from a client header).
    pub request_id: String,
    /// Cloudflare's `cf-ray`, logged beside the request id (a client can send any header).
    pub cf_ray: Option<String>,
    /// Errors in Anthropic's shape (the Messages API), else OpenAI's.
    pub anthropic_errors: bool,
    pub started_ms: f64,
    /// Who the calling application serves (`X-Tollgate-End-User`, else a chat's `safety_identifier` or
    /// `user`), for the request's log line.
    pub end_user: Option<String>,
    /// Where the key's per-minute limits stand, once its reservation says (sent as `x-ratelimit-*`).
    pub rate: Rc<Cell<Option<RateStatus>>>,
    /// The request's bodies, when its key keeps a request log.
    pub request_log: super::request_log::Keeper,
}

impl Call {
    pub fn new(req: &Incoming, env: Env, ctx: Context) -> Self {
        let request_id = format!("req-{}", hex::encode(random_bytes::<12>()));
        let cf_ray = req.headers().get("cf-ray").ok().flatten();
        let end_user =
            crate::domain::chat::end_user_id(req.headers().get("x-tollgate-end-user").ok().flatten().as_deref());
        Self {
            config: Config::get(&env),
            env,
            ctx: Rc::new(ctx),
            request_id,
            cf_ray,
            anthropic_errors: false,
            started_ms: js_sys::Date::now(),
            end_user,
            rate: Rc::default(),
            request_log: Rc::default(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        js_sys::Date::now() as i64
    }

    /// Milliseconds since the request came, whole: the runtime's clock counts whole milliseconds (so
    /// durations print as integers, and no float formatting is needed for them).
    pub fn elapsed_ms(&self) -> i64 {
        (js_sys::Date::now() - self.started_ms) as i64
    }
}

/// Random bytes drawn from the platform's CSPRNG at a time: one call into JavaScript (three crossings of the
/// wasm boundary) then serves many request ids instead of one.
const RANDOM_POOL: usize = 256;

thread_local! {
    /// Unused CSPRNG bytes and how many are used; bytes handed out are zeroed in the pool.
    static RANDOM: std::cell::RefCell<([u8; RANDOM_POOL], usize)> =
        const { std::cell::RefCell::new(([0; RANDOM_POOL], RANDOM_POOL)) };
}

/// Bytes from the platform's CSPRNG (each byte handed out once).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    // crypto.getRandomValues cannot fail for buffers this small.
    let fill = |buf: &mut [u8]| getrandom::getrandom(buf).expect("crypto.getRandomValues is available in workerd");
    let mut out = [0u8; N];
    if N > RANDOM_POOL {
        fill(&mut out);
        return out;
    }
    RANDOM.with_borrow_mut(|(pool, used)| {
        if RANDOM_POOL - *used < N {
            fill(pool);
            *used = 0;
        }
        let taken = &mut pool[*used..*used + N];
        out.copy_from_slice(taken);
        taken.fill(0);
        *used += N;
    });
    out
}

/// A JSON answer of the gateway's own (not a relayed model's): never stored by a cache or proxy on the way,
/// as it may carry a key's secret, a request log's prompts or an account's money.
pub fn json<T: Serialize>(status: u16, body: &T) -> Result<Response, ApiError> {
    let mut resp = Response::from_json(body).map_err(ApiError::internal)?.with_status(status);
    let _ = resp.headers_mut().set("cache-control", "no-store");
    Ok(resp)
}

/// `{"data": …}` with a status.
pub fn data<T: Serialize>(status: u16, body: &T) -> Result<Response, ApiError> {
    json(status, &json!({ "data": body }))
}

/// Turns a handler's result into the response: adds `x-request-id`, renders errors.
pub fn finish(call: &Call, result: Result<Response, ApiError>) -> Response {
    let mut resp = match result {
        Ok(resp) => resp,
        Err(err) => error_response(call, &err),
    };
    let headers = resp.headers_mut();
    let _ = headers.set("x-request-id", &call.request_id);
    if let Some(status) = call.rate.get() {
        rate_headers(headers, status);
    }
    resp
}

/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
fn rate_headers(headers: &mut Headers, status: RateStatus) {
    for (kind, standing) in [("requests", status.requests), ("tokens", status.tokens)] {
        let Some(s) = standing else { continue };
        let _ = headers.set(&format!("x-ratelimit-limit-{kind}"), &s.limit.to_string());
        let _ = headers.set(&format!("x-ratelimit-remaining-{kind}"), &s.remaining.to_string());
        let _ = headers.set(&format!("x-ratelimit-reset-{kind}"), &rates::duration(s.reset_ms));
    }
}

pub fn error_response(call: &Call, err: &ApiError) -> Response {
    // The status in the endpoint's own dialect (Anthropic's says an overloaded upstream as 529), logged as sent.
    let (body, status) = match call.anthropic_errors {
        true => (err.anthropic_body(&call.request_id), err.anthropic_status()),
        false => (err.body(&call.request_id), err.status()),
    };
    let level = if status >= 500 { Level::Error } else { Level::Info };
    let mut line = json!({"request_id": call.request_id, "cf_ray": call.cf_ray, "status": status, "code": err.code(), "latency_ms": call.elapsed_ms()});
    if status >= 500 {
        line["detail"] = err.to_string().into();
    }
    log::after_response(&call.ctx, call.config.log_level, level, line);
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json");
    if let Some(secs) = err.retry_after_secs() {
        let _ = headers.set("retry-after", &secs.to_string());
    }
    if !err.retry_may_help() {
        let _ = headers.set("x-should-retry", "false");
    }
    let body = body.to_string();
    Response::ok(body)
        .map(|r| r.with_status(status).with_headers(headers))
        .unwrap_or_else(|_| Response::empty().expect("an empty response can always be built").with_status(status))
}

/// Reads a request body, refusing more than `limit` bytes with 413.
/// The request body, at most `limit` bytes: 413 as soon as it passes that, while it streams in.
pub async fn read_body(req: &mut Incoming, limit: usize) -> Result<Vec<u8>, ApiError> {
    req.bytes_up_to(limit)
        .await
        .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?
        .ok_or(ApiError::PayloadTooLarge { limit_bytes: limit })
}

/// Parses a JSON body into `T`; serde's message names the offending field.
pub async fn read_json<T: serde::de::DeserializeOwned>(req: &mut Incoming) -> Result<T, ApiError> {
    let bytes = read_body(req, 64 * 1024).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// The query string as name → value (the last one wins).
pub fn query(req: &Incoming) -> std::collections::HashMap<String, String> {
    crate::routes::query_of(&req.url())
}

/// Refuses with 404 an id naming no user, organization or key that ever was: a read of a typo must not
/// answer as an empty account (nor make an account object for it).
pub async fn must_be_known(call: &Call, what: crate::store::Named, id: &str) -> Result<(), ApiError> {
    let db = crate::env::db(&call.env).map_err(ApiError::internal)?;
    match crate::store::known(&db, what, id).await? {
        true => Ok(()),
        false => Err(ApiError::not_found(format!("{} {id} not found", what.noun()))),
    }
}
