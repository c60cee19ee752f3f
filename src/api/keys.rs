//! Keys: /api/keys[/{id}[/rotate]], /api/token and /api/v1/key.
//! A caller without `admin` only ever sees its own user's keys; another
//! user's key answers 404, as if it did not exist.

use serde_json::{json, Value};
use worker::{D1Database, Response};

use super::auth::Caller;
use super::bodies::{CreateKey, CreateToken, RotateKey, UpdateKey};
use super::error::ApiError;
use super::incoming::Incoming;
use super::respond::{self, query, random_bytes, read_json, Call};
use crate::billing::client::Account;
use crate::cache::keys as key_cache;
use crate::domain::allow;
use crate::domain::keys::{
    self, parse_permissions, validate_expiry, validate_limit, validate_limit_reset, Climb, KeyState, KeyTerms,
    Permissions, Status, MAX_GRACE_SECONDS,
};
use crate::domain::money::micros_to_usd;
use crate::domain::paging::Page;
use crate::domain::rates::{self, RateLimits};
use crate::domain::request_log;
use crate::domain::time::{parse_iso, to_iso};
use crate::domain::users::{validate_optional_text, validate_text, MAX_NAME_LEN};
use crate::domain::windows::Reset;
use crate::domain::{ids, InvalidRequest};
use crate::env;
use crate::store;
use crate::store::keys::{KeyFilter, KeyRow, Rotation};

fn db(call: &Call) -> Result<D1Database, ApiError> {
    env::db(&call.env).map_err(ApiError::internal)
}

pub async fn create_key(mut req: Incoming, call: &Call, caller: &Caller) -> Result<Response, ApiError> {
    let body: CreateKey = read_json(&mut req).await?;
    let user_id = caller.target_user(body.user_id.clone())?;
    mint_key(call, caller, user_id, body).await
}

/// POST /api/token: a key for the caller's own user.
pub async fn create_token(mut req: Incoming, call: &Call, caller: &Caller) -> Result<Response, ApiError> {
    let body: CreateToken = read_json(&mut req).await?;
    let Caller::Key(k) = &caller else {
        return Err(ApiError::bad_request("the operator has no user of its own: use POST /api/keys with `user_id`"));
    };
    let user_id = k.user_id.clone();
    // A token carries its maker's expiry and organization: it can do no more than its maker.
    let permissions = Permissions::from_stored(&k.permissions).for_token().to_list();
    let fields = CreateKey {
        name: body.name,
        description: None,
        permissions: Some(permissions.iter().map(|p| p.as_str().to_string()).collect()),
        expires_at: k.valid_until_ms.map(to_iso),
        limit: None,
        limit_reset: None,
        user_id: None,
        org_id: k.org_id.clone(),
        // The maker's own lists (`mint_key` would give an admin's key's token open ones).
        allowed_models: (!k.allowed.models.is_empty()).then(|| Value::from(k.allowed.models.clone())),
        allowed_providers: (!k.allowed.providers.is_empty()).then(|| Value::from(k.allowed.providers.clone())),
        rpm_limit: k.rates.rpm,
        tpm_limit: k.rates.tpm,
        end_user_budget: None,
        request_log_days: None,
    };
    mint_key(call, caller, user_id, fields).await
}

