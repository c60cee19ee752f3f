//! Organizations (admin): /api/orgs[/{id}[/keys]].

use serde_json::{json, Value};
use worker::{D1Database, Response};

use super::auth::Caller;
use super::bodies::CreateKey;
use super::bodies::{CreateOrg, UpdateOrg};
use super::error::ApiError;
use super::incoming::Incoming;
use super::keys::mint_key;
use super::respond::{self, query, random_bytes, read_json, Call};
use crate::billing::client::Org;
use crate::domain::allow::{self, Allowlist};
use crate::domain::ids;
use crate::domain::money::micros_to_usd;
use crate::domain::orgs::validate_status;
use crate::domain::paging::Page;
use crate::domain::time::to_iso;
use crate::domain::users::{validate_optional_text, validate_text, MAX_NAME_LEN};
use crate::domain::InvalidRequest;
use crate::env;
use crate::store::orgs::OrgRow;
use crate::store::{self, StoreError};

fn db(call: &Call) -> Result<D1Database, ApiError> {
    env::db(&call.env).map_err(ApiError::internal)
}

fn name_conflict(name: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::Conflict(_) => ApiError::Conflict(format!("an organization named {name:?} already exists")),
        other => other.into(),
    }
}

async fn check_admin_user(db: &D1Database, user_id: Option<&str>) -> Result<(), ApiError> {
    if let Some(id) = user_id {
        if store::users::get_live(db, id).await?.is_none() {
            return Err(InvalidRequest::param(format!("`admin_user_id`: user {id} not found"), "admin_user_id").into());
        }
    }
    Ok(())
}

pub async fn create_org(mut req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let db = db(call)?;
    let body: CreateOrg = read_json(&mut req).await?;
    let limits = body.limits.validate()?;
    let allowed =
        allow::apply(&Allowlist::default(), Some(body.allowed_models.as_ref()), Some(body.allowed_providers.as_ref()))?;
    check_admin_user(&db, body.admin_user_id.as_deref()).await?;
    let now = to_iso(call.now_ms());
    let mut org = OrgRow {
        id: ids::uuid_v4(random_bytes()),
        name: validate_text("name", &body.name, MAX_NAME_LEN)?,
        description: validate_optional_text("description", body.description.as_deref(), 1000)?,
        admin_user_id: body.admin_user_id,
        status: validate_status(body.status.as_deref().unwrap_or("active"))?,
        monthly_requests: limits.monthly_requests,
        monthly_tokens: limits.monthly_tokens,
        monthly_cost_micros: limits.monthly_cost_micros,
        created_at: now.clone(),
        updated_at: now,
        deleted_at: None,
        allowed_models: None,
        allowed_providers: None,
    };
    org.set_allowlist(&allowed);
    store::orgs::insert(&db, &org).await.map_err(name_conflict(&org.name))?;
    respond::data(201, &org_view(&org))
}

pub async fn list_orgs(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let db = db(call)?;
    let q = query(&req);
    let page = Page::parse(q.get("page").map(String::as_str), q.get("page_size").map(String::as_str), "page_size")?;
    let (rows, total) = store::orgs::list(&db, page.size, page.offset()).await?;
    respond::json(
        200,
        &json!({ "data": rows.iter().map(org_view).collect::<Vec<_>>(), "page": page.page, "page_size": page.size, "total": total }),
    )
}

/// A key's organization, while it may be used (memory, 30 s: security.md): a deleted one is 401, one not
/// `active` 403, on every route its keys call.
pub async fn active(call: &Call, org_id: &str) -> Result<OrgRow, ApiError> {
    let db = db(call)?;
    let Some(org) = crate::cache::orgs::get(&db, org_id, call.now_ms()).await? else {
        return Err(ApiError::unauthenticated("this key's organization has been deleted"));
    };
    if org.status != "active" {
        return Err(ApiError::forbidden(format!("the organization {} is {}", org.name, org.status)));
    }
    Ok(org)
}

async fn live_org(db: &D1Database, id: &str) -> Result<OrgRow, ApiError> {
    store::orgs::get_live(db, id).await?.ok_or_else(|| ApiError::not_found(format!("organization {id} not found")))
}

pub async fn get_org(call: &Call, id: &str) -> Result<Response, ApiError> {
    let db = db(call)?;
    respond::data(200, &org_view(&live_org(&db, id).await?))
}

/// A key of the organization may not suspend or delete it: its keys are refused once it is not active, so
/// the caller would lock itself (and, were every admin key there, the tenant) out.
fn refuse_own(caller: &Caller, id: &str, what: &str) -> Result<(), InvalidRequest> {
    match caller {
        Caller::Key(key) if key.org_id.as_deref() == Some(id) => Err(InvalidRequest::new(format!(
            "a key of this organization cannot {what} it (its keys would be refused from then on): use the operator token or an admin key outside it"
        ))),
        _ => Ok(()),
    }
}

