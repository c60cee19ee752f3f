//! Prices and costs. A price is integer micro-USD per million tokens
//! ("µ$/Mtok"); on the wire it is USD per token, as OpenRouter writes it
//! ("0.00000015" = 150_000 µ$/Mtok). Each request's cost is rounded up to
//! the next micro-USD, once, at the end.

use serde::{Deserialize, Serialize};

use super::money::MAX_SAFE;
use super::InvalidRequest;

/// µ$/Mtok per USD/token: 10^6 (µ$ per $) × 10^6 (tokens per Mtok).
const SCALE: i128 = 1_000_000_000_000;
/// Highest price accepted: $1 per token.
const MAX_PRICE: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input: i64,
    pub output: i64,
    /// Cached prompt tokens read; `None` = billed as input.
    pub cache_read: Option<i64>,
    /// Prompt tokens written to the cache; `None` = billed as input.
    pub cache_write: Option<i64>,
    /// Reasoning tokens; `None` = billed as output.
    pub reasoning: Option<i64>,
}

impl Price {
    /// A price at least as high as both, kind of token by kind of token: what
    /// a request that may be served by either model must reserve.
    pub fn costlier(&self, other: &Price) -> Price {
        let either = |a: Option<i64>, a_base: i64, b: Option<i64>, b_base: i64| match (a, b) {
            (None, None) => None,
            _ => Some(a.unwrap_or(a_base).max(b.unwrap_or(b_base))),
        };
        Price {
            input: self.input.max(other.input),
            output: self.output.max(other.output),
            cache_read: either(self.cache_read, self.input, other.cache_read, other.input),
            cache_write: either(self.cache_write, self.input, other.cache_write, other.input),
            reasoning: either(self.reasoning, self.output, other.reasoning, other.output),
        }
    }
}

impl Price {
    /// The highest rate a prompt token and an output token can cost (cache writes may cost
    /// more than input, reasoning more than output): what a worst case is priced at.
    pub fn worst_rates(&self) -> Price {
        let input = self.input.max(self.cache_read.unwrap_or(0)).max(self.cache_write.unwrap_or(0));
        Price {
            input,
            output: self.output.max(self.reasoning.unwrap_or(0)),
            cache_read: None,
            cache_write: None,
            reasoning: None,
        }
    }
}

/// Parses an exact decimal USD-per-token string into µ$/Mtok (rounding up past 12 decimals).
pub fn parse_usd_per_token(field: &str, text: &str) -> Result<i64, InvalidRequest> {
    let bad =
        || InvalidRequest::param(format!("`{field}` must be a non-negative USD-per-token amount, got {text:?}"), field);
    let t = text.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || whole.len() > 6
    {
        return Err(bad());
    }
    let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let mut value = whole * SCALE;
    for (i, digit) in frac.bytes().enumerate() {
        let d = i128::from(digit - b'0');
        if i < 12 {
            value += d * 10_i128.pow(11 - i as u32);
        } else if d > 0 {
            value += 1; // round up what a micro-USD per million tokens cannot hold
            break;
        }
    }
    i64::try_from(value).ok().filter(|v| *v <= MAX_PRICE).ok_or_else(bad)
}

/// A USD-per-token JSON number to µ$/Mtok.
pub fn from_usd_per_token(field: &str, usd: f64) -> Result<i64, InvalidRequest> {
    if !usd.is_finite() || usd < 0.0 {
        return Err(InvalidRequest::param(format!("`{field}` must be a non-negative number"), field));
    }
    parse_usd_per_token(field, &format!("{usd:.15}"))
}

/// µ$/Mtok back to OpenRouter's string form (`"0.00000015"`).
pub fn to_usd_per_token_string(price: i64) -> String {
    super::money::decimal(price, 12)
}

/// USD per token as a JSON number.
pub fn to_usd_per_token(price: i64) -> f64 {
    price as f64 / SCALE as f64
}

/// Adds a markup of `percent` (may be fractional) to a price, rounding up.
pub fn with_markup(price: i64, percent: f64) -> i64 {
    if percent <= 0.0 || !percent.is_finite() {
        return price;
    }
    let basis = (percent * 100.0).round() as i128; // hundredths of a percent
    let marked = (i128::from(price) * (10_000 + basis) + 9_999) / 10_000;
    i64::try_from(marked).unwrap_or(i64::MAX).min(MAX_PRICE)
}

/// Tokens of one request, split the way prices are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// All prompt tokens, cached ones included.
    pub prompt: u64,
    /// All completion tokens, reasoning included.
    pub completion: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

