//! The `api_keys` table.

use serde::{Deserialize, Serialize};
use worker::D1Database;

use super::{opt_int, opt_text, text, StoreError};
use crate::domain::allow::Allowlist;
use crate::domain::end_users::Budget;
use crate::domain::keys::NewKey;
use crate::domain::rates::RateLimits;
use crate::domain::windows::Reset;

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
    /// JSON lists (`domain::allow`); `None`: any.
    #[serde(default)]
    pub allowed_models: Option<String>,
    #[serde(default)]
    pub allowed_providers: Option<String>,
    /// Requests and tokens per minute; `None`: the tenant's default, if any.
    #[serde(default)]
    pub rpm_limit: Option<i64>,
    #[serde(default)]
    pub tpm_limit: Option<i64>,
    /// Each end user's budget (micro-USD per window); `None`: none.
    #[serde(default)]
    pub end_user_limit_micros: Option<i64>,
    #[serde(default)]
    pub end_user_limit_reset: Option<String>,
    /// Days the key keeps its request log; `None`: off.
    #[serde(default)]
    pub request_log_days: Option<i64>,
    /// The key that made this one (`None`: the operator, provisioning, or made before this was kept).
    #[serde(default)]
    pub created_by_key_id: Option<String>,
}

impl KeyRow {
    /// A new, enabled key with no expiry, limit or history; callers set the optional fields they have.
    pub fn new(id: String, user_id: String, name: String, minted: &NewKey, permissions: String, now: &str) -> Self {
        Self {
            id,
            user_id,
            org_id: None,
            name,
            description: None,
            key_hash: minted.hash.clone(),
            key_prefix: minted.display_prefix.clone(),
            permissions,
            expires_at: None,
            limit_micros: None,
            limit_reset: None,
            disabled: 0,
            previous_key_hash: None,
            previous_expires_at: None,
            rotated_at: None,
            last_used_at: None,
            created_at: now.to_string(),
            updated_at: now.to_string(),
            deleted_at: None,
            allowed_models: None,
            allowed_providers: None,
            rpm_limit: None,
            tpm_limit: None,
            end_user_limit_micros: None,
            end_user_limit_reset: None,
            request_log_days: None,
            created_by_key_id: None,
        }
    }

    /// The key's own allowlist.
    pub fn allowlist(&self) -> Allowlist {
        Allowlist::from_columns(self.allowed_models.as_deref(), self.allowed_providers.as_deref())
    }

    pub fn set_allowlist(&mut self, list: &Allowlist) {
        (self.allowed_models, self.allowed_providers) = list.to_columns();
    }

    /// What each of the key's end users may spend (unless one has a budget of its own).
    pub fn end_user_budget(&self) -> Option<Budget> {
        let reset = self.end_user_limit_reset.as_deref().and_then(Reset::parse);
        self.end_user_limit_micros.map(|limit_micros| Budget { limit_micros, reset })
    }

    pub fn set_end_user_budget(&mut self, budget: Option<Budget>) {
        self.end_user_limit_micros = budget.map(|b| b.limit_micros);
        self.end_user_limit_reset = budget.and_then(|b| b.reset).map(|r| r.as_str().to_string());
    }

    /// The key state's version (`KeyState::version`): when D1 last changed the key (ms).
    pub fn version(&self) -> Option<i64> {
        crate::domain::time::parse_iso(&self.updated_at)
    }

    /// The key's own per-minute limits.
    pub fn rates(&self) -> RateLimits {
        RateLimits { rpm: self.rpm_limit, tpm: self.tpm_limit }
    }
}

const INSERT: &str =
    "INSERT INTO api_keys (id, user_id, org_id, name, description, key_hash, key_prefix, permissions, \
                      expires_at, limit_micros, limit_reset, created_at, updated_at, allowed_models, allowed_providers, \
                      rpm_limit, tpm_limit, end_user_limit_micros, end_user_limit_reset, request_log_days, \
                      created_by_key_id) \
                      SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20 \
                      WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2 AND deleted_at IS NULL) \
                      AND (?3 IS NULL OR EXISTS (SELECT 1 FROM organizations WHERE id = ?3 AND deleted_at IS NULL))";