pub(super) async fn mint_key(
    call: &Call,
    caller: &Caller,
    user_id: String,
    body: CreateKey,
) -> Result<Response, ApiError> {
    let now_ms = call.now_ms();
    let permissions = body.permissions.as_deref().map_or(Ok(Permissions::DEFAULT), parse_permissions)?;
    let expires_at = body.expires_at.as_deref().map(|t| validate_expiry(t, now_ms)).transpose()?.map(to_iso);
    let limit_micros = body.limit.map(validate_limit).transpose()?;
    let limit_reset = body.limit_reset.as_deref().map(validate_limit_reset).transpose()?;
    let name = validate_text("name", &body.name, MAX_NAME_LEN)?;
    let description = validate_optional_text("description", body.description.as_deref(), 1000)?;
    // A key made by a key of an organization belongs to that organization. A key with a spend or
    // rate limit (its own, or the tenant's default it is held to) makes no keys: each would have limits
    // of its own, and together they would pass its own.
    let org_id = match holder(caller) {
        Some(h) if h.limit_micros.is_some() || !h.rates.or(call.config.rate_default).is_none() => {
            return Err(ApiError::forbidden(
                "a key with a spend or rate limit may not create keys (their limits would add up); ask an admin",
            ))
        }
        Some(h) => body.org_id.clone().or(h.org_id.clone()),
        None => body.org_id.clone(),
    };

    let minted = keys::mint(random_bytes());
    let now = to_iso(now_ms);
    let mut row = KeyRow::new(ids::uuid_v4(random_bytes()), user_id, name, &minted, permissions.to_stored(), &now);
    row.org_id = org_id;
    row.description = description;
    row.expires_at = expires_at;
    row.limit_micros = limit_micros;
    row.limit_reset = limit_reset;
    row.rpm_limit = rates::validate("rpm_limit", body.rpm_limit)?;
    row.tpm_limit = rates::validate("tpm_limit", body.tpm_limit)?;
    row.set_end_user_budget(body.end_user_budget.map(|b| b.validate("end_user_budget")).transpose()?);
    row.request_log_days = request_log::validate_days(body.request_log_days)?;
    // Which key made it, so a leaked key's keys are found and revoked with it.
    if let Caller::Key(k) = caller {
        row.created_by_key_id = Some(k.id.clone());
    }
    // Lists the body leaves out are the maker's own (an admin's: any).
    let inherited = holder(caller).map(|h| h.allowed).unwrap_or_default();
    let allowed =
        allow::apply(&inherited, body.allowed_models.as_ref().map(Some), body.allowed_providers.as_ref().map(Some))?;
    row.set_allowlist(&allowed);
    // Checked before anything is looked up, so a refusal says nothing about other organizations.
    if let Some(h) = holder(caller) {
        keys::within_holder(&h, &terms_of(&row), None, call.config.rate_default).map_err(forbidden)?;
    }
    let db = db(call)?;
    if store::users::get_live(&db, &row.user_id).await?.is_none() {
        return Err(ApiError::not_found(format!("user {} not found", row.user_id)));
    }
    if let Some(org_id) = &row.org_id {
        if store::orgs::get_live(&db, org_id).await?.is_none() {
            return Err(ApiError::not_found(format!("organization {org_id} not found")));
        }
    }
    if !store::keys::insert(&db, &row).await? {
        // Deleted since the checks above.
        return Err(ApiError::not_found(format!("user {} or its organization not found", row.user_id)));
    }
    // The account object learns the key (limit, window, expiry) before its secret is shown. Should that
    // call fail, the object uses the gateway's copy of the same record, so the key is still answered.
    if let Err(e) = Account::of(&call.env, &row.user_id).put_key(key_state(&row)).await {
        crate::log::job_error("put_key", &e);
    }
    let mut view = key_view(&row, now_ms);
    view["key"] = Value::String(minted.text);
    respond::data(201, &view)
}

