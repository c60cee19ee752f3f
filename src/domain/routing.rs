//! Which provider serves a model.
//!
//! Model ids are `provider/model`. A model pinned by an operator goes where
//! the pin says, under its native id. Otherwise, when the tenant has a direct
//! key for the model's provider prefix (`openai`, `anthropic`, `google`), the
//! model goes there with the prefix removed; everything else goes to
//! OpenRouter unchanged. A direct route falls back to OpenRouter (same model
//! id) when its provider keeps failing, unless the pin turns that off (pins
//! and fallbacks are not wired yet: the chat path passes no pin).

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

fn strip_prefix(model: &str) -> &str {
    model.split_once('/').map_or(model, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn provider_names_round_trip() {
        for p in [Provider::OpenRouter, Provider::OpenAi, Provider::Anthropic, Provider::Google] {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
        }
        assert_eq!(Provider::parse("azure"), None);
    }
}
