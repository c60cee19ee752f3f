//! Scheduled work behind the cron trigger. Each job is idempotent and logs one line.

use serde_json::json;
use worker::Env;

use crate::log::{self, Level};

pub async fn run(cron: String, env: Env) {
    let threshold = crate::env::Config::get(&env).log_level;
    let report = |job: &str, result: Result<serde_json::Value, crate::api::error::ApiError>| match result {
        Ok(v) => log::write(threshold, Level::Info, json!({"job": job, "cron": cron, "result": v})),
        Err(e) => log::write(threshold, Level::Error, json!({"job": job, "cron": cron, "detail": e.to_string()})),
    };
    report("refresh_models", crate::api::refresh_models_cache(&env).await.map(|n| json!({ "models": n })));
    report("sync_prices", crate::api::sync_prices(&env, false).await.map(|n| json!({ "models": n })));
    // Reconciliation first flushes every account's outbox (ledger rows and usage records) to D1.
    report("reconcile", crate::api::run_reconciliation(&env).await);
    report("mirror_upstream_keys", crate::api::mirror_upstream_keys(&env).await);
    report("expire_request_logs", crate::api::expire_request_logs(&env).await);
    let days = crate::env::Config::get(&env).usage_retention_days;
    report("retention", crate::retention::run(&env, js_sys::Date::now() as i64, days).await);
}
