//! GET /v1/models, GET /v1/models/{model} (both under /api/v1 too) and GET /health; the
//! cron's refresh of the model list in KV.

use std::cell::RefCell;

use std::collections::HashSet;

use serde_json::{json, Value};
use worker::{Method, Response};

use super::error::ApiError;
use super::incoming::Incoming;
use super::respond::{self, Call};
use crate::billing::client::Account;
use crate::cache::prices::PriceTable;
use crate::domain::pricing::to_usd_per_token_string;
use crate::domain::routing::{self, Provider};
use crate::domain::time::to_iso;
use crate::env;
use crate::providers::openai_compat::{parse_model_list, ListedModel};
use crate::providers::transport;
use crate::store::prices::PriceRow;

const MODELS_KV_KEY: &str = "models:upstream";
const MEMORY_TTL_MS: i64 = 60_000;

thread_local! {
    static MODELS: RefCell<Option<(i64, String)>> = const { RefCell::new(None) };
}

/// `GET /health`: 200 when serving, public and free (no I/O). `?deep=1` also proves D1, KV and
/// the Durable Object namespace answer: that costs the tenant reads, so it is for admins only.
pub async fn health(req: &Incoming, call: &Call) -> Result<Response, ApiError> {
    let deep = super::respond::query(req).get("deep").is_some_and(|v| v != "0");
    if !deep {
        return respond::json(200, &json!({ "status": "ok", "time": to_iso(call.now_ms()) }));
    }
    super::auth::authenticate(req, call).await?.caller.require(crate::domain::keys::Permission::Admin)?;
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    db.prepare("SELECT 1 AS one").first::<serde_json::Value>(None).await.map_err(ApiError::internal)?;
    let kv = env::cache(&call.env).map_err(ApiError::internal)?;
    kv.get("health").text().await.map_err(ApiError::internal)?;
    let pings = Account::of(&call.env, "health").ping().await.map_err(ApiError::internal)?;
    respond::json(
        200,
        &json!({ "status": "ok", "time": to_iso(call.now_ms()), "d1": "ok", "kv": "ok", "durable_object": { "pings": pings } }),
    )
}

/// The upstream's model list in OpenAI's shape, cached in isolate memory and KV.
/// GET /v1/models: OpenAI's list; in Anthropic's shape when the request carries `anthropic-version`
/// (what Anthropic clients' and agents' model pickers read).
pub async fn list_models(req: &Incoming, call: &Call) -> Result<Response, ApiError> {
    let list = openai_list(call).await?;
    if in_anthropic_dialect(req) {
        return json_text(anthropic_list(&list));
    }
    json_text(list)
}

/// Whether the caller speaks Anthropic's dialect (its SDKs send `anthropic-version` on every call).
pub fn in_anthropic_dialect(req: &Incoming) -> bool {
    req.headers().get("anthropic-version").ok().flatten().is_some()
}

/// GET /v1/models/{model}: one entry of the list, in the caller's dialect; 404 `model_not_found` (in that
/// dialect's error shape) when the list does not have it.
pub async fn get_model(req: &Incoming, call: &Call, model: &str) -> Result<Response, ApiError> {
    let list: Value = serde_json::from_str(&openai_list(call).await?).map_err(ApiError::internal)?;
    let entries = list.get("data").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let find = |id: &str| entries.iter().find(|m| m.get("id").and_then(Value::as_str) == Some(id));
    // Anthropic's own id (`claude-sonnet-4-5-20250929`), asked in Anthropic's dialect, as `/v1/messages`
    // reads it: the table's entry, under the id asked for.
    let anthropic = in_anthropic_dialect(req);
    let entry = find(model).cloned().or_else(|| {
        if !anthropic {
            return None;
        }
        let mut entry = crate::domain::routing::anthropic_ids(model).iter().find_map(|id| find(id))?.clone();
        entry["id"] = Value::from(model);
        Some(entry)
    });
    let Some(entry) = entry else {
        return Err(ApiError::ModelNotFound(format!("the model '{model}' does not exist here")));
    };
    json_text(if anthropic { anthropic_entry(&entry) } else { entry }.to_string())
}

