//! Provisioning (admin): `POST /api/admin/provision` makes a user, a gateway key
//! and — with `OPENROUTER_PROVISIONING_KEY` — an upstream OpenRouter key with a
//! spend limit; `/api/admin/openrouter-keys` lists, changes and deletes those
//! upstream keys, mirrored to OpenRouter. The upstream key is made first and the
//! three records are written in one D1 batch, so a failure on either side leaves
//! nothing half made (a key made upstream whose records cannot be written is
//! deleted again).

use serde_json::{json, Map, Value};
use worker::{D1Database, Response};

use super::bodies::{Provision, UpdateUpstreamKey};
use super::error::ApiError;
use super::incoming::Incoming;
use super::keys::key_view;
use super::respond::{self, query, random_bytes, read_json, Call};
use super::users::user_view;
use crate::domain::keys::{self, Permissions};
use crate::domain::money::{micros_to_usd, nearest_micros};
use crate::domain::provisioning::{
    cents_to_usd, usd_to_cents, validate_limit_cents, validate_limit_reset, DEFAULT_LIMIT_CENTS,
};
use crate::domain::time::to_iso;
use crate::domain::users::{validate_email, validate_locale, validate_optional_text, validate_text, MAX_NAME_LEN};
use crate::domain::{ids, InvalidRequest};
use crate::env;
use crate::log::{self, Level};
use crate::providers::key_management::{KeyApi, UpstreamKey, PAGE};
use crate::providers::openai_compat::ProviderError;
use crate::store;
use crate::store::keys::KeyRow;
use crate::store::openrouter_keys::OpenRouterKeyRow;
use crate::store::users::UserRow;
use crate::store::StoreError;

/// The key-management API, when this tenant has a provisioning key.
pub fn key_api(config: &env::Config) -> Option<KeyApi<'_>> {
    config.provisioning_key.as_ref().map(|k| KeyApi {
        base_url: &config.key_api_base_url,
        provisioning_key: k.expose(),
        timeout_ms: config.request_timeout_ms,
    })
}

fn upstream_failed(what: &str) -> impl FnOnce(crate::providers::openai_compat::ProviderError) -> ApiError + '_ {
    use crate::providers::openai_compat::ProviderError as P;
    move |e| {
        let detail = match &e {
            P::Rejected { status, message }
            | P::CredentialsRejected { status, message }
            | P::Unavailable { status, message } => format!("status {status}: {message}"),
            other => other.to_string(),
        };
        ApiError::UpstreamFailed(format!("OpenRouter could not {what} ({detail})"))
    }
}

pub async fn provision(mut req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let db = super::users::db(call)?;
    let body: Provision = read_json(&mut req).await?;
    let now_ms = call.now_ms();
    let now = to_iso(now_ms);
    let user = UserRow {
        id: ids::uuid_v4(random_bytes()),
        email: validate_email(&body.email)?,
        name: validate_text("name", &body.name, MAX_NAME_LEN)?,
        email_verified: 0,
        image: None,
        locale: validate_locale(body.locale.as_deref().unwrap_or("en"))?,
        utm_source: validate_optional_text("utm_source", body.utm_source.as_deref(), 200)?,
        ip: None,
        created_at: now.clone(),
        updated_at: now.clone(),
        deleted_at: None,
    };
    let limit_cents = validate_limit_cents(body.limit.unwrap_or(DEFAULT_LIMIT_CENTS))?;
    let limit_reset = validate_limit_reset(body.limit_reset.flatten().as_deref())?;
    if store::users::email_taken(&db, &user.email).await? {
        return Err(ApiError::Conflict(format!("a user with the email {} already exists", user.email)));
    }
    let minted = keys::mint(random_bytes());
    let key = KeyRow::new(
        ids::uuid_v4(random_bytes()),
        user.id.clone(),
        format!("{} (provisioned)", user.name),
        &minted,
        Permissions::DEFAULT.to_stored(),
        &now,
    );

    // 1. The upstream key, when this tenant provisions them: nothing is written before it exists.
    let config = call.config.clone();
    let api = key_api(&config);
    let upstream = match &api {
        Some(api) => {
            let name = format!("tollgate {}", user.email);
            let (made, text) = api
                .create(&name, Some(cents_to_usd(limit_cents)), limit_reset.as_deref())
                .await
                .map_err(upstream_failed("create the upstream key"))?;
            let row = OpenRouterKeyRow {
                id: ids::uuid_v4(random_bytes()),
                user_id: user.id.clone(),
                upstream_hash: made.hash,
                key_hash: keys::hash(&text),
                key_prefix: text.chars().take(12).collect(),
                name,
                limit_cents: Some(limit_cents),
                limit_reset: limit_reset.clone(),
                disabled: 0,
                usage_micros: 0,
                synced_at: None,
                created_at: now.clone(),
                updated_at: now.clone(),
            };
            Some((row, text))
        }
        None => None,
    };

    // 2. The three records, all or nothing.
    let written = async {
        let mut batch = vec![store::users::insert_statement(&db, &user)?, store::keys::insert_statement(&db, &key)?];
        if let Some((row, _)) = &upstream {
            batch.push(store::openrouter_keys::insert_statement(&db, row)?);
        }
        db.batch(batch).await.map(|_| ())
    }
    .await;
    if let Err(e) = written {
        if let (Some(api), Some((row, _))) = (&api, &upstream) {
            if let Err(cleanup) = api.delete(&row.upstream_hash).await {
                let line = json!({"job": "provision", "upstream_hash": row.upstream_hash, "detail": format!("could not delete the orphaned upstream key: {cleanup}")});
                log::after_response(&call.ctx, call.config.log_level, Level::Error, line);
            }
        }
        return Err(match StoreError::from(e) {
            StoreError::Conflict(_) => {
                ApiError::Conflict(format!("a user with the email {} already exists", user.email))
            }
            other => other.into(),
        });
    }

    if let Err(e) =
        crate::billing::client::Account::of(&call.env, &key.user_id).put_key(super::keys::key_state(&key)).await
    {
        crate::log::job_error("put_key", &e);
    }
    let mut key_json = key_view(&key, now_ms);
    key_json["key"] = Value::String(minted.text);
    let upstream_json = upstream.map(|(row, text)| {
        let mut v = upstream_view(&row);
        v["key"] = Value::String(text);
        v
    });
    respond::data(201, &json!({ "user": user_view(&user), "key": key_json, "openrouter_key": upstream_json }))
}

