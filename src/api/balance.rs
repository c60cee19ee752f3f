//! Money endpoints: /api/balance, /api/balance/transactions, /api/balance/admin/add,
//! /api/v1/credits, /api/admin/reconcile. The account's Durable Object is the
//! authority; D1 holds the ledger's copy.

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Response;

use super::auth::authenticate;
use super::error::ApiError;
use super::incoming::Incoming;
use super::respond::{self, query, read_json, Call};
use crate::billing::client;
use crate::billing::protocol::{AccountRequest, AccountResponse, LedgerEntry};
use crate::domain::keys::Permission;
use crate::domain::money::{micros_to_usd, usd_to_micros};
use crate::domain::paging::Page;
use crate::domain::time::to_iso;
use crate::domain::users::validate_optional_text;
use crate::domain::InvalidRequest;
use crate::env;
use crate::store;

/// The user whose money is asked about: the key's own, or `?user_id=` for admins.
async fn account_of(req: &Incoming, call: &Call) -> Result<String, ApiError> {
    let caller = authenticate(req, call).await?.caller;
    caller.require(Permission::Read)?;
    caller.target_user(query(req).get("user_id").cloned().filter(|u| !u.is_empty()))
}

/// Asks the account's object, after delivering this isolate's waiting settlements
/// for it: a read right after a chat from here sees that chat's charge.
pub(super) async fn ask(call: &Call, account: &str, message: &AccountRequest) -> Result<AccountResponse, ApiError> {
    super::meter::deliver_pending(&call.env, account, &call.request_id).await;
    client::call(&call.env, account, message).await.map_err(ApiError::internal)
}

async fn summary(call: &Call, account: &str, key_id: Option<String>) -> Result<AccountResponse, ApiError> {
    ask(call, account, &AccountRequest::Summary { key_id }).await
}

pub async fn get_balance(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let user_id = account_of(&req, call).await?;
    let AccountResponse::Summary { balance, reserved, .. } = summary(call, &user_id, None).await? else {
        return Err(ApiError::internal("unexpected answer to Summary"));
    };
    respond::json(
        200,
        &json!({ "user_id": user_id, "balance": micros_to_usd(balance), "reserved": micros_to_usd(reserved), "currency": "USD" }),
    )
}

pub async fn get_credits(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let user_id = account_of(&req, call).await?;
    let AccountResponse::Summary { total_credits, total_usage, .. } = summary(call, &user_id, None).await? else {
        return Err(ApiError::internal("unexpected answer to Summary"));
    };
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

pub async fn list_transactions(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let user_id = account_of(&req, call).await?;
    let q = query(&req);
    let page = Page::parse(q.get("page").map(String::as_str), q.get("page_size").map(String::as_str), "page_size")?;
    let AccountResponse::Transactions { rows, total } =
        ask(call, &user_id, &AccountRequest::Transactions { page: page.page, page_size: page.size }).await?
    else {
        return Err(ApiError::internal("unexpected answer to Transactions"));
    };
    respond::json(
        200,
        &json!({ "data": rows.iter().map(entry_view).collect::<Vec<_>>(), "page": page.page, "page_size": page.size, "total": total }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBalance {
    user_id: String,
    amount: f64,
    description: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Credits (or, with `adjustment`, debits) an account. `Idempotency-Key` makes a repeat answer the first result.
pub async fn add_balance(mut req: Incoming, call: &Call) -> Result<Response, ApiError> {
    authenticate(&req, call).await?.caller.require(Permission::Admin)?;
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
    let message = AccountRequest::Credit {
        account_id: body.user_id.clone(),
        amount,
        kind,
        description,
        idempotency_key: idempotency_key.map(|k| format!("credit:{k}")),
    };
    let AccountResponse::Credited { transaction_id, balance } = ask(call, &body.user_id, &message).await? else {
        return Err(ApiError::internal("unexpected answer to Credit"));
    };
    respond::data(200, &json!({ "transaction_id": transaction_id, "balance": micros_to_usd(balance) }))
}

/// Per account: the D1 ledger's sum against the object's balance.
pub async fn reconcile(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    authenticate(&req, call).await?.caller.require(Permission::Admin)?;
    let report = run_reconciliation(&call.env).await?;
    respond::data(200, &report)
}

/// Shared with the cron job. Walks every user (a user whose rows never reached
/// D1 is exactly the drift to find), has its object copy pending rows, then
/// compares D1's sum with the object's balance.
pub async fn run_reconciliation(env: &worker::Env) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct Sum {
        total: Option<f64>,
    }
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let db = env::db(env).map_err(ApiError::internal)?;
    let users: Vec<Id> = db
        .prepare("SELECT id FROM users ORDER BY created_at")
        .all()
        .await
        .map_err(ApiError::internal)?
        .results()
        .map_err(ApiError::internal)?;
    let mut drift = Vec::new();
    for user in &users {
        client::call(env, &user.id, &AccountRequest::Flush).await.map_err(ApiError::internal)?;
        let answer =
            client::call(env, &user.id, &AccountRequest::Summary { key_id: None }).await.map_err(ApiError::internal)?;
        let AccountResponse::Summary { balance, .. } = answer else {
            return Err(ApiError::internal("unexpected answer to Summary"));
        };
        let sum: Option<Sum> = db
            .prepare("SELECT SUM(amount) AS total FROM balance_transactions WHERE user_id = ?1")
            .bind(&[user.id.clone().into()])
            .map_err(ApiError::internal)?
            .first(None)
            .await
            .map_err(ApiError::internal)?;
        let ledger_sum = sum.and_then(|s| s.total).map_or(0, |t| t as i64);
        if ledger_sum != balance {
            drift.push(json!({
                "user_id": user.id, "ledger_sum": micros_to_usd(ledger_sum), "balance": micros_to_usd(balance),
                "difference": micros_to_usd(balance - ledger_sum),
            }));
        }
    }
    Ok(json!({ "accounts_checked": users.len(), "drift": drift }))
}