/// The OpenAI-shaped list as Anthropic lists models: `{data:[{type:"model", id, display_name,
/// created_at}], has_more, first_id, last_id}`.
fn anthropic_list(list: &str) -> String {
    let models: Vec<Value> = serde_json::from_slice::<Value>(list.as_bytes())
        .ok()
        .and_then(|l| l.get("data").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .map(anthropic_entry)
        .collect();
    let (first, last) = (models.first().map(|m| m["id"].clone()), models.last().map(|m| m["id"].clone()));
    json!({ "data": models, "has_more": false, "first_id": first, "last_id": last }).to_string()
}

/// One entry of the OpenAI-shaped list as Anthropic lists a model.
fn anthropic_entry(m: &Value) -> Value {
    let created = m.get("created").and_then(Value::as_i64).unwrap_or(0);
    json!({ "type": "model", "id": m["id"], "display_name": m.get("name").filter(|n| n.is_string()).unwrap_or(&m["id"]),
            "created_at": crate::domain::time::to_iso(created.saturating_mul(1000)) })
}

async fn openai_list(call: &Call) -> Result<String, ApiError> {
    let now = call.now_ms();
    let kv = env::cache(&call.env).map_err(ApiError::internal)?;
    let remembered = MODELS.with(|m| m.borrow().as_ref().filter(|(until, _)| *until > now).map(|(_, b)| b.clone()));
    let body = match remembered {
        Some(body) => body,
        None => upstream_list(call, &kv).await?,
    };
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    let prices = crate::cache::prices::table(&kv, &db, now).await?;
    Ok(priced_models(&body, &prices, &call.config.direct_providers()))
}

/// The upstream's list from KV, else from the upstream (then kept in KV); remembered in isolate memory.
async fn upstream_list(call: &Call, kv: &worker::KvStore) -> Result<String, ApiError> {
    let body = match kv.get(MODELS_KV_KEY).text().await.ok().flatten() {
        Some(body) => body,
        None => {
            let body = fetch_models(call.config.as_ref()).await?;
            if let Ok(put) = kv.put(MODELS_KV_KEY, body.clone()) {
                let ttl = call.config.models_cache_ttl_secs;
                call.ctx.wait_until(async move {
                    let _ = put.expiration_ttl(ttl).execute().await;
                });
            }
            body
        }
    };
    MODELS.with(|m| *m.borrow_mut() = Some((call.now_ms() + MEMORY_TTL_MS, body.clone())));
    Ok(body)
}

/// `owned_by` names the provider that serves each model here. The list is the tenant's priced, active
/// models: local prices win over the upstream's (they are what it charges), and priced models the
/// upstream does not list (a direct provider's own) are listed too. Before its prices are synced a
/// tenant serves no model (each is unpriced: 404), so none is listed.
fn priced_models(body: &str, prices: &PriceTable, direct: &[Provider]) -> String {
    let Ok(mut list) = serde_json::from_slice::<Value>(body.as_bytes()) else { return body.to_string() };
    let Some(models) = list.get_mut("data").and_then(|d| d.as_array_mut()) else { return body.to_string() };
    let active = |id: &str| prices.get(id).filter(|r| r.is_active != 0);
    models.retain(|m| m.get("id").and_then(Value::as_str).is_some_and(|id| active(id).is_some()));
    let listed: HashSet<String> = models.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect();
    let mut unlisted: Vec<&PriceRow> =
        prices.values().filter(|r| r.is_active != 0 && !listed.contains(&r.model_name)).collect();
    unlisted.sort_by(|a, b| a.model_name.cmp(&b.model_name));
    models.extend(unlisted.into_iter().map(|r| {
        json!({ "id": r.model_name, "object": "model", "created": 0, "name": r.display_name,
                "context_length": r.context_length })
    }));
    for m in models.iter_mut() {
        let Some(id) = m["id"].as_str().map(str::to_string) else { continue };
        let row = active(&id);
        if let Some(row) = row {
            m["pricing"] = json!({
                "prompt": to_usd_per_token_string(row.input_per_mtok),
                "completion": to_usd_per_token_string(row.output_per_mtok),
            });
        }
        m["owned_by"] = routing::route(&id, row.and_then(PriceRow::pin).as_ref(), direct).provider.as_str().into();
    }
    list.to_string()
}

fn json_text(body: String) -> Result<Response, ApiError> {
    let headers = worker::Headers::new();
    let _ = headers.set("content-type", "application/json");
    Ok(Response::ok(body).map_err(ApiError::internal)?.with_headers(headers))
}

/// The upstream's model list, embedding models included: OpenRouter lists text models only unless asked, so
/// embedding models were never priced (nor listed) and `/v1/embeddings` answered 404 for them.
pub fn models_url(base_url: &str) -> String {
    format!("{base_url}/models?output_modalities=text,embeddings")
}

/// Pulls `/models` upstream and renders the list body (shared with the cron refresh).
pub async fn fetch_models(config: &env::Config) -> Result<String, ApiError> {
    let url = models_url(&config.upstream_base_url);
    let auth = config.upstream_api_key.as_ref().map(|k| format!("Bearer {}", k.expose()));
    let mut headers = vec![("accept", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    let mut upstream = transport::send(Method::Get, &url, &headers, None, config.request_timeout_ms).await?;
    let bytes = transport::read_all(&mut upstream).await?;
    let data: Vec<ListedModel> = parse_model_list(&bytes)?.into_iter().map(Into::into).collect();
    Ok(json!({ "object": "list", "data": data }).to_string())
}

/// Refreshes the KV copy (cron).
pub async fn refresh_models_cache(env: &worker::Env) -> Result<usize, ApiError> {
    let config = env::Config::get(env);
    let body = fetch_models(&config).await?;
    let count = serde_json::from_slice::<serde_json::Value>(body.as_bytes())
        .ok()
        .and_then(|v| v["data"].as_array().map(Vec::len))
        .unwrap_or(0);
    let kv = env::cache(env).map_err(ApiError::internal)?;
    kv.put(MODELS_KV_KEY, body)
        .map_err(ApiError::internal)?
        .expiration_ttl(config.models_cache_ttl_secs)
        .execute()
        .await
        .map_err(ApiError::internal)?;
    Ok(count)
}