pub async fn list_keys(req: Incoming, call: &Call, caller: &Caller) -> Result<Response, ApiError> {
    let q = query(&req);
    let page = Page::parse(q.get("page").map(String::as_str), q.get("limit").map(String::as_str), "limit")?;
    let status = q.get("status").map(String::as_str).filter(|s| !s.is_empty());
    if let Some(s) = status {
        Status::parse(s).ok_or_else(|| {
            InvalidRequest::param(format!("`status` is `{s}`; expected active, disabled or expired"), "status")
        })?;
    }
    // A key without `admin` lists its own user's keys in its own organization only.
    let own = match caller {
        Caller::Key(k) if !caller.is_admin() => Some(k),
        _ => None,
    };
    let now_ms = call.now_ms();
    let now_iso = to_iso(now_ms);
    let asked_org = q.get("org_id").map(String::as_str).filter(|s| !s.is_empty());
    let filter = KeyFilter {
        user_id: own.map(|k| k.user_id.as_str()).or(q.get("user_id").map(String::as_str).filter(|s| !s.is_empty())),
        org_id: own.map_or(asked_org, |k| k.org_id.as_deref()),
        no_org: own.is_some_and(|k| k.org_id.is_none()),
        status,
        search: q.get("search").map(|s| s.trim()).filter(|s| !s.is_empty()),
        created_by: q.get("created_by").map(String::as_str).filter(|s| !s.is_empty()),
        now_iso: &now_iso,
        limit: page.size,
        offset: page.offset(),
    };
    let (rows, total) = store::keys::list(&db(call)?, &filter).await?;
    let data: Vec<Value> = rows.iter().map(|k| key_view(k, now_ms)).collect();
    respond::json(200, &json!({ "data": data, "page": page.page, "limit": page.size, "total": total }))
}

/// The key, if the caller may see it: an admin sees every key; a key without `admin` sees
/// its own user's keys in its own organization (404 otherwise, never 403).
pub(super) async fn visible_key(db: &D1Database, caller: &Caller, id: &str) -> Result<KeyRow, ApiError> {
    let not_found = || ApiError::not_found(format!("key {id} not found"));
    // A deleted user's (or organization's) keys are gone with it, though their rows stay.
    let row = store::keys::get_manageable(db, id).await?.ok_or_else(not_found)?;
    match caller {
        Caller::Key(k) if !caller.is_admin() && (k.user_id != row.user_id || k.org_id != row.org_id) => {
            Err(not_found())
        }
        _ => Ok(row),
    }
}

/// The terms of a caller without `admin` (its own key's), within which it manages keys; `None` for admins.
fn holder(caller: &Caller) -> Option<KeyTerms> {
    match caller {
        Caller::Key(k) if !caller.is_admin() => Some(KeyTerms {
            permissions: Permissions::from_stored(&k.permissions),
            org_id: k.org_id.clone(),
            limit_micros: k.limit_micros,
            limit_reset: k.limit_reset.as_deref().and_then(Reset::parse),
            expires_at_ms: k.valid_until_ms,
            allowed: k.allowed.clone(),
            rates: k.rates,
        }),
        _ => None,
    }
}

fn terms_of(row: &KeyRow) -> KeyTerms {
    KeyTerms {
        permissions: Permissions::from_stored(&row.permissions),
        org_id: row.org_id.clone(),
        limit_micros: row.limit_micros,
        limit_reset: row.limit_reset.as_deref().and_then(Reset::parse),
        expires_at_ms: row.expires_at.as_deref().and_then(parse_iso),
        allowed: row.allowlist(),
        rates: row.rates(),
    }
}

/// A key the caller sees but may not manage, or terms it may not give: 403.
fn forbidden(climb: Climb) -> ApiError {
    ApiError::forbidden(climb.to_string())
}

/// The key, if the caller may manage it (change, rotate, its end users' budgets): 404 when it may not see
/// it, 403 when it sees it but the key's terms are not all within the caller's own (a key with a limit or an
/// expiry does not disable, narrow or delete a sibling that has none).
pub(super) async fn managed_key(
    db: &D1Database,
    caller: &Caller,
    id: &str,
    rate_default: RateLimits,
) -> Result<KeyRow, ApiError> {
    let row = visible_key(db, caller, id).await?;
    within_caller(caller, &row, rate_default)?;
    Ok(row)
}

