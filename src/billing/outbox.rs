//! Copies the account object's ledger rows and usage records to D1
//! (`balance_transactions`, `usage_records`) in batches, and hands its alerts
//! to the `ALERTS` queue, each on its own (a failing queue does not hold up the
//! copy, nor a reconciliation waiting for it); on failure the object's alarm
//! tries again.

use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{Env, Result, SqlStorage};

use super::store::{self, scalar, text, LedgerRow};
use crate::domain::time::to_iso;
use crate::domain::usage::UsageRecord;

/// Rows copied to D1 per batch (of each kind).
const BATCH: u32 = 100;

/// Whether anything waits to be copied.
pub fn waiting(sql: &SqlStorage) -> Result<bool> {
    Ok(rows_waiting(sql)? || scalar(sql, "SELECT COUNT(*) AS n FROM alert_outbox WHERE sent = 0", vec![])? > 0)
}

/// Whether ledger rows or usage records wait for the copy to D1.
fn rows_waiting(sql: &SqlStorage) -> Result<bool> {
    Ok(scalar(sql, "SELECT COUNT(*) AS n FROM ledger WHERE synced = 0", vec![])?
        + scalar(sql, "SELECT COUNT(*) AS n FROM usage_outbox", vec![])?
        > 0)
}

/// Hands the alerts waiting to the queue (one message each; the consumer delivers them), and forgets
/// sent ones after 40 days (their ids stay unique for longer than any window they name).
/// Answers whether more wait (a batch at a time).
pub async fn send_alerts(sql: &SqlStorage, env: &Env) -> Result<bool> {
    #[derive(Deserialize)]
    struct Waiting {
        id: String,
        body: String,
    }
    let waiting: Vec<Waiting> =
        sql.exec(&format!("SELECT id, body FROM alert_outbox WHERE sent = 0 LIMIT {BATCH}"), None)?.to_array()?;
    if waiting.is_empty() {
        return Ok(false);
    }
    if crate::env::Config::get(env).faults.fail_alert_queue {
        return Err(worker::Error::RustError("the alerts queue refused the batch (FAULT_FAIL_ALERT_QUEUE)".into()));
    }
    let more = waiting.len() as u32 == BATCH;
    let sent = id_list(waiting.iter().map(|w| w.id.as_str()))?;
    let messages: Vec<AlertMessage> = waiting.into_iter().map(|w| AlertMessage { id: w.id, body: w.body }).collect();
    crate::queues::send_all(&crate::env::alerts_queue(env)?, &messages).await?;
    sql.exec_raw("UPDATE alert_outbox SET sent = 1 WHERE id IN (SELECT value FROM json_each(?))", vec![text(&sent)])?;
    let horizon = js_sys::Date::now() - 40.0 * 86_400_000.0;
    sql.exec_raw("DELETE FROM alert_outbox WHERE sent = 1 AND created_ms < ?", vec![JsValue::from_f64(horizon)])?;
    Ok(more)
}

/// One alert on its way to the webhook (the queue's message).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct AlertMessage {
    pub id: String,
    /// The webhook's body, exactly as signed and sent.
    pub body: String,
}

/// Copies one batch of unsynced ledger rows and waiting usage records to D1. Answers whether more rows
/// are waiting.
pub async fn copy(sql: &SqlStorage, env: &Env) -> Result<bool> {
    #[derive(Deserialize)]
    struct Waiting {
        id: String,
        record: String,
    }
    let account_id = store::account_id(sql)?.unwrap_or_default();
    let rows: Vec<LedgerRow> = if account_id.is_empty() {
        Vec::new()
    } else {
        sql.exec(&format!("SELECT * FROM ledger WHERE synced = 0 ORDER BY seq LIMIT {BATCH}"), None)?.to_array()?
    };
    let waiting: Vec<Waiting> =
        sql.exec(&format!("SELECT id, record FROM usage_outbox LIMIT {BATCH}"), None)?.to_array()?;
    if rows.is_empty() && waiting.is_empty() {
        return Ok(false);
    }
    let copied_rows = id_list(rows.iter().map(|r| r.id.as_str()))?;
    // A record this version cannot read (written by another) is dropped with the others, said in the log:
    // the charge is the ledger row's; only the usage statistics lose it. Kept, it would stall the outbox.
    let mut records: Vec<UsageRecord> = Vec::with_capacity(waiting.len());
    let mut unreadable = Vec::new();
    for w in &waiting {
        match serde_json::from_slice(w.record.as_bytes()) {
            Ok(record) => records.push(record),
            Err(e) => unreadable.push(format!("record {} unreadable, dropped: {e}", w.id)),
        }
    }
    copy_to_d1(env, &account_id, rows, &records).await?;
    // One statement for each kind, whatever the batch's size (a statement per row cost a request two).
    sql.exec_raw(
        "UPDATE ledger SET synced = 1 WHERE id IN (SELECT value FROM json_each(?))",
        vec![text(&copied_rows)],
    )?;
    let copied_records = id_list(waiting.iter().map(|w| w.id.as_str()))?;
    sql.exec_raw("DELETE FROM usage_outbox WHERE id IN (SELECT value FROM json_each(?))", vec![text(&copied_records)])?;
    for line in unreadable {
        crate::log::job_error("usage_outbox", &line);
    }
    rows_waiting(sql)
}

/// Ids as one JSON array, bound as one value and read back by SQLite's `json_each`.
fn id_list<'a>(ids: impl Iterator<Item = &'a str>) -> Result<String> {
    Ok(serde_json::to_string(&ids.collect::<Vec<_>>())?)
}

async fn copy_to_d1(env: &Env, account_id: &str, rows: Vec<LedgerRow>, records: &[UsageRecord]) -> Result<()> {
    let db = crate::env::db(env)?;
    let mut statements = Vec::with_capacity(rows.len() + records.len());
    let opt = |s: Option<&str>| s.map_or(JsValue::NULL, JsValue::from_str);
    for r in rows {
        statements.push(db.prepare(
            "INSERT OR IGNORE INTO balance_transactions (id, user_id, type, amount, balance_after, reference_id, description, key_id, created_at, upstream_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        ).bind(&[
            text(&r.id),
            text(account_id),
            text(&r.r#type),
            JsValue::from_f64(r.amount),
            JsValue::from_f64(r.balance_after),
            opt(r.reference_id.as_deref()),
            opt(r.description.as_deref()),
            opt(r.key_id.as_deref()),
            text(&to_iso(r.created_ms as i64)),
            opt(r.upstream_id.as_deref()),
        ])?);
    }
    for record in records {
        statements.push(crate::store::usage::insert_statement(&db, record)?);
    }
    db.batch(statements).await?;
    Ok(())
}
