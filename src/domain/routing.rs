//! Which provider serves a model.
//!
//! Model ids are `provider/model`. A model pinned by an operator goes where
//! the pin says, under its native id. Otherwise, when the tenant has a direct
//! key for the model's provider prefix (`openai`, `anthropic`, `google`), the
//! model goes there with the prefix removed; everything else goes to
//! OpenRouter unchanged. A direct route falls back to OpenRouter (same model
//! id) when its provider keeps failing, unless the pin turns that off.
//!
//! `plan` lists every attempt a request may make, in order; `backoff_ms`
//! spaces the retries of one attempt.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    OpenRouter,
    OpenAi,
    Anthropic,
    Google,
}

impl Provider {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "openrouter" => Some(Self::OpenRouter),
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            "google" => Some(Self::Google),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenRouter => "openrouter",
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Google => "google",
        }
    }
}

/// An operator's pin for one model (`/api/admin/routes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub model: String,
    pub provider: Provider,
    pub native_model: Option<String>,
    pub fallback_to_openrouter: bool,
}

/// Where one request goes first, and whether OpenRouter backs it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub provider: Provider,
    /// The model id that provider knows.
    pub native_model: String,
    /// Try OpenRouter with the client's model id when this route keeps failing.
    pub fallback_to_openrouter: bool,
}

/// `direct`: the providers this tenant has its own key for.
pub fn route(model: &str, pin: Option<&Pin>, direct: &[Provider]) -> Route {
    if let Some(pin) = pin {
        let native = match (&pin.native_model, pin.provider) {
            (Some(native), _) => native.clone(),
            (None, Provider::OpenRouter) => model.to_string(),
            (None, _) => strip_prefix(model).to_string(),
        };
        return Route {
            provider: pin.provider,
            native_model: native,
            fallback_to_openrouter: pin.fallback_to_openrouter && pin.provider != Provider::OpenRouter,
        };
    }
    let prefix = model.split_once('/').map(|(p, _)| p);
    match prefix.and_then(Provider::parse).filter(|p| *p != Provider::OpenRouter && direct.contains(p)) {
        Some(provider) => {
            Route { provider, native_model: strip_prefix(model).to_string(), fallback_to_openrouter: true }
        }
        None => {
            Route { provider: Provider::OpenRouter, native_model: model.to_string(), fallback_to_openrouter: false }
        }
    }
}

/// One place a request may be sent: the model (as the client names it) and its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub model: String,
    pub route: Route,
    /// Pass the client's `models` list on (an OpenRouter route does its own fallback).
    pub keep_fallbacks: bool,
}

/// What the routing rule needs to know about the tenant.
pub struct Routing<'a> {
    /// The providers this tenant holds a direct key for.
    pub direct: &'a [Provider],
    /// OpenRouter is configured (it can serve as the safety net).
    pub openrouter: bool,
}

/// Every attempt a request may make, in order. An OpenRouter route is one
/// attempt that carries the client's `models` list (OpenRouter falls back
/// itself). A direct route is followed by OpenRouter for the same model (when
/// the route allows it), then by each fallback model, routed the same way.
pub fn plan(model: &str, fallbacks: &[String], pin_of: impl Fn(&str) -> Option<Pin>, tenant: &Routing) -> Vec<Attempt> {
    let first = route(model, pin_of(model).as_ref(), tenant.direct);
    if first.provider == Provider::OpenRouter && tenant.openrouter {
        return vec![Attempt { model: model.to_string(), route: first, keep_fallbacks: true }];
    }
    let mut attempts: Vec<Attempt> = Vec::new();
    for m in std::iter::once(model).chain(fallbacks.iter().map(String::as_str)) {
        let r = if m == model { first.clone() } else { route(m, pin_of(m).as_ref(), tenant.direct) };
        let safety_net = (r.fallback_to_openrouter && tenant.openrouter).then(|| Route {
            provider: Provider::OpenRouter,
            native_model: m.to_string(),
            fallback_to_openrouter: false,
        });
        for r in std::iter::once(r).chain(safety_net) {
            if !attempts.iter().any(|a| a.route.provider == r.provider && a.route.native_model == r.native_model) {
                attempts.push(Attempt { model: m.to_string(), route: r, keep_fallbacks: false });
            }
        }
    }
    attempts
}

/// Which of `candidates` an answer naming `served` came from: the same id, else the longest id
/// the answer's extends (`openai/gpt-4o-mini-2024-07-18` → `openai/gpt-4o-mini`, not `openai/gpt-4o`).
pub fn served_by(candidates: &[&str], served: &str) -> Option<usize> {
    if let Some(i) = candidates.iter().position(|c| *c == served) {
        return Some(i);
    }
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| served.strip_prefix(**c).is_some_and(|rest| rest.starts_with(['-', ':', '@'])))
        .max_by_key(|(_, c)| c.len())
        .map(|(i, _)| i)
}

