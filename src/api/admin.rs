//! POST /api/admin/users and POST /api/keys.

use serde::Deserialize;
use serde_json::{json, Value};
use worker::{Request, Response};

use super::auth::{authenticate, Caller};
use super::error::ApiError;
use super::respond::{self, random_bytes, read_json, Call};
use crate::domain::keys::{self, Permission, Permissions};
use crate::domain::money::{micros_to_usd, usd_to_micros};
use crate::domain::time::{parse_iso, to_iso};
use crate::domain::users::{validate_email, validate_locale, validate_optional_text, validate_text, MAX_NAME_LEN};
use crate::domain::{ids, InvalidRequest};
use crate::env;
use crate::store::keys::KeyRow;
use crate::store::users::UserRow;
use crate::store::{self, StoreError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    email: String,
    name: String,
    locale: Option<String>,
    utm_source: Option<String>,
    image: Option<String>,
}

pub async fn create_user(mut req: Request, call: &Call) -> Result<Response, ApiError> {
    authenticate(&req, call).await?.caller.require(Permission::Admin)?;
    let body: CreateUser = read_json(&mut req).await?;
    let now = to_iso(call.now_ms());
    let user = UserRow {
        id: ids::uuid_v4(random_bytes()),
        email: validate_email(&body.email)?,
        name: validate_text("name", &body.name, MAX_NAME_LEN)?,
        email_verified: 0,
        image: validate_optional_text("image", body.image.as_deref(), 2048)?,
        locale: validate_locale(body.locale.as_deref().unwrap_or("en"))?,
        utm_source: validate_optional_text("utm_source", body.utm_source.as_deref(), 200)?,
        ip: None,
        created_at: now.clone(),
        updated_at: now,
        deleted_at: None,
    };
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    match store::users::insert(&db, &user).await {
        Err(StoreError::Conflict(_)) => {
            Err(ApiError::Conflict(format!("a user with email {} already exists", user.email)))
        }
        other => other.map_err(ApiError::from),
    }?;
    respond::data(201, &user_view(&user))
}

fn user_view(u: &UserRow) -> Value {
    json!({
        "id": u.id, "email": u.email, "name": u.name, "email_verified": u.email_verified != 0,
        "image": u.image, "locale": u.locale, "utm_source": u.utm_source,
        "created_at": u.created_at, "updated_at": u.updated_at,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    description: Option<String>,
    permissions: Option<Vec<String>>,
    expires_at: Option<String>,
    limit: Option<f64>,
    limit_reset: Option<String>,
    user_id: Option<String>,
    org_id: Option<String>,
}

pub async fn create_key(mut req: Request, call: &Call) -> Result<Response, ApiError> {
    let caller = authenticate(&req, call).await?.caller;
    caller.require(Permission::Write)?;
    let body: CreateKey = read_json(&mut req).await?;
    let now_ms = call.now_ms();

    let user_id = match (&caller, body.user_id) {
        (Caller::Key(k), None) => k.user_id.clone(),
        (Caller::Operator, Some(id)) => id,
        (Caller::Key(k), Some(id)) if caller.is_admin() || id == k.user_id => id,
        (Caller::Key(_), Some(_)) => return Err(ApiError::not_found("user not found")),
        (Caller::Operator, None) => {
            return Err(InvalidRequest::param("`user_id` is required when the operator creates a key", "user_id").into())
        }
    };
    let permissions = parse_permissions(body.permissions.as_deref())?;
    if permissions.admin && !caller.is_admin() {
        return Err(ApiError::forbidden("only an admin may create a key with the `admin` permission"));
    }
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(text) => {
            let at = parse_iso(text)
                .ok_or_else(|| InvalidRequest::param("`expires_at` must be an ISO-8601 date-time", "expires_at"))?;
            if at <= now_ms {
                return Err(InvalidRequest::param("`expires_at` must be in the future", "expires_at").into());
            }
            Some(to_iso(at))
        }
    };
    let limit_micros = match body.limit {
        None => None,
        Some(usd) if usd < 0.0 => return Err(InvalidRequest::param("`limit` must not be negative", "limit").into()),
        Some(usd) => Some(usd_to_micros("limit", usd)?),
    };
    let limit_reset = match body.limit_reset.as_deref() {
        None => None,
        Some(r @ ("daily" | "weekly" | "monthly")) => Some(r.to_string()),
        Some(other) => {
            return Err(InvalidRequest::param(
                format!("`limit_reset` is `{other}`; expected daily, weekly, monthly or null"),
                "limit_reset",
            )
            .into())
        }
    };

    let db = env::db(&call.env).map_err(ApiError::internal)?;
    if store::users::get_live(&db, &user_id).await?.is_none() {
        return Err(ApiError::not_found(format!("user {user_id} not found")));
    }
    let minted = keys::mint(random_bytes());
    let now = to_iso(now_ms);
    let row = KeyRow {
        id: ids::uuid_v4(random_bytes()),
        user_id,
        org_id: body.org_id,
        name: validate_text("name", &body.name, MAX_NAME_LEN)?,
        description: validate_optional_text("description", body.description.as_deref(), 1000)?,
        key_hash: minted.hash,
        key_prefix: minted.display_prefix,
        permissions: permissions.to_stored(),
        expires_at,
        limit_micros,
        limit_reset,
        disabled: 0,
        previous_key_hash: None,
        previous_expires_at: None,
        rotated_at: None,
        last_used_at: None,
        created_at: now.clone(),
        updated_at: now,
        deleted_at: None,
    };
    store::keys::insert(&db, &row).await?;
    let mut view = key_view(&row);
    view["key"] = Value::String(minted.text);
    respond::data(201, &view)
}

fn parse_permissions(list: Option<&[String]>) -> Result<Permissions, InvalidRequest> {
    let Some(list) = list else { return Ok(Permissions::DEFAULT) };
    if list.is_empty() {
        return Err(InvalidRequest::param("`permissions` must name at least one of read, write, admin", "permissions"));
    }
    let parsed = list
        .iter()
        .map(|p| {
            Permission::parse(p).ok_or_else(|| {
                InvalidRequest::param(format!("unknown permission `{p}`; expected read, write or admin"), "permissions")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Permissions::from_list(&parsed))
}

/// A key as the API shows it: never the text, never the hash.
fn key_view(k: &KeyRow) -> Value {
    json!({
        "id": k.id, "key_prefix": k.key_prefix, "name": k.name, "description": k.description,
        "user_id": k.user_id, "org_id": k.org_id,
        "permissions": Permissions::from_stored(&k.permissions).to_list(),
        "expires_at": k.expires_at, "limit": k.limit_micros.map(micros_to_usd), "limit_reset": k.limit_reset,
        "disabled": k.disabled != 0, "status": if k.disabled != 0 { "disabled" } else { "active" },
        "last_used_at": k.last_used_at, "created_at": k.created_at, "updated_at": k.updated_at,
    })
}
