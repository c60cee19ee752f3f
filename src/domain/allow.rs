//! Allowlists: which models a key (or an organization's keys) may ask for, and
//! which providers may serve them. Models are exact ids (`openai/gpt-4o-mini`)
//! or a vendor's every model (`anthropic/*`); providers are the routes that
//! serve (`openrouter`, `openai`, `anthropic`, `google`). An empty list allows
//! any. Pure and host-tested; checked before anything is reserved.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::InvalidRequest;

/// The providers a list may name (the routes of `domain::routing::Provider`).
pub const PROVIDERS: [&str; 4] = ["openrouter", "openai", "anthropic", "google"];
/// Entries in one list at most.
const MAX_ENTRIES: usize = 100;
const MAX_ENTRY_LEN: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowlist {
    /// Model ids and `vendor/*` patterns; empty: any model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Providers that may serve; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
}

impl Allowlist {
    pub fn is_open(&self) -> bool {
        self.models.is_empty() && self.providers.is_empty()
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|entry| matches(entry, model))
    }

    pub fn allows_provider(&self, provider: &str) -> bool {
        self.providers.is_empty() || self.providers.iter().any(|p| p == provider)
    }

    /// Everything this allows, `outer` allows too (what a key without `admin` may give a key it manages).
    pub fn within(&self, outer: &Allowlist) -> bool {
        let models = outer.models.is_empty()
            || (!self.models.is_empty()
                && self.models.iter().all(|entry| match entry.strip_suffix("/*") {
                    Some(vendor) => outer.models.iter().any(|o| o.strip_suffix("/*") == Some(vendor)),
                    None => outer.allows_model(entry),
                }));
        let providers = outer.providers.is_empty()
            || (!self.providers.is_empty() && self.providers.iter().all(|p| outer.allows_provider(p)));
        models && providers
    }

    /// The lists as stored (JSON text; `None`: any).
    pub fn from_columns(models: Option<&str>, providers: Option<&str>) -> Self {
        Self { models: from_column(models), providers: from_column(providers) }
    }

    pub fn to_columns(&self) -> (Option<String>, Option<String>) {
        (to_column(&self.models), to_column(&self.providers))
    }

    /// Both lists must allow it: a key's own, and its organization's.
    pub fn allows(&self, model: &str, provider: &str) -> bool {
        self.allows_model(model) && self.allows_provider(provider)
    }
}

fn matches(entry: &str, model: &str) -> bool {
    match entry.strip_suffix("/*") {
        Some(vendor) => model.strip_prefix(vendor).is_some_and(|rest| rest.starts_with('/')),
        None => entry == model,
    }
}

fn list_of(value: &Value, param: &str) -> Result<Vec<String>, InvalidRequest> {
    let invalid = |m: &str| InvalidRequest::param(format!("`{param}` {m}"), param);
    let Value::Array(items) = value else {
        return Err(invalid("must be a list of strings (empty: any)"));
    };
    if items.len() > MAX_ENTRIES {
        return Err(invalid(&format!("may hold at most {MAX_ENTRIES} entries")));
    }
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let entry = item.as_str().map(str::trim).filter(|s| !s.is_empty() && s.len() <= MAX_ENTRY_LEN);
        let Some(entry) = entry else { return Err(invalid("must be a list of non-empty strings")) };
        if entry.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("entries may not hold spaces or control characters"));
        }
        if !out.iter().any(|e| e == entry) {
            out.push(entry.to_string());
        }
    }
    Ok(out)
}

/// `allowed_models` from the wire: exact ids or `vendor/*` (the only wildcard).
pub fn parse_models(value: &Value) -> Result<Vec<String>, InvalidRequest> {
    let list = list_of(value, "allowed_models")?;
    for entry in &list {
        let bad_wildcard = entry.contains('*') && (!entry.ends_with("/*") || entry[..entry.len() - 2].contains('*'));
        if bad_wildcard || entry == "/*" {
            return Err(InvalidRequest::param(
                format!("`allowed_models`: `{entry}` is neither a model id nor `vendor/*`"),
                "allowed_models",
            ));
        }
    }
    Ok(list)
}

