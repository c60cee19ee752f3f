//! Route pins (admin): GET /api/admin/routes, PUT and DELETE /api/admin/routes/{model},
//! and PUT /api/admin/routes with the model in the body.
//! A pin rides on the model's price row, so it reaches the hot path through
//! the price cache: the next request after a change follows it.

use serde_json::{json, Value};
use worker::Response;

use super::bodies::PutRoute;
use super::error::ApiError;
use super::incoming::Incoming;
use super::respond::{self, read_json, Call};
use crate::cache::prices as price_cache;
use crate::domain::routing::{self, Pin, Provider};
use crate::domain::time::to_iso;
use crate::domain::users::validate_optional_text;
use crate::domain::InvalidRequest;
use crate::env;
use crate::store::prices::{self, PriceRow};

/// Each priced model's route: its pin if it has one, else what the default rule picks.
fn view(row: &PriceRow, direct: &[Provider]) -> Value {
    let pin = row.pin();
    let route = routing::route(&row.model_name, pin.as_ref(), direct);
    json!({
        "model": row.model_name,
        "provider": route.provider.as_str(),
        "native_model": route.native_model,
        "fallback_to_openrouter": route.fallback_to_openrouter,
        "pinned": pin.is_some(),
        "updated_at": row.route_updated_at,
    })
}

pub async fn list_routes(call: &Call) -> Result<Response, ApiError> {
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    let direct = call.config.direct_providers();
    let data: Vec<Value> = prices::all(&db).await?.iter().map(|r| view(r, &direct)).collect();
    let direct: Vec<&str> = direct.iter().map(|p| p.as_str()).collect();
    respond::json(200, &json!({ "data": data, "direct_providers": direct }))
}

/// `in_path`: the model named by the path; `None` for the body form, whose body must name it.
pub async fn put_route(mut req: Incoming, call: &Call, in_path: Option<String>) -> Result<Response, ApiError> {
    let body: PutRoute = read_json(&mut req).await?;
    let model = match (in_path, &body.model) {
        (Some(path), Some(named)) if &path != named => {
            return Err(InvalidRequest::param("`model` differs from the model in the path", "model").into())
        }
        (Some(path), _) => crate::domain::users::validate_text("model", &path, 256)?,
        (None, Some(named)) => crate::domain::users::validate_text("model", named, 256)?,
        (None, None) => return Err(InvalidRequest::param("`model` is required", "model").into()),
    };
    let model = model.as_str();
    let provider = Provider::parse(&body.provider).ok_or_else(|| {
        InvalidRequest::param("`provider` must be one of openrouter, openai, anthropic, google", "provider")
    })?;
    let mut configured = call.config.direct_providers();
    if call.config.upstream_api_key.is_some() {
        configured.push(Provider::OpenRouter);
    }
    if !configured.contains(&provider) {
        return Err(InvalidRequest::param(
            format!("this tenant has no key for {}: set {} first", provider.as_str(), env::key_var(provider)),
            "provider",
        )
        .into());
    }
    let pin = Pin {
        model: model.to_string(),
        provider,
        native_model: validate_optional_text("native_model", body.native_model.as_deref(), 256)?,
        fallback_to_openrouter: body.fallback_to_openrouter.unwrap_or(true),
    };
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    if !prices::set_route(&db, &pin, &to_iso(call.now_ms())).await? {
        return Err(ApiError::ModelNotFound(format!("no price configured for {model}: price it before routing it")));
    }
    price_cache::forget(&env::cache(&call.env).map_err(ApiError::internal)?).await;
    let row = prices::get(&db, model).await?.ok_or_else(|| ApiError::internal("pinned row vanished"))?;
    respond::data(200, &view(&row, &call.config.direct_providers()))
}

pub async fn delete_route(call: &Call, model: &str) -> Result<Response, ApiError> {
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    if !prices::clear_route(&db, model, &to_iso(call.now_ms())).await? {
        return Err(ApiError::not_found(format!("{model} has no pinned route")));
    }
    price_cache::forget(&env::cache(&call.env).map_err(ApiError::internal)?).await;
    respond::data(200, &json!({ "model": model, "deleted": true }))
}
