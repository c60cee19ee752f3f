//! Usage: `/api/stats` (own), `/api/stats/keys/{id}`, `/api/stats/orgs/{id}`,
//! `/api/stats/global` (admin) and `/api/v1/generation?id=`. Records reach D1
//! through the account objects' outboxes, within about a second of the answer.

use serde_json::{json, Value};
use worker::{D1Database, Response};

use super::auth::Caller;
use super::error::ApiError;
use super::incoming::Incoming;
use super::keys::visible_key;
use super::respond::{self, query, Call};
use crate::domain::money::micros_to_usd;
use crate::domain::paging::Page;
use crate::domain::time::to_iso;
use crate::domain::usage::{day_range, GroupBy};
use crate::env;
use crate::store;
use crate::store::usage::Scope;
use crate::store::Named;

fn db(call: &Call) -> Result<D1Database, ApiError> {
    env::db(&call.env).map_err(ApiError::internal)
}

/// The caller's own usage (an admin may name `user_id=`). A key without `admin` sees its user's keys
/// in its own organization only, as it sees their keys (docs/security.md).
pub async fn get_own_stats(req: Incoming, call: &Call, caller: &Caller) -> Result<Response, ApiError> {
    let asked = query(&req).get("user_id").cloned().filter(|u| !u.is_empty());
    let named = asked.is_some();
    let user_id = caller.target_user(asked)?;
    if named {
        respond::must_be_known(call, Named::User, &user_id).await?;
    }
    let scope = match caller {
        Caller::Key(k) if !caller.is_admin() => Scope::UserInOrg(user_id, k.org_id.clone()),
        _ => Scope::User(user_id),
    };
    stats(&req, call, scope, false).await
}

/// One key's usage: admins any key, a key holder its own user's keys.
pub async fn get_key_stats(req: Incoming, call: &Call, caller: &Caller, id: &str) -> Result<Response, ApiError> {
    if caller.is_admin() {
        respond::must_be_known(call, Named::Key, id).await?;
    } else {
        visible_key(&db(call)?, caller, id).await?;
    }
    stats(&req, call, Scope::Key(id.to_string()), false).await
}

pub async fn get_org_stats(req: Incoming, call: &Call, id: &str) -> Result<Response, ApiError> {
    respond::must_be_known(call, Named::Org, id).await?;
    stats(&req, call, Scope::Org(id.to_string()), false).await
}

pub async fn get_global_stats(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    stats(&req, call, Scope::All, true).await
}

/// The most buckets a stats answer holds (and its page's size unless asked): models, providers and most
/// ranges of days stay within it; users, keys and end users may not (an application may name millions of
/// end users).
const STATS_PAGE: u32 = 1_000;

async fn stats(req: &Incoming, call: &Call, scope: Scope, global: bool) -> Result<Response, ApiError> {
    let q = query(req);
    let arg = |name: &str| q.get(name).map(String::as_str);
    let range = day_range(arg("start"), arg("end"), call.now_ms())?;
    let group = GroupBy::parse(arg("group_by"), global)?;
    let page = Page::parse_sized(arg("page"), arg("page_size"), "page_size", STATS_PAGE, STATS_PAGE)?;
    let (buckets, total) = store::usage::stats(&db(call)?, &scope, &range, group, page).await?;
    let data: Vec<Value> = buckets
        .iter()
        .map(|b| {
            json!({
                "bucket": b.bucket.clone().unwrap_or_default(), "requests": b.requests,
                "prompt_tokens": b.prompt_tokens, "completion_tokens": b.completion_tokens,
                "cost": micros_to_usd(b.cost_micros),
            })
        })
        .collect();
    respond::json(
        200,
        &json!({ "data": data, "start": range.start, "end": range.end, "group_by": group.as_str(),
            "page": page.page, "page_size": page.size, "total": total }),
    )
}

/// `GET /api/admin/overview`: spend and requests today and this month (UTC),
/// users, active keys and the sum of every balance, in one read.
pub async fn get_overview(call: &Call) -> Result<Response, ApiError> {
    let now = to_iso(call.now_ms());
    let today = &now[..10];
    let month_start = format!("{}-01", &now[..7]);
    let o = store::usage::overview(&db(call)?, &now, today, &month_start).await?;
    respond::data(
        200,
        &json!({
            "spend_today": micros_to_usd(o.spend_today_micros), "requests_today": o.requests_today,
            "spend_month": micros_to_usd(o.spend_month_micros), "requests_month": o.requests_month,
            "active_keys": o.active_keys, "users": o.users, "total_balance": micros_to_usd(o.total_balance_micros),
            "day": today, "month_start": month_start,
        }),
    )
}

/// `GET /api/admin/alerts?page=&page_size=`: the alerts found, newest first, with how their delivery went.
pub async fn list_alerts(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let q = query(&req);
    let page = crate::domain::paging::Page::parse(
        q.get("page").map(String::as_str),
        q.get("page_size").map(String::as_str),
        "page_size",
    )?;
    let (rows, total) = store::usage::alerts(&db(call)?, page).await?;
    let data: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            let body = serde_json::from_slice::<serde_json::Value>(r.body.as_bytes()).unwrap_or_default();
            json!({
                "id": r.id, "type": r.r#type, "status": r.status, "attempts": r.attempts,
                "last_status": r.last_status, "last_error": r.last_error, "created_at": r.created_at,
                "updated_at": r.updated_at, "delivered_at": r.delivered_at, "alert": body,
            })
        })
        .collect();
    respond::json(
        200,
        &json!({ "data": data, "page": page.page, "page_size": page.size, "total": total,
                 "webhook_configured": call.config.alerts.is_some() }),
    )
}

/// One of the caller's requests, by its generation id (`x-request-id`).
pub async fn get_generation(req: Incoming, call: &Call, caller: &Caller) -> Result<Response, ApiError> {
    let Some(id) = query(&req).get("id").cloned().filter(|id| !id.is_empty()) else {
        return Err(crate::domain::InvalidRequest::param("`id` is required", "id").into());
    };
    let not_found = || ApiError::not_found(format!("generation {id} not found"));
    let row = store::usage::find(&db(call)?, &id).await?.ok_or_else(not_found)?;
    if let Caller::Key(k) = &caller {
        if !caller.is_admin() && (k.user_id != row.user_id || k.org_id != row.org_id) {
            return Err(not_found());
        }
    }
    respond::data(
        200,
        &json!({
            "id": row.id, "upstream_id": row.upstream_id, "model": row.model, "provider": row.provider,
            "tokens_prompt": row.prompt_tokens, "tokens_completion": row.completion_tokens,
            "tokens_reasoning": row.reasoning_tokens, "tokens_cached": row.cached_tokens,
            "total_cost": micros_to_usd(row.cost_micros),
            "upstream_cost": row.upstream_cost_micros.filter(|_| caller.is_admin() || call.config.show_upstream_cost).map(micros_to_usd),
            "streamed": row.streamed != 0, "cancelled": row.cancelled != 0, "estimated": row.estimated != 0,
            "status": row.status, "latency_ms": row.latency_ms, "created_at": row.created_at,
            "key_id": row.key_id, "user_id": row.user_id, "org_id": row.org_id,
        }),
    )
}