/// The key, if the caller may delete it: as `managed_key`, or a key the caller's own key made, whatever its
/// terms now (its maker narrowed since, say): taking it away widens nothing.
async fn revocable_key(
    db: &D1Database,
    caller: &Caller,
    id: &str,
    rate_default: RateLimits,
) -> Result<KeyRow, ApiError> {
    let row = visible_key(db, caller, id).await?;
    let made_by_caller = matches!(caller, Caller::Key(k) if row.created_by_key_id.as_deref() == Some(k.id.as_str()));
    if !made_by_caller {
        within_caller(caller, &row, rate_default)?;
    }
    Ok(row)
}

/// 403 unless the key's terms are all within the caller's own (an admin's: any).
fn within_caller(caller: &Caller, row: &KeyRow, rate_default: RateLimits) -> Result<(), ApiError> {
    match holder(caller) {
        Some(h) => keys::within_holder(&h, &terms_of(row), None, rate_default).map_err(forbidden),
        None => Ok(()),
    }
}

pub async fn get_key(call: &Call, caller: &Caller, id: &str) -> Result<Response, ApiError> {
    let row = visible_key(&db(call)?, caller, id).await?;
    respond::data(200, &key_view(&row, call.now_ms()))
}

/// Reads of a key a change is tried on before it answers 409: each write goes through only if the key is
/// still as that read found it.
const UPDATE_TRIES: usize = 3;

/// Changes a key: read, changed, written only if the key is still as it was read (else read again), so a
/// change made meanwhile (a revocation, a lowered limit) is never written over with what was read.
pub async fn update_key(mut req: Incoming, call: &Call, caller: &Caller, id: &str) -> Result<Response, ApiError> {
    let body: UpdateKey = read_json(&mut req).await?;
    let db = db(call)?;
    for _ in 0..UPDATE_TRIES {
        let read = managed_key(&db, caller, id, call.config.rate_default).await?;
        let read_version = read.updated_at.clone();
        let now_ms = call.now_ms();
        let mut row = apply_update(read, body.clone(), caller, now_ms, call.config.rate_default)?;
        slow_change(call, holder(caller).is_some()).await;
        let Some(version) = store::keys::update(&db, &row, &read_version).await? else { continue };
        row.updated_at = version;
        publish(call, std::slice::from_ref(&row)).await?;
        return respond::data(200, &key_view(&row, now_ms));
    }
    managed_key(&db, caller, id, call.config.rate_default).await?; // 404 should the key have been deleted meanwhile
    Err(ApiError::Conflict(format!("key {id} kept changing while this change was made: send it again")))
}

/// `FAULT_SLOW_KEY_CHANGE_MS` (tests only): a change by a key (of a key it holds, or of its organization)
/// waits between its read and its write, so a test can change the row in between.
pub(super) async fn slow_change(call: &Call, by_a_key: bool) {
    let slow_ms = call.config.faults.slow_key_change_ms;
    if slow_ms > 0 && by_a_key {
        worker::Delay::from(std::time::Duration::from_millis(slow_ms)).await;
    }
}

/// The key `row` with `body`'s changes, if `caller` may make them.
fn apply_update(
    mut row: KeyRow,
    body: UpdateKey,
    caller: &Caller,
    now_ms: i64,
    rate_default: RateLimits,
) -> Result<KeyRow, ApiError> {
    let before = terms_of(&row);
    if let Some(name) = body.name {
        row.name = validate_text("name", &name, MAX_NAME_LEN)?;
    }
    if let Some(description) = body.description {
        row.description = validate_optional_text("description", description.as_deref(), 1000)?;
    }
    if let Some(list) = body.permissions {
        row.permissions = parse_permissions(&list)?.to_stored();
    }
    if let Some(disabled) = body.disabled {
        if !disabled && row.disabled != 0 && holder(caller).is_some() {
            return Err(ApiError::forbidden("only an admin may enable a disabled key"));
        }
        row.disabled = i64::from(disabled);
    }
    if let Some(expires_at) = body.expires_at {
        row.expires_at = expires_at.as_deref().map(|t| validate_expiry(t, now_ms)).transpose()?.map(to_iso);
    }
    if let Some(limit) = body.limit {
        row.limit_micros = limit.map(validate_limit).transpose()?;
    }
    if let Some(reset) = body.limit_reset {
        row.limit_reset = reset.as_deref().map(validate_limit_reset).transpose()?;
    }
    let allowed = allow::apply(
        &row.allowlist(),
        body.allowed_models.as_ref().map(Option::as_ref),
        body.allowed_providers.as_ref().map(Option::as_ref),
    )?;
    row.set_allowlist(&allowed);
    if let Some(rpm) = body.rpm_limit {
        row.rpm_limit = rates::validate("rpm_limit", rpm)?;
    }
    if let Some(tpm) = body.tpm_limit {
        row.tpm_limit = rates::validate("tpm_limit", tpm)?;
    }
    if let Some(budget) = body.end_user_budget {
        row.set_end_user_budget(budget.map(|b| b.validate("end_user_budget")).transpose()?);
    }
    if let Some(days) = body.request_log_days {
        row.request_log_days = request_log::validate_days(days)?;
    }
    if let Some(h) = holder(caller) {
        keys::within_holder(&h, &terms_of(&row), Some(&before), rate_default).map_err(forbidden)?;
    }
    row.updated_at = to_iso(now_ms);
    Ok(row)
}

