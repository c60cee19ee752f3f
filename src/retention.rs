//! Retention: usage records and ledger copies older than `USAGE_RETENTION_DAYS`
//! leave D1 for R2 (`ARCHIVES`), one gzipped NDJSON object per account per day
//! and pass (of at most `PART_ROWS` rows of each table: a busier day takes
//! several, in id order), listed in D1 `archives`; the daily roll-ups and running totals
//! stay, so stats and reconciliation read the same before and after. An archive
//! can be re-imported: its rows come back (usage marked `restored`, which the
//! roll-ups skip).
//!
//! A pass works account by account: itself for a tenant of up to `fan_out::INLINE_MAX`
//! users, through the `JOBS` queue past that (`fan_out`: an account a message).
//! The R2 object is written before anything leaves D1, and the rows leave in one
//! batch with the manifest row and the move of their sum to
//! `ledger_totals.archived`, and only if the rows are still exactly those
//! written: two passes that meet on an account-day move it once.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use wasm_bindgen::JsValue;
use worker::{Bucket, D1Database, Env};

use crate::api::error::ApiError;
use crate::domain::ledger::CLOSED_WITHOUT_SETTLEMENT;
use crate::domain::time::{parse_iso, to_iso};
use crate::store::{self, int, text};

const DAY_MS: i64 = 86_400_000;
/// Rows of each table one archive holds at most: the ids that leave D1 are bound as one JSON text (D1
/// takes at most 2 MB a value), and a restore inserts them in one batch, a statement a row.
const PART_ROWS: usize = 400;
/// Archives an inline pass writes.
const ARCHIVES_PER_PASS: usize = 50;
/// Archives one account's message writes before handing on the rest (about seven D1 queries each, so a
/// batch of such messages stays within an invocation's query limit: see `fan_out`).
pub const ARCHIVES_PER_MESSAGE: usize = 10;
/// The tables an archive holds, and how their rows are told apart.
const TABLES: [&str; 2] = ["balance_transactions", "usage_records"];
/// An account-day's rows older than the cutoff (?1 user, ?2 the day, ?3 the next day or the cutoff).
const FILTER: &str = "user_id = ?1 AND created_at >= ?2 AND created_at < ?3";

fn d1(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

/// What a step moved.
#[derive(Debug, Default)]
pub struct Moved {
    pub archives: usize,
    pub ledger_rows: usize,
    pub usage_rows: usize,
}

impl Moved {
    fn add(&mut self, other: Moved) {
        self.archives += other.archives;
        self.ledger_rows += other.ledger_rows;
        self.usage_rows += other.usage_rows;
    }
}

/// One pass (the cron job, and POST /api/admin/retention/run).
pub async fn run(env: &Env, now_ms: i64, days: i64) -> Result<Value, ApiError> {
    let db = crate::env::db(env).map_err(d1)?;
    // Whole days only: a cutoff that moved with the clock would archive a slice of the same day every pass.
    let cutoff = to_iso((now_ms - days * DAY_MS).div_euclid(DAY_MS) * DAY_MS);
    if crate::fan_out::past_inline(&db).await? {
        crate::fan_out::enqueue(env, crate::fan_out::Job::RetentionPage { cutoff: cutoff.clone(), after: None })
            .await?;
        return Ok(
            json!({ "fanned_out": true, "archives": 0, "ledger_rows": 0, "usage_rows": 0, "cutoff": cutoff, "days": days }),
        );
    }
    let bucket = crate::env::archives(env).map_err(d1)?;
    // The operator's own requests are kept under the empty user id.
    let (mut accounts, _) = accounts_with_history(&db, None, &cutoff, crate::fan_out::INLINE_MAX).await?;
    accounts.insert(0, String::new());
    let mut moved = Moved::default();
    for account in &accounts {
        let left = ARCHIVES_PER_PASS - moved.archives;
        if left == 0 {
            break;
        }
        // One account that cannot be archived now does not hold up the others.
        match archive_account(env, &db, &bucket, account, &cutoff, now_ms, left).await {
            Ok((step, _)) => moved.add(step),
            Err(e) => crate::log::job_error("retention", &format!("account {account}: {e}")),
        }
    }
    Ok(json!({
        "fanned_out": false, "archives": moved.archives, "ledger_rows": moved.ledger_rows, "usage_rows": moved.usage_rows,
        "cutoff": cutoff, "days": days,
    }))
}

/// Of the next `window` users after `after` (by id), those with rows before the cutoff (an index probe
/// each), and the last id of the window when it was full (more may follow).
pub async fn accounts_with_history(
    db: &D1Database,
    after: Option<&str>,
    cutoff: &str,
    window: i64,
) -> Result<(Vec<String>, Option<String>), ApiError> {
    #[derive(Deserialize)]
    struct User {
        id: String,
        old: i64,
    }
    let query = "SELECT id, (EXISTS (SELECT 1 FROM usage_records WHERE user_id = users.id AND created_at < ?2) \
          OR EXISTS (SELECT 1 FROM balance_transactions WHERE user_id = users.id AND created_at < ?2)) AS old \
        FROM users WHERE id > ?1 ORDER BY id LIMIT ?3";
    let users: Vec<User> = store::all(db, query, &[text(after.unwrap_or("")), text(cutoff), int(window)]).await?;
    let next = (users.len() as i64 == window).then(|| users.last().map(|u| u.id.clone())).flatten();
    Ok((users.into_iter().filter(|u| u.old != 0).map(|u| u.id).collect(), next))
}

/// One account's step: up to `limit` archives of its days before the cutoff; and whether rows are left.
pub async fn archive_account(
    env: &Env,
    db: &D1Database,
    bucket: &Bucket,
    user_id: &str,
    cutoff: &str,
    now_ms: i64,
    limit: usize,
) -> Result<(Moved, bool), ApiError> {
    #[derive(Deserialize)]
    struct Day {
        day: String,
    }
    let query =
        "SELECT substr(created_at, 1, 10) AS day FROM balance_transactions WHERE user_id = ?1 AND created_at < ?2 \
        UNION SELECT substr(created_at, 1, 10) AS day FROM usage_records WHERE user_id = ?1 AND created_at < ?2 \
        ORDER BY day LIMIT ?3";
    let days: Vec<Day> = store::all(db, query, &[text(user_id), text(cutoff), int(limit as i64 + 1)]).await?;
    let part_rows = crate::env::Config::get(env).faults.archive_part_rows.unwrap_or(PART_ROWS);
    let mut moved = Moved::default();
    let mut left = false;
    'days: for day in &days {
        // A day's parts, until one is not full (the day is done) or moves nothing (another pass has it).
        loop {
            if moved.archives == limit {
                left = true;
                break 'days;
            }
            let (step, full) = archive_part(db, bucket, user_id, &day.day, cutoff, now_ms, part_rows).await?;
            let progressed = step.archives > 0;
            moved.add(step);
            if !(full && progressed) {
                break;
            }
        }
    }
    // Rows left over are handed on only when this step made progress (a step that moved nothing would
    // only meet the same rows again).
    let more = moved.archives > 0 && (left || days.len() > limit);
    Ok((moved, more))
}

