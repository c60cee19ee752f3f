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
    /// Rates for a long prompt (a long-context tier), if the model has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContext>,
}

/// A long-context tier: a request whose prompt has at least `from_prompt_tokens` tokens is billed, all of
/// it, at these rates (Gemini 2.5 Pro above 200K tokens, GPT-5.x above 272K, as OpenRouter lists them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongContext {
    pub from_prompt_tokens: u64,
    pub input: i64,
    pub output: i64,
    pub cache_read: Option<i64>,
    pub cache_write: Option<i64>,
    pub reasoning: Option<i64>,
}

impl Price {
    /// The rates a request with `prompt_tokens` prompt tokens is billed at.
    pub fn at_prompt(&self, prompt_tokens: u64) -> Price {
        match self.long_context {
            Some(l) if prompt_tokens >= l.from_prompt_tokens => Price {
                input: l.input,
                output: l.output,
                cache_read: l.cache_read,
                cache_write: l.cache_write,
                reasoning: l.reasoning,
                long_context: None,
            },
            _ => Price { long_context: None, ..*self },
        }
    }

    /// The long-context tier as a price of its own (`None`: the model has none).
    fn long(&self) -> Option<Price> {
        self.long_context.map(|l| self.at_prompt(l.from_prompt_tokens))
    }
}

/// One of OpenRouter's pricing overrides for a prompt size (µ$/Mtok; a rate it does not name is the base's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptSizeOverride {
    pub min_prompt_tokens: u64,
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub cache_read: Option<i64>,
    pub cache_write: Option<i64>,
    pub reasoning: Option<i64>,
}

/// The long-context tier of `base` from OpenRouter's prompt-size overrides. The table holds one tier: with
/// several, it starts at the lowest size and takes each rate at its highest among them (never below what
/// the upstream bills; above it between two sizes). A tier costing nothing more than the base is none.
pub fn long_context(base: &Price, overrides: &[PromptSizeOverride]) -> Option<LongContext> {
    let from_prompt_tokens = overrides.iter().map(|o| o.min_prompt_tokens).min()?;
    let highest = |base: i64, pick: fn(&PromptSizeOverride) -> Option<i64>| {
        overrides.iter().map(|o| pick(o).unwrap_or(base)).fold(base, i64::max)
    };
    let optional = |base: Option<i64>, fallback: i64, pick: fn(&PromptSizeOverride) -> Option<i64>| {
        let named = overrides.iter().filter_map(pick).max();
        named.map(|n| n.max(base.unwrap_or(fallback))).or(base)
    };
    let input = highest(base.input, |o| o.input);
    let output = highest(base.output, |o| o.output);
    let tier = LongContext {
        from_prompt_tokens,
        input,
        output,
        cache_read: optional(base.cache_read, base.input, |o| o.cache_read),
        cache_write: optional(base.cache_write, base.input, |o| o.cache_write),
        reasoning: optional(base.reasoning, base.output, |o| o.reasoning),
    };
    let same = tier.input == base.input
        && tier.output == base.output
        && tier.cache_read == base.cache_read
        && tier.cache_write == base.cache_write
        && tier.reasoning == base.reasoning;
    (!same).then_some(tier)
}

impl Price {
    /// A price at least as high as both, kind of token by kind of token: what
    /// a request that may be served by either model must reserve.
    /// (Long-context tiers are folded in: the result has none, and covers them at any prompt size.)
    pub fn costlier(&self, other: &Price) -> Price {
        let either = |a: Option<i64>, a_base: i64, b: Option<i64>, b_base: i64| match (a, b) {
            (None, None) => None,
            _ => Some(a.unwrap_or(a_base).max(b.unwrap_or(b_base))),
        };
        let flat = |a: &Price, b: &Price| Price {
            input: a.input.max(b.input),
            output: a.output.max(b.output),
            cache_read: either(a.cache_read, a.input, b.cache_read, b.input),
            cache_write: either(a.cache_write, a.input, b.cache_write, b.input),
            reasoning: either(a.reasoning, a.output, b.reasoning, b.output),
            long_context: None,
        };
        [self.long(), other.long()]
            .into_iter()
            .flatten()
            .fold(flat(&self.at_prompt(0), &other.at_prompt(0)), |p, l| flat(&p, &l))
    }
}

