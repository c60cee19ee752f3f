//! Metering one inference request: price it, reserve its worst case in the
//! account's Durable Object, and settle it to the actual cost afterwards.

use worker::Env;

use super::error::ApiError;
use super::respond::Call;
use crate::billing::client;
use crate::billing::protocol::{AccountRequest, AccountResponse, Settlement};
use crate::cache::keys::KeyRecord;
use crate::cache::prices as price_cache;
use crate::domain::chat::{ChatRequest, Usage};
use crate::domain::ledger::{self, LimitSource, Reservation};
use crate::domain::money::{micros_to_usd, usd_to_micros};
use crate::domain::orgs::{Limits, OrgLimitHit};
use crate::domain::pricing::{self, Price, Tokens};
use crate::domain::usage::UsageRecord;
use crate::domain::windows::Reset;
use crate::env;
use crate::store::prices::PriceRow;
use std::cell::RefCell;
use std::collections::HashMap;

/// How long a settlement waits in the isolate for the account's next reservation to carry it.
const SETTLE_WAIT_MS: u64 = 50;

/// Output tokens assumed when neither the client nor the price table bounds them.
const DEFAULT_MAX_OUTPUT: u64 = 16_384;

/// An open reservation. Settle it exactly once (a repeat charges nothing).
pub struct Meter {
    pub account_id: String,
    pub key_id: String,
    pub request_id: String,
    pub price: Price,
    pub reserved: i64,
    /// Upper bound on prompt tokens, and the prompt's JSON size (for estimates).
    pub prompt_bytes: u64,
    pub model: String,
    /// The key's organization, whose monthly limits also hold this request.
    pub org_id: Option<String>,
    pub started_ms: f64,
    /// Who serves the request (for its usage record).
    pub provider: &'static str,
}

/// How a metered request ended.
pub struct Outcome {
    /// The usage the upstream reported.
    pub usage: Option<Usage>,
    /// Content bytes delivered, for an estimate when no usage was reported;
    /// `None`: the request failed before any answer (charged nothing).
    pub delivered_bytes: Option<u64>,
    /// The status the client got (a stream that broke counts as 502).
    pub status: u16,
    pub streamed: bool,
    /// The client hung up before the end.
    pub cancelled: bool,
}

/// What a request is charged, and for which tokens.
pub struct Charged {
    pub amount: i64,
    pub tokens: Tokens,
    pub estimated: bool,
}