/// One archive of an account-day: its first `part_rows` rows of each table (by id), written to R2, then
/// moved out of D1 in one batch if they are still those written; and whether a table had more.
async fn archive_part(
    db: &D1Database,
    bucket: &Bucket,
    user_id: &str,
    day: &str,
    cutoff: &str,
    now_ms: i64,
    part_rows: usize,
) -> Result<(Moved, bool), ApiError> {
    let Some(next_day) = parse_iso(day).map(|ms| to_iso(ms + DAY_MS)[..10].to_string()) else {
        crate::log::job_error("retention", &format!("account {user_id}: rows dated `{day}` are not a day; left in D1"));
        return Ok((Moved::default(), false));
    };
    let end = if cutoff < next_day.as_str() { cutoff } else { next_day.as_str() };
    let args = [text(user_id), text(day), text(end), int(part_rows as i64)];
    type Row = Map<String, Value>;
    let ledger: Vec<Row> =
        store::all(db, &format!("SELECT * FROM balance_transactions WHERE {FILTER} ORDER BY id LIMIT ?4"), &args)
            .await?;
    let usage: Vec<Row> =
        store::all(db, &format!("SELECT * FROM usage_records WHERE {FILTER} ORDER BY id LIMIT ?4"), &args).await?;
    if ledger.is_empty() && usage.is_empty() {
        return Ok((Moved::default(), false));
    }
    let full = ledger.len() == part_rows || usage.len() == part_rows;
    let sum: i64 = ledger.iter().filter_map(|r| r.get("amount").and_then(Value::as_f64)).map(|a| a as i64).sum();
    let mut body = String::new();
    for (table, list) in [(TABLES[0], &ledger), (TABLES[1], &usage)] {
        for row in list.iter() {
            body.push_str(&json!({ "table": table, "row": row }).to_string());
            body.push('\n');
        }
    }
    let packed = crate::js::gzip(body.as_bytes(), true).await.map_err(|e| d1(crate::js::message(&e)))?;
    let id = format!("arc-{now_ms}-{}", hex::encode(crate::api::random_bytes::<6>()));
    let owner = if user_id.is_empty() { "_operator" } else { user_id };
    let r2_key = format!("archive/{owner}/{day}/{id}.ndjson.gz");
    let metadata = worker::HttpMetadata {
        content_type: Some("application/x-ndjson".into()),
        content_encoding: Some("gzip".into()),
        ..Default::default()
    };
    bucket.put(&r2_key, packed).http_metadata(metadata).execute().await.map_err(d1)?;
    let (ledger_rows, usage_rows) = (ledger.len(), usage.len());
    let ids = |rows: &[Map<String, Value>]| {
        Value::from(rows.iter().filter_map(|r| r.get("id").cloned()).collect::<Vec<_>>()).to_string()
    };
    let (ledger_ids, usage_ids) = (ids(&ledger), ids(&usage));
    // The manifest row goes in only if D1 still holds every row written, with the same sum (another pass
    // may have moved them first); the rest follows it, and touches those rows only (rows that came since
    // wait for the next pass).
    let listed = "EXISTS (SELECT 1 FROM archives WHERE id = ?1)";
    let written = "id IN (SELECT value FROM json_each(?2))";
    let statements = vec![
        db.prepare(
            "INSERT INTO archives (id, r2_key, user_id, day, ledger_rows, usage_rows, ledger_sum, created_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 \
             WHERE (SELECT COUNT(*) FROM balance_transactions WHERE id IN (SELECT value FROM json_each(?9))) = ?5 \
               AND (SELECT COUNT(*) FROM usage_records WHERE id IN (SELECT value FROM json_each(?10))) = ?6 \
               AND (SELECT COALESCE(SUM(amount), 0) FROM balance_transactions \
                    WHERE id IN (SELECT value FROM json_each(?9))) = ?7",
        )
        .bind(&[
            text(&id),
            text(&r2_key),
            text(user_id),
            text(day),
            int(ledger_rows as i64),
            int(usage_rows as i64),
            int(sum),
            text(&to_iso(now_ms)),
            text(&ledger_ids),
            text(&usage_ids),
        ]),
        // What leaves is still the user's money: `amount + archived` stays the balance.
        db.prepare(format!("UPDATE ledger_totals SET archived = archived + ?3 WHERE user_id = ?2 AND {listed}"))
            .bind(&[text(&id), text(user_id), int(sum)]),
        db.prepare(format!("DELETE FROM balance_transactions WHERE {written} AND {listed}"))
            .bind(&[text(&id), text(&ledger_ids)]),
        db.prepare(format!("DELETE FROM usage_records WHERE {written} AND {listed}"))
            .bind(&[text(&id), text(&usage_ids)]),
    ];
    db.batch(statements.into_iter().collect::<worker::Result<Vec<_>>>().map_err(d1)?).await.map_err(d1)?;
    if store::count(db, "SELECT COUNT(*) AS n FROM archives WHERE id = ?1", &[text(&id)]).await? == 0 {
        // Another pass moved these rows first (or they changed since they were read): this copy is not needed.
        bucket.delete(&r2_key).await.map_err(d1)?;
        return Ok((Moved::default(), full));
    }
    Ok((Moved { archives: 1, ledger_rows, usage_rows }, full))
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
    let bytes = object.body().ok_or_else(|| ApiError::not_found("the archive object is empty"))?.bytes().await;
    let bytes = bytes.map_err(d1)?;
    // Archives before gzip were plain NDJSON.
    let bytes = if r2_key.ends_with(".gz") {
        crate::js::gzip(&bytes, false).await.map_err(|e| d1(crate::js::message(&e)))?
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(d1)
}

/// Puts an archive's rows back in D1 and its sum back from `archived`, in one batch that fails whole
/// if any of its rows is in D1 already (so two restores at once, or a restore of rows that came back
/// another way, cannot take the sum from `archived` twice).
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
    let (mut restored, mut closed) = (0, 0);
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_slice(line.as_bytes()).map_err(d1)?;
        let table = entry["table"]
            .as_str()
            .filter(|t| TABLES.contains(t))
            .ok_or_else(|| d1("an archive line names no table"))?;
        let Some(row) = entry["row"].as_object() else { return Err(d1("an archive line has no row")) };
        let mut row = row.clone();
        if table == "usage_records" {
            row.insert("restored".into(), Value::from(1));
        }
        if table == "balance_transactions" && closed_by_rule(&row) {
            closed += 1;
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
        let sql = format!("INSERT INTO {table} ({}) VALUES ({})", names.join(", "), marks.join(", "));
        statements.push(db.prepare(&sql).bind(&values).map_err(d1)?);
        restored += 1;
    }
    // The rows' amounts come back through the insert trigger; the same sum leaves `archived`. The trigger
    // counts their closes by rule again, which the count never lost: taken back.
    statements.push(
        db.prepare(
            "UPDATE ledger_totals SET archived = archived - ?2, \
             closed_without_settlement = closed_without_settlement - ?3 WHERE user_id = ?1",
        )
        .bind(&[text(&archive.user_id), int(archive.ledger_sum), int(closed)])
        .map_err(d1)?,
    );
    statements.push(
        db.prepare("UPDATE archives SET restored_at = ?2 WHERE id = ?1")
            .bind(&[text(archive_id), text(&to_iso(now_ms))])
            .map_err(d1)?,
    );
    if let Err(e) = db.batch(statements).await {
        let message = e.to_string();
        if message.contains("UNIQUE") || message.contains("constraint") {
            return Err(ApiError::Conflict(format!(
                "archive {archive_id} was not restored: some of its rows are in D1 already (restored at the same time?)"
            )));
        }
        return Err(d1(message));
    }
    Ok(json!({ "id": archive_id, "rows": restored }))
}

/// A ledger row the rule closed (not a settlement), as `ledger_totals.closed_without_settlement` counts
/// them (migrations/0013).
fn closed_by_rule(row: &Map<String, Value>) -> bool {
    row.get("type").and_then(Value::as_str) == Some("usage")
        && row.get("description").and_then(Value::as_str).is_some_and(|d| d.starts_with(CLOSED_WITHOUT_SETTLEMENT))
}
