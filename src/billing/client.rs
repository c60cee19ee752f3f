//! Typed calls from the Worker to the account and organization objects.
//! Settlements are sent at once and retried with backoff until the object
//! confirms or the reservation's lease would be over (settling is idempotent
//! by request id; past the lease the object closes the request by its rule).
//! Callers get typed answers; only this file knows the message enums' other arms.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::worker_sys::{self, web_sys};
use worker::{Env, ObjectNamespace};

use super::message::{IN_BODY, MAX_HEADER_MESSAGE};
use super::protocol::{
    AccountRequest, AccountResponse, EndUserRow, KeyUsage, LedgerEntry, OnLease, OrgRequest, OrgResponse, Settlement,
    MESSAGE_HEADER,
};
use crate::domain::account::{About, Ask};
use crate::domain::end_users::{Budget, OwnBudget};
use crate::domain::keys::{KeyRefusal, KeyState};
use crate::domain::lease::Granted;
use crate::domain::ledger::Reservation;
use crate::domain::orgs::{MonthUse, OrgLimitHit, OrgState};
use crate::domain::paging::Page;
use crate::domain::rates::{RateRefusal, RateStatus};
use crate::{env, js};

/// How long one try of a settlement waits for the object's answer before it is given up and sent again
/// (a message lost on its way would otherwise hold its settlements, and those waiting in line behind it,
/// until they could only be closed by rule). A settlement takes milliseconds; sent twice, it charges once.
pub const SETTLE_TRY_MS: u32 = 5_000;
/// The longest wait between two tries of a settlement.
const MAX_BACKOFF_MS: u64 = 8_000;

/// The wait before the next try of a message to an object, after `failures` failed ones: 0.25 s doubling
/// to 8 s.
pub fn backoff_ms(failures: u32) -> u64 {
    (250u64 << failures.min(5)).min(MAX_BACKOFF_MS)
}

/// Sends one message to the object `name` of `ns` and reads the answer, given up after `try_ms` if set.
/// The runtime's own `Request` and `Response` are used: `worker`'s would copy headers and `cf` (see
/// decisions.md).
async fn send<Req: Serialize, Resp: DeserializeOwned>(
    ns: worker::Result<ObjectNamespace>,
    name: &str,
    message: &Req,
    try_ms: Option<u32>,
) -> Result<Resp, String> {
    let stub: worker_sys::DurableObject =
        ns.and_then(|ns| ns.id_from_name(name)?.get_stub()).map_err(|e| e.to_string())?.into_rpc();
    let json = serde_json::to_string(message).map_err(|e| e.to_string())?;
    let headers = web_sys::Headers::new().map_err(|e| js::message(&e))?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    // Header values must be short and Latin-1: anything else (a description with "é") goes in the body.
    if json.len() > MAX_HEADER_MESSAGE || !json.is_ascii() {
        headers.set(MESSAGE_HEADER, IN_BODY).map_err(|e| js::message(&e))?;
        init.set_body(&wasm_bindgen::JsValue::from_str(&json));
    } else {
        headers.set(MESSAGE_HEADER, &json).map_err(|e| js::message(&e))?;
    }
    init.set_headers(&headers);
    let req = web_sys::Request::new_with_str_and_init("https://object/", &init).map_err(|e| js::message(&e))?;
    let answer = JsFuture::from(stub.fetch_with_request(&req).map_err(|e| js::message(&e))?);
    // A try given up is left to land or not (settling is idempotent). Raced here, not aborted: an abort
    // signal on the object's fetch cost about 0.2 ms of CPU a request (decisions.md).
    let answer = match try_ms {
        Some(ms) => crate::providers::transport::within(u64::from(ms), answer)
            .await
            .ok_or_else(|| format!("timed out: no answer in {ms} ms"))?,
        None => answer.await,
    };
    let resp: web_sys::Response = answer.map_err(|e| js::message(&e))?.unchecked_into();
    let mut answer = resp.headers().get(MESSAGE_HEADER).ok().flatten().ok_or("the object sent no answer")?;
    if answer == IN_BODY {
        let text = JsFuture::from(resp.text().map_err(|e| js::message(&e))?).await.map_err(|e| js::message(&e))?;
        answer = text.as_string().unwrap_or_default();
    }
    serde_json::from_slice(answer.as_bytes()).map_err(|e| e.to_string())
}

fn unexpected(op: &str, answer: impl std::fmt::Debug) -> String {
    format!("unexpected answer to {op}: {answer:?}")
}