/// The cost in micro-USD, rounded up to the next micro-USD.
pub fn cost(price: &Price, t: &Tokens) -> i64 {
    let cache_read = t.cache_read.min(t.prompt);
    let cache_write = t.cache_write.min(t.prompt - cache_read);
    let plain_prompt = t.prompt - cache_read - cache_write;
    let reasoning = t.reasoning.min(t.completion);
    let plain_completion = t.completion - reasoning;
    let parts: [(u64, i64); 5] = [
        (plain_prompt, price.input),
        (cache_read, price.cache_read.unwrap_or(price.input)),
        (cache_write, price.cache_write.unwrap_or(price.input)),
        (plain_completion, price.output),
        (reasoning, price.reasoning.unwrap_or(price.output)),
    ];
    let total: i128 = parts.iter().map(|(n, p)| i128::from(*n) * i128::from(*p)).sum();
    // At most what a JavaScript number, D1 and every sum of a few such rows hold exactly.
    i64::try_from((total + 999_999) / 1_000_000).map_or(MAX_SAFE, |c| c.min(MAX_SAFE))
}

/// A token limit from OpenRouter's catalogue as the price table keeps it: at most what a limit set by
/// hand may be (`u32`); a larger one is no limit known (stored, it would not read back exactly).
pub fn catalogue_limit(tokens: u64) -> Option<i64> {
    u32::try_from(tokens).ok().map(i64::from)
}

/// A model's token limit as the price table stores it, when it says anything: 0 or less is no limit.
pub fn known_limit(stored: Option<i64>) -> Option<u64> {
    stored.and_then(|n| u64::try_from(n).ok()).filter(|n| *n > 0)
}

