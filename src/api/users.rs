//! Users (operator): /api/admin/users[/{id}].

use serde_json::{json, Value};
use worker::Response;

use super::bodies::{CreateUser, UpdateUser};
use super::error::ApiError;
use super::incoming::Incoming;
use super::respond::{self, query, random_bytes, read_json, Call};
use crate::domain::ids;
use crate::domain::paging::Page;
use crate::domain::time::to_iso;
use crate::domain::users::{validate_email, validate_locale, validate_optional_text, validate_text, MAX_NAME_LEN};
use crate::env;
use crate::store::users::UserRow;
use crate::store::{self, StoreError};

/// The operator (or an admin key) is calling: the database to work on.
pub(super) fn db(call: &Call) -> Result<worker::D1Database, ApiError> {
    env::db(&call.env).map_err(ApiError::internal)
}

fn conflict_on_email(email: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::Conflict(_) => ApiError::Conflict(format!("a user with email {email} already exists")),
        other => other.into(),
    }
}

pub async fn create_user(mut req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let db = db(call)?;
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
    store::users::insert(&db, &user).await.map_err(conflict_on_email(&user.email))?;
    respond::data(201, &user_view(&user))
}

pub async fn list_users(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let db = db(call)?;
    let q = query(&req);
    let page = Page::parse(q.get("page").map(String::as_str), q.get("page_size").map(String::as_str), "page_size")?;
    let search = q.get("search").map(|s| s.trim()).filter(|s| !s.is_empty());
    let (rows, total) = store::users::list(&db, search, page.size, page.offset()).await?;
    respond::json(
        200,
        &json!({ "data": rows.iter().map(user_view).collect::<Vec<_>>(), "page": page.page, "page_size": page.size, "total": total }),
    )
}

async fn live_user(db: &worker::D1Database, id: &str) -> Result<UserRow, ApiError> {
    store::users::get_live(db, id).await?.ok_or_else(|| ApiError::not_found(format!("user {id} not found")))
}

pub async fn get_user(call: &Call, id: &str) -> Result<Response, ApiError> {
    let db = db(call)?;
    respond::data(200, &user_view(&live_user(&db, id).await?))
}

pub async fn update_user(mut req: Incoming, call: &Call, id: &str) -> Result<Response, ApiError> {
    let db = db(call)?;
    let body: UpdateUser = read_json(&mut req).await?;
    let mut user = live_user(&db, id).await?;
    if let Some(email) = body.email {
        user.email = validate_email(&email)?;
    }
    if let Some(name) = body.name {
        user.name = validate_text("name", &name, MAX_NAME_LEN)?;
    }
    if let Some(locale) = body.locale {
        user.locale = validate_locale(&locale)?;
    }
    if let Some(utm) = body.utm_source {
        user.utm_source = validate_optional_text("utm_source", utm.as_deref(), 200)?;
    }
    if let Some(image) = body.image {
        user.image = validate_optional_text("image", image.as_deref(), 2048)?;
    }
    if let Some(verified) = body.email_verified {
        user.email_verified = i64::from(verified);
    }
    user.updated_at = to_iso(call.now_ms());
    store::users::update(&db, &user).await.map_err(conflict_on_email(&user.email))?;
    respond::data(200, &user_view(&user))
}

/// Soft delete: the user's keys are disabled at once and leave the caches; the upstream keys provisioned
/// for it are disabled at OpenRouter first (should OpenRouter fail, nothing is deleted: 502, repeat it;
/// without a provisioning key they cannot be, and are counted as left live). The keys are disabled and
/// their objects told before the user is deleted, so a step that fails (a 500) leaves the user live and
/// the whole deletion repeatable; the other way round, a failed disable left a deleted user's keys
/// working, and no call could reach them (a deleted user's keys are not managed).
pub async fn delete_user(call: &Call, id: &str) -> Result<Response, ApiError> {
    let db = db(call)?;
    if store::users::get_live(&db, id).await?.is_none() {
        return Err(ApiError::not_found(format!("user {id} not found")));
    }
    let upstream = super::provision::disable_upstream_keys_of(call, &db, id).await?;
    let now = to_iso(call.now_ms());
    let mut keys = store::keys::disable_for_user(&db, id, &now).await?;
    super::keys::publish(call, &keys).await?;
    if !store::users::soft_delete(&db, id, &now).await? {
        return Err(ApiError::not_found(format!("user {id} not found")));
    }
    // A key made for the user meanwhile (by an admin) is disabled too.
    let made_meanwhile = store::keys::disable_enabled_for_user(&db, id, &now).await?;
    super::keys::publish(call, &made_meanwhile).await?;
    keys.extend(made_meanwhile);
    let answer = json!({ "id": id, "deleted": true, "keys_disabled": keys.len(),
        "upstream_keys_disabled": upstream.disabled, "upstream_keys_left_live": upstream.left_live });
    respond::data(200, &answer)
}

pub(super) fn user_view(u: &UserRow) -> Value {
    json!({
        "id": u.id, "email": u.email, "name": u.name, "email_verified": u.email_verified != 0,
        "image": u.image, "locale": u.locale, "utm_source": u.utm_source, "ip": u.ip,
        "created_at": u.created_at, "updated_at": u.updated_at,
    })
}