/// What a reservation got.
pub enum Reserved {
    Refused(KeyRefusal),
    /// Too many requests of this scope (`key` or `account`) are in flight.
    TooMany(String),
    /// A per-minute limit of the key.
    RateLimited(RateRefusal),
    /// The object missed a change to the key: it wants the key's state (`put_key`) first.
    KeyOutOfDate,
    Decided {
        reservation: Reservation,
        resets_at_ms: Option<i64>,
        lease: Option<Granted>,
        rate: Option<RateStatus>,
    },
}

pub enum Credited {
    Done {
        transaction_id: String,
        balance: i64,
    },
    /// An adjustment down would take money held or not there.
    Overdrawn {
        available: i64,
    },
    /// The balance would pass `money::MAX_SAFE`: at most `room` can be added.
    OverCeiling {
        room: i64,
    },
    /// The idempotency key was used for another credit (another amount or type).
    KeyReused,
}

/// An account's balance and totals (micro-USD).
pub struct Summary {
    pub balance: i64,
    pub reserved: i64,
    pub total_credits: i64,
    pub total_usage: i64,
    pub key: Option<KeyUsage>,
}

/// An account's object against D1's copy of its ledger (`AccountResponse::Reconciled`).
pub struct Reconciled {
    pub balance: i64,
    pub ledger_sum: i64,
    pub uncollected: i64,
    pub copied_sum: i64,
    pub d1_sum: i64,
    pub open: i64,
}

/// One paying account's object.
pub struct Account<'a> {
    env: &'a Env,
    id: &'a str,
}

impl<'a> Account<'a> {
    pub fn of(env: &'a Env, id: &'a str) -> Self {
        Self { env, id }
    }

    async fn call(&self, message: &AccountRequest) -> Result<AccountResponse, String> {
        self.call_within(message, None).await
    }

    /// `call`, the answer given up after `try_ms` if set.
    async fn call_within(&self, message: &AccountRequest, try_ms: Option<u32>) -> Result<AccountResponse, String> {
        match send(env::accounts(self.env), self.id, message, try_ms).await? {
            AccountResponse::Error { message } => Err(message),
            answer => Ok(answer),
        }
    }

    /// Records a key's new state. This isolate stops starting the key's requests on its leases at once;
    /// other isolates within a lease's use (`domain::lease::MAX_USE_MS`).
    pub async fn put_key(&self, state: KeyState) -> Result<(), String> {
        // This isolate's leases of the key end at once (`FAULT_STALE_KEY_ISOLATE`: they run on, as another
        // isolate's do, for the rest of their use).
        if !env::Config::get(self.env).faults.stale_key_isolate {
            super::leases::end_use(&state.key_id, js_sys::Date::now() as i64);
        }
        match self.call(&AccountRequest::PutKey { state }).await? {
            AccountResponse::Ok => Ok(()),
            other => Err(unexpected("PutKey", other)),
        }
    }

    pub async fn reserve(&self, ask: Ask) -> Result<Reserved, String> {
        match self.call(&AccountRequest::Reserve(ask)).await? {
            AccountResponse::Refused { reason } => Ok(Reserved::Refused(reason)),
            AccountResponse::TooManyInFlight { scope } => Ok(Reserved::TooMany(scope)),
            AccountResponse::RateLimited { refusal } => Ok(Reserved::RateLimited(refusal)),
            AccountResponse::KeyOutOfDate => Ok(Reserved::KeyOutOfDate),
            AccountResponse::Reserved { reservation, resets_at_ms, lease, rate } => {
                Ok(Reserved::Decided { reservation, resets_at_ms, lease, rate })
            }
            other => Err(unexpected("Reserve", other)),
        }
    }

    /// A heartbeat of a request in flight (started on a lease: `on_lease`); answers whether its
    /// reservation is still held. A beat whose answer does not come within `try_ms` is given up, so the
    /// next beat goes on time: a beat awaited for ever stopped the beats after it, and the object closed
    /// the reservation under a stream that went on.
    pub async fn touch(
        &self,
        request_id: &str,
        evidence: i64,
        lease_ms: i64,
        on_lease: Option<OnLease>,
        about: Option<About>,
        try_ms: u32,
    ) -> Result<Beat, String> {
        let message = AccountRequest::Touch { request_id: request_id.into(), evidence, lease_ms, on_lease, about };
        match self.call_within(&message, Some(try_ms)).await? {
            AccountResponse::Touched { held: false, .. } => Ok(Beat::NotHeld),
            AccountResponse::Touched { held: true, stopped } => Ok(if stopped { Beat::Stopped } else { Beat::Held }),
            other => Err(unexpected("Touch", other)),
        }
    }