/// An upstream key as the API shows it: never its text or hash.
fn upstream_view(r: &OpenRouterKeyRow) -> Value {
    json!({
        "id": r.id, "user_id": r.user_id, "name": r.name, "key_prefix": r.key_prefix,
        "upstream_hash": r.upstream_hash, "limit": r.limit_cents, "limit_reset": r.limit_reset,
        "disabled": r.disabled != 0, "usage": micros_to_usd(r.usage_micros),
        "synced_at": r.synced_at, "created_at": r.created_at, "updated_at": r.updated_at,
    })
}

pub async fn list_upstream_keys(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let db = super::users::db(call)?;
    let user_id = query(&req).get("user_id").cloned().filter(|u| !u.is_empty());
    let rows = store::openrouter_keys::list(&db, user_id.as_deref()).await?;
    respond::data(200, &rows.iter().map(upstream_view).collect::<Vec<_>>())
}

fn need_key_api(config: &env::Config) -> Result<KeyApi<'_>, ApiError> {
    key_api(config).ok_or_else(|| {
        InvalidRequest::new("OPENROUTER_PROVISIONING_KEY is not set: upstream keys cannot be managed").into()
    })
}

async fn upstream_key(db: &D1Database, id: &str) -> Result<OpenRouterKeyRow, ApiError> {
    store::openrouter_keys::get(db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("upstream key {id} not found")))
}

/// Changes OpenRouter first; the record follows only once OpenRouter agreed.
pub async fn update_upstream_key(mut req: Incoming, call: &Call, id: &str) -> Result<Response, ApiError> {
    let db = super::users::db(call)?;
    let body: UpdateUpstreamKey = read_json(&mut req).await?;
    let mut row = upstream_key(&db, id).await?;
    let mut patch = Map::new();
    if let Some(limit) = body.limit {
        let limit = limit.map(validate_limit_cents).transpose()?;
        patch.insert("limit".into(), limit.map(cents_to_usd).into());
    }
    if let Some(reset) = body.limit_reset {
        patch.insert("limit_reset".into(), validate_limit_reset(reset.as_deref())?.into());
    }
    if let Some(disabled) = body.disabled {
        patch.insert("disabled".into(), disabled.into());
    }
    if patch.is_empty() {
        return Err(InvalidRequest::new("nothing to change: send limit, limit_reset or disabled").into());
    }
    let config = call.config.clone();
    let now = to_iso(call.now_ms());
    let answer = need_key_api(&config)?
        .update(&row.upstream_hash, Value::Object(patch))
        .await
        .map_err(upstream_failed("change the upstream key"))?;
    mirror(&mut row, &answer, &now);
    store::openrouter_keys::update(&db, &row).await?;
    respond::data(200, &upstream_view(&row))
}

pub async fn delete_upstream_key(call: &Call, id: &str) -> Result<Response, ApiError> {
    let db = super::users::db(call)?;
    let row = upstream_key(&db, id).await?;
    let config = call.config.clone();
    need_key_api(&config)?.delete(&row.upstream_hash).await.map_err(upstream_failed("delete the upstream key"))?;
    store::openrouter_keys::delete(&db, id).await?;
    respond::data(200, &json!({ "id": id, "deleted": true }))
}

