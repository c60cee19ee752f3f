//! Which price a request is reserved at and which it is charged at: reserved at
//! the costliest model it may use, charged at the model that served it.

use super::error::ApiError;
use crate::cache::prices::PriceTable;
use crate::domain::chat::ChatRequest;
use crate::domain::pricing::Price;
use crate::domain::routing;
use crate::store::prices::PriceRow;

/// The price the served answer is charged at. Usually the serving attempt's model's; when the attempt
/// handed the client's `models` list to OpenRouter, whichever of those models the answer names.
pub struct ServedPrices {
    /// The attempt's model first, then the client's fallbacks (only when OpenRouter chose among them).
    choices: Vec<(String, Price)>,
}

impl ServedPrices {
    pub fn new(prices: &PriceTable, attempt: &routing::Attempt, fallbacks: &[String]) -> Self {
        let price = |m: &str| prices.get(m).map(PriceRow::price).unwrap_or_default();
        let mut choices = vec![(attempt.model.clone(), price(&attempt.model))];
        if attempt.keep_fallbacks {
            choices.extend(fallbacks.iter().map(|m| (m.clone(), price(m))));
        }
        Self { choices }
    }

    /// The model and price for an answer naming `model`. An answer that names none of the choices is
    /// charged at the costliest (the reservation covers it; the client is never charged below cost).
    pub fn of(&self, model: Option<&str>) -> (String, Price) {
        let ids: Vec<&str> = self.choices.iter().map(|(m, _)| m.as_str()).collect();
        match model.and_then(|m| routing::served_by(&ids, m)) {
            Some(i) => self.choices[i].clone(),
            None => {
                let costliest = self.choices.iter().skip(1).fold(self.choices[0].1, |p, (_, q)| p.costlier(q));
                (self.choices[0].0.clone(), costliest)
            }
        }
    }
}

/// The `id` and `model` a whole answer names.
pub fn answer_names(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Probe {
        id: Option<String>,
        model: Option<String>,
    }
    serde_json::from_slice::<Probe>(body).map_or((None, None), |p| (crate::providers::sse::upstream_id(p.id), p.model))
}

/// The price row to reserve against: the model's, or — when the client lists
/// fallback `models` — one at least as costly as each of theirs. Every model
/// the request may use must have a price.
pub fn costliest(prices: &PriceTable, chat: &ChatRequest) -> Result<PriceRow, ApiError> {
    let priced = |model: &str| {
        prices
            .get(model)
            .filter(|r| r.is_active != 0)
            .ok_or_else(|| ApiError::ModelNotFound(format!("no price configured for {model}")))
    };
    let mut row = priced(&chat.model)?.clone();
    for model in &chat.fallbacks {
        let other = priced(model)?;
        let price = row.price().costlier(&other.price());
        row.input_per_mtok = price.input;
        row.output_per_mtok = price.output;
        row.cache_read_per_mtok = price.cache_read;
        row.cache_write_per_mtok = price.cache_write;
        row.reasoning_per_mtok = price.reasoning;
        // The merged rates cover every tier already (`costlier` folds them in): none is left to apply.
        row = row.with_long_context(None);
        // No limit is the largest limit: the reservation must cover the least bounded candidate.
        let larger = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| a.max(b) as i64);
        row.max_completion_tokens = larger(row.output_limit(), other.output_limit());
        row.context_length = larger(row.context_limit(), other.context_limit());
    }
    Ok(row)
}
