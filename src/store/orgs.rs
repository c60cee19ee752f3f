//! The `organizations` table.

use serde::{Deserialize, Serialize};
use worker::D1Database;

use super::{int, opt_int, opt_text, text, StoreError};
use crate::domain::allow::Allowlist;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgRow {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub admin_user_id: Option<String>,
    pub status: String,
    pub monthly_requests: Option<i64>,
    pub monthly_tokens: Option<i64>,
    pub monthly_cost_micros: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
    /// JSON lists (`domain::allow`); `None`: any. They bind every key of the organization.
    #[serde(default)]
    pub allowed_models: Option<String>,
    #[serde(default)]
    pub allowed_providers: Option<String>,
}

impl OrgRow {
    /// What its object decides reservations on (`OrgState`), as of this row's version.
    pub fn state(&self) -> crate::domain::orgs::OrgState {
        crate::domain::orgs::OrgState {
            version: crate::domain::time::parse_iso(&self.updated_at).unwrap_or(0),
            active: self.status == "active" && self.deleted_at.is_none(),
            monthly_requests: self.monthly_requests,
            monthly_tokens: self.monthly_tokens,
            monthly_cost_micros: self.monthly_cost_micros,
        }
    }

    pub fn allowlist(&self) -> Allowlist {
        Allowlist::from_columns(self.allowed_models.as_deref(), self.allowed_providers.as_deref())
    }

    pub fn set_allowlist(&mut self, list: &Allowlist) {
        (self.allowed_models, self.allowed_providers) = list.to_columns();
    }
}

const INSERT: &str = "INSERT INTO organizations (id, name, description, admin_user_id, status, monthly_requests, \
                      monthly_tokens, monthly_cost_micros, created_at, updated_at, allowed_models, allowed_providers) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11)";
/// Only while the organization is as it was read (`updated_at` ?12): a change made meanwhile is not written over.
const UPDATE: &str = concat!(
    "UPDATE organizations SET name = ?2, description = ?3, admin_user_id = ?4, status = ?5, \
     monthly_requests = ?6, monthly_tokens = ?7, monthly_cost_micros = ?8, \
     allowed_models = ?10, allowed_providers = ?11, ",
    stamp!("?9"),
    " WHERE id = ?1 AND deleted_at IS NULL AND updated_at IS ?12 RETURNING updated_at"
);
const GET_LIVE: &str = "SELECT * FROM organizations WHERE id = ?1 AND deleted_at IS NULL";
const SOFT_DELETE: &str =
    "UPDATE organizations SET deleted_at = ?2, updated_at = ?2 WHERE id = ?1 AND deleted_at IS NULL";
const LIST: &str =
    "SELECT * FROM organizations WHERE deleted_at IS NULL ORDER BY created_at DESC, id LIMIT ?1 OFFSET ?2";
const COUNT: &str = "SELECT COUNT(*) AS n FROM organizations WHERE deleted_at IS NULL";

fn bind_fields(o: &OrgRow) -> Vec<wasm_bindgen::JsValue> {
    vec![
        text(&o.id),
        text(&o.name),
        opt_text(o.description.as_deref()),
        opt_text(o.admin_user_id.as_deref()),
        text(&o.status),
        opt_int(o.monthly_requests),
        opt_int(o.monthly_tokens),
        opt_int(o.monthly_cost_micros),
        text(&o.updated_at),
        opt_text(o.allowed_models.as_deref()),
        opt_text(o.allowed_providers.as_deref()),
    ]
}

pub async fn insert(db: &D1Database, o: &OrgRow) -> Result<(), StoreError> {
    db.prepare(INSERT).bind(&bind_fields(o))?.run().await?;
    Ok(())
}

/// Writes `o` if the organization is still at version `read`; answers the new version, `None` when it changed
/// meanwhile (or is gone).
pub async fn update(db: &D1Database, o: &OrgRow, read: &str) -> Result<Option<String>, StoreError> {
    #[derive(Deserialize)]
    struct Stamped {
        updated_at: String,
    }
    let mut fields = bind_fields(o);
    fields.push(text(read));
    Ok(db.prepare(UPDATE).bind(&fields)?.first::<Stamped>(None).await?.map(|s| s.updated_at))
}

pub async fn get_live(db: &D1Database, id: &str) -> Result<Option<OrgRow>, StoreError> {
    Ok(db.prepare(GET_LIVE).bind(&[text(id)])?.first::<OrgRow>(None).await?)
}

#[derive(Deserialize)]
struct Count {
    n: i64,
}

pub async fn list(db: &D1Database, limit: u32, offset: i64) -> Result<(Vec<OrgRow>, i64), StoreError> {
    let total = db.prepare(COUNT).first::<Count>(None).await?.map_or(0, |c| c.n);
    let rows = db.prepare(LIST).bind(&[int(i64::from(limit)), int(offset)])?.all().await?.results::<OrgRow>()?;
    Ok((rows, total))
}

/// `false` when there was no live organization.
pub async fn soft_delete(db: &D1Database, id: &str, now_iso: &str) -> Result<bool, StoreError> {
    let result = db.prepare(SOFT_DELETE).bind(&[text(id), text(now_iso)])?.run().await?;
    Ok(result.meta()?.and_then(|m| m.changes).unwrap_or(0) > 0)
}