/// How many output tokens `budget` micro-USD buys after the prompt's cost.
pub fn affordable_output_tokens(price: &Price, prompt_tokens: u64, budget: i64) -> u64 {
    let prompt_cost = cost(price, &Tokens { prompt: prompt_tokens, ..Tokens::default() });
    let left = budget - prompt_cost;
    if left <= 0 {
        return 0;
    }
    if price.output == 0 {
        return u64::MAX;
    }
    let per_token = price.output.max(price.reasoning.unwrap_or(0));
    // cost(n) = ceil((P + n·out) / 10^6) ≤ budget  ⇐  n ≤ (left·10^6 − (10^6 − 1)) / out, conservatively
    let n = (i128::from(left) * 1_000_000 - 999_999) / i128::from(per_token);
    u64::try_from(n.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worst_case_at_the_worst_rates_covers_any_mix_of_token_kinds() {
        let price = Price { input: 3, output: 15, cache_read: Some(1), cache_write: Some(4), reasoning: Some(20) };
        let worst = price.worst_rates();
        assert_eq!((worst.input, worst.output), (4, 20));
        let bound = cost(&worst, &Tokens { prompt: 1_000_000, completion: 1_000_000, ..Tokens::default() });
        let mixed = Tokens {
            prompt: 1_000_000,
            completion: 1_000_000,
            cache_write: 600_000,
            reasoning: 900_000,
            ..Tokens::default()
        };
        assert!(cost(&price, &mixed) <= bound);
    }

    #[test]
    fn the_costlier_of_two_prices_covers_every_kind_of_token() {
        let cheap = Price { input: 100, output: 400, cache_read: Some(25), cache_write: None, reasoning: None };
        let dear = Price { input: 3_000, output: 15_000, cache_read: None, cache_write: None, reasoning: None };
        let both = cheap.costlier(&dear);
        assert_eq!(
            both,
            Price { input: 3_000, output: 15_000, cache_read: Some(3_000), cache_write: None, reasoning: None }
        );
        assert_eq!(dear.costlier(&cheap), both, "order does not matter");
        let tokens = Tokens { prompt: 1_000, completion: 500, cache_read: 400, ..Tokens::default() };
        assert!(cost(&both, &tokens) >= cost(&cheap, &tokens).max(cost(&dear, &tokens)));
    }

    fn price(input: i64, output: i64) -> Price {
        Price { input, output, ..Price::default() }
    }

    #[test]
    fn parses_openrouter_price_strings_exactly() {
        assert_eq!(parse_usd_per_token("p", "0.00000015").expect("ok"), 150_000);
        assert_eq!(parse_usd_per_token("p", "0.0000025").expect("ok"), 2_500_000);
        assert_eq!(parse_usd_per_token("p", "0").expect("ok"), 0);
        assert_eq!(parse_usd_per_token("p", "1").expect("ok"), 1_000_000_000_000);
        assert_eq!(parse_usd_per_token("p", ".5").expect("ok"), 500_000_000_000);
        assert_eq!(parse_usd_per_token("p", "0.0000000000001").expect("ok"), 1, "rounds up past 12 decimals");
        for bad in ["", "-0.1", "abc", "1e-6", "0.1.2", "2", "1000000"] {
            assert!(parse_usd_per_token("p", bad).is_err(), "{bad}");
        }
        assert_eq!(from_usd_per_token("p", 0.000003).expect("ok"), 3_000_000);
        assert!(from_usd_per_token("p", -1.0).is_err());
    }

    #[test]
    fn prints_prices_back_as_strings() {
        for s in ["0.00000015", "0.0000025", "0", "0.000015", "1"] {
            assert_eq!(to_usd_per_token_string(parse_usd_per_token("p", s).expect("ok")), s);
        }
    }

    #[test]
    fn a_catalogue_limit_beyond_what_is_kept_is_no_limit() {
        assert_eq!(catalogue_limit(200_000), Some(200_000));
        assert_eq!(catalogue_limit(u64::from(u32::MAX)), Some(i64::from(u32::MAX)));
        assert_eq!(catalogue_limit(10_000_000_000_000_000), None, "it would not read back from D1 exactly");
    }

    #[test]
    fn cost_rounds_up_once_per_request() {
        let p = price(150_000, 600_000); // gpt-4o-mini
                                         // 8 × 0.15 + 4 × 0.6 = 3.6 µ$ → 4
        assert_eq!(cost(&p, &Tokens { prompt: 8, completion: 4, ..Tokens::default() }), 4);
        assert_eq!(cost(&p, &Tokens::default()), 0);
        // exactly whole: 1M prompt tokens at 0.15 $/M = 150_000 µ$
        assert_eq!(cost(&p, &Tokens { prompt: 1_000_000, ..Tokens::default() }), 150_000);
        assert_eq!(cost(&price(1, 0), &Tokens { prompt: 1, ..Tokens::default() }), 1, "any fraction rounds up");
        let absurd = Tokens { prompt: u64::MAX, completion: u64::MAX, ..Tokens::default() };
        assert_eq!(cost(&price(MAX_PRICE, MAX_PRICE), &absurd), MAX_SAFE, "at most what every store holds");
    }

    #[test]
    fn cache_and_reasoning_tokens_use_their_own_prices() {
        let p = Price {
            input: 3_000_000,
            output: 15_000_000,
            cache_read: Some(300_000),
            cache_write: Some(3_750_000),
            reasoning: None,
        };
        let t = Tokens { prompt: 1000, completion: 100, cache_read: 600, cache_write: 200, reasoning: 50 };
        // 200×3 + 600×0.3 + 200×3.75 + 100×15 = 600 + 180 + 750 + 1500 = 3030 µ$
        assert_eq!(cost(&p, &t), 3030);
        // cache counts larger than the prompt are clamped, never negative
        let odd = Tokens { prompt: 10, cache_read: 50, ..Tokens::default() };
        assert_eq!(cost(&p, &odd), 3);
    }

    #[test]
    fn affordable_output_never_overspends() {
        let p = price(150_000, 600_000);
        for budget in [0, 1, 5, 37, 1000, 123_457] {
            for prompt in [0, 3, 100] {
                let n = affordable_output_tokens(&p, prompt, budget);
                if n > 0 {
                    assert!(
                        cost(&p, &Tokens { prompt, completion: n, ..Tokens::default() }) <= budget,
                        "{budget} {prompt} {n}"
                    );
                }
            }
        }
        assert_eq!(affordable_output_tokens(&p, 1_000_000, 10), 0, "the prompt alone is unaffordable");
        assert!(affordable_output_tokens(&p, 10, 1000) > 1000);
    }

    #[test]
    fn markup_rounds_up() {
        assert_eq!(with_markup(150_000, 10.0), 165_000);
        assert_eq!(with_markup(3, 10.0), 4);
        assert_eq!(with_markup(100, 0.0), 100);
        assert_eq!(with_markup(100, 2.5), 103);
    }

    #[test]
    fn a_stored_limit_of_zero_or_less_is_no_limit() {
        for (stored, limit) in [(None, None), (Some(0), None), (Some(-5), None), (Some(200_000), Some(200_000))] {
            assert_eq!(known_limit(stored), limit, "{stored:?}");
        }
    }
}
