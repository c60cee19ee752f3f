//! Retention and archives (`retention`), for operators: a pass now, the archives, one archive's rows,
//! and putting an archive back.

use serde::Deserialize;
use serde_json::json;
use worker::Response;

use super::error::ApiError;
use super::incoming::Incoming;
use super::respond::{self, query, Call};
use crate::domain::paging::Page;
use crate::store::{int, text};

fn db(call: &Call) -> Result<worker::D1Database, ApiError> {
    crate::env::db(&call.env).map_err(ApiError::internal)
}

/// POST /api/admin/retention/run: one retention pass now (the cron job runs one every 15 minutes).
pub async fn run_retention(call: &Call) -> Result<Response, ApiError> {
    let report = crate::retention::run(&call.env, call.now_ms(), call.config.usage_retention_days).await?;
    respond::data(200, &report)
}

#[derive(Deserialize, serde::Serialize)]
struct ArchiveRow {
    id: String,
    user_id: String,
    day: String,
    ledger_rows: i64,
    usage_rows: i64,
    ledger_sum: i64,
    created_at: String,
    restored_at: Option<String>,
}

/// GET /api/admin/archives?user_id=&page=&page_size=: newest day first.
pub async fn list(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Count {
        n: i64,
    }
    let q = query(&req);
    let page = Page::parse(q.get("page").map(String::as_str), q.get("page_size").map(String::as_str), "page_size")?;
    let user = q.get("user_id").cloned().unwrap_or_default();
    let filter = "(?1 = '' OR user_id = ?1)";
    let db = db(call)?;
    let rows: Vec<ArchiveRow> = db
        .prepare(format!(
            "SELECT id, user_id, day, ledger_rows, usage_rows, ledger_sum, created_at, restored_at FROM archives \
             WHERE {filter} ORDER BY day DESC, id LIMIT ?2 OFFSET ?3"
        ))
        .bind(&[text(&user), int(i64::from(page.size)), int(page.offset())])
        .map_err(ApiError::internal)?
        .all()
        .await
        .map_err(ApiError::internal)?
        .results()
        .map_err(ApiError::internal)?;
    let total = db
        .prepare(format!("SELECT COUNT(*) AS n FROM archives WHERE {filter}"))
        .bind(&[text(&user)])
        .map_err(ApiError::internal)?
        .first::<Count>(None)
        .await
        .map_err(ApiError::internal)?
        .map_or(0, |c| c.n);
    let data: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({ "id": r.id, "user_id": r.user_id, "day": r.day, "ledger_rows": r.ledger_rows,
                        "usage_rows": r.usage_rows, "ledger_sum": crate::domain::money::micros_to_usd(r.ledger_sum),
                        "created_at": r.created_at, "restored_at": r.restored_at })
        })
        .collect();
    respond::json(200, &json!({ "data": data, "page": page.page, "page_size": page.size, "total": total }))
}

/// GET /api/admin/archives/{id}: the archive's rows as NDJSON (`{"table", "row"}` a line), as kept in R2.
pub async fn get(call: &Call, id: &str) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Key {
        r2_key: String,
    }
    let key: Key = db(call)?
        .prepare("SELECT r2_key FROM archives WHERE id = ?1")
        .bind(&[text(id)])
        .map_err(ApiError::internal)?
        .first(None)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("archive {id} not found")))?;
    let body = crate::retention::read(&call.env, &key.r2_key).await?;
    let mut resp = Response::ok(body).map_err(ApiError::internal)?;
    let _ = resp.headers_mut().set("content-type", "application/x-ndjson");
    let _ = resp.headers_mut().set("cache-control", "no-store"); // an account's money, as `respond::json`
    Ok(resp)
}

/// POST /api/admin/archives/{id}/restore: the archive's rows back in D1.
pub async fn restore(call: &Call, id: &str) -> Result<Response, ApiError> {
    let report = crate::retention::restore(&call.env, &db(call)?, id, call.now_ms()).await?;
    respond::data(200, &report)
}