/// Soft delete: the key stops working at once; its history stays. A repeat answers the same
/// and tells the account object again (should an earlier attempt have failed on the way).
pub async fn delete_key(call: &Call, caller: &Caller, id: &str) -> Result<Response, ApiError> {
    let db = db(call)?;
    let row = match revocable_key(&db, caller, id, call.config.rate_default).await {
        Ok(_) => store::keys::soft_delete(&db, id, &to_iso(call.now_ms())).await?,
        Err(e) if e.status() == 404 => {
            let deleted = store::keys::get_deleted(&db, id).await?;
            let visible = deleted.filter(|row| match caller {
                Caller::Key(k) if !caller.is_admin() => k.user_id == row.user_id && k.org_id == row.org_id,
                _ => true,
            });
            if visible.is_none() {
                return Err(e);
            }
            visible
        }
        Err(e) => return Err(e),
    };
    let row = row.ok_or_else(|| ApiError::not_found(format!("key {id} not found")))?;
    publish(call, std::slice::from_ref(&row)).await?;
    respond::data(200, &json!({ "id": id, "deleted": true }))
}

/// A new secret for the same key. With an `Idempotency-Key`, the secret is
/// derived (HMAC under ADMIN_TOKEN) from the key, that header and the secret
/// rotated from, so a repeat returns the same secret and mints nothing.
pub async fn rotate_key(mut req: Incoming, call: &Call, caller: &Caller, id: &str) -> Result<Response, ApiError> {
    let idempotency_key = req.headers().get("idempotency-key").ok().flatten().filter(|k| !k.is_empty());
    if idempotency_key.as_ref().is_some_and(|k| k.len() > 200) {
        return Err(ApiError::bad_request("`Idempotency-Key` must be at most 200 characters"));
    }
    let bytes = respond::read_body(&mut req, 4096).await?;
    let body: RotateKey = if bytes.iter().all(u8::is_ascii_whitespace) {
        RotateKey::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?
    };
    let grace = body.grace_seconds.unwrap_or(0);
    if grace > MAX_GRACE_SECONDS {
        return Err(InvalidRequest::param(
            format!("`grace_seconds` must be at most {MAX_GRACE_SECONDS}"),
            "grace_seconds",
        )
        .into());
    }
    let db = db(call)?;
    // The secret is derived from who asks too: a replay returns a secret only to the caller that made it.
    let asker = match caller {
        Caller::Operator => "operator".to_string(),
        Caller::Key(k) => format!("key:{}", k.id),
    };
    let derive = |from_hash: &str| match &idempotency_key {
        Some(idem) => derived_secret(call, &asker, id, idem, from_hash).map(Some),
        None => Ok(None),
    };
    // As a change (`update_key`): written only if the key is still as it was read, else read again, so a
    // change made meanwhile (a lowered limit, new permissions) is neither undone in the account object
    // nor handed over with the secret unchecked. A rotation made meanwhile is not rotated over: the
    // secret it gave out must work (and the one rotated from keep its grace).
    let mut first_read: Option<String> = None;
    for _ in 0..UPDATE_TRIES {
        // A rotation hands over the key's secret: only of a key within the caller's own terms.
        let row = managed_key(&db, caller, id, call.config.rate_default).await?;
        // A repeat: the current secret is the one this request derived last time. The account object is
        // told again (should the first attempt's message have failed on the way: see `publish`).
        if let Some(previous) = row.previous_key_hash.as_deref() {
            if let Some(again) = derive(previous)?.filter(|k| k.hash == row.key_hash) {
                publish(call, std::slice::from_ref(&row)).await?;
                return respond::data(200, &rotation_view(&row, &again.text));
            }
        }
        if first_read.get_or_insert_with(|| row.key_hash.clone()) != &row.key_hash {
            return Err(ApiError::Conflict("the key was rotated meanwhile; try again".into()));
        }
        let minted = match derive(&row.key_hash)? {
            Some(k) => k,
            None => keys::mint(random_bytes()),
        };
        slow_change(call, holder(caller).is_some()).await;
        let now_ms = call.now_ms();
        let now = to_iso(now_ms);
        let previous_expires_at = to_iso(now_ms + (grace as i64) * 1000);
        let rotation = Rotation {
            id: &row.id,
            from_hash: &row.key_hash,
            read_version: &row.updated_at,
            new_hash: &minted.hash,
            new_prefix: &minted.display_prefix,
            previous_expires_at: &previous_expires_at,
            now_iso: &now,
        };
        let Some(stamped) = store::keys::rotate(&db, &rotation).await? else { continue };
        let rotated_row = KeyRow {
            key_hash: minted.hash.clone(),
            key_prefix: minted.display_prefix.clone(),
            previous_key_hash: Some(row.key_hash.clone()),
            rotated_at: Some(now),
            updated_at: stamped,
            previous_expires_at: Some(previous_expires_at),
            ..row
        };
        publish(call, std::slice::from_ref(&rotated_row)).await?;
        return respond::data(200, &rotation_view(&rotated_row, &minted.text));
    }
    managed_key(&db, caller, id, call.config.rate_default).await?; // 404 should the key have been deleted meanwhile
    Err(ApiError::Conflict(format!("key {id} kept changing while it was rotated: send the rotation again")))
}