/// What deleting a user did to the upstream keys made for it.
pub struct UpstreamKeysStopped {
    pub disabled: usize,
    /// Left as they are: no `OPENROUTER_PROVISIONING_KEY` to stop them with (logged).
    pub left_live: usize,
}

/// Disables at OpenRouter every upstream key made for `user_id` (a deleted user's key would go on spending
/// the tenant's credits there): each one, whatever its record says (the record only mirrors OpenRouter,
/// where it may have been enabled since), its record following OpenRouter's answer; one OpenRouter no
/// longer has is forgotten. Fails (502) on the first key OpenRouter does not disable, so the caller can
/// stop and be repeated. Without a provisioning key nothing can stop them: they are left, and logged.
pub async fn disable_upstream_keys_of(
    call: &Call,
    db: &D1Database,
    user_id: &str,
) -> Result<UpstreamKeysStopped, ApiError> {
    let rows = store::openrouter_keys::list(db, Some(user_id)).await?;
    let config = call.config.clone();
    let Some(api) = key_api(&config).filter(|_| !rows.is_empty()) else {
        if !rows.is_empty() {
            let line = json!({ "event": "upstream_keys_left_live", "user_id": user_id, "keys": rows.len(),
                "why": "OPENROUTER_PROVISIONING_KEY is not set: disable them at OpenRouter" });
            log::after_response(&call.ctx, call.config.log_level, Level::Warn, line);
        }
        return Ok(UpstreamKeysStopped { disabled: 0, left_live: rows.len() });
    };
    for mut row in rows.iter().cloned() {
        match api.update(&row.upstream_hash, json!({ "disabled": true })).await {
            Ok(answer) => {
                mirror(&mut row, &answer, &to_iso(call.now_ms()));
                store::openrouter_keys::update(db, &row).await?;
            }
            Err(ProviderError::Rejected { status: 404, .. }) => store::openrouter_keys::delete(db, &row.id).await?,
            Err(e) => return Err(upstream_failed("disable the user's upstream key")(e)),
        }
    }
    Ok(UpstreamKeysStopped { disabled: rows.len(), left_live: 0 })
}

/// Copies what OpenRouter says of a key into its record.
fn mirror(row: &mut OpenRouterKeyRow, key: &UpstreamKey, now: &str) {
    row.limit_cents = key.limit.map(usd_to_cents);
    row.limit_reset = key.limit_reset.clone();
    row.disabled = i64::from(key.disabled);
    row.usage_micros = nearest_micros(key.usage).unwrap_or(0);
    row.synced_at = Some(now.to_string());
    row.updated_at = now.to_string();
}

/// The cron job: mirrors every upstream key's usage, limit and state from OpenRouter, a page of its
/// key list at a time: the first page here, each further one in a `JOBS` message of its own (`fan_out`),
/// which hands on the next, so any number of keys fits the limits of one invocation.
pub async fn mirror_upstream_keys(env: &worker::Env) -> Result<Value, ApiError> {
    if key_api(&env::Config::get(env)).is_none() {
        return Ok(json!({ "skipped": "no provisioning key" }));
    }
    let (mirrored, more) = mirror_page(env, 0).await?;
    if more {
        crate::fan_out::enqueue(env, crate::fan_out::Job::MirrorPage { offset: PAGE }).await?;
    }
    Ok(json!({ "keys": mirrored, "fanned_out": more }))
}

/// One page of OpenRouter's key list from `offset`, mirrored into the records it matches (one D1 batch):
/// how many, and whether another page may follow.
pub async fn mirror_page(env: &worker::Env, offset: usize) -> Result<(usize, bool), ApiError> {
    let config = env::Config::get(env);
    let Some(api) = key_api(&config) else { return Ok((0, false)) };
    let db = env::db(env).map_err(ApiError::internal)?;
    let upstream = api.page(offset).await.map_err(upstream_failed("list the upstream keys"))?;
    let hashes: Vec<&str> = upstream.iter().map(|k| k.hash.as_str()).collect();
    let now = to_iso(js_sys::Date::now() as i64);
    let mut updates = Vec::new();
    for mut row in store::openrouter_keys::with_hashes(&db, &hashes).await? {
        if let Some(key) = upstream.iter().find(|k| k.hash == row.upstream_hash) {
            mirror(&mut row, key, &now);
            updates.push(store::openrouter_keys::update_statement(&db, &row).map_err(ApiError::internal)?);
        }
    }
    let mirrored = updates.len();
    if !updates.is_empty() {
        db.batch(updates).await.map_err(ApiError::internal)?;
    }
    Ok((mirrored, upstream.len() == PAGE))
}
