//! Money endpoints: /api/balance, /api/balance/transactions, /api/balance/admin/add,
//! /api/v1/credits, /api/admin/reconcile. The account's Durable Object is the
//! authority; D1 holds the ledger's copy.

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Response;

use super::auth::Caller;
use super::bodies::AddBalance;
use super::error::ApiError;
use super::incoming::Incoming;
use super::respond::{self, query, read_json, Call};
use crate::billing::client::{Account, Credited, Summary};
use crate::billing::protocol::LedgerEntry;
use crate::domain::money::{micros_to_decimal, micros_to_usd, usd_to_micros};
use crate::domain::paging::Page;
use crate::domain::time::to_iso;
use crate::domain::users::validate_optional_text;
use crate::domain::InvalidRequest;
use crate::env;
use crate::store::{self, Named};

/// The user whose money is asked about: the key's own, or `?user_id=` for admins (one that exists).
async fn account_of(req: &Incoming, call: &Call, caller: &Caller) -> Result<String, ApiError> {
    let asked = query(req).get("user_id").cloned().filter(|u| !u.is_empty());
    let named = asked.is_some();
    let user_id = caller.target_user(asked)?;
    if named {
        respond::must_be_known(call, Named::User, &user_id).await?;
    }
    Ok(user_id)
}

/// The account's balance and totals (a read right after a chat from this isolate sees its charge).
pub(super) async fn summary(call: &Call, account: &str, key_id: Option<String>) -> Result<Summary, ApiError> {
    Account::of(&call.env, account).summary(key_id).await.map_err(ApiError::internal)
}

pub async fn get_balance(req: Incoming, call: &Call, caller: &Caller) -> Result<Response, ApiError> {
    let user_id = account_of(&req, call, caller).await?;
    let Summary { balance, reserved, .. } = summary(call, &user_id, None).await?;
    respond::json(
        200,
        &json!({ "user_id": user_id, "balance": micros_to_usd(balance), "reserved": micros_to_usd(reserved), "currency": "USD" }),
    )
}

pub async fn get_credits(req: Incoming, call: &Call, caller: &Caller) -> Result<Response, ApiError> {
    let user_id = account_of(&req, call, caller).await?;
    let Summary { total_credits, total_usage, .. } = summary(call, &user_id, None).await?;
    respond::data(
        200,
        &json!({ "total_credits": micros_to_usd(total_credits), "total_usage": micros_to_usd(total_usage) }),
    )
}

fn entry_view(e: &LedgerEntry) -> Value {
    json!({
        "id": e.id, "type": e.kind, "amount": micros_to_usd(e.amount), "balance_after": micros_to_usd(e.balance_after),
        "reference_id": e.reference_id, "description": e.description, "key_id": e.key_id, "created_at": to_iso(e.created_ms),
    })
}

pub async fn list_transactions(req: Incoming, call: &Call, caller: &Caller) -> Result<Response, ApiError> {
    let user_id = account_of(&req, call, caller).await?;
    let q = query(&req);
    let page = Page::parse(q.get("page").map(String::as_str), q.get("page_size").map(String::as_str), "page_size")?;
    let (rows, total) =
        Account::of(&call.env, &user_id).transactions(page.page, page.size).await.map_err(ApiError::internal)?;
    respond::json(
        200,
        &json!({ "data": rows.iter().map(entry_view).collect::<Vec<_>>(), "page": page.page, "page_size": page.size, "total": total }),
    )
}