/// The current secret, or the previous one while its grace period lasts.
const FIND_BY_HASH: &str = "SELECT * FROM api_keys WHERE key_hash = ?1 \
                            UNION ALL SELECT * FROM api_keys WHERE previous_key_hash = ?1 AND previous_expires_at > ?2 LIMIT 1";

/// `false` when its user or organization is not live (any more): the check and the write are one
/// statement, so a key made while its user is deleted is either written before (and disabled with the
/// others) or not at all.
pub async fn insert(db: &D1Database, k: &KeyRow) -> Result<bool, StoreError> {
    let result = insert_statement(db, k)?.run().await?;
    Ok(result.meta()?.and_then(|m| m.changes).unwrap_or(0) > 0)
}

/// The insert as a statement, for a batch with others (all or nothing); it writes nothing unless the
/// key's user and organization are live.
pub fn insert_statement(db: &D1Database, k: &KeyRow) -> worker::Result<worker::D1PreparedStatement> {
    db.prepare(INSERT).bind(&[
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
        opt_text(k.allowed_models.as_deref()),
        opt_text(k.allowed_providers.as_deref()),
        opt_int(k.rpm_limit),
        opt_int(k.tpm_limit),
        opt_int(k.end_user_limit_micros),
        opt_text(k.end_user_limit_reset.as_deref()),
        opt_int(k.request_log_days),
        opt_text(k.created_by_key_id.as_deref()),
    ])
}

/// The key whose current (or still-valid previous) secret hashes to `hash`, live or not.
pub async fn find_by_hash(db: &D1Database, hash: &str, now_iso: &str) -> Result<Option<KeyRow>, StoreError> {
    Ok(db.prepare(FIND_BY_HASH).bind(&[text(hash), text(now_iso)])?.first::<KeyRow>(None).await?)
}

/// The key's user, and its organization if it has one, are live: a deleted user's (or organization's)
/// keys, disabled with it, are neither listed nor changed back into use.
macro_rules! owner_live {
    () => {
        "EXISTS (SELECT 1 FROM users u WHERE u.id = api_keys.user_id AND u.deleted_at IS NULL) \
          AND (api_keys.org_id IS NULL OR EXISTS (SELECT 1 FROM organizations o \
               WHERE o.id = api_keys.org_id AND o.deleted_at IS NULL))"
    };
}
const GET_LIVE: &str = "SELECT * FROM api_keys WHERE id = ?1 AND deleted_at IS NULL";
const GET_MANAGEABLE: &str = concat!("SELECT * FROM api_keys WHERE id = ?1 AND deleted_at IS NULL AND ", owner_live!());
const UPDATE: &str = concat!(
    "UPDATE api_keys SET name = ?2, description = ?3, permissions = ?4, disabled = ?5, expires_at = ?6, \
     limit_micros = ?7, limit_reset = ?8, allowed_models = ?10, allowed_providers = ?11, \
     rpm_limit = ?12, tpm_limit = ?13, end_user_limit_micros = ?14, end_user_limit_reset = ?15, \
     request_log_days = ?16, ",
    stamp!("?9"),
    " WHERE id = ?1 AND deleted_at IS NULL AND updated_at IS ?17 AND ",
    owner_live!(),
    " RETURNING updated_at"
);
const SOFT_DELETE: &str =
    concat!("UPDATE api_keys SET deleted_at = ?2, ", stamp!("?2"), " WHERE id = ?1 AND deleted_at IS NULL RETURNING *");
/// Only succeeds while the key is as the caller read it (so it still has the secret rotated from).
const ROTATE: &str = concat!(
    "UPDATE api_keys SET key_hash = ?3, key_prefix = ?4, previous_key_hash = ?2, previous_expires_at = ?5, \
     rotated_at = ?6, ",
    stamp!("?6"),
    " WHERE id = ?1 AND key_hash = ?2 AND deleted_at IS NULL AND updated_at IS ?7 AND ",
    owner_live!(),
    " RETURNING updated_at"
);
const DISABLE_FOR_USER: &str = concat!(
    "UPDATE api_keys SET disabled = 1, ",
    stamp!("?2"),
    " WHERE user_id = ?1 AND deleted_at IS NULL RETURNING *"
);
const DISABLE_ENABLED_FOR_USER: &str = concat!(
    "UPDATE api_keys SET disabled = 1, ",
    stamp!("?2"),
    " WHERE user_id = ?1 AND deleted_at IS NULL AND disabled = 0 RETURNING *"
);
const DISABLE_FOR_ORG: &str = concat!(
    "UPDATE api_keys SET disabled = 1, ",
    stamp!("?2"),
    " WHERE org_id = ?1 AND deleted_at IS NULL RETURNING *"
);
/// At most one write a minute per key, whoever asks.
const TOUCH: &str =
    "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?3)";

