//! The `api_keys` table.

use serde::{Deserialize, Serialize};
use worker::D1Database;

use super::{opt_int, opt_text, text, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRow {
    pub id: String,
    pub user_id: String,
    pub org_id: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub key_hash: String,
    pub key_prefix: String,
    pub permissions: String,
    pub expires_at: Option<String>,
    pub limit_micros: Option<i64>,
    pub limit_reset: Option<String>,
    pub disabled: i64,
    pub previous_key_hash: Option<String>,
    pub previous_expires_at: Option<String>,
    pub rotated_at: Option<String>,
    pub last_used_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
}

const INSERT: &str =
    "INSERT INTO api_keys (id, user_id, org_id, name, description, key_hash, key_prefix, permissions, \
                      expires_at, limit_micros, limit_reset, created_at, updated_at) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)";
/// The current secret, or the previous one while its grace period lasts.
const FIND_BY_HASH: &str = "SELECT * FROM api_keys WHERE key_hash = ?1 \
                            UNION ALL SELECT * FROM api_keys WHERE previous_key_hash = ?1 AND previous_expires_at > ?2 LIMIT 1";

pub async fn insert(db: &D1Database, k: &KeyRow) -> Result<(), StoreError> {
    db.prepare(INSERT)
        .bind(&[
            text(&k.id),
            text(&k.user_id),
            opt_text(k.org_id.as_deref()),
            text(&k.name),
            opt_text(k.description.as_deref()),
            text(&k.key_hash),
            text(&k.key_prefix),
            text(&k.permissions),
            opt_text(k.expires_at.as_deref()),
            opt_int(k.limit_micros),
            opt_text(k.limit_reset.as_deref()),
            text(&k.created_at),
        ])?
        .run()
        .await?;
    Ok(())
}

/// The key whose current (or still-valid previous) secret hashes to `hash`, live or not.
pub async fn find_by_hash(db: &D1Database, hash: &str, now_iso: &str) -> Result<Option<KeyRow>, StoreError> {
    Ok(db.prepare(FIND_BY_HASH).bind(&[text(hash), text(now_iso)])?.first::<KeyRow>(None).await?)
}
