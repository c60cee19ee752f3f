//! Metering one inference request: price it, reserve its worst case in the
//! account's Durable Object, and settle it to the actual cost afterwards.

use worker::Env;

use super::error::ApiError;
use super::respond::Call;
use crate::billing::client;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use worker::Delay;

use crate::billing::protocol::{AccountRequest, AccountResponse, Settlement};
use crate::cache::keys::KeyRecord;
use crate::cache::prices as price_cache;
use crate::domain::chat::{ChatRequest, Usage};
use crate::domain::ledger::{self, LimitSource, Reservation};
use crate::domain::money::micros_to_usd;
use crate::domain::orgs::{Limits, OrgLimitHit};
use crate::domain::pricing::{self, Price, Tokens};
use crate::domain::windows::Reset;
use crate::env;
use crate::store::prices::PriceRow;

/// Output tokens assumed when neither the client nor the price table bounds them.
const DEFAULT_MAX_OUTPUT: u64 = 16_384;

/// An open reservation. Settle it exactly once (a repeat charges nothing).
pub struct Meter {
    pub account_id: String,
    pub request_id: String,
    pub price: Price,
    pub reserved: i64,
    /// Upper bound on prompt tokens, and the prompt's JSON size (for estimates).
    pub prompt_bytes: u64,
    pub model: String,
    /// The key's organization, whose monthly limits also hold this request.
    pub org_id: Option<String>,
}

/// The model's price row, or 404 `model_not_found`.
pub async fn price_of(call: &Call, model: &str) -> Result<PriceRow, ApiError> {
    let kv = env::cache(&call.env).map_err(ApiError::internal)?;
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    let table = price_cache::table(&kv, &db, call.now_ms()).await?;
    table
        .get(model)
        .filter(|r| r.is_active != 0)
        .cloned()
        .ok_or_else(|| ApiError::ModelNotFound(format!("no price configured for {model}")))
}

impl Meter {
    /// Checks the key and reserves the worst case; caps `max_tokens` when only part is affordable.
    pub async fn reserve(
        call: &Call,
        key: &KeyRecord,
        hash: &str,
        chat: &mut ChatRequest,
        row: &PriceRow,
    ) -> Result<Self, ApiError> {
        let price = row.price();
        let prompt = chat.prompt_token_bound();
        let room = row.context_length.map(|c| (c as u64).saturating_sub(prompt)).filter(|r| *r > 0);
        let output =
            chat.max_tokens.or(row.max_completion_tokens.map(|m| m as u64)).or(room).unwrap_or(DEFAULT_MAX_OUTPUT);
        let worst_case = pricing::cost(&price, &Tokens { prompt, completion: output, ..Tokens::default() });
        let min_to_run = pricing::cost(&price, &Tokens { prompt, completion: 1, ..Tokens::default() });
        let message = AccountRequest::Reserve {
            request_id: call.request_id.clone(),
            key_id: key.id.clone(),
            hash: hash.to_string(),
            limit_micros: key.limit_micros,
            limit_reset: key.limit_reset.as_deref().and_then(Reset::parse),
            worst_case,
            min_to_run,
            caps: call.config.in_flight,
            account_id: key.user_id.clone(),
            settle_first: take_pending(&key.user_id),
        };
        let answer = match client::call(&call.env, &key.user_id, &message).await {
            Ok(answer) => answer,
            Err(e) => {
                if let AccountRequest::Reserve { settle_first, .. } = message {
                    requeue(&key.user_id, settle_first);
                }
                return Err(ApiError::internal(e));
            }
        };
        let (reservation, resets_at_ms) = match answer {
            AccountResponse::Refused { reason } => return Err(ApiError::unauthenticated(reason.message())),
            AccountResponse::TooManyInFlight { scope } => {
                return Err(ApiError::LimitReached {
                    message: format!("too many requests of this {scope} are in flight; retry when one finishes"),
                    retry_after_secs: 1,
                })
            }
            AccountResponse::Reserved { reservation, resets_at_ms } => (reservation, resets_at_ms),
            other => return Err(ApiError::internal(format!("unexpected answer to Reserve: {other:?}"))),
        };
        let meter = |reserved| Self {
            account_id: key.user_id.clone(),
            request_id: call.request_id.clone(),
            price,
            reserved,
            prompt_bytes: prompt,
            model: chat.model.clone(),
            org_id: None,
        };
        let (mut m, output) = match reservation {
            Reservation::Full { amount } => (meter(amount), output),
            Reservation::Partial { amount } => {
                let affordable = pricing::affordable_output_tokens(&price, prompt, amount).min(output);
                let m = meter(amount);
                if affordable == 0 {
                    m.release(call);
                    return Err(insufficient(LimitSource::Balance, None));
                }
                chat.cap_output(affordable);
                (m, affordable)
            }
            Reservation::Refused { source } => {
                return Err(insufficient(source, resets_at_ms.filter(|_| source == LimitSource::KeyLimit)))
            }
        };
        if let Some(org_id) = &key.org_id {
            if let Err(e) = reserve_in_org(call, org_id, &m, (prompt + output) as i64).await {
                m.release(call);
                return Err(e);
            }
            m.org_id = Some(org_id.clone());
        }
        Ok(m)
    }

    /// The cost of a reported usage, and what is charged for it (never above the reservation).
    pub fn charge_for(&self, usage: &Usage) -> i64 {
        ledger::charge(pricing::cost(&self.price, &usage.tokens()), self.reserved)
    }

