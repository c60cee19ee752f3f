//! Delivers alerts (`domain::alerts`) to the tenant's `ALERT_WEBHOOK_URL`: the
//! `ALERTS` queue's consumer. Each message is one alert; it is signed and
//! posted, its delivery recorded in D1 (`alert_deliveries`), and retried with
//! a doubling delay until the receiver answers 2xx (or `MAX_ATTEMPTS` pass).
//! One already delivered is never posted again.

use serde::Deserialize;
use worker::{Env, MessageBatch, MessageExt, Method, QueueRetryOptionsBuilder, RawMessage};

use crate::billing::outbox::AlertMessage;
use crate::domain::alerts::{backoff_secs, signature};
use crate::domain::time::to_iso;
use crate::providers::openai_compat::ProviderError;
use crate::store::{int, opt_int, opt_text, text};

/// Deliveries tried before an alert is given up as failed.
const MAX_ATTEMPTS: i64 = 12;
const TIMEOUT_MS: u64 = 10_000;

pub async fn consume(batch: MessageBatch<serde_json::Value>, env: Env) -> worker::Result<()> {
    let config = crate::env::Config::get(&env);
    let Some(alerts) = config.alerts.as_ref() else {
        // Alerts were turned off after these were queued: nothing to deliver them to.
        batch.ack_all();
        return Ok(());
    };
    let db = crate::env::db(&env)?;
    for message in batch.raw_iter() {
        let Ok(alert) = crate::queues::read::<AlertMessage>(&message) else {
            crate::log::job_error("alert_delivery", "an unreadable message was dropped");
            message.ack();
            continue;
        };
        if let Err(e) = deliver(&db, alerts, &message, &alert).await {
            crate::log::job_error("alert_delivery", &e.to_string());
            message.retry_with_options(
                &QueueRetryOptionsBuilder::new().with_delay_seconds(alerts.retry_base_secs).build(),
            );
        }
    }
    Ok(())
}

async fn deliver(
    db: &worker::D1Database,
    alerts: &crate::env::Alerts,
    message: &RawMessage,
    alert: &AlertMessage,
) -> worker::Result<()> {
    #[derive(Deserialize)]
    struct Row {
        status: String,
        attempts: i64,
    }
    let AlertMessage { id, body } = alert;
    let row = db
        .prepare("SELECT status, attempts FROM alert_deliveries WHERE id = ?1")
        .bind(&[text(id)])?
        .first::<Row>(None)
        .await?;
    if row.as_ref().is_some_and(|r| r.status != "pending") {
        message.ack();
        return Ok(());
    }
    let attempts = row.map_or(0, |r| r.attempts) + 1;
    let now = js_sys::Date::now() as i64;
    let timestamp = now / 1000;
    let signed = signature(alerts.secret.expose(), timestamp, body.as_bytes());
    let stamp = timestamp.to_string();
    let headers = [
        ("content-type", "application/json"),
        ("user-agent", "Tollgate-Alerts/1"),
        ("x-tollgate-alert-id", id.as_str()),
        ("x-tollgate-timestamp", stamp.as_str()),
        ("x-tollgate-signature", signed.as_str()),
    ];
    let sent = crate::providers::transport::send(
        Method::Post,
        &alerts.webhook_url,
        &headers,
        Some(body.as_bytes()),
        TIMEOUT_MS,
    )
    .await;
    // A redirect is not followed (`transport::send`): a 3xx is no delivery, and the alert is sent again.
    let (status, last_status, error) = match &sent {
        Ok(_) => ("delivered", Some(200), None),
        Err(e) => {
            let code = match e {
                ProviderError::Rejected { status, .. }
                | ProviderError::CredentialsRejected { status, .. }
                | ProviderError::Unavailable { status, .. } => Some(i64::from(*status)),
                ProviderError::RateLimited { .. } => Some(429),
                _ => None,
            };
            (if attempts >= MAX_ATTEMPTS { "failed" } else { "pending" }, code, Some(e.to_string()))
        }
    };
    let kind = serde_json::from_slice::<serde_json::Value>(body.as_bytes())
        .ok()
        .and_then(|v| v["type"].as_str().map(String::from))
        .unwrap_or_default();
    let at = to_iso(now);
    db.prepare(
        "INSERT INTO alert_deliveries (id, type, body, status, attempts, last_status, last_error, created_at, updated_at, delivered_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, CASE WHEN ?4 = 'delivered' THEN ?8 END) \
         ON CONFLICT (id) DO UPDATE SET status = ?4, attempts = ?5, last_status = ?6, last_error = ?7, updated_at = ?8, \
         delivered_at = CASE WHEN ?4 = 'delivered' THEN ?8 ELSE delivered_at END",
    )
    .bind(&[text(id), text(&kind), text(body), text(status), int(attempts), opt_int(last_status), opt_text(error.as_deref()), text(&at)])?
    .run()
    .await?;
    match status {
        "pending" => {
            let delay = backoff_secs(alerts.retry_base_secs, attempts as u32);
            message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(delay).build());
        }
        _ => message.ack(),
    }
    Ok(())
}
