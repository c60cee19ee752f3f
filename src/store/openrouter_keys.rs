//! The `openrouter_keys` table: upstream keys made per user (never their text).

use serde::{Deserialize, Serialize};
use worker::D1Database;

use super::{int, opt_int, opt_text, text, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenRouterKeyRow {
    pub id: String,
    pub user_id: String,
    pub upstream_hash: String,
    pub key_hash: String,
    pub key_prefix: String,
    pub name: String,
    pub limit_cents: Option<i64>,
    pub limit_reset: Option<String>,
    pub disabled: i64,
    pub usage_micros: i64,
    pub synced_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// The insert as a statement, for a batch with the user and gateway key it belongs to.
pub fn insert_statement(db: &D1Database, r: &OpenRouterKeyRow) -> worker::Result<worker::D1PreparedStatement> {
    db.prepare(
        "INSERT INTO openrouter_keys (id, user_id, upstream_hash, key_hash, key_prefix, name, limit_cents, limit_reset, \
         disabled, usage_micros, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?10)",
    )
    .bind(&[
        text(&r.id),
        text(&r.user_id),
        text(&r.upstream_hash),
        text(&r.key_hash),
        text(&r.key_prefix),
        text(&r.name),
        opt_int(r.limit_cents),
        opt_text(r.limit_reset.as_deref()),
        int(r.disabled),
        text(&r.created_at),
    ])
}

pub async fn get(db: &D1Database, id: &str) -> Result<Option<OpenRouterKeyRow>, StoreError> {
    Ok(db.prepare("SELECT * FROM openrouter_keys WHERE id = ?1").bind(&[text(id)])?.first(None).await?)
}

/// Newest first; `user_id` filters.
pub async fn list(db: &D1Database, user_id: Option<&str>) -> Result<Vec<OpenRouterKeyRow>, StoreError> {
    let stmt = match user_id {
        Some(u) => {
            db.prepare("SELECT * FROM openrouter_keys WHERE user_id = ?1 ORDER BY created_at DESC").bind(&[text(u)])?
        }
        None => db.prepare("SELECT * FROM openrouter_keys ORDER BY created_at DESC"),
    };
    Ok(stmt.all().await?.results()?)
}

/// The records of these upstream keys (by OpenRouter's hash).
pub async fn with_hashes(db: &D1Database, hashes: &[&str]) -> Result<Vec<OpenRouterKeyRow>, StoreError> {
    let list = serde_json::to_string(hashes).unwrap_or_default();
    let query = "SELECT * FROM openrouter_keys WHERE upstream_hash IN (SELECT value FROM json_each(?1))";
    super::all(db, query, &[text(&list)]).await
}

/// Writes the limit, reset and disabled state (as OpenRouter now has them).
pub async fn update(db: &D1Database, r: &OpenRouterKeyRow) -> Result<(), StoreError> {
    update_statement(db, r)?.run().await?;
    Ok(())
}

/// The update as a statement, for a batch.
pub fn update_statement(db: &D1Database, r: &OpenRouterKeyRow) -> worker::Result<worker::D1PreparedStatement> {
    db.prepare(
        "UPDATE openrouter_keys SET limit_cents = ?2, limit_reset = ?3, disabled = ?4, usage_micros = ?5, \
         synced_at = ?6, updated_at = ?7 WHERE id = ?1",
    )
    .bind(&[
        text(&r.id),
        opt_int(r.limit_cents),
        opt_text(r.limit_reset.as_deref()),
        int(r.disabled),
        int(r.usage_micros),
        opt_text(r.synced_at.as_deref()),
        text(&r.updated_at),
    ])
}

pub async fn delete(db: &D1Database, id: &str) -> Result<(), StoreError> {
    db.prepare("DELETE FROM openrouter_keys WHERE id = ?1").bind(&[text(id)])?.run().await?;
    Ok(())
}