/// Credits (or, with `adjustment`, debits) an account. `Idempotency-Key` makes a repeat answer the first result.
pub async fn add_balance(mut req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let idempotency_key = req.headers().get("idempotency-key").ok().flatten().filter(|k| !k.is_empty());
    if idempotency_key.as_ref().is_some_and(|k| k.len() > 200) {
        return Err(ApiError::bad_request("`Idempotency-Key` must be at most 200 characters"));
    }
    let body: AddBalance = read_json(&mut req).await?;
    let kind = body.kind.unwrap_or_else(|| "recharge".into());
    let amount = usd_to_micros("amount", body.amount)?;
    match kind.as_str() {
        "recharge" | "refund" if amount <= 0 => {
            return Err(InvalidRequest::param(format!("`amount` must be positive for a {kind}"), "amount").into())
        }
        "adjustment" if amount == 0 => return Err(InvalidRequest::param("`amount` must not be zero", "amount").into()),
        "recharge" | "refund" | "adjustment" => {}
        other => {
            return Err(InvalidRequest::param(
                format!("`type` is `{other}`; expected recharge, refund or adjustment"),
                "type",
            )
            .into())
        }
    }
    let description = validate_optional_text("description", body.description.as_deref(), 500)?;
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    if store::users::get_live(&db, &body.user_id).await?.is_none() {
        return Err(ApiError::not_found(format!("user {} not found", body.user_id)));
    }
    let idempotency_key = idempotency_key.map(|k| format!("credit:{k}"));
    let credited = Account::of(&call.env, &body.user_id)
        .credit(amount, &kind, description, idempotency_key)
        .await
        .map_err(ApiError::internal)?;
    let (transaction_id, balance) = match credited {
        Credited::Done { transaction_id, balance } => (transaction_id, balance),
        Credited::Overdrawn { available } => {
            return Err(InvalidRequest::param(
                format!(
                    "the adjustment would take the balance below zero or below the money held for requests in flight; at most {} can be taken now",
                    micros_to_decimal(available)
                ),
                "amount",
            )
            .into())
        }
        Credited::KeyReused => {
            return Err(ApiError::Conflict(
                "this Idempotency-Key was used for a credit of another amount or type: nothing was done (use a new key for a new credit)"
                    .into(),
            ))
        }
        Credited::OverCeiling { room } => {
            return Err(InvalidRequest::param(
                format!(
                    "the credit would take the balance past {} USD, the most the ledger keeps exactly; at most {} can be added now",
                    micros_to_decimal(crate::domain::money::MAX_SAFE),
                    micros_to_decimal(room)
                ),
                "amount",
            )
            .into())
        }
    };
    respond::data(200, &json!({ "transaction_id": transaction_id, "balance": micros_to_usd(balance) }))
}

/// Per account: the D1 ledger's sum against the object's balance (`?user_id=`: that account alone).
pub async fn reconcile(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let report = match query(&req).get("user_id").filter(|u| !u.is_empty()) {
        Some(user_id) => reconcile_one(&call.env, user_id).await?,
        None => run_reconciliation(&call.env).await?,
    };
    respond::data(200, &report)
}

/// One account's check, in the shape of the full report.
async fn reconcile_one(env: &worker::Env, user_id: &str) -> Result<Value, ApiError> {
    let db = env::db(env).map_err(ApiError::internal)?;
    // Deleted users keep their money, so they are looked up too; an unknown id makes no object.
    if !store::known(&db, Named::User, user_id).await? {
        return Err(ApiError::not_found(format!("user {user_id} not found")));
    }
    let check = check_account(env, user_id).await?;
    Ok(json!({
        "accounts_checked": 1, "drift": check.drift.into_iter().collect::<Vec<_>>(), "failed": [],
        "uncollected": micros_to_usd(check.uncollected), "open_reservations": check.open,
    }))
}

/// Accounts reconciled at once.
const RECONCILE_FAN_OUT: usize = 8;

/// POST /api/admin/reconcile/runs: starts a reconciliation run through the queue, an account a message.
pub async fn start_reconcile_run(call: &Call) -> Result<Response, ApiError> {
    let run_id = crate::fan_out::start_run(&call.env, call.now_ms()).await?;
    respond::data(202, &json!({ "run_id": run_id }))
}

/// GET /api/admin/reconcile/runs/{id}: a run's progress and findings (`latest`: the newest run).
pub async fn get_reconcile_run(call: &Call, id: &str) -> Result<Response, ApiError> {
    let run_id = (id != "latest").then_some(id);
    let report = crate::fan_out::report(&call.env, run_id).await?;
    respond::data(200, &report.ok_or_else(|| ApiError::not_found(format!("reconciliation run {id} not found")))?)
}

