//! The `model_pricing` table.

use serde::{Deserialize, Serialize};
use worker::D1Database;

use super::{int, opt_int, opt_text, text, StoreError};
use crate::domain::pricing::{LongContext, Price};
use crate::domain::routing::{Pin, Provider};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PriceRow {
    pub model_name: String,
    pub display_name: Option<String>,
    pub provider: String,
    pub input_per_mtok: i64,
    pub output_per_mtok: i64,
    pub cache_read_per_mtok: Option<i64>,
    pub cache_write_per_mtok: Option<i64>,
    pub reasoning_per_mtok: Option<i64>,
    pub upstream_input_per_mtok: Option<i64>,
    pub upstream_output_per_mtok: Option<i64>,
    pub context_length: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub is_active: i64,
    pub edited_by_admin: i64,
    pub updated_at: String,
    /// The operator's pin (`/api/admin/routes`); no provider: the default routing rule.
    #[serde(default)]
    pub route_provider: Option<String>,
    #[serde(default)]
    pub route_native_model: Option<String>,
    #[serde(default)]
    pub route_fallback: Option<i64>,
    #[serde(default)]
    pub route_updated_at: Option<String>,
    /// The long-context tier (`domain::pricing::LongContext`): from this many prompt tokens, these rates.
    #[serde(default)]
    pub long_from_prompt_tokens: Option<i64>,
    #[serde(default)]
    pub long_input_per_mtok: Option<i64>,
    #[serde(default)]
    pub long_output_per_mtok: Option<i64>,
    #[serde(default)]
    pub long_cache_read_per_mtok: Option<i64>,
    #[serde(default)]
    pub long_cache_write_per_mtok: Option<i64>,
    #[serde(default)]
    pub long_reasoning_per_mtok: Option<i64>,
}

impl PriceRow {
    pub fn price(&self) -> Price {
        Price {
            input: self.input_per_mtok,
            output: self.output_per_mtok,
            cache_read: self.cache_read_per_mtok,
            cache_write: self.cache_write_per_mtok,
            reasoning: self.reasoning_per_mtok,
            long_context: self.long_context(),
        }
    }

    fn long_context(&self) -> Option<LongContext> {
        Some(LongContext {
            from_prompt_tokens: u64::try_from(self.long_from_prompt_tokens?).ok()?,
            input: self.long_input_per_mtok?,
            output: self.long_output_per_mtok?,
            cache_read: self.long_cache_read_per_mtok,
            cache_write: self.long_cache_write_per_mtok,
            reasoning: self.long_reasoning_per_mtok,
        })
    }

    /// Sets the long-context tier's columns.
    pub fn with_long_context(self, tier: Option<LongContext>) -> Self {
        PriceRow {
            long_from_prompt_tokens: tier.map(|t| i64::try_from(t.from_prompt_tokens).unwrap_or(i64::MAX)),
            long_input_per_mtok: tier.map(|t| t.input),
            long_output_per_mtok: tier.map(|t| t.output),
            long_cache_read_per_mtok: tier.and_then(|t| t.cache_read),
            long_cache_write_per_mtok: tier.and_then(|t| t.cache_write),
            long_reasoning_per_mtok: tier.and_then(|t| t.reasoning),
            ..self
        }
    }

    /// The model's context length, when the table knows one (0 or less says nothing).
    pub fn context_limit(&self) -> Option<u64> {
        crate::domain::pricing::known_limit(self.context_length)
    }

    /// The model's output limit, when the table knows one (0 or less says nothing).
    pub fn output_limit(&self) -> Option<u64> {
        crate::domain::pricing::known_limit(self.max_completion_tokens)
    }

    /// The operator's pin for this model, if any.
    pub fn pin(&self) -> Option<Pin> {
        Some(Pin {
            model: self.model_name.clone(),
            provider: Provider::parse(self.route_provider.as_deref()?)?,
            native_model: self.route_native_model.clone(),
            fallback_to_openrouter: self.route_fallback != Some(0),
        })
    }
}