/// The longest `Retry-After` a retry waits for; a provider that asks for more gets its 429 passed on.
pub const MAX_RETRY_AFTER_MS: u64 = 5_000;
const FIRST_BACKOFF_MS: u64 = 250;
const MAX_BACKOFF_MS: u64 = 4_000;

/// How long to wait before retry number `retry` (0-based), or `None` when the
/// provider asked for a longer wait than `MAX_RETRY_AFTER_MS`. Exponential
/// with "equal jitter" (`jitter` in [0, 1)): half the step, plus up to half again.
pub fn backoff_ms(retry: u32, retry_after_secs: Option<u64>, jitter: f64) -> Option<u64> {
    let step = FIRST_BACKOFF_MS.saturating_mul(1 << retry.min(16)).min(MAX_BACKOFF_MS);
    let jittered = step / 2 + (step as f64 / 2.0 * jitter.clamp(0.0, 1.0)) as u64;
    match retry_after_secs.map(|s| s.saturating_mul(1000)) {
        Some(asked) if asked > MAX_RETRY_AFTER_MS => None,
        Some(asked) => Some(asked.max(jittered)),
        None => Some(jittered),
    }
}

fn strip_prefix(model: &str) -> &str {
    model.split_once('/').map_or(model, |(_, rest)| rest)
}

/// The price table's ids an Anthropic model id may stand for (`claude-sonnet-4-5-20250929`, what Claude Code
/// and the Anthropic SDKs send by default, is OpenRouter's `anthropic/claude-sonnet-4.5`), most exact first:
/// as written, then with its version's dot (`3-5` → `3.5`), then without its date (or `-latest`), dotted
/// and as written. Empty for an id that is not Anthropic's own (one with a vendor, or not `claude-…`).
pub fn anthropic_ids(model: &str) -> Vec<String> {
    if model.contains('/') || !model.starts_with("claude-") {
        return Vec::new();
    }
    let undated = without_date(model).or_else(|| model.strip_suffix("-latest")).unwrap_or(model);
    let mut ids = Vec::new();
    for id in [model, undated] {
        for form in [id.to_string(), dotted(id)] {
            let form = format!("anthropic/{form}");
            if !ids.contains(&form) {
                ids.push(form);
            }
        }
    }
    ids
}

/// An id without its date suffix (`-20250929`), when it has one.
fn without_date(id: &str) -> Option<&str> {
    let (head, date) = id.rsplit_once('-')?;
    (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit())).then_some(head)
}

/// A direct Anthropic route for `model` sends Anthropic's own id the client asked for, `asked` (the price
/// table's `anthropic/claude-sonnet-4.5` stripped would be `claude-sonnet-4.5`, which Anthropic does not
/// know), unless an operator pinned a native id (`pinned_native`).
pub fn send_as_asked(plan: &mut [Attempt], model: &str, asked: &str, pinned_native: bool) {
    if pinned_native {
        return;
    }
    for attempt in plan.iter_mut().filter(|a| a.model == model && a.route.provider == Provider::Anthropic) {
        attempt.route.native_model = asked.to_string();
    }
}

