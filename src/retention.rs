//! Retention: usage records and ledger copies older than `USAGE_RETENTION_DAYS`
//! leave D1 for R2 (`ARCHIVES`), one NDJSON object per account per day and
//! pass, listed in D1 `archives`; the daily roll-ups and running totals stay,
//! so stats and reconciliation read the same before and after. An archive can
//! be re-imported: its rows come back (usage marked `restored`, which the
//! roll-ups skip). The R2 object is written before anything leaves D1, and the
//! rows leave in one batch with the manifest row and the move of their sum to
//! `ledger_totals.archived`.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use wasm_bindgen::JsValue;
use worker::{D1Database, Env};

use crate::api::error::ApiError;
use crate::domain::time::to_iso;
use crate::store::{int, text};

const DAY_MS: i64 = 86_400_000;
/// Account-days archived per pass (the cron job runs every 15 minutes).
const GROUPS_PER_PASS: i64 = 50;
/// The tables an archive holds, and how their rows are told apart.
const TABLES: [&str; 2] = ["balance_transactions", "usage_records"];

fn d1(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

async fn rows(db: &D1Database, query: &str, args: &[JsValue]) -> Result<Vec<Map<String, Value>>, ApiError> {
    db.prepare(query).bind(args).map_err(d1)?.all().await.map_err(d1)?.results::<Map<String, Value>>().map_err(d1)
}

/// One pass: archives up to `GROUPS_PER_PASS` account-days older than the cutoff.
pub async fn run(env: &Env, now_ms: i64, days: i64) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct Group {
        user_id: String,
        day: String,
    }
    let db = crate::env::db(env).map_err(d1)?;
    let bucket = crate::env::archives(env).map_err(d1)?;
    let cutoff = to_iso(now_ms - days * DAY_MS);
    let groups: Vec<Group> = db
        .prepare(
            "SELECT user_id, substr(created_at, 1, 10) AS day FROM balance_transactions WHERE created_at < ?1 \
             UNION SELECT user_id, substr(created_at, 1, 10) AS day FROM usage_records WHERE created_at < ?1 \
             ORDER BY day, user_id LIMIT ?2",
        )
        .bind(&[text(&cutoff), int(GROUPS_PER_PASS)])
        .map_err(d1)?
        .all()
        .await
        .map_err(d1)?
        .results()
        .map_err(d1)?;
    let (mut ledger_rows, mut usage_rows) = (0, 0);
    for g in &groups {
        let args = [text(&g.user_id), text(&g.day), text(&cutoff)];
        let filter = "user_id = ?1 AND substr(created_at, 1, 10) = ?2 AND created_at < ?3";
        let ledger =
            rows(&db, &format!("SELECT * FROM balance_transactions WHERE {filter} ORDER BY id"), &args).await?;
        let usage = rows(&db, &format!("SELECT * FROM usage_records WHERE {filter} ORDER BY id"), &args).await?;
        let sum: i64 = ledger.iter().filter_map(|r| r.get("amount").and_then(Value::as_f64)).map(|a| a as i64).sum();
        let mut body = String::new();
        for (table, list) in [(TABLES[0], &ledger), (TABLES[1], &usage)] {
            for row in list.iter() {
                body.push_str(&json!({ "table": table, "row": row }).to_string());
                body.push('\n');
            }
        }
        let id = format!("arc-{now_ms}-{}", hex::encode(crate::api::random_bytes::<6>()));
        let owner = if g.user_id.is_empty() { "_operator" } else { g.user_id.as_str() };
        let r2_key = format!("archive/{owner}/{}/{id}.ndjson", g.day);
        bucket.put(&r2_key, body.into_bytes()).execute().await.map_err(d1)?;
        let statements = vec![
            db.prepare(
                "INSERT INTO archives (id, r2_key, user_id, day, ledger_rows, usage_rows, ledger_sum, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .bind(&[
                text(&id),
                text(&r2_key),
                text(&g.user_id),
                text(&g.day),
                int(ledger.len() as i64),
                int(usage.len() as i64),
                int(sum),
                text(&to_iso(now_ms)),
            ]),
            // What leaves is still the user's money: `amount + archived` stays the balance.
            db.prepare("UPDATE ledger_totals SET archived = archived + ?2 WHERE user_id = ?1")
                .bind(&[text(&g.user_id), int(sum)]),
            db.prepare(format!("DELETE FROM balance_transactions WHERE {filter}")).bind(&args),
            db.prepare(format!("DELETE FROM usage_records WHERE {filter}")).bind(&args),
        ];
        db.batch(statements.into_iter().collect::<worker::Result<Vec<_>>>().map_err(d1)?).await.map_err(d1)?;
        ledger_rows += ledger.len();
        usage_rows += usage.len();
    }
    Ok(
        json!({ "archives": groups.len(), "ledger_rows": ledger_rows, "usage_rows": usage_rows, "cutoff": cutoff, "days": days }),
    )
}

