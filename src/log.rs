//! Structured logging: one JSON line per event, filtered by `LOG_LEVEL`.
//! Lines about a request are written after its response (`ctx.wait_until`),
//! so logging never delays the client. Secrets and message contents never appear.

use serde_json::Value;
use worker::Context;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    /// `error|warn|info|debug`; anything else is `info`.
    pub fn parse(text: &str) -> Self {
        match text.trim().to_ascii_lowercase().as_str() {
            "error" => Self::Error,
            "warn" | "warning" => Self::Warn,
            "debug" => Self::Debug,
            _ => Self::Info,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
}

/// Writes `fields` (a JSON object) with its level, now.
pub fn write(threshold: Level, level: Level, mut fields: Value) {
    if level > threshold {
        return;
    }
    fields["level"] = level.as_str().into();
    match level {
        Level::Error => worker::console_error!("{fields}"),
        Level::Warn => worker::console_warn!("{fields}"),
        _ => worker::console_log!("{fields}"),
    }
}

/// Writes after the response has gone out.
pub fn after_response(ctx: &Context, threshold: Level, level: Level, fields: Value) {
    if level > threshold {
        return;
    }
    ctx.wait_until(async move { write(threshold, level, fields) });
}

/// A background job's failure (no request to attach it to).
pub fn job_error(job: &str, detail: &str) {
    worker::console_error!("{}", serde_json::json!({"level": "error", "job": job, "detail": detail}));
}
