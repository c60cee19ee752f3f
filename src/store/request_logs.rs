//! The request log's index (`request_logs`); the bodies are R2 objects (`api::request_log`).

use serde::{Deserialize, Serialize};
use worker::D1Database;

use super::{int, text, StoreError};
use crate::domain::paging::Page;
use crate::domain::request_log::Entry;

/// One logged request as listed (no bodies).
#[derive(Debug, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub model: String,
    pub status: i64,
    pub streamed: i64,
    pub request_bytes: i64,
    pub response_bytes: i64,
    pub created_at: String,
    pub expires_at: String,
}

pub async fn insert(
    db: &D1Database,
    e: &Entry,
    user_id: &str,
    expires_at: &str,
    request_bytes: usize,
    response_bytes: usize,
) -> Result<(), StoreError> {
    db.prepare(
        "INSERT OR IGNORE INTO request_logs (id, key_id, user_id, model, status, streamed, request_bytes, response_bytes, \
         created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .bind(&[
        text(&e.id),
        text(&e.key_id),
        text(user_id),
        text(&e.model),
        int(i64::from(e.status)),
        int(i64::from(e.streamed)),
        int(request_bytes as i64),
        int(response_bytes as i64),
        text(&e.created_at),
        text(expires_at),
    ])?
    .run()
    .await?;
    Ok(())
}

/// A key's logged requests still kept at `now`, newest first, and how many.
pub async fn list(db: &D1Database, key_id: &str, page: Page, now: &str) -> Result<(Vec<Row>, i64), StoreError> {
    #[derive(Deserialize)]
    struct Count {
        n: i64,
    }
    let rows = db
        .prepare(
            "SELECT id, model, status, streamed, request_bytes, response_bytes, created_at, expires_at FROM request_logs \
             WHERE key_id = ?1 AND expires_at > ?2 ORDER BY created_at DESC, id LIMIT ?3 OFFSET ?4",
        )
        .bind(&[text(key_id), text(now), int(i64::from(page.size)), int(page.offset())])?
        .all()
        .await?
        .results::<Row>()?;
    let total = db
        .prepare("SELECT COUNT(*) AS n FROM request_logs WHERE key_id = ?1 AND expires_at > ?2")
        .bind(&[text(key_id), text(now)])?
        .first::<Count>(None)
        .await?
        .map_or(0, |c| c.n);
    Ok((rows, total))
}

pub async fn exists(db: &D1Database, key_id: &str, id: &str, now: &str) -> Result<bool, StoreError> {
    #[derive(Deserialize)]
    struct One {
        #[allow(dead_code)]
        id: String,
    }
    Ok(db
        .prepare("SELECT id FROM request_logs WHERE id = ?1 AND key_id = ?2 AND expires_at > ?3")
        .bind(&[text(id), text(key_id), text(now)])?
        .first::<One>(None)
        .await?
        .is_some())
}

/// How many logged requests `expired` gives at most.
pub const EXPIRE_BATCH: usize = 500;

/// Up to `EXPIRE_BATCH` logged requests whose days are over: (request id, key id).
pub async fn expired(db: &D1Database, now: &str) -> Result<Vec<(String, String)>, StoreError> {
    #[derive(Deserialize)]
    struct Due {
        id: String,
        key_id: String,
    }
    let rows = db
        .prepare(format!(
            "SELECT id, key_id FROM request_logs WHERE expires_at <= ?1 ORDER BY expires_at LIMIT {EXPIRE_BATCH}"
        ))
        .bind(&[text(now)])?
        .all()
        .await?
        .results::<Due>()?;
    Ok(rows.into_iter().map(|d| (d.id, d.key_id)).collect())
}

pub async fn delete(db: &D1Database, ids: &[&str]) -> Result<(), StoreError> {
    let statements = ids
        .iter()
        .map(|id| db.prepare("DELETE FROM request_logs WHERE id = ?1").bind(&[text(id)]))
        .collect::<worker::Result<Vec<_>>>()?;
    db.batch(statements).await?;
    Ok(())
}