/// A column name from an archive, checked before it is written into SQL.
fn column(name: &str) -> Result<&str, ApiError> {
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    plain.then_some(name).ok_or_else(|| ApiError::internal(format!("an archive names a column `{name}`")))
}

/// The rows of an archive, as written.
pub async fn read(env: &Env, r2_key: &str) -> Result<String, ApiError> {
    let bucket = crate::env::archives(env).map_err(d1)?;
    let object = bucket.get(r2_key).execute().await.map_err(d1)?;
    let object = object.ok_or_else(|| ApiError::not_found(format!("archive object {r2_key} is missing")))?;
    object.body().ok_or_else(|| ApiError::not_found("the archive object is empty"))?.text().await.map_err(d1)
}

/// Puts an archive's rows back in D1 (a row already there is left as it is) and its sum back from `archived`.
pub async fn restore(env: &Env, db: &D1Database, archive_id: &str, now_ms: i64) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct Archive {
        r2_key: String,
        user_id: String,
        ledger_sum: i64,
        restored_at: Option<String>,
    }
    let archive: Archive = db
        .prepare("SELECT r2_key, user_id, ledger_sum, restored_at FROM archives WHERE id = ?1")
        .bind(&[text(archive_id)])
        .map_err(d1)?
        .first(None)
        .await
        .map_err(d1)?
        .ok_or_else(|| ApiError::not_found(format!("archive {archive_id} not found")))?;
    if archive.restored_at.is_some() {
        return Err(ApiError::Conflict(format!("archive {archive_id} was restored already")));
    }
    let body = read(env, &archive.r2_key).await?;
    let mut statements = Vec::new();
    let mut restored = 0;
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_str(line).map_err(d1)?;
        let table = entry["table"]
            .as_str()
            .filter(|t| TABLES.contains(t))
            .ok_or_else(|| d1("an archive line names no table"))?;
        let Some(row) = entry["row"].as_object() else { return Err(d1("an archive line has no row")) };
        let mut row = row.clone();
        if table == "usage_records" {
            row.insert("restored".into(), Value::from(1));
        }
        let names = row.keys().map(|k| column(k)).collect::<Result<Vec<_>, _>>()?;
        let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let values: Vec<JsValue> = row
            .values()
            .map(|v| match v {
                Value::Null => JsValue::NULL,
                Value::Number(n) => JsValue::from_f64(n.as_f64().unwrap_or(0.0)),
                Value::String(s) => JsValue::from_str(s),
                other => JsValue::from_str(&other.to_string()),
            })
            .collect();
        let sql = format!("INSERT OR IGNORE INTO {table} ({}) VALUES ({})", names.join(", "), marks.join(", "));
        statements.push(db.prepare(&sql).bind(&values).map_err(d1)?);
        restored += 1;
    }
    // The rows' amounts come back through the insert trigger; the same sum leaves `archived`.
    statements.push(
        db.prepare("UPDATE ledger_totals SET archived = archived - ?2 WHERE user_id = ?1")
            .bind(&[text(&archive.user_id), int(archive.ledger_sum)])
            .map_err(d1)?,
    );
    statements.push(
        db.prepare("UPDATE archives SET restored_at = ?2 WHERE id = ?1")
            .bind(&[text(archive_id), text(&to_iso(now_ms))])
            .map_err(d1)?,
    );
    db.batch(statements).await.map_err(d1)?;
    Ok(json!({ "id": archive_id, "rows": restored }))
}
