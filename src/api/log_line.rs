//! One structured line per inference request, written after the response;
//! never message contents or secrets.

use serde_json::{json, Value};

use super::auth::Caller;
use super::respond::Call;
use crate::domain::routing::Provider;
use crate::log::{self, Level};

/// What the per-request log line says about the caller and request.
pub struct LogContext {
    pub request_id: String,
    pub cf_ray: Option<String>,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub org_id: Option<String>,
    pub end_user: Option<String>,
    pub model: String,
    pub provider: Provider,
    /// Upstream calls made (retries and fallbacks included).
    pub tries: u32,
    pub started_ms: f64,
    pub level: Level,
}

impl LogContext {
    pub fn new(call: &Call, caller: &Caller, model: &str, provider: Provider, tries: u32) -> Self {
        let (key_id, user_id, org_id) = match caller {
            Caller::Operator => (None, None, None),
            Caller::Key(k) => (Some(k.id.clone()), Some(k.user_id.clone()), k.org_id.clone()),
        };
        Self {
            request_id: call.request_id.clone(),
            cf_ray: call.cf_ray.clone(),
            key_id,
            user_id,
            org_id,
            end_user: call.end_user.clone(),
            model: model.to_string(),
            provider,
            tries,
            started_ms: call.started_ms,
            level: call.config.log_level,
        }
    }

    /// Writes the line: status, tokens, what was charged and what was not collected (USD).
    pub fn finished(&self, status: u16, tokens: (u64, u64), cost: Option<(f64, f64)>, streamed: bool) {
        let level = if status >= 500 { Level::Error } else { Level::Info };
        let (charged, uncollected) = cost.unzip();
        let line: Value = json!({
            "request_id": self.request_id, "cf_ray": self.cf_ray, "key_id": self.key_id, "user_id": self.user_id,
            "org_id": self.org_id, "end_user": self.end_user,
            "model": self.model, "provider": self.provider.as_str(), "status": status, "streamed": streamed,
            "attempts": self.tries, "latency_ms": (js_sys::Date::now() - self.started_ms) as i64,
            "prompt_tokens": tokens.0, "completion_tokens": tokens.1, "cost": charged,
            "uncollected": uncollected.filter(|u| *u > 0.0),
        });
        log::write(self.level, level, line);
    }
}
