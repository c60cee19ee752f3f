//! Scheduled work behind the cron trigger. Each job is idempotent and logs one line.

use serde_json::json;
use worker::Env;

pub async fn run(cron: String, env: Env) {
    let result = crate::api::refresh_models_cache(&env).await;
    let line = match result {
        Ok(count) => json!({"level": "info", "job": "refresh_models", "cron": cron, "models": count}),
        Err(e) => json!({"level": "error", "job": "refresh_models", "cron": cron, "detail": e.to_string()}),
    };
    worker::console_log!("{line}");
}
