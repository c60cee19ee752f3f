//! Prices: GET /api/models/pricing[/{model}], PUT (admin), POST /sync (admin, and cron).

use serde_json::{json, Value};
use worker::{Env, Response};

use super::bodies::{PutPrice, SyncBody, WirePrice};
use super::error::ApiError;
use super::incoming::Incoming;
use super::respond::{self, query, read_json, Call};
use crate::cache::prices as price_cache;
use crate::domain::pricing::{
    catalogue_limit, from_usd_per_token, long_context, parse_usd_per_token, to_usd_per_token, with_markup, LongContext,
    Price,
};
use crate::domain::time::to_iso;
use crate::domain::users::{validate_optional_text, validate_text};
use crate::domain::InvalidRequest;
use crate::env::{self, Config};
use crate::providers::openai_compat::parse_model_list;
use crate::providers::transport;
use crate::store::prices::{self, PriceRow};

fn view(r: &PriceRow, show_upstream: bool) -> Value {
    let usd = |v: Option<i64>| v.map(to_usd_per_token);
    let mut view = json!({
        "model_name": r.model_name, "display_name": r.display_name, "provider": r.provider,
        "pricing_input": to_usd_per_token(r.input_per_mtok), "pricing_output": to_usd_per_token(r.output_per_mtok),
        "pricing_cache_read": usd(r.cache_read_per_mtok), "pricing_cache_write": usd(r.cache_write_per_mtok),
        "pricing_reasoning": usd(r.reasoning_per_mtok),
        "upstream_pricing_input": usd(r.upstream_input_per_mtok), "upstream_pricing_output": usd(r.upstream_output_per_mtok),
        "context_length": r.context_length, "max_completion_tokens": r.max_completion_tokens,
        "is_active": r.is_active != 0, "edited_by_admin": r.edited_by_admin != 0, "updated_at": r.updated_at,
        "long_context": r.price().long_context.map(|l| json!({
            "from_prompt_tokens": l.from_prompt_tokens,
            "pricing_input": to_usd_per_token(l.input), "pricing_output": to_usd_per_token(l.output),
            "pricing_cache_read": usd(l.cache_read), "pricing_cache_write": usd(l.cache_write),
            "pricing_reasoning": usd(l.reasoning),
        })),
    });
    if !show_upstream {
        if let Some(fields) = view.as_object_mut() {
            fields.remove("upstream_pricing_input");
            fields.remove("upstream_pricing_output");
        }
    }
    view
}

/// Whether this reader of the public price list sees what the tenant pays upstream: when the
/// tenant says so (`SHOW_UPSTREAM_COST`), else only an admin who sends its credential.
async fn sees_upstream(req: &Incoming, call: &Call) -> bool {
    if call.config.show_upstream_cost {
        return true;
    }
    if req.headers().get("authorization").ok().flatten().is_none() {
        return false;
    }
    // The cached lookup: an admin's key is found in memory or KV; a price read costs no D1 query.
    super::auth::authenticate_for_inference(req, call).await.is_ok_and(|a| a.caller.is_admin())
}

/// Public: read from the price cache (isolate memory → KV → D1), so anonymous reads cost no D1 query.
pub async fn list_prices(req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let provider = query(&req).get("provider").cloned().filter(|p| !p.is_empty());
    let show = sees_upstream(&req, call).await;
    let table = super::meter::price_table(call).await?;
    let mut rows: Vec<&PriceRow> =
        table.values().filter(|r| provider.as_ref().is_none_or(|p| &r.provider == p)).collect();
    rows.sort_by(|a, b| a.model_name.cmp(&b.model_name));
    let data: Vec<Value> = rows.into_iter().map(|r| view(r, show)).collect();
    respond::json(200, &json!({ "data": data }))
}

pub async fn get_price(req: &Incoming, call: &Call, model: &str) -> Result<Response, ApiError> {
    let show = sees_upstream(req, call).await;
    let table = super::meter::price_table(call).await?;
    let row = table.get(model).ok_or_else(|| ApiError::ModelNotFound(format!("no price configured for {model}")))?;
    respond::data(200, &view(row, show))
}

fn wire_price(field: &str, p: &WirePrice) -> Result<i64, InvalidRequest> {
    match p {
        WirePrice::Number(n) => from_usd_per_token(field, *n),
        WirePrice::Text(t) => parse_usd_per_token(field, t),
    }
}