/// A version's two numbers joined by a dot, as OpenRouter writes it: `claude-3-5-haiku` → `claude-3.5-haiku`,
/// `claude-opus-4-1` → `claude-opus-4.1` (a date is not a version: eight digits).
fn dotted(id: &str) -> String {
    let number = |p: &str| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = id.split('-').collect();
    let mut out = String::new();
    let mut i = 0;
    while i < parts.len() {
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(parts[i]);
        if i + 1 < parts.len() && number(parts[i]) && number(parts[i + 1]) {
            out.push('.');
            out.push_str(parts[i + 1]);
            i += 1;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_anthropic_route_sends_the_id_the_client_asked_for() {
        let tenant = Routing { direct: &[Provider::Anthropic], openrouter: true };
        let model = "anthropic/claude-sonnet-4.5";
        let mut plan = plan(model, &[], |_| None, &tenant);
        send_as_asked(&mut plan, model, "claude-sonnet-4-5-20250929", false);
        assert_eq!(plan[0].route.native_model, "claude-sonnet-4-5-20250929");
        assert_eq!(
            plan[1].route,
            Route { provider: Provider::OpenRouter, native_model: model.into(), fallback_to_openrouter: false }
        );
        let mut pinned = plan.clone();
        pinned[0].route.native_model = "pinned".into();
        send_as_asked(&mut pinned, model, "claude-x", true);
        assert_eq!(pinned[0].route.native_model, "pinned", "an operator's pin wins");
    }

    #[test]
    fn anthropic_ids_name_the_price_tables_forms() {
        assert_eq!(
            anthropic_ids("claude-sonnet-4-5-20250929"),
            [
                "anthropic/claude-sonnet-4-5-20250929",
                "anthropic/claude-sonnet-4.5-20250929",
                "anthropic/claude-sonnet-4-5",
                "anthropic/claude-sonnet-4.5"
            ]
        );
        assert_eq!(anthropic_ids("claude-3-5-haiku-latest")[3], "anthropic/claude-3.5-haiku");
        assert_eq!(anthropic_ids("claude-opus-4-1")[1], "anthropic/claude-opus-4.1");
        assert_eq!(
            anthropic_ids("claude-sonnet-4-20250514"),
            ["anthropic/claude-sonnet-4-20250514", "anthropic/claude-sonnet-4"]
        );
        assert_eq!(anthropic_ids("claude-3-opus"), ["anthropic/claude-3-opus"]);
        assert!(anthropic_ids("anthropic/claude-3.5-haiku").is_empty(), "a vendor's id is the table's own");
        assert!(anthropic_ids("gpt-4o").is_empty());
        assert_eq!(anthropic_ids("claude-"), ["anthropic/claude-"], "odd, but no panic");
    }

    #[test]
    fn without_direct_keys_everything_goes_to_openrouter_unchanged() {
        let r = route("anthropic/claude-3-5-haiku-20241022", None, &[]);
        assert_eq!(
            r,
            Route {
                provider: Provider::OpenRouter,
                native_model: "anthropic/claude-3-5-haiku-20241022".into(),
                fallback_to_openrouter: false
            }
        );
    }

    #[test]
    fn a_direct_key_takes_its_providers_models_with_the_prefix_removed() {
        let direct = [Provider::Anthropic, Provider::Google];
        let r = route("anthropic/claude-3-5-haiku-20241022", None, &direct);
        assert_eq!(
            (r.provider, r.native_model.as_str(), r.fallback_to_openrouter),
            (Provider::Anthropic, "claude-3-5-haiku-20241022", true)
        );
        assert_eq!(route("google/gemini-2.0-flash-001", None, &direct).provider, Provider::Google);
        assert_eq!(route("openai/gpt-4o", None, &direct).provider, Provider::OpenRouter, "no OpenAI key");
        assert_eq!(route("meta-llama/llama-3.1-8b-instruct", None, &direct).provider, Provider::OpenRouter);
        assert_eq!(
            route("gpt-4o", None, &[Provider::OpenAi]).provider,
            Provider::OpenRouter,
            "no prefix, no direct route"
        );
    }

    #[test]
    fn a_pin_wins_with_its_native_id_and_fallback_setting() {
        let pin = Pin {
            model: "anthropic/claude-3.5-sonnet".into(),
            provider: Provider::Anthropic,
            native_model: Some("claude-3-5-sonnet-latest".into()),
            fallback_to_openrouter: false,
        };
        let r = route("anthropic/claude-3.5-sonnet", Some(&pin), &[]);
        assert_eq!(
            (r.provider, r.native_model.as_str(), r.fallback_to_openrouter),
            (Provider::Anthropic, "claude-3-5-sonnet-latest", false)
        );
        let to_openrouter =
            Pin { provider: Provider::OpenRouter, native_model: None, fallback_to_openrouter: true, ..pin };
        let r = route("anthropic/claude-3.5-sonnet", Some(&to_openrouter), &[Provider::Anthropic]);
        assert_eq!(
            (r.provider, r.native_model.as_str(), r.fallback_to_openrouter),
            (Provider::OpenRouter, "anthropic/claude-3.5-sonnet", false)
        );
    }

    fn providers(attempts: &[Attempt]) -> Vec<(String, Provider, String)> {
        attempts.iter().map(|a| (a.model.clone(), a.route.provider, a.route.native_model.clone())).collect()
    }

    #[test]
    fn an_openrouter_route_is_one_attempt_that_keeps_the_fallback_list() {
        let tenant = Routing { direct: &[Provider::Anthropic], openrouter: true };
        let plan = plan("meta-llama/llama-3.1-8b-instruct", &["openai/gpt-4o".into()], |_| None, &tenant);
        assert_eq!(plan.len(), 1);
        assert!(plan[0].keep_fallbacks);
        assert_eq!(plan[0].route.provider, Provider::OpenRouter);
    }

    #[test]
    fn a_direct_route_falls_back_to_openrouter_then_to_each_fallback_model() {
        let tenant = Routing { direct: &[Provider::Anthropic, Provider::OpenAi], openrouter: true };
        let fallbacks = ["openai/gpt-4o-mini".to_string(), "meta-llama/llama-3.1-8b-instruct".to_string()];
        let plan = plan("anthropic/claude-3-5-haiku", &fallbacks, |_| None, &tenant);
        let a = |m: &str, p, n: &str| (m.to_string(), p, n.to_string());
        assert_eq!(
            providers(&plan),
            [
                a("anthropic/claude-3-5-haiku", Provider::Anthropic, "claude-3-5-haiku"),
                a("anthropic/claude-3-5-haiku", Provider::OpenRouter, "anthropic/claude-3-5-haiku"),
                a("openai/gpt-4o-mini", Provider::OpenAi, "gpt-4o-mini"),
                a("openai/gpt-4o-mini", Provider::OpenRouter, "openai/gpt-4o-mini"),
                a("meta-llama/llama-3.1-8b-instruct", Provider::OpenRouter, "meta-llama/llama-3.1-8b-instruct"),
            ]
        );
        assert!(plan.iter().all(|a| !a.keep_fallbacks), "the gateway walks the list itself");
    }

    #[test]
    fn without_openrouter_the_gateway_walks_the_fallbacks_itself() {
        let tenant = Routing { direct: &[Provider::Google], openrouter: false };
        let plan = plan("meta-llama/llama-3.1-8b-instruct", &["google/gemini-2.0-flash".into()], |_| None, &tenant);
        assert_eq!(
            providers(&plan),
            [
                (
                    "meta-llama/llama-3.1-8b-instruct".into(),
                    Provider::OpenRouter,
                    "meta-llama/llama-3.1-8b-instruct".into()
                ),
                ("google/gemini-2.0-flash".into(), Provider::Google, "gemini-2.0-flash".into()),
            ]
        );
    }

    #[test]
    fn no_openrouter_safety_net_without_openrouter_or_when_the_pin_forbids_it() {
        let alone = Routing { direct: &[Provider::Anthropic], openrouter: false };
        assert_eq!(plan("anthropic/claude-3-5-haiku", &[], |_| None, &alone).len(), 1);
        let pin = Pin {
            model: "anthropic/claude-3.5-sonnet".into(),
            provider: Provider::Anthropic,
            native_model: Some("claude-3-5-sonnet-latest".into()),
            fallback_to_openrouter: false,
        };
        let tenant = Routing { direct: &[Provider::Anthropic], openrouter: true };
        let plan = plan("anthropic/claude-3.5-sonnet", &[], |m| (m == pin.model).then(|| pin.clone()), &tenant);
        assert_eq!(
            providers(&plan),
            [("anthropic/claude-3.5-sonnet".into(), Provider::Anthropic, "claude-3-5-sonnet-latest".into())]
        );
    }

    #[test]
    fn the_served_model_is_found_among_the_candidates() {
        let candidates = ["openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"];
        assert_eq!(served_by(&candidates, "openai/gpt-4o-mini"), Some(1));
        assert_eq!(served_by(&candidates, "openai/gpt-4o-mini-2024-07-18"), Some(1), "the longest match wins");
        assert_eq!(served_by(&candidates, "openai/gpt-4o-2024-08-06"), Some(0));
        assert_eq!(served_by(&candidates, "anthropic/claude-3.5-sonnet:beta"), Some(2));
        assert_eq!(served_by(&candidates, "openai/gpt-4"), None);
        assert_eq!(served_by(&candidates, "openai/gpt-4ox"), None, "not a dated or tagged variant");
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_a_short_retry_after() {
        assert_eq!(backoff_ms(0, None, 0.0), Some(125));
        assert_eq!(backoff_ms(0, None, 0.999), Some(249));
        assert_eq!(backoff_ms(1, None, 0.0), Some(250));
        assert_eq!(backoff_ms(30, None, 1.0), Some(4_000), "capped");
        assert_eq!(backoff_ms(0, Some(2), 0.5), Some(2_000), "the provider's wait wins when longer");
        assert_eq!(backoff_ms(0, Some(0), 0.5), Some(187));
        assert_eq!(backoff_ms(0, Some(7), 0.5), None, "longer than the cap: no retry, the 429 goes back");
    }

    #[test]
    fn provider_names_round_trip() {
        for p in [Provider::OpenRouter, Provider::OpenAi, Provider::Anthropic, Provider::Google] {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
        }
        assert_eq!(Provider::parse("azure"), None);
    }
}
