//! A key's allowlists (`domain::allow`), its own and its organization's, applied to a request before
//! anything is reserved: every model the request names must be allowed, and only routes served by an
//! allowed provider are tried. The operator's own requests are not bound.

use super::auth::Caller;
use super::error::ApiError;
use super::respond::Call;
use crate::domain::allow::Allowlist;
use crate::domain::routing::Attempt;
use crate::env;

/// The lists that bind the caller: its key's, and its organization's (none for the operator).
async fn lists(call: &Call, caller: &Caller) -> Result<Vec<Allowlist>, ApiError> {
    let Caller::Key(key) = caller else { return Ok(Vec::new()) };
    let mut lists = vec![key.allowed.clone()];
    if let Some(org_id) = &key.org_id {
        let db = env::db(&call.env).map_err(ApiError::internal)?;
        if let Some(org) = crate::cache::orgs::get(&db, org_id, call.now_ms()).await? {
            lists.push(org.allowlist());
        }
    }
    lists.retain(|l| !l.is_open());
    Ok(lists)
}

fn refused(model: &str) -> ApiError {
    ApiError::ModelNotAllowed(format!("this key may not use the model {model}"))
}

/// Refuses (403 `model_not_allowed`, naming it) a model the caller's lists do not allow.
pub async fn check_models<'a>(
    call: &Call,
    caller: &Caller,
    models: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Allowlist>, ApiError> {
    let lists = lists(call, caller).await?;
    for model in models {
        if !lists.iter().all(|l| l.allows_model(model)) {
            return Err(refused(model));
        }
    }
    Ok(lists)
}

/// `models` checked as `check_models` does, and `plan` kept to the attempts an allowed provider serves
/// (none left: 403 naming the model).
pub async fn check_plan<'a>(
    call: &Call,
    caller: &Caller,
    models: impl IntoIterator<Item = &'a str>,
    mut plan: Vec<Attempt>,
) -> Result<Vec<Attempt>, ApiError> {
    let lists = check_models(call, caller, models).await?;
    let first = plan.first().map(|a| a.model.clone()).unwrap_or_default();
    plan.retain(|a| lists.iter().all(|l| l.allows_provider(a.route.provider.as_str())));
    if plan.is_empty() {
        return Err(ApiError::ModelNotAllowed(format!(
            "this key may not use the providers that serve the model {first}"
        )));
    }
    Ok(plan)
}