const UPSERT: &str = "INSERT INTO model_pricing (model_name, display_name, provider, input_per_mtok, output_per_mtok, \
    cache_read_per_mtok, cache_write_per_mtok, reasoning_per_mtok, upstream_input_per_mtok, upstream_output_per_mtok, \
    context_length, max_completion_tokens, is_active, edited_by_admin, updated_at, long_from_prompt_tokens, \
    long_input_per_mtok, long_output_per_mtok, long_cache_read_per_mtok, long_cache_write_per_mtok, long_reasoning_per_mtok) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21) \
    ON CONFLICT(model_name) DO UPDATE SET display_name = ?2, provider = ?3, input_per_mtok = ?4, output_per_mtok = ?5, \
    cache_read_per_mtok = ?6, cache_write_per_mtok = ?7, reasoning_per_mtok = ?8, upstream_input_per_mtok = ?9, \
    upstream_output_per_mtok = ?10, context_length = ?11, max_completion_tokens = ?12, is_active = ?13, \
    edited_by_admin = ?14, updated_at = ?15, long_from_prompt_tokens = ?16, long_input_per_mtok = ?17, \
    long_output_per_mtok = ?18, long_cache_read_per_mtok = ?19, long_cache_write_per_mtok = ?20, \
    long_reasoning_per_mtok = ?21";
/// The same, but leaves rows an operator edited alone.
const UPSERT_UNLESS_EDITED: &str = " WHERE model_pricing.edited_by_admin = 0";

fn bind(row: &PriceRow) -> Vec<wasm_bindgen::JsValue> {
    vec![
        text(&row.model_name),
        opt_text(row.display_name.as_deref()),
        text(&row.provider),
        int(row.input_per_mtok),
        int(row.output_per_mtok),
        opt_int(row.cache_read_per_mtok),
        opt_int(row.cache_write_per_mtok),
        opt_int(row.reasoning_per_mtok),
        opt_int(row.upstream_input_per_mtok),
        opt_int(row.upstream_output_per_mtok),
        opt_int(row.context_length),
        opt_int(row.max_completion_tokens),
        int(row.is_active),
        int(row.edited_by_admin),
        text(&row.updated_at),
        opt_int(row.long_from_prompt_tokens),
        opt_int(row.long_input_per_mtok),
        opt_int(row.long_output_per_mtok),
        opt_int(row.long_cache_read_per_mtok),
        opt_int(row.long_cache_write_per_mtok),
        opt_int(row.long_reasoning_per_mtok),
    ]
}

pub async fn all(db: &D1Database) -> Result<Vec<PriceRow>, StoreError> {
    Ok(db.prepare("SELECT * FROM model_pricing ORDER BY model_name").all().await?.results::<PriceRow>()?)
}

pub async fn get(db: &D1Database, model: &str) -> Result<Option<PriceRow>, StoreError> {
    Ok(db
        .prepare("SELECT * FROM model_pricing WHERE model_name = ?1")
        .bind(&[text(model)])?
        .first::<PriceRow>(None)
        .await?)
}

pub async fn upsert(db: &D1Database, row: &PriceRow) -> Result<(), StoreError> {
    db.prepare(UPSERT).bind(&bind(row))?.run().await?;
    Ok(())
}

/// Upserts synced prices in one batch; `overwrite` also replaces rows an operator edited.
pub async fn upsert_synced(db: &D1Database, rows: &[PriceRow], overwrite: bool) -> Result<(), StoreError> {
    let sql = if overwrite { UPSERT.to_string() } else { format!("{UPSERT}{UPSERT_UNLESS_EDITED}") };
    let mut statements = Vec::with_capacity(rows.len());
    for row in rows {
        statements.push(db.prepare(&sql).bind(&bind(row))?);
    }
    for chunk in statements.chunks(50) {
        db.batch(chunk.to_vec()).await?;
    }
    Ok(())
}

/// Pins a priced model to a route; false when the model has no price row.
pub async fn set_route(db: &D1Database, pin: &Pin, now: &str) -> Result<bool, StoreError> {
    let result = db
        .prepare(
            "UPDATE model_pricing SET route_provider = ?2, route_native_model = ?3, route_fallback = ?4, \
             route_updated_at = ?5 WHERE model_name = ?1",
        )
        .bind(&[
            text(&pin.model),
            text(pin.provider.as_str()),
            opt_text(pin.native_model.as_deref()),
            int(i64::from(pin.fallback_to_openrouter)),
            text(now),
        ])?
        .run()
        .await?;
    Ok(result.meta()?.and_then(|m| m.changes).unwrap_or(0) > 0)
}

/// Removes a model's pin; false when it had none.
pub async fn clear_route(db: &D1Database, model: &str, now: &str) -> Result<bool, StoreError> {
    let result = db
        .prepare(
            "UPDATE model_pricing SET route_provider = NULL, route_native_model = NULL, route_fallback = 1, \
             route_updated_at = ?2 WHERE model_name = ?1 AND route_provider IS NOT NULL",
        )
        .bind(&[text(model), text(now)])?
        .run()
        .await?;
    Ok(result.meta()?.and_then(|m| m.changes).unwrap_or(0) > 0)
}