/// Shared with the cron job. For every user (a user whose rows never reached D1
/// is exactly the drift to find), in parallel: its object copies pending rows,
/// then D1's ledger sum must equal the sum of the rows the object has copied
/// (read while no copy runs), the object's own ledger sum its balance, and the
/// balance must not be negative. Also reported: what was
/// not collected (cost above a reservation), reservations closed without their
/// settlement, and per model what was charged against what the upstream reported.
pub async fn run_reconciliation(env: &worker::Env) -> Result<Value, ApiError> {
    use futures_util::stream::{self, StreamExt};
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let db = env::db(env).map_err(ApiError::internal)?;
    // A tenant past what one invocation can walk is reconciled through the queue, an account a message.
    if crate::fan_out::past_inline(&db).await? {
        let run_id = crate::fan_out::start_run(env, js_sys::Date::now() as i64).await?;
        return Ok(json!({ "fanned_out": true, "run_id": run_id }));
    }
    let users: Vec<Id> = db
        .prepare("SELECT id FROM users ORDER BY created_at")
        .all()
        .await
        .map_err(ApiError::internal)?
        .results()
        .map_err(ApiError::internal)?;
    let checks = stream::iter(users.iter().map(|u| check_account(env, &u.id)))
        .buffered(RECONCILE_FAN_OUT)
        .collect::<Vec<_>>()
        .await;
    let (mut drift, mut failed, mut uncollected, mut open) = (Vec::new(), Vec::new(), 0, 0);
    for (user_id, check) in users.iter().map(|u| &u.id).zip(checks) {
        match check {
            Ok(c) => {
                uncollected = c.uncollected.saturating_add(uncollected);
                open += c.open;
                drift.extend(c.drift);
            }
            // One account that cannot answer does not stop the others.
            Err(e) => failed.push(json!({ "user_id": user_id, "error": e.to_string() })),
        }
    }
    // Read from D1's copies; should D1 refuse, the per-account checks above still stand.
    let abandoned = store::usage::closed_without_settlement(&db).await;
    let margin = store::usage::margin_by_model(&db).await;
    if let Some(e) = abandoned.as_ref().err().or(margin.as_ref().err()) {
        failed.push(json!({ "user_id": null, "error": format!("D1's copies could not be read: {e}") }));
    }
    Ok(json!({
        "accounts_checked": users.len(), "drift": drift, "failed": failed,
        "uncollected": micros_to_usd(uncollected), "open_reservations": open,
        "closed_without_settlement": abandoned.ok(), "margin_by_model": margin.ok(),
    }))
}

struct AccountCheck {
    drift: Option<Value>,
    uncollected: i64,
    open: i64,
}

/// One account checked (for a fanned-out run): its drift, if it disagrees.
pub async fn reconcile_account(env: &worker::Env, user_id: &str) -> Result<Option<Value>, ApiError> {
    Ok(check_account(env, user_id).await?.drift)
}

async fn check_account(env: &worker::Env, user_id: &str) -> Result<AccountCheck, ApiError> {
    // The object copies what waits, then compares D1's copy with the rows it has copied while no copy
    // runs: exact however busy the account (rows charged meanwhile are not copied yet, and are not drift).
    let r = Account::of(env, user_id).reconcile().await.map_err(ApiError::internal)?;
    let agrees = r.d1_sum == r.copied_sum && r.ledger_sum == r.balance && r.balance >= 0;
    let drift = (!agrees).then(|| {
        json!({
            "user_id": user_id, "ledger_sum": micros_to_usd(r.d1_sum), "balance": micros_to_usd(r.balance),
            "object_ledger_sum": micros_to_usd(r.ledger_sum),
            "difference": micros_to_usd(r.copied_sum - r.d1_sum), "negative": r.balance < 0,
        })
    });
    Ok(AccountCheck { drift, uncollected: r.uncollected, open: r.open })
}