/// `allowed_providers` from the wire: names from `PROVIDERS`.
pub fn parse_providers(value: &Value) -> Result<Vec<String>, InvalidRequest> {
    let list = list_of(value, "allowed_providers")?;
    if let Some(unknown) = list.iter().find(|p| !PROVIDERS.contains(&p.as_str())) {
        return Err(InvalidRequest::param(
            format!("`allowed_providers`: `{unknown}` is not one of {}", PROVIDERS.join(", ")),
            "allowed_providers",
        ));
    }
    Ok(list)
}

/// `current` changed as a request asks: per list, absent (`None`) keeps it, `null` (`Some(None)`) clears it
/// (any), a list replaces it.
pub fn apply(
    current: &Allowlist,
    models: Option<Option<&Value>>,
    providers: Option<Option<&Value>>,
) -> Result<Allowlist, InvalidRequest> {
    Ok(Allowlist {
        models: match models {
            None => current.models.clone(),
            Some(None) => Vec::new(),
            Some(Some(v)) => parse_models(v)?,
        },
        providers: match providers {
            None => current.providers.clone(),
            Some(None) => Vec::new(),
            Some(Some(v)) => parse_providers(v)?,
        },
    })
}

/// A stored list (JSON text, `NULL` for none) as entries. An unreadable list allows nothing.
fn from_column(text: Option<&str>) -> Vec<String> {
    match text {
        None => Vec::new(),
        Some(t) => serde_json::from_slice(t.as_bytes()).unwrap_or_else(|_| vec![UNREADABLE.to_string()]),
    }
}

/// What an unreadable stored list becomes: an entry no model or provider is.
const UNREADABLE: &str = "(unreadable allowlist)";

/// Entries as a stored list (`None` when empty: any).
fn to_column(list: &[String]) -> Option<String> {
    (!list.is_empty()).then(|| serde_json::to_string(list).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(models: &[&str], providers: &[&str]) -> Allowlist {
        Allowlist {
            models: models.iter().map(|m| m.to_string()).collect(),
            providers: providers.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn exact_ids_vendor_patterns_and_providers() {
        let a = list(&["openai/gpt-4o-mini", "anthropic/*"], &["openrouter"]);
        assert!(a.allows("openai/gpt-4o-mini", "openrouter"));
        assert!(!a.allows("openai/gpt-4o", "openrouter"), "not the exact id");
        assert!(a.allows("anthropic/claude-3.5-sonnet", "openrouter"));
        assert!(!a.allows("anthropic-ish/x", "openrouter"), "a pattern names a whole vendor");
        assert!(!a.allows("openai/gpt-4o-mini", "openai"), "not served by that provider");
        assert!(Allowlist::default().allows("any/model", "google"));
        assert!(Allowlist::default().is_open());
    }

    #[test]
    fn a_managed_key_stays_within_its_makers_list() {
        let outer = list(&["openai/*", "anthropic/claude-3.5-sonnet"], &[]);
        assert!(list(&["openai/gpt-4o"], &["openai"]).within(&outer));
        assert!(list(&["openai/*"], &[]).within(&outer));
        assert!(!list(&["anthropic/*"], &[]).within(&outer), "wider than the maker's exact id");
        assert!(!list(&[], &[]).within(&outer), "an open list is wider than any");
        assert!(list(&[], &[]).within(&Allowlist::default()));
        assert!(!list(&["openai/*"], &["openai", "google"]).within(&list(&[], &["openai"])));
    }

    #[test]
    fn parsing_refuses_what_it_cannot_mean() {
        assert_eq!(parse_models(&json!(["openai/*", "a/b", "a/b"])).expect("valid"), ["openai/*", "a/b"]);
        for bad in [
            json!("openai/*"),
            json!([1]),
            json!(["*"]),
            json!(["open*/x"]),
            json!(["a/*/*"]),
            json!([" "]),
            json!(["a b"]),
        ] {
            assert!(parse_models(&bad).is_err(), "{bad}");
        }
        assert_eq!(parse_providers(&json!(["openai"])).expect("valid"), ["openai"]);
        assert_eq!(
            parse_providers(&json!(["azure"])).expect_err("unknown").param.as_deref(),
            Some("allowed_providers")
        );
        assert_eq!(from_column(to_column(&["a/*".to_string()]).as_deref()), ["a/*"]);
        assert_eq!(to_column(&[]), None);
        let unreadable = Allowlist { models: from_column(Some("not json")), providers: from_column(Some("[")) };
        assert!(!unreadable.allows("any/model", "openrouter"), "an unreadable list allows nothing");
    }
}
