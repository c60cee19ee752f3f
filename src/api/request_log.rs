//! The request log (`domain::request_log`): for a key that opts in, each
//! request's body and its answer's, kept in R2 (`REQUEST_LOGS`) with an index
//! row in D1, written after the answer; read back by the key's owner; deleted
//! by the cron job when its days are over.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::json;
use worker::Response;

use super::auth::Caller;
use super::error::ApiError;
use super::incoming::Incoming;
use super::keys::visible_key;
use super::respond::{self, query, Call};
use crate::domain::paging::Page;
use crate::domain::request_log::{Capture, Entry};
use crate::domain::time::to_iso;
use crate::env;
use crate::store;

/// What a logged request keeps while it runs.
#[derive(Debug, Default)]
pub struct Kept {
    pub days: i64,
    pub request: Capture,
    pub response: Capture,
}

/// The request's log, shared by the handler, the relay and the settlement (`None`: not logged).
pub type Keeper = Rc<RefCell<Option<Kept>>>;

/// Keeps the request's body when its key logs requests.
pub fn keep_request(call: &Call, caller: &Caller, body: &[u8]) {
    if let Caller::Key(k) = caller {
        if let Some(days) = k.request_log_days {
            *call.request_log.borrow_mut() = Some(Kept { days, request: Capture::of(body), ..Kept::default() });
        }
    }
}

/// Adds a piece of the answer as the client got it.
pub fn keep_response(keeper: &Keeper, bytes: &[u8]) {
    if let Some(kept) = keeper.borrow_mut().as_mut() {
        kept.response.push(bytes);
    }
}

/// Writes the logged request (the R2 object first: an index row never points at nothing).
pub async fn write(call: &Call, caller: &Caller, model: &str, status: u16, streamed: bool) {
    let (Some(kept), Caller::Key(key)) = (call.request_log.borrow_mut().take(), caller) else { return };
    let now = call.now_ms();
    let entry = Entry {
        id: call.request_id.clone(),
        key_id: key.id.clone(),
        model: model.to_string(),
        status,
        streamed,
        created_at: to_iso(call.started_ms as i64),
        request: kept.request.text(),
        request_truncated: kept.request.truncated,
        response: kept.response.text(),
        response_truncated: kept.response.truncated,
    };
    // The index row first: expiry finds bodies through it, so a body written without one (the row's write
    // failing after the put) would outlive its days for ever. A row whose body is missing reads as not found;
    // one whose put failed is taken back.
    let result: worker::Result<()> = async {
        let db = env::db(&call.env)?;
        let expires = to_iso(now + kept.days * 86_400_000);
        let (request_bytes, response_bytes) = (kept.request.bytes.len(), kept.response.bytes.len());
        store::request_logs::insert(&db, &entry, &key.user_id, &expires, request_bytes, response_bytes)
            .await
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        let bucket = env::request_logs(&call.env)?;
        let put = bucket.put(object_name(&key.id, &entry.id), serde_json::to_vec(&entry)?).execute().await;
        if let Err(e) = put {
            let _ = store::request_logs::delete(&db, &[entry.id.as_str()]).await;
            return Err(e);
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        crate::log::job_error("request_log", &e.to_string());
    }
}

fn object_name(key_id: &str, request_id: &str) -> String {
    format!("requests/{key_id}/{request_id}.json")
}

/// GET /api/keys/{id}/requests: the key's logged requests, newest first (no bodies).
pub async fn list(req: Incoming, call: &Call, caller: &Caller, key_id: &str) -> Result<Response, ApiError> {
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    let key = visible_key(&db, caller, key_id).await?;
    let q = query(&req);
    let page = Page::parse(q.get("page").map(String::as_str), q.get("page_size").map(String::as_str), "page_size")?;
    let (rows, total) = store::request_logs::list(&db, &key.id, page, &to_iso(call.now_ms())).await?;
    respond::json(
        200,
        &json!({ "data": rows, "page": page.page, "page_size": page.size, "total": total,
                 "request_log_days": key.request_log_days }),
    )
}

/// GET /api/keys/{id}/requests/{request_id}: one logged request with its bodies.
pub async fn get(call: &Call, caller: &Caller, key_id: &str, request_id: &str) -> Result<Response, ApiError> {
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    let key = visible_key(&db, caller, key_id).await?;
    let not_found = || ApiError::not_found(format!("request {request_id} is not in this key's log"));
    if !store::request_logs::exists(&db, &key.id, request_id, &to_iso(call.now_ms())).await? {
        return Err(not_found());
    }
    let bucket = env::request_logs(&call.env).map_err(ApiError::internal)?;
    let object = bucket.get(object_name(&key.id, request_id)).execute().await.map_err(ApiError::internal)?;
    let object = object.ok_or_else(not_found)?;
    let bytes = object.body().ok_or_else(not_found)?.bytes().await.map_err(ApiError::internal)?;
    let entry: Entry = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    respond::data(200, &entry)
}

/// How long one run of the cron job goes on deleting (the rest wait for the next run, 15 minutes on).
const EXPIRE_RUN_MS: f64 = 20_000.0;

/// The cron job: deletes the logged requests whose days are over, a batch after another until none is due
/// or the run's time is up (a batch a run kept about 48,000 a day: a busy key's bodies outlived its days).
pub async fn expire(env: &worker::Env, now_ms: i64) -> Result<serde_json::Value, ApiError> {
    let db = env::db(env).map_err(ApiError::internal)?;
    let started = js_sys::Date::now();
    let mut deleted = 0;
    loop {
        let due = store::request_logs::expired(&db, &to_iso(now_ms)).await?;
        if due.is_empty() {
            break;
        }
        let bucket = env::request_logs(env).map_err(ApiError::internal)?;
        let names: Vec<String> = due.iter().map(|(id, key_id)| object_name(key_id, id)).collect();
        bucket.delete_multiple(names).await.map_err(ApiError::internal)?;
        let ids: Vec<&str> = due.iter().map(|(id, _)| id.as_str()).collect();
        store::request_logs::delete(&db, &ids).await?;
        deleted += ids.len();
        if ids.len() < store::request_logs::EXPIRE_BATCH || js_sys::Date::now() - started > EXPIRE_RUN_MS {
            break;
        }
    }
    Ok(json!({ "deleted": deleted }))
}