    pub async fn credit(
        &self,
        amount: i64,
        kind: &str,
        description: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<Credited, String> {
        let message = AccountRequest::Credit {
            account_id: self.id.into(),
            amount,
            kind: kind.into(),
            description,
            idempotency_key,
        };
        match self.call(&message).await? {
            AccountResponse::Credited { transaction_id, balance } => Ok(Credited::Done { transaction_id, balance }),
            AccountResponse::Overdrawn { available } => Ok(Credited::Overdrawn { available }),
            AccountResponse::OverCeiling { room } => Ok(Credited::OverCeiling { room }),
            AccountResponse::CreditKeyReused => Ok(Credited::KeyReused),
            other => Err(unexpected("Credit", other)),
        }
    }

    /// Gives an end user of a key a budget of its own, none, or back the key's default. The key's
    /// leases end at once here and within a lease's use elsewhere, as for `put_key`.
    pub async fn put_end_user_budget(&self, key_id: &str, end_user: &str, own: OwnBudget) -> Result<(), String> {
        super::leases::end_use(key_id, js_sys::Date::now() as i64);
        let message = AccountRequest::PutEndUserBudget { key_id: key_id.into(), end_user: end_user.into(), own };
        match self.call(&message).await? {
            AccountResponse::Ok => Ok(()),
            other => Err(unexpected("PutEndUserBudget", other)),
        }
    }

    /// A page of a key's end users with their spend, most spent in all first, and how many it has.
    pub async fn end_users(
        &self,
        key_id: &str,
        default: Option<Budget>,
        page: Page,
    ) -> Result<(Vec<EndUserRow>, i64), String> {
        let message =
            AccountRequest::EndUsers { key_id: key_id.into(), default, page: page.page, page_size: page.size };
        match self.call(&message).await? {
            AccountResponse::EndUsers { users, total: Some(total) } => Ok((users, total)),
            // An object of before pages (during a deploy) sent them all, most spent in the window first.
            AccountResponse::EndUsers { users, total: None } => {
                let total = users.len() as i64;
                let page = users.into_iter().skip(page.offset() as usize).take(page.size as usize).collect();
                Ok((page, total))
            }
            other => Err(unexpected("EndUsers", other)),
        }
    }

    /// Balance and totals.
    pub async fn summary(&self, key_id: Option<String>) -> Result<Summary, String> {
        match self.call(&AccountRequest::Summary { key_id, audit: false }).await? {
            AccountResponse::Summary { balance, reserved, total_credits, total_usage, key, .. } => {
                Ok(Summary { balance, reserved, total_credits, total_usage, key })
            }
            other => Err(unexpected("Summary", other)),
        }
    }

    /// Copies what waits to D1 and compares the object's ledger with D1's copy, at one point of the copy.
    pub async fn reconcile(&self) -> Result<Reconciled, String> {
        match self.call(&AccountRequest::Reconcile { account_id: self.id.to_string() }).await? {
            AccountResponse::Reconciled { balance, ledger_sum, uncollected, copied_sum, d1_sum, open } => {
                Ok(Reconciled { balance, ledger_sum, uncollected, copied_sum, d1_sum, open })
            }
            other => Err(unexpected("Reconcile", other)),
        }
    }

    pub async fn transactions(&self, page: u32, page_size: u32) -> Result<(Vec<LedgerEntry>, i64), String> {
        match self.call(&AccountRequest::Transactions { page, page_size }).await? {
            AccountResponse::Transactions { rows, total } => Ok((rows, total)),
            other => Err(unexpected("Transactions", other)),
        }
    }

    pub async fn ping(&self) -> Result<i64, String> {
        match self.call(&AccountRequest::Ping).await? {
            AccountResponse::Pong { pings } => Ok(pings),
            other => Err(unexpected("Ping", other)),
        }
    }
}

/// One organization's object.
pub struct Org<'a> {
    env: &'a Env,
    id: &'a str,
}

/// Why an organization's object refused a request.
pub enum OrgRefusal {
    /// A monthly limit, and when its month ends.
    Limit(OrgLimitHit, i64),
    /// The organization is no longer active.
    Suspended,
}

impl<'a> Org<'a> {
    pub fn of(env: &'a Env, id: &'a str) -> Self {
        Self { env, id }
    }

    async fn call(&self, message: &OrgRequest, try_ms: Option<u32>) -> Result<OrgResponse, String> {
        match send(env::orgs(self.env), self.id, message, try_ms).await? {
            OrgResponse::Error { message } => Err(message),
            answer => Ok(answer),
        }
    }