pub async fn update_org(mut req: Incoming, call: &Call, caller: &Caller, id: &str) -> Result<Response, ApiError> {
    let db = db(call)?;
    let body: UpdateOrg = read_json(&mut req).await?;
    if body.status.as_deref().is_some_and(|s| s != "active") {
        refuse_own(caller, id, "suspend").map_err(|e| InvalidRequest { param: Some("status".into()), ..e })?;
    }
    if let Some(admin_user_id) = &body.admin_user_id {
        check_admin_user(&db, admin_user_id.as_deref()).await?;
    }
    // Written only if the organization is still as it was read (else read again), so a change made
    // meanwhile (a suspension, new limits) is never written over with what was read.
    for _ in 0..UPDATE_TRIES {
        let read = live_org(&db, id).await?;
        let version = read.updated_at.clone();
        let mut org = changed(read, &body)?;
        super::keys::slow_change(call, matches!(caller, Caller::Key(_))).await;
        org.updated_at = to_iso(call.now_ms());
        let Some(stamped) = store::orgs::update(&db, &org, &version).await.map_err(name_conflict(&org.name))? else {
            continue;
        };
        org.updated_at = stamped;
        forget(call, &org.id);
        publish(call, &org).await?;
        return respond::data(200, &org_view(&org));
    }
    live_org(&db, id).await?; // 404 should it have been deleted meanwhile
    Err(ApiError::Conflict(format!("organization {id} kept changing while this change was made: send it again")))
}

/// This isolate reads the organization again (other isolates within their cache's 30 s). `FAULT_STALE_ORG_CACHE`
/// keeps this isolate's copy, as another isolate's would be kept (tests/orgs.test.mjs).
pub(super) fn forget(call: &Call, id: &str) {
    if !call.config.faults.stale_org_cache {
        crate::cache::orgs::forget(id);
    }
}

/// Tells the organization's object its new state, so reservations from isolates whose cache still holds the
/// old row are decided on it at once. Tried three times; should every try fail, the caller gets an error and
/// repeats the change (the row is changed meanwhile: this isolate's reservations carry its newer version).
async fn publish(call: &Call, org: &OrgRow) -> Result<(), ApiError> {
    let object = Org::of(&call.env, &org.id);
    super::keys::tell_three_times("the organization's object", || object.put(org.state())).await
}

/// Reads of an organization a change is tried on before it answers 409.
const UPDATE_TRIES: usize = 3;

/// The organization `org` with `body`'s changes.
fn changed(mut org: OrgRow, body: &UpdateOrg) -> Result<OrgRow, ApiError> {
    if let Some(name) = &body.name {
        org.name = validate_text("name", name, MAX_NAME_LEN)?;
    }
    if let Some(description) = &body.description {
        org.description = validate_optional_text("description", description.as_deref(), 1000)?;
    }
    if let Some(admin_user_id) = &body.admin_user_id {
        org.admin_user_id = admin_user_id.clone();
    }
    if let Some(status) = &body.status {
        org.status = validate_status(status)?;
    }
    if let Some(limits) = &body.limits {
        let l = limits.validate()?;
        (org.monthly_requests, org.monthly_tokens, org.monthly_cost_micros) =
            (l.monthly_requests, l.monthly_tokens, l.monthly_cost_micros);
    }
    let allowed = allow::apply(
        &org.allowlist(),
        body.allowed_models.as_ref().map(Option::as_ref),
        body.allowed_providers.as_ref().map(Option::as_ref),
    )?;
    org.set_allowlist(&allowed);
    Ok(org)
}

/// Soft delete: the organization's keys are disabled at once.
pub async fn delete_org(call: &Call, caller: &Caller, id: &str) -> Result<Response, ApiError> {
    refuse_own(caller, id, "delete")?;
    let db = db(call)?;
    let now = to_iso(call.now_ms());
    if !store::orgs::soft_delete(&db, id, &now).await? {
        return Err(ApiError::not_found(format!("organization {id} not found")));
    }
    forget(call, id);
    let keys = store::keys::disable_for_org(&db, id, &now).await?;
    super::keys::publish(call, &keys).await?;
    respond::data(200, &json!({ "id": id, "deleted": true, "keys_disabled": keys.len() }))
}

/// POST /api/orgs/{id}/keys: a key that belongs to the organization (`user_id` required).
pub async fn create_org_key(mut req: Incoming, call: &Call, caller: &Caller, id: &str) -> Result<Response, ApiError> {
    let db = db(call)?;
    let mut body: CreateKey = read_json(&mut req).await?;
    live_org(&db, id).await?;
    let user_id = body
        .user_id
        .take()
        .ok_or_else(|| InvalidRequest::param("`user_id` is required for an organization's key", "user_id"))?;
    body.org_id = Some(id.to_string());
    mint_key(call, caller, user_id, body).await
}

fn org_view(o: &OrgRow) -> Value {
    let allowed = o.allowlist();
    json!({
        "id": o.id, "name": o.name, "description": o.description, "admin_user_id": o.admin_user_id, "status": o.status,
        "limits": {
            "monthly_requests": o.monthly_requests, "monthly_tokens": o.monthly_tokens,
            "monthly_cost": o.monthly_cost_micros.map(micros_to_usd),
        },
        "allowed_models": allowed.models, "allowed_providers": allowed.providers,
        "created_at": o.created_at, "updated_at": o.updated_at,
    })
}