/// The secret a rotation with an `Idempotency-Key` gives: an HMAC under a server secret of the key, who
/// asks, that header and the secret rotated from. The server secret is `ADMIN_TOKEN`, else the upstream
/// key (a tenant without a usable operator token still rotates idempotently: the console always asks so).
fn derived_secret(call: &Call, asker: &str, id: &str, idem: &str, from_hash: &str) -> Result<keys::NewKey, ApiError> {
    let config = &call.config;
    let server_secret = [&config.admin_token, &config.upstream_api_key, &config.anthropic_api_key]
        .into_iter()
        .chain([&config.openai_api_key, &config.google_api_key])
        .find_map(Option::as_ref)
        .ok_or_else(|| ApiError::bad_request("`Idempotency-Key` on rotation needs ADMIN_TOKEN to be configured"))?;
    let scoped = format!("{asker}\n{idem}");
    Ok(keys::mint(keys::rotation_secret(server_secret.expose(), id, &scoped, from_hash)))
}

/// How long a key that rotated itself may repeat that rotation with the secret it rotated from.
const OWN_REPLAY_MS: i64 = 10 * 60 * 1000;
/// The shortest `Idempotency-Key` such a repeat takes.
const MIN_REPEATABLE_KEY: usize = 16;

/// A key that rotated itself and lost the answer repeats the rotation with the secret it rotated from,
/// which no longer signs anything in (401) or changes nothing (rotated out). The same `Idempotency-Key`
/// (of 16 characters at least) within ten minutes, for a key still usable and not rotated since, gets the
/// same new secret: the one this repeat derives is the key's current one, so only who made the rotation
/// can get it; a repeat with another header counts as a failed authentication of its client. `None`: not
/// such a repeat, and the caller's 401 stands.
pub async fn replay_own_rotation(req: &Incoming, call: &Call, id: &str) -> Result<Option<Response>, ApiError> {
    // A header long enough not to be guessed (the console's are 39 characters; a UUID is 36).
    let idem = req.headers().get("idempotency-key").ok().flatten();
    let Some(idem) = idem.filter(|k| (MIN_REPEATABLE_KEY..=200).contains(&k.len())) else { return Ok(None) };
    if !super::auth::may_repeat(req, call) {
        return Ok(None);
    }
    let Some(presented) = super::auth::bearer(req).filter(|t| keys::looks_like_key(t)).map(|t| keys::hash(&t)) else {
        return Ok(None);
    };
    let db = db(call)?;
    let Some(row) = store::keys::get_live(&db, id).await? else { return Ok(None) };
    let now_ms = call.now_ms();
    let recent = row.rotated_at.as_deref().and_then(parse_iso).is_some_and(|at| now_ms - at <= OWN_REPLAY_MS);
    let usable = keys::Status::of(row.disabled != 0, row.expires_at.as_deref().and_then(parse_iso), now_ms)
        == keys::Status::Active;
    if !recent || !usable || row.previous_key_hash.as_deref() != Some(presented.as_str()) {
        return Ok(None);
    }
    let again = derived_secret(call, &format!("key:{}", row.id), id, &idem, &presented)?;
    if again.hash != row.key_hash {
        // The secret rotated from, with another header: a guess at the header, counted as one.
        super::auth::note_failed_repeat(req, call).await;
        return Ok(None);
    }
    if let Some(org_id) = &row.org_id {
        super::orgs::active(call, org_id).await?;
    }
    publish(call, std::slice::from_ref(&row)).await?;
    respond::data(200, &rotation_view(&row, &again.text)).map(Some)
}