pub async fn put_price(mut req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let body: PutPrice = read_json(&mut req).await?;
    let model = validate_text("model_name", &body.model_name, 256)?;
    let opt = |field: &str, p: &Option<WirePrice>| p.as_ref().map(|p| wire_price(field, p)).transpose();
    let row = PriceRow {
        provider: match body.provider {
            Some(p) => validate_text("provider", &p, 64)?,
            None => model.split_once('/').map_or("openrouter", |(p, _)| p).to_string(),
        },
        display_name: validate_optional_text("display_name", body.display_name.as_deref(), 200)?,
        input_per_mtok: wire_price("pricing_input", &body.pricing_input)?,
        output_per_mtok: wire_price("pricing_output", &body.pricing_output)?,
        cache_read_per_mtok: opt("pricing_cache_read", &body.pricing_cache_read)?,
        cache_write_per_mtok: opt("pricing_cache_write", &body.pricing_cache_write)?,
        reasoning_per_mtok: opt("pricing_reasoning", &body.pricing_reasoning)?,
        upstream_input_per_mtok: None,
        upstream_output_per_mtok: None,
        context_length: body.context_length.map(i64::from),
        max_completion_tokens: body.max_completion_tokens.map(i64::from),
        is_active: i64::from(body.is_active.unwrap_or(true)),
        edited_by_admin: 1,
        updated_at: to_iso(call.now_ms()),
        model_name: model,
        ..PriceRow::default()
    };
    let long_context = match &body.long_context {
        None => None,
        Some(l) => Some(LongContext {
            from_prompt_tokens: u64::from(l.from_prompt_tokens),
            input: wire_price("long_context.pricing_input", &l.pricing_input)?,
            output: wire_price("long_context.pricing_output", &l.pricing_output)?,
            cache_read: opt("long_context.pricing_cache_read", &l.pricing_cache_read)?,
            cache_write: opt("long_context.pricing_cache_write", &l.pricing_cache_write)?,
            reasoning: opt("long_context.pricing_reasoning", &l.pricing_reasoning)?,
        }),
    };
    let row = row.with_long_context(long_context);
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    let existing = prices::get(&db, &row.model_name).await?;
    let row = match existing {
        // The upstream's own price and the operator's pin are not this call's to change.
        Some(e) => PriceRow {
            upstream_input_per_mtok: e.upstream_input_per_mtok,
            upstream_output_per_mtok: e.upstream_output_per_mtok,
            route_provider: e.route_provider,
            route_native_model: e.route_native_model,
            route_fallback: e.route_fallback,
            route_updated_at: e.route_updated_at,
            ..row
        },
        None => row,
    };
    prices::upsert(&db, &row).await?;
    price_cache::forget(&env::cache(&call.env).map_err(ApiError::internal)?).await;
    respond::data(200, &view(&row, true))
}

pub async fn sync_prices(mut req: Incoming, call: &Call) -> Result<Response, ApiError> {
    let bytes = respond::read_body(&mut req, 4096).await?;
    let body: SyncBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        SyncBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?
    };
    let synced = sync(&call.env, body.overwrite.unwrap_or(false)).await?;
    respond::data(200, &json!({ "synced": synced, "overwrite": body.overwrite.unwrap_or(false) }))
}

/// Pulls the upstream `/models`, applies `PRICE_MARKUP_PERCENT`, upserts. Returns how many models it read.
pub async fn sync(env: &Env, overwrite: bool) -> Result<usize, ApiError> {
    let config = Config::get(env);
    let url = super::models::models_url(&config.upstream_base_url);
    let auth = config.upstream_api_key.as_ref().map(|k| format!("Bearer {}", k.expose()));
    let mut headers = vec![("accept", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    let mut upstream = transport::send(worker::Method::Get, &url, &headers, None, config.request_timeout_ms).await?;
    let bytes = transport::read_all(&mut upstream).await?;
    let now = to_iso(js_sys::Date::now() as i64);
    let markup = config.price_markup_percent;
    let rows: Vec<PriceRow> = parse_model_list(&bytes)?
        .into_iter()
        .filter_map(|m| {
            let p = m.pricing.as_ref()?;
            // The upstream's own rates, then the table's: marked up, with the long-context tier.
            let rate = |v: &Option<String>| v.as_deref().and_then(|v| parse_usd_per_token("rate", v).ok());
            let upstream = Price {
                input: parse_usd_per_token("prompt", p.prompt.as_deref()?).ok()?,
                output: parse_usd_per_token("completion", p.completion.as_deref()?).ok()?,
                // A rate of "0" is none (the catalogue writes "0" where a model has no such rate): those tokens
                // are priced as their plain kind, never as free.
                cache_read: rate(&p.input_cache_read).filter(|v| *v > 0),
                cache_write: rate(&p.input_cache_write).filter(|v| *v > 0),
                reasoning: rate(&p.internal_reasoning).filter(|v| *v > 0),
                long_context: None,
            };
            let up = |v: i64| with_markup(v, markup);
            let tier = long_context(&upstream, &p.prompt_size_overrides()).map(|t| LongContext {
                input: up(t.input),
                output: up(t.output),
                cache_read: t.cache_read.map(up),
                cache_write: t.cache_write.map(up),
                reasoning: t.reasoning.map(up),
                ..t
            });
            let row = PriceRow {
                provider: m.id.split_once('/').map_or("openrouter", |(p, _)| p).to_string(),
                display_name: m.name.clone(),
                input_per_mtok: up(upstream.input),
                output_per_mtok: up(upstream.output),
                cache_read_per_mtok: upstream.cache_read.map(up),
                cache_write_per_mtok: upstream.cache_write.map(up),
                reasoning_per_mtok: upstream.reasoning.map(up),
                upstream_input_per_mtok: Some(upstream.input),
                upstream_output_per_mtok: Some(upstream.output),
                context_length: m.context_length.and_then(catalogue_limit),
                max_completion_tokens: m.max_completion_tokens.and_then(catalogue_limit),
                is_active: i64::from(!p.has_request_fee()),
                edited_by_admin: 0,
                updated_at: now.clone(),
                model_name: m.id,
                ..PriceRow::default()
            };
            Some(row.with_long_context(tier))
        })
        .collect();
    let db = env::db(env).map_err(ApiError::internal)?;
    prices::upsert_synced(&db, &rows, overwrite).await?;
    price_cache::forget(&env::cache(env).map_err(ApiError::internal)?).await;
    Ok(rows.len())
}