/// Filters for listing keys.
pub struct KeyFilter<'a> {
    pub user_id: Option<&'a str>,
    pub org_id: Option<&'a str>,
    /// Only keys outside any organization (a holder without one sees only those).
    pub no_org: bool,
    /// `active`, `disabled` or `expired`.
    pub status: Option<&'a str>,
    /// Matches the name or the display prefix.
    pub search: Option<&'a str>,
    /// Only keys made by this key.
    pub created_by: Option<&'a str>,
    pub now_iso: &'a str,
    pub limit: u32,
    pub offset: i64,
}

#[derive(Deserialize)]
struct Count {
    n: i64,
}

pub async fn list(db: &D1Database, f: &KeyFilter<'_>) -> Result<(Vec<KeyRow>, i64), StoreError> {
    // A deleted user's (or organization's) keys went with it.
    let mut clauses = vec!["deleted_at IS NULL".to_string(), owner_live!().to_string()];
    let mut args = Vec::new();
    if let Some(user_id) = f.user_id {
        args.push(text(user_id));
        clauses.push(format!("user_id = ?{}", args.len()));
    }
    if let Some(org_id) = f.org_id {
        args.push(text(org_id));
        clauses.push(format!("org_id = ?{}", args.len()));
    }
    if f.no_org {
        clauses.push("org_id IS NULL".into());
    }
    if let Some(maker) = f.created_by {
        args.push(text(maker));
        clauses.push(format!("created_by_key_id = ?{}", args.len()));
    }
    match f.status {
        Some("active") => {
            args.push(text(f.now_iso));
            clauses.push(format!("disabled = 0 AND (expires_at IS NULL OR expires_at > ?{})", args.len()));
        }
        Some("disabled") => clauses.push("disabled = 1".into()),
        Some("expired") => {
            args.push(text(f.now_iso));
            clauses.push(format!("disabled = 0 AND expires_at <= ?{}", args.len()));
        }
        _ => {}
    }
    if let Some(search) = f.search {
        args.push(text(search));
        let n = args.len();
        clauses.push(format!("({} OR {})", super::contains("name", n), super::contains("key_prefix", n)));
    }
    let filter = clauses.join(" AND ");
    let total = db
        .prepare(format!("SELECT COUNT(*) AS n FROM api_keys WHERE {filter}"))
        .bind(&args)?
        .first::<Count>(None)
        .await?
        .map_or(0, |c| c.n);
    let mut page_args = args;
    page_args.push(super::int(i64::from(f.limit)));
    page_args.push(super::int(f.offset));
    let n = page_args.len();
    let rows = db
        .prepare(format!(
            "SELECT * FROM api_keys WHERE {filter} ORDER BY created_at DESC, id LIMIT ?{} OFFSET ?{n}",
            n - 1
        ))
        .bind(&page_args)?
        .all()
        .await?
        .results::<KeyRow>()?;
    Ok((rows, total))
}

pub async fn get_live(db: &D1Database, id: &str) -> Result<Option<KeyRow>, StoreError> {
    Ok(db.prepare(GET_LIVE).bind(&[text(id)])?.first::<KeyRow>(None).await?)
}

/// A live key whose user (and organization) are live too: one that may be seen and changed.
pub async fn get_manageable(db: &D1Database, id: &str) -> Result<Option<KeyRow>, StoreError> {
    Ok(db.prepare(GET_MANAGEABLE).bind(&[text(id)])?.first::<KeyRow>(None).await?)
}

/// A key that was deleted (soft), for a repeated DELETE.
pub async fn get_deleted(db: &D1Database, id: &str) -> Result<Option<KeyRow>, StoreError> {
    let query = "SELECT * FROM api_keys WHERE id = ?1 AND deleted_at IS NOT NULL";
    Ok(db.prepare(query).bind(&[text(id)])?.first::<KeyRow>(None).await?)
}