impl Price {
    /// The highest rate a prompt token and an output token can cost (cache writes may cost
    /// more than input, reasoning more than output): what a worst case is priced at.
    /// A long-context tier keeps its own worst rates, so a prompt that cannot reach it is not held at them.
    pub fn worst_rates(&self) -> Price {
        let worst =
            |input: i64, output: i64, cache_read: Option<i64>, cache_write: Option<i64>, reasoning: Option<i64>| {
                (input.max(cache_read.unwrap_or(0)).max(cache_write.unwrap_or(0)), output.max(reasoning.unwrap_or(0)))
            };
        let (input, output) = worst(self.input, self.output, self.cache_read, self.cache_write, self.reasoning);
        let long_context = self.long_context.map(|l| {
            let (long_input, long_output) = worst(l.input, l.output, l.cache_read, l.cache_write, l.reasoning);
            // Never below the base's worst: the tier is the dearer one.
            LongContext {
                from_prompt_tokens: l.from_prompt_tokens,
                input: long_input.max(input),
                output: long_output.max(output),
                cache_read: None,
                cache_write: None,
                reasoning: None,
            }
        });
        Price { input, output, cache_read: None, cache_write: None, reasoning: None, long_context }
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
    let price = &price.at_prompt(t.prompt);
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
    let price = &price.at_prompt(prompt_tokens);
    let prompt_cost = cost(price, &Tokens { prompt: prompt_tokens, ..Tokens::default() });
    let left = budget.saturating_sub(prompt_cost);
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
        let price = Price {
            input: 3,
            output: 15,
            cache_read: Some(1),
            cache_write: Some(4),
            reasoning: Some(20),
            long_context: None,
        };
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
        let cheap = Price {
            input: 100,
            output: 400,
            cache_read: Some(25),
            cache_write: None,
            reasoning: None,
            long_context: None,
        };
        let dear = Price {
            input: 3_000,
            output: 15_000,
            cache_read: None,
            cache_write: None,
            reasoning: None,
            long_context: None,
        };
        let both = cheap.costlier(&dear);
        assert_eq!(
            both,
            Price {
                input: 3_000,
                output: 15_000,
                cache_read: Some(3_000),
                cache_write: None,
                reasoning: None,
                long_context: None
            }
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
    fn a_long_prompt_bills_the_whole_request_at_the_long_context_rates() {
        // Gemini 2.5 Pro as OpenRouter lists it: $1.25/$10 per Mtok, $2.50/$15 from 200K prompt tokens.
        let base = Price { input: 1_250_000, output: 10_000_000, cache_read: Some(310_000), ..Price::default() };
        let tier = PromptSizeOverride {
            min_prompt_tokens: 200_000,
            input: Some(2_500_000),
            output: Some(15_000_000),
            cache_read: Some(625_000),
            ..PromptSizeOverride::default()
        };
        let price = Price { long_context: long_context(&base, &[tier]), ..base };
        let at = |prompt: u64| cost(&price, &Tokens { prompt, completion: 1_000, ..Tokens::default() });
        assert_eq!(at(199_999), (199_999 * 1_250_000 + 1_000 * 10_000_000 + 999_999) / 1_000_000);
        assert_eq!(at(200_000), (200_000 * 2_500_000 + 1_000 * 15_000_000) / 1_000_000);
        // The worst case of a prompt that cannot reach the tier is held at the base's rates; one that can, at the tier's.
        let worst = price.worst_rates();
        let held = |prompt: u64| cost(&worst, &Tokens { prompt, completion: 1_000, ..Tokens::default() });
        assert_eq!(held(1_000), (1_000 * 1_250_000 + 1_000 * 10_000_000) / 1_000_000);
        assert_eq!(held(300_000), (300_000 * 2_500_000 + 1_000 * 15_000_000) / 1_000_000);
        assert!(held(300_000) >= at(300_000) && held(1_000) >= at(1_000));
        assert_eq!(
            affordable_output_tokens(&price, 200_000, 500_000 + 16),
            1,
            "after the prompt at the tier's rate, one output token at its rate"
        );
        // The costlier of it and another price covers the tier at any prompt size.
        let both = price.costlier(&Price { input: 1, output: 1, ..Price::default() });
        assert_eq!((both.input, both.output, both.long_context), (2_500_000, 15_000_000, None));
        // Several sizes: the lowest, each rate at its highest; rates not named are the base's.
        let two = [
            PromptSizeOverride { min_prompt_tokens: 272_000, input: Some(5), ..PromptSizeOverride::default() },
            PromptSizeOverride { min_prompt_tokens: 128_000, output: Some(40), ..PromptSizeOverride::default() },
        ];
        let small = Price { input: 2, output: 20, ..Price::default() };
        assert_eq!(
            long_context(&small, &two),
            Some(LongContext { from_prompt_tokens: 128_000, input: 5, output: 40, ..LongContext::default() })
        );
        // Nothing dearer: no tier.
        assert_eq!(
            long_context(
                &small,
                &[PromptSizeOverride { min_prompt_tokens: 9, input: Some(2), ..PromptSizeOverride::default() }]
            ),
            None
        );
        assert_eq!(long_context(&small, &[]), None);
    }

    #[test]
    fn cache_and_reasoning_tokens_use_their_own_prices() {
        let p = Price {
            input: 3_000_000,
            output: 15_000_000,
            cache_read: Some(300_000),
            cache_write: Some(3_750_000),
            reasoning: None,
            long_context: None,
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