    /// The charge for a stream that ended without usage: estimated from what was delivered.
    pub fn estimated_charge(&self, content_bytes: u64) -> i64 {
        let tokens = Tokens {
            prompt: ledger::estimate_tokens(self.prompt_bytes),
            completion: ledger::estimate_tokens(content_bytes),
            ..Tokens::default()
        };
        ledger::charge(pricing::cost(&self.price, &tokens), self.reserved)
    }

    /// Tokens of that estimate (for an organization's token count).
    pub fn estimated_tokens(&self, content_bytes: u64) -> u64 {
        ledger::estimate_tokens(self.prompt_bytes) + ledger::estimate_tokens(content_bytes)
    }

    pub fn charged_usd(charge: i64) -> f64 {
        micros_to_usd(charge)
    }

    /// Settles after the response (`ctx.wait_until`).
    pub fn settle_later(self, call: &Call, charge: i64, tokens: u64, note: &str) {
        let env = call.env.clone();
        let description = format!("{} {note}", self.model).trim().to_string();
        call.ctx.wait_until(async move { self.settle_with_tokens(&env, charge, tokens, description).await });
    }

    /// Gives the whole reservation back (the request failed before any answer).
    pub fn release(self, call: &Call) {
        self.settle_later(call, 0, 0, "failed");
    }

    /// Settles the account and, for an organization's key, the organization's month.
    /// The account's settlement waits in this isolate's queue: the account's
    /// next reservation carries it (one round trip for both), or, if none comes
    /// within `SETTLE_DELAY_MS`, it is sent on its own. Runs inside `ctx.wait_until`.
    pub async fn settle_with_tokens(self, env: &Env, charge: i64, tokens: u64, description: String) {
        requeue(&self.account_id, vec![Settlement { request_id: self.request_id.clone(), cost: charge, description }]);
        if let Some(org_id) = &self.org_id {
            let org =
                AccountRequest::OrgSettle { request_id: self.request_id.clone(), tokens: tokens as i64, cost: charge };
            if let Err(e) = client::call(env, &org_object(org_id), &org).await {
                log_settle_error(&self.request_id, &e);
            }
        }
        Delay::from(Duration::from_millis(SETTLE_DELAY_MS)).await;
        let settlements = take_pending(&self.account_id);
        if settlements.is_empty() {
            return; // a reservation took them
        }
        let message = AccountRequest::Settle { account_id: self.account_id.clone(), settlements };
        if let Err(e) = client::call(env, &self.account_id, &message).await {
            if let AccountRequest::Settle { settlements, .. } = message {
                requeue(&self.account_id, settlements);
            }
            // Still queued: the next reservation or settlement in this isolate retries it;
            // if the isolate ends first, the reservation expires, charging nothing (never twice).
            log_settle_error(&self.request_id, &e);
        }
    }
}

/// How long a settlement waits for the account's next reservation to carry it.
const SETTLE_DELAY_MS: u64 = 50;

thread_local! {
    static PENDING: RefCell<HashMap<String, Vec<Settlement>>> = RefCell::new(HashMap::new());
}

fn requeue(account: &str, settlements: Vec<Settlement>) {
    if settlements.is_empty() {
        return;
    }
    PENDING.with(|p| p.borrow_mut().entry(account.to_string()).or_default().extend(settlements));
}

fn take_pending(account: &str) -> Vec<Settlement> {
    PENDING.with(|p| p.borrow_mut().remove(account).unwrap_or_default())
}

fn log_settle_error(request_id: &str, detail: &str) {
    worker::console_error!(
        "{}",
        serde_json::json!({"level": "error", "job": "settle", "request_id": request_id, "detail": detail})
    );
}

/// The Durable Object name of an organization's month counters.
pub fn org_object(org_id: &str) -> String {
    format!("org:{org_id}")
}

/// Holds the request against the organization's monthly limits (a second round trip, for org keys only).
async fn reserve_in_org(call: &Call, org_id: &str, m: &Meter, tokens: i64) -> Result<(), ApiError> {
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    let Some(org) = crate::cache::orgs::get(&db, org_id, call.now_ms()).await? else {
        return Err(ApiError::unauthenticated("this key's organization has been deleted"));
    };
    if org.status != "active" {
        return Err(ApiError::forbidden(format!("the organization {} is {}", org.name, org.status)));
    }
    let limits = Limits {
        monthly_requests: org.monthly_requests,
        monthly_tokens: org.monthly_tokens,
        monthly_cost_micros: org.monthly_cost_micros,
    };
    let message = AccountRequest::OrgReserve { request_id: m.request_id.clone(), limits, tokens, cost: m.reserved };
    match client::call(&call.env, &org_object(org_id), &message).await.map_err(ApiError::internal)? {
        AccountResponse::OrgReserved => Ok(()),
        AccountResponse::OrgRefused { hit: OrgLimitHit::Cost, resets_at_ms } => {
            Err(insufficient(LimitSource::OrgLimit, Some(resets_at_ms)))
        }
        AccountResponse::OrgRefused { hit, resets_at_ms } => Err(ApiError::LimitReached {
            message: format!(
                "the organization's monthly {} limit is reached; it resets at {}",
                if hit == OrgLimitHit::Requests { "request" } else { "token" },
                crate::domain::time::to_iso(resets_at_ms)
            ),
            retry_after_secs: ((resets_at_ms - call.now_ms()).max(0) / 1000) as u64,
        }),
        other => Err(ApiError::internal(format!("unexpected answer to OrgReserve: {other:?}"))),
    }
}

fn insufficient(source: LimitSource, resets_at_ms: Option<i64>) -> ApiError {
    ApiError::InsufficientCredits { limit: source, resets_at_ms }
}