/// Writes the editable fields of `k`, stamped at `k.updated_at`; answers the version stored (see
/// `stamp!`), `None` when the key is no longer live or no longer at version `read` (changed since it was
/// read: the caller reads it again).
pub async fn update(db: &D1Database, k: &KeyRow, read: &str) -> Result<Option<String>, StoreError> {
    let stamped = db
        .prepare(UPDATE)
        .bind(&[
            text(&k.id),
            text(&k.name),
            opt_text(k.description.as_deref()),
            text(&k.permissions),
            super::int(k.disabled),
            opt_text(k.expires_at.as_deref()),
            opt_int(k.limit_micros),
            opt_text(k.limit_reset.as_deref()),
            text(&k.updated_at),
            opt_text(k.allowed_models.as_deref()),
            opt_text(k.allowed_providers.as_deref()),
            opt_int(k.rpm_limit),
            opt_int(k.tpm_limit),
            opt_int(k.end_user_limit_micros),
            opt_text(k.end_user_limit_reset.as_deref()),
            opt_int(k.request_log_days),
            text(read),
        ])?
        .first::<Stamped>(None)
        .await?;
    Ok(stamped.map(|s| s.updated_at))
}

/// The version a change stored.
#[derive(Deserialize)]
struct Stamped {
    updated_at: String,
}

/// Soft delete; returns the row as it was deleted, or `None` when there was no live key.
pub async fn soft_delete(db: &D1Database, id: &str, now_iso: &str) -> Result<Option<KeyRow>, StoreError> {
    Ok(db.prepare(SOFT_DELETE).bind(&[text(id), text(now_iso)])?.first::<KeyRow>(None).await?)
}

/// A rotation from `from_hash` to a new secret.
pub struct Rotation<'a> {
    pub id: &'a str,
    pub from_hash: &'a str,
    /// The version the caller read the key at (`updated_at`).
    pub read_version: &'a str,
    pub new_hash: &'a str,
    pub new_prefix: &'a str,
    pub previous_expires_at: &'a str,
    pub now_iso: &'a str,
}

/// Rotates the key; answers the version stored (see `stamp!`), `None` when the key changed meanwhile.
pub async fn rotate(db: &D1Database, r: &Rotation<'_>) -> Result<Option<String>, StoreError> {
    let stamped = db
        .prepare(ROTATE)
        .bind(&[
            text(r.id),
            text(r.from_hash),
            text(r.new_hash),
            text(r.new_prefix),
            text(r.previous_expires_at),
            text(r.now_iso),
            text(r.read_version),
        ])?
        .first::<Stamped>(None)
        .await?;
    Ok(stamped.map(|s| s.updated_at))
}

/// Disables every live key of a user; returns them (their hashes must leave the caches).
pub async fn disable_for_user(db: &D1Database, user_id: &str, now_iso: &str) -> Result<Vec<KeyRow>, StoreError> {
    Ok(db.prepare(DISABLE_FOR_USER).bind(&[text(user_id), text(now_iso)])?.all().await?.results::<KeyRow>()?)
}

/// Disables a user's live keys still enabled (made since the others were disabled); returns them.
pub async fn disable_enabled_for_user(
    db: &D1Database,
    user_id: &str,
    now_iso: &str,
) -> Result<Vec<KeyRow>, StoreError> {
    Ok(db.prepare(DISABLE_ENABLED_FOR_USER).bind(&[text(user_id), text(now_iso)])?.all().await?.results::<KeyRow>()?)
}

/// Disables every live key of an organization; returns them.
pub async fn disable_for_org(db: &D1Database, org_id: &str, now_iso: &str) -> Result<Vec<KeyRow>, StoreError> {
    Ok(db.prepare(DISABLE_FOR_ORG).bind(&[text(org_id), text(now_iso)])?.all().await?.results::<KeyRow>()?)
}

/// Sets `last_used_at` unless it was set after `unless_after_iso`.
pub async fn touch(db: &D1Database, id: &str, now_iso: &str, unless_after_iso: &str) -> Result<(), StoreError> {
    db.prepare(TOUCH).bind(&[text(id), text(now_iso), text(unless_after_iso)])?.run().await?;
    Ok(())
}
