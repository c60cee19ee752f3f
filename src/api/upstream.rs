//! Sends a request (a chat, or embeddings) along its plan (`routing::plan`): each attempt is
//! retried on its own route (`UPSTREAM_RETRIES`, jittered exponential
//! backoff, a short `Retry-After` honoured), then the next attempt is tried —
//! all inside `REQUEST_TIMEOUT`. This runs before anything reaches the client,
//! so a retry never follows a sent byte; the caller holds one reservation
//! across all of it and charges once.

use std::time::Duration;

use serde_json::json;
use worker::{Delay, Method};

use super::error::ApiError;
use super::meter::Outcome;
use super::respond::Call;
use crate::domain::chat::ChatRequest;
use crate::domain::routing::{self, Attempt};
use crate::domain::InvalidRequest;
use crate::env;
use crate::log::{self, Level};
use crate::providers::openai_compat::ProviderError;
use crate::providers::transport::{self, Upstream};
use crate::providers::wire::{self, Endpoint, Extras, Outbound};

/// How long a request must have been at the upstream when the deadline passed to count as held there
/// (`Failed::unanswered`).
const HELD_MS: f64 = 1_000.0;

/// The attempt that answered with a 2xx.
pub struct Served<'p> {
    pub upstream: Upstream,
    pub attempt: &'p Attempt,
    /// Upstream calls made, this one included.
    pub tries: u32,
}

/// Every attempt failed: the error to give the client (the last one's).
pub struct Failed {
    pub error: ApiError,
    pub tries: u32,
    /// The gateway's deadline passed while the upstream had the last request sent: it may have
    /// generated, and billed, an answer that never came. (An upstream's own 408/504/524 is a failure
    /// it does not bill.)
    pub unanswered: bool,
}

impl Failed {
    /// How the request ended, for its settlement.
    pub fn outcome(&self) -> Outcome {
        let status = self.error.status();
        if self.unanswered {
            Outcome::unanswered(status)
        } else {
            Outcome::failed(status)
        }
    }
}

/// Sends a request along `plan`; `build` makes each attempt's HTTP request for its provider's address and key.
pub async fn send<'p>(
    call: &Call,
    plan: &'p [Attempt],
    build: impl Fn(&Attempt, &Endpoint) -> Result<Outbound, InvalidRequest>,
) -> Result<Served<'p>, Failed> {
    let config = &call.config;
    let deadline = call.started_ms + config.request_timeout_ms as f64;
    let mut tries = 0;
    let mut last = None;
    let mut unanswered = false;
    for attempt in plan {
        let provider = attempt.route.provider;
        let Some(endpoint) = config.endpoint(provider) else {
            let message = format!("{} is not set", env::key_var(provider));
            last = Some(ProviderError::CredentialsRejected { status: 401, message });
            continue;
        };
        let out = match build(attempt, &endpoint) {
            Ok(out) => out,
            // The first route's refusal is the client's answer; a later one's would hide why the first failed.
            Err(e) if last.is_none() => return Err(Failed { error: e.into(), tries, unanswered }),
            Err(_) => continue,
        };
        let headers: Vec<(&str, &str)> = out.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        for retry in 0.. {
            let remaining = deadline - js_sys::Date::now();
            if remaining < 1.0 {
                return Err(Failed { error: ProviderError::Deadline.into(), tries, unanswered });
            }
            tries += 1;
            let error = match transport::send(Method::Post, &out.url, &headers, Some(&out.body), remaining as u64).await
            {
                Ok(upstream) => return Ok(Served { upstream, attempt, tries }),
                Err(e) => e,
            };
            note_failure(call, attempt, tries, &error);
            // The gateway's deadline passed with the request at the upstream for a while (not one sent in
            // the deadline's last moments, which may never have arrived): it may be generating still.
            unanswered = error == ProviderError::Deadline && remaining >= HELD_MS;
            let wait = (error.is_retryable() && retry < config.upstream_retries)
                .then(|| routing::backoff_ms(retry, error.retry_after_secs(), js_sys::Math::random()))
                .flatten()
                .filter(|ms| js_sys::Date::now() + (*ms as f64) < deadline);
            if let Some(ms) = wait {
                Delay::from(Duration::from_millis(ms)).await;
                continue;
            }
            if !error.moves_on() {
                return Err(Failed { error: error.into(), tries, unanswered });
            }
            last = Some(error);
            break;
        }
    }
    let error = last.map_or_else(|| ApiError::internal("no route to try"), ApiError::from);
    Err(Failed { error, tries, unanswered })
}

/// Sends a chat along `plan`; `max_output(model)` is the output bound given to a provider that requires
/// one (Anthropic).
pub async fn send_chat<'p>(
    call: &Call,
    chat: &ChatRequest,
    plan: &'p [Attempt],
    max_output: impl Fn(&str) -> u64,
) -> Result<Served<'p>, Failed> {
    let config = &call.config;
    send(call, plan, |attempt, endpoint| {
        let extras = Extras {
            default_max_tokens: max_output(&attempt.model),
            title: &config.title,
            referer: config.referer.as_deref(),
        };
        wire::outbound(attempt, chat, endpoint, &extras)
    })
    .await
}

/// One debug line per failed upstream call (the request's own line says how it ended).
fn note_failure(call: &Call, attempt: &Attempt, tries: u32, error: &ProviderError) {
    let line = json!({
        "event": "upstream_attempt_failed", "request_id": call.request_id, "model": attempt.model,
        "provider": attempt.route.provider.as_str(), "try": tries,
        "status": ApiError::from(error.clone()).status(), "retryable": error.is_retryable(),
    });
    log::after_response(&call.ctx, call.config.log_level, Level::Debug, line);
}