/// Every price row (and route pin), from the nearest cache.
pub async fn price_table(call: &Call) -> Result<price_cache::PriceTable, ApiError> {
    let kv = env::cache(&call.env).map_err(ApiError::internal)?;
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    Ok(price_cache::table(&kv, &db, call.now_ms()).await?)
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
                    if !settle_first.is_empty() {
                        // Their own settle tasks may be done waiting: send them from here.
                        requeue(&key.user_id, settle_first);
                        let (env, account, request_id) =
                            (call.env.clone(), key.user_id.clone(), call.request_id.clone());
                        call.ctx.wait_until(async move { deliver_pending(&env, &account, &request_id).await });
                    }
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
            key_id: key.id.clone(),
            request_id: call.request_id.clone(),
            price,
            reserved,
            prompt_bytes: prompt,
            model: chat.model.clone(),
            org_id: None,
            started_ms: call.started_ms,
            provider: "openrouter",
        };
        let (mut m, output) = match reservation {
            Reservation::Full { amount } => (meter(amount), output),
            Reservation::Partial { amount } => {
                let affordable = pricing::affordable_output_tokens(&price, prompt, amount).min(output);
                let m = meter(amount);
                if affordable == 0 {
                    m.release(call, 402);
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
                m.release(call, e.status());
                return Err(e);
            }
            m.org_id = Some(org_id.clone());
        }
        Ok(m)
    }

    /// What this request is charged (never above the reservation), with its
    /// tokens: the reported usage, else an estimate from the content delivered,
    /// else nothing (the request failed before any answer).
    pub fn charge(&self, outcome: &Outcome) -> Charged {
        let (tokens, estimated) = match (&outcome.usage, outcome.delivered_bytes) {
            (Some(usage), _) => (usage.tokens(), false),
            (None, Some(bytes)) => (
                Tokens {
                    prompt: ledger::estimate_tokens(self.prompt_bytes),
                    completion: ledger::estimate_tokens(bytes),
                    ..Tokens::default()
                },
                true,
            ),
            (None, None) => return Charged { amount: 0, tokens: Tokens::default(), estimated: false },
        };
        Charged { amount: ledger::charge(pricing::cost(&self.price, &tokens), self.reserved), tokens, estimated }
    }

    pub fn charged_usd(charge: i64) -> f64 {
        micros_to_usd(charge)
    }

    /// Settles after the response (`ctx.wait_until`).
    pub fn settle_later(self, call: &Call, outcome: Outcome) {
        let env = call.env.clone();
        call.ctx.wait_until(async move { self.settle(&env, outcome).await });
    }

    /// Gives the whole reservation back: the request failed before any answer.
    pub fn release(self, call: &Call, status: u16) {
        let outcome = Outcome { usage: None, delivered_bytes: None, status, streamed: false, cancelled: false };
        self.settle_later(call, outcome);
    }

    /// The usage record of this request.
    fn record(&self, outcome: &Outcome, charged: &Charged) -> UsageRecord {
        let upstream_cost = outcome.usage.as_ref().and_then(|u| u.cost).and_then(|c| usd_to_micros("cost", c).ok());
        UsageRecord {
            id: self.request_id.clone(),
            key_id: self.key_id.clone(),
            user_id: self.account_id.clone(),
            org_id: self.org_id.clone(),
            model: self.model.clone(),
            provider: self.provider.into(),
            prompt_tokens: charged.tokens.prompt,
            completion_tokens: charged.tokens.completion,
            reasoning_tokens: charged.tokens.reasoning,
            cached_tokens: charged.tokens.cache_read,
            cost_micros: charged.amount,
            upstream_cost_micros: upstream_cost,
            latency_ms: (js_sys::Date::now() - self.started_ms).max(0.0) as u64,
            status: outcome.status,
            streamed: outcome.streamed,
            cancelled: outcome.cancelled,
            estimated: charged.estimated,
            created_ms: self.started_ms as i64,
        }
    }

    /// Settles the account and, for an organization's key, the organization's month,
    /// inside `ctx.wait_until`; the usage record travels with the settlement. The
    /// settlement goes at once, with any earlier ones of this isolate that failed to
    /// go; should it fail too, it waits in the isolate's queue for the account's
    /// next reservation or settlement to carry it.
    pub async fn settle(self, env: &Env, outcome: Outcome) {
        let charged = self.charge(&outcome);
        let mut notes = Vec::new();
        if outcome.cancelled {
            notes.push("(cancelled)");
        }
        if outcome.delivered_bytes.is_none() && outcome.usage.is_none() {
            notes.push("failed");
        } else if charged.estimated {
            notes.push("(estimated from content delivered)");
        }
        let description = std::iter::once(self.model.as_str()).chain(notes).collect::<Vec<_>>().join(" ");
        requeue(
            &self.account_id,
            vec![Settlement {
                request_id: self.request_id.clone(),
                cost: charged.amount,
                description,
                key_id: Some(self.key_id.clone()),
                reserved: self.reserved,
                usage: Some(self.record(&outcome, &charged)),
            }],
        );
        // The account's next reservation from this isolate usually comes sooner and
        // carries the settlement (one object round trip for both); if none comes, it goes alone.
        worker::Delay::from(std::time::Duration::from_millis(SETTLE_WAIT_MS)).await;
        deliver_pending(env, &self.account_id, &self.request_id).await;
        let tokens = charged.tokens.prompt + charged.tokens.completion;
        if let Some(org_id) = &self.org_id {
            let org = AccountRequest::OrgSettle {
                request_id: self.request_id.clone(),
                tokens: tokens as i64,
                cost: charged.amount,
            };
            if let Err(e) = client::call(env, &org_object(org_id), &org).await {
                log_settle_error(&self.request_id, &e);
            }
        }
    }
}

// Settlements that could not be sent yet, per account: the account's next
// reservation or settlement from this isolate carries them.
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

/// Sends this isolate's waiting settlements for `account`, if any, so that what
/// follows (a balance read, say) sees them. `request_id` names the caller in logs.
pub async fn deliver_pending(env: &Env, account: &str, request_id: &str) {
    let settlements = take_pending(account);
    if settlements.is_empty() {
        return;
    }
    let message = AccountRequest::Settle { account_id: account.to_string(), settlements };
    if let Err(e) = client::call(env, account, &message).await {
        if let AccountRequest::Settle { settlements, .. } = message {
            requeue(account, settlements);
        }
        // Should the isolate end first, the object still holds the reservation
        // until it expires: the request is then charged nothing, never twice.
        log_settle_error(request_id, &e);
    }
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
