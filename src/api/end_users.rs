//! A key's end users (`domain::end_users`): their spend and budgets, from the
//! account's object; one end user's own budget, set or cleared.

use serde_json::{json, Value};
use worker::Response;

use super::auth::Caller;
use super::bodies::OwnBudgetBody;
use super::error::ApiError;
use super::incoming::Incoming;
use super::keys::{managed_key, visible_key};
use super::respond::{self, read_json, Call};
use crate::billing::client::Account;
use crate::domain::chat::end_user_id;
use crate::domain::end_users::{BudgetInput, OwnBudget};
use crate::domain::money::micros_to_usd;
use crate::domain::paging::Page;
use crate::domain::time::to_iso;
use crate::domain::InvalidRequest;
use crate::env;

/// GET /api/keys/{id}/end-users: a page, most spent in all first.
pub async fn list(req: Incoming, call: &Call, caller: &Caller, key_id: &str) -> Result<Response, ApiError> {
    let q = respond::query(&req);
    let page = Page::parse(q.get("page").map(String::as_str), q.get("page_size").map(String::as_str), "page_size")?;
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    let key = visible_key(&db, caller, key_id).await?;
    let (users, total) = Account::of(&call.env, &key.user_id)
        .end_users(&key.id, key.end_user_budget(), page)
        .await
        .map_err(ApiError::internal)?;
    let data: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({
                "end_user": u.end_user,
                "first_seen": to_iso(u.first_ms),
                "limit": u.budget.map(|b| micros_to_usd(b.limit_micros)),
                "limit_reset": u.budget.and_then(|b| b.reset).map(|r| r.as_str()),
                "own_budget": u.own,
                "usage": micros_to_usd(u.spent),
                "usage_total": micros_to_usd(u.total),
                "limit_remaining": u.budget.map(|b| micros_to_usd((b.limit_micros - u.spent - u.held).max(0))),
                "limit_resets_at": u.resets_ms.map(to_iso),
            })
        })
        .collect();
    respond::json(
        200,
        &json!({ "data": data, "key_id": key.id, "default_budget": key.end_user_budget().map(|b| b.view()),
            "page": page.page, "page_size": page.size, "total": total }),
    )
}

/// PUT /api/keys/{id}/end-users/{end_user}: the end user's own budget, in place of the key's default.
pub async fn put(
    mut req: Incoming,
    call: &Call,
    caller: &Caller,
    key_id: &str,
    raw: &str,
) -> Result<Response, ApiError> {
    let body: OwnBudgetBody = read_json(&mut req).await?;
    let own = match (body.limit, body.limit_reset) {
        (Some(Some(limit)), limit_reset) => {
            OwnBudget::Own { budget: BudgetInput { limit, limit_reset }.validate("budget")? }
        }
        (Some(None), None) => OwnBudget::Unlimited,
        // A body that leaves the limit out (or resets none) would otherwise lift the end user's budget unasked.
        (None, _) => {
            return Err(
                InvalidRequest::param("`limit` is required: an amount in USD, or null for no budget", "limit").into()
            )
        }
        (Some(None), Some(_)) => {
            return Err(InvalidRequest::param(
                "`limit_reset` needs a `limit`: with `limit: null` there is no budget",
                "limit_reset",
            )
            .into())
        }
    };
    set(call, caller, key_id, raw, own).await
}

/// DELETE /api/keys/{id}/end-users/{end_user}: back to the key's default budget.
pub async fn clear(call: &Call, caller: &Caller, key_id: &str, raw: &str) -> Result<Response, ApiError> {
    set(call, caller, key_id, raw, OwnBudget::KeyDefault).await
}

async fn set(call: &Call, caller: &Caller, key_id: &str, raw: &str, own: OwnBudget) -> Result<Response, ApiError> {
    let end_user = js_sys::decode_uri_component(raw)
        .ok()
        .and_then(|s| s.as_string())
        .and_then(|s| end_user_id(Some(&s)))
        // `.` and `..` are dot segments: a browser's URL parser resolves them away (a console's DELETE of end
        // user `..` would reach the key itself), so no budget is set or cleared for them by path.
        .filter(|id| id != "." && id != "..")
        .ok_or_else(|| {
            ApiError::bad_request(
                "the end user in the path must be 1 to 256 characters, no control characters, and not `.` or `..`",
            )
        })?;
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    let key = managed_key(&db, caller, key_id, call.config.rate_default).await?;
    Account::of(&call.env, &key.user_id)
        .put_end_user_budget(&key.id, &end_user, own)
        .await
        .map_err(ApiError::internal)?;
    let budget = match own {
        OwnBudget::KeyDefault => key.end_user_budget(),
        OwnBudget::Unlimited => None,
        OwnBudget::Own { budget } => Some(budget),
    };
    respond::data(
        200,
        &json!({
            "end_user": end_user, "own_budget": !matches!(own, OwnBudget::KeyDefault),
            "limit": budget.map(|b| micros_to_usd(b.limit_micros)),
            "limit_reset": budget.and_then(|b| b.reset).map(|r| r.as_str()),
        }),
    )
}