    /// Holds the request under the monthly limits of `state` (the organization as this isolate read it), or
    /// of the newer state the object knows. `Ok(Err(_))`: refused.
    pub async fn reserve(
        &self,
        request_id: &str,
        state: OrgState,
        tokens: i64,
        cost: i64,
        lease_ms: i64,
    ) -> Result<Result<(), OrgRefusal>, String> {
        let org_id = Some(self.id.to_string());
        let (limits, version) = (state.limits(), state.version);
        let message =
            OrgRequest::Reserve { request_id: request_id.into(), limits, tokens, cost, lease_ms, org_id, version };
        match self.call(&message, None).await? {
            OrgResponse::Reserved => Ok(Ok(())),
            OrgResponse::Refused { hit, resets_at_ms } => Ok(Err(OrgRefusal::Limit(hit, resets_at_ms))),
            OrgResponse::Suspended => Ok(Err(OrgRefusal::Suspended)),
            other => Err(unexpected("OrgReserve", other)),
        }
    }

    /// Tells the object the organization changed.
    pub async fn put(&self, state: OrgState) -> Result<(), String> {
        match self.call(&OrgRequest::Put { org_id: self.id.to_string(), state }, Some(SETTLE_TRY_MS)).await? {
            OrgResponse::Ok => Ok(()),
            other => Err(unexpected("OrgPut", other)),
        }
    }

    /// Counts the request in the month (`failed`: only releases its hold), retried with
    /// backoff until the object confirms or `retry_for_ms` has passed.
    pub async fn settle(&self, request_id: &str, tokens: i64, cost: i64, failed: bool, retry_for_ms: i64) {
        let message = &OrgRequest::Settle { request_id: request_id.into(), tokens, cost, failed };
        retry(request_id, retry_for_ms, |try_ms| async move {
            match self.call(message, Some(try_ms)).await? {
                OrgResponse::Ok => Ok(()),
                other => Err(unexpected("OrgSettle", other)),
            }
        })
        .await;
    }

    pub async fn usage(&self) -> Result<MonthUse, String> {
        match self.call(&OrgRequest::Usage, None).await? {
            OrgResponse::Usage { used } => Ok(used),
            other => Err(unexpected("OrgUsage", other)),
        }
    }
}

/// What the object answered to settlements: what each lease charged still holds, and the settlements
/// that failed (none of their writes stayed: they are to be sent again).
pub struct Settled {
    pub leases: Vec<(String, i64)>,
    pub failed: Vec<String>,
    /// Those whose requests had been closed without settlement before (charged nothing more).
    pub closed: Vec<String>,
}

/// Settles requests (and gives back drained leases), retried with backoff until the object confirms
/// or `retry_for_ms` has passed (the reservation's lease: after it, the object closes the request by its
/// rule). `None`: not confirmed.
pub async fn settle(
    env: &Env,
    account: &str,
    settlements: Vec<Settlement>,
    return_leases: Vec<String>,
    retry_for_ms: i64,
) -> Option<Settled> {
    let what = settlements.first().map_or("lease return", |s| s.request_id.as_str()).to_string();
    let message = &AccountRequest::Settle { account_id: account.to_string(), settlements, return_leases };
    let settled = &std::cell::RefCell::new(None);
    retry(&what, retry_for_ms, |try_ms| async move {
        match send(env::accounts(env), account, message, Some(try_ms)).await? {
            AccountResponse::Settled { leases, failed, closed, .. } => {
                settled.replace(Some(Settled { leases, failed, closed }));
                Ok(())
            }
            AccountResponse::Error { message } => Err(message),
            other => Err(unexpected("Settle", other)),
        }
    })
    .await;
    settled.take()
}

/// Runs `attempt` until it succeeds, waiting 0.25 s doubling to 8 s between tries, for at most `for_ms`:
/// each try is given at most `SETTLE_TRY_MS`, and never past the end.
async fn retry<F, Fut>(request_id: &str, for_ms: i64, attempt: F)
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = js_sys::Date::now() + for_ms as f64;
    for n in 0u32.. {
        let left = (deadline - js_sys::Date::now()).max(1.0);
        let Err(detail) = attempt((SETTLE_TRY_MS as f64).min(left) as u32).await else { return };
        let wait = backoff_ms(n);
        let give_up = js_sys::Date::now() + wait as f64 > deadline;
        worker::console_error!(
            "{}",
            serde_json::json!({"level": "error", "job": "settle", "request_id": request_id, "attempt": n + 1,
                "gave_up": give_up, "detail": detail})
        );
        if give_up {
            return;
        }
        worker::Delay::from(Duration::from_millis(wait)).await;
    }
}
/// What the account object said to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Held,
    /// Held, but its key may no longer run requests: the request stops (and is settled as usual).
    Stopped,
    /// No longer held (closed by rule): the request may not run on.
    NotHeld,
}
