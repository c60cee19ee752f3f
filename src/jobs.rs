//! Scheduled work behind the cron trigger. Each job is idempotent and logs one line.

use serde_json::json;
use worker::Env;

use crate::log::{self, Level};

pub async fn run(cron: String, env: Env) {
    let result = crate::api::refresh_models_cache(&env).await;
    let threshold = crate::env::Config::get(&env).log_level;
    match result {
        Ok(count) => {
            log::write(threshold, Level::Info, json!({"job": "refresh_models", "cron": cron, "models": count}))
        }
        Err(e) => {
            log::write(threshold, Level::Error, json!({"job": "refresh_models", "cron": cron, "detail": e.to_string()}))
        }
    }
}