fn rotation_view(row: &KeyRow, secret: &str) -> Value {
    json!({
        "id": row.id, "key": secret, "key_prefix": row.key_prefix,
        "rotated_at": row.rotated_at, "previous_expires_at": row.previous_expires_at,
    })
}

/// GET /api/v1/key: the calling key, OpenRouter-style, with its spend from the account object.
pub async fn current_key(call: &Call, caller: &Caller) -> Result<Response, ApiError> {
    let Caller::Key(k) = caller else {
        return Err(ApiError::bad_request("the operator token is not a key; call this with a key"));
    };
    let row = store::keys::get_live(&db(call)?, &k.id)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("this key has been deleted"))?;
    let summary = super::balance::summary(call, &row.user_id, Some(row.id.clone())).await?;
    let usage = summary.key.ok_or_else(|| ApiError::internal("the account object sent no key usage"))?;
    let limit = row.limit_micros.map(micros_to_usd);
    let remaining = row.limit_micros.map(|l| micros_to_usd((l - usage.in_window).max(0)));
    // The limits that apply: the key's own, else the tenant's default.
    let rates = row.rates().or(call.config.rate_default);
    respond::data(
        200,
        &json!({
            "id": row.id, "label": row.name, "limit": limit, "limit_reset": row.limit_reset, "limit_remaining": remaining,
            "usage": micros_to_usd(usage.total), "usage_daily": micros_to_usd(usage.daily),
            "usage_weekly": micros_to_usd(usage.weekly), "usage_monthly": micros_to_usd(usage.monthly),
            "limit_resets_at": usage.window_resets_ms.map(to_iso),
            "expires_at": row.expires_at, "permissions": Permissions::from_stored(&row.permissions).to_list(),
            "is_free_tier": false, "rpm_limit": rates.rpm, "tpm_limit": rates.tpm,
        }),
    )
}

/// After keys changed in D1: their cached records go, and each account's
/// Durable Object learns the new state, so the very next request anywhere
/// sees the change.
pub(super) async fn publish(call: &Call, rows: &[KeyRow]) -> Result<(), ApiError> {
    let kv = env::cache(&call.env).map_err(ApiError::internal)?;
    let hashes: Vec<&str> =
        rows.iter().flat_map(|k| std::iter::once(k.key_hash.as_str()).chain(k.previous_key_hash.as_deref())).collect();
    // `FAULT_STALE_KEY_ISOLATE`: this isolate keeps its view, as every other isolate does until its own expires.
    if call.config.faults.stale_key_isolate {
        key_cache::forget_in_kv(&kv, &hashes).await;
    } else {
        key_cache::forget(&kv, &hashes).await;
    }
    for row in rows {
        // Tried three times; should every try fail, the caller gets an error and repeats the change (a
        // repeated request sends the state again). The change is in D1 meanwhile: a reservation whose view
        // of the key has it carries its version, and the object, holding an older state, is sent D1's
        // (`meter::send_key_state`). Views cached elsewhere may not have it yet: hence the error.
        let account = Account::of(&call.env, &row.user_id);
        tell_three_times("the key's account object", || account.put_key(key_state(row))).await?;
    }
    Ok(())
}

/// Sends a change to the object that decides on it: tried three times, 100 ms then 200 ms apart; should every
/// try fail, the caller gets a 500 and repeats the change (D1 has it meanwhile).
pub(super) async fn tell_three_times<F, Fut>(object: &str, send: F) -> Result<(), ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut tries = 0;
    while let Err(e) = send().await {
        tries += 1;
        if tries == 3 {
            return Err(ApiError::internal(format!("{object} did not take the change: {e}")));
        }
        worker::Delay::from(std::time::Duration::from_millis(100 * tries)).await;
    }
    Ok(())
}

pub(super) fn key_state(row: &KeyRow) -> KeyState {
    KeyState {
        key_id: row.id.clone(),
        hash: row.key_hash.clone(),
        previous_hash: row.previous_key_hash.clone(),
        previous_until_ms: row.previous_expires_at.as_deref().and_then(parse_iso),
        expires_at_ms: row.expires_at.as_deref().and_then(parse_iso),
        disabled: row.disabled != 0,
        deleted: row.deleted_at.is_some(),
        limit_micros: row.limit_micros,
        limit_reset: row.limit_reset.as_deref().and_then(Reset::parse),
        permissions: Some(row.permissions.clone()),
        version: row.version(),
        rates: row.rates(),
        end_user_budget: row.end_user_budget(),
    }
}

/// A key as the API shows it: never the text, never the hash.
pub(super) fn key_view(k: &KeyRow, now_ms: i64) -> Value {
    let allowed = k.allowlist();
    let status = Status::of(k.disabled != 0, k.expires_at.as_deref().and_then(parse_iso), now_ms);
    json!({
        "id": k.id, "key_prefix": k.key_prefix, "name": k.name, "description": k.description,
        "user_id": k.user_id, "org_id": k.org_id,
        "permissions": Permissions::from_stored(&k.permissions).to_list(),
        "expires_at": k.expires_at, "limit": k.limit_micros.map(micros_to_usd), "limit_reset": k.limit_reset,
        "allowed_models": allowed.models, "allowed_providers": allowed.providers,
        "rpm_limit": k.rpm_limit, "tpm_limit": k.tpm_limit, "end_user_budget": k.end_user_budget().map(|b| b.view()),
        "request_log_days": k.request_log_days,
        "disabled": k.disabled != 0, "status": status.as_str(), "rotated_at": k.rotated_at,
        "last_used_at": k.last_used_at, "created_at": k.created_at, "updated_at": k.updated_at,
        "created_by": k.created_by_key_id,
    })
}
