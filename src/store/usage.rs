//! The `usage_records` table and the stats read from its daily roll-ups
//! (kept by a trigger: see migrations/0004).

use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement};

use super::{int, opt_int, opt_text, text, StoreError};
use crate::domain::paging::Page;
use crate::domain::time::to_iso;
use crate::domain::usage::{DayRange, GroupBy, UsageRecord};

const INSERT: &str = "INSERT OR IGNORE INTO usage_records (id, key_id, user_id, org_id, model, provider, \
    prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, cost_micros, upstream_cost_micros, \
    latency_ms, status, streamed, cancelled, estimated, created_at, upstream_id, end_user) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)";

/// An insert of one record (a repeat of the same id changes nothing), for a batch.
pub fn insert_statement(db: &D1Database, r: &UsageRecord) -> worker::Result<D1PreparedStatement> {
    let flag = |b: bool| int(i64::from(b));
    db.prepare(INSERT).bind(&[
        text(&r.id),
        text(&r.key_id),
        text(&r.user_id),
        opt_text(r.org_id.as_deref()),
        text(&r.model),
        text(&r.provider),
        int(r.prompt_tokens as i64),
        int(r.completion_tokens as i64),
        int(r.reasoning_tokens as i64),
        int(r.cached_tokens as i64),
        int(r.cost_micros),
        opt_int(r.upstream_cost_micros),
        int(r.latency_ms as i64),
        int(i64::from(r.status)),
        flag(r.streamed),
        flag(r.cancelled),
        flag(r.estimated),
        text(&to_iso(r.created_ms)),
        opt_text(r.upstream_id.as_deref()),
        opt_text(r.end_user.as_deref()),
    ])
}

#[derive(Debug, Clone, Deserialize)]
pub struct UsageRow {
    pub id: String,
    pub key_id: String,
    pub user_id: String,
    pub org_id: Option<String>,
    pub model: String,
    pub provider: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub reasoning_tokens: i64,
    pub cached_tokens: i64,
    pub cost_micros: i64,
    pub upstream_cost_micros: Option<i64>,
    pub latency_ms: i64,
    pub status: i64,
    pub streamed: i64,
    pub cancelled: i64,
    pub estimated: i64,
    pub created_at: String,
    pub upstream_id: Option<String>,
}

/// A request by the gateway's id or by the id its answer carried (in any dialect: `domain::usage::upstream_ids`;
/// a Responses stream started before its upstream's first chunk is named after the gateway's id).
pub async fn find(db: &D1Database, id: &str) -> Result<Option<UsageRow>, StoreError> {
    let query = "SELECT * FROM usage_records WHERE id IN (SELECT value FROM json_each(?1)) \
                 UNION ALL SELECT * FROM usage_records WHERE upstream_id IN (SELECT value FROM json_each(?1)) LIMIT 1";
    let ids = serde_json::to_string(&crate::domain::usage::upstream_ids(id)).unwrap_or_default();
    Ok(db.prepare(query).bind(&[text(&ids)])?.first::<UsageRow>(None).await?)
}

/// Reservations the account objects closed without their settlement (their ledger copies say so).
pub async fn closed_without_settlement(db: &D1Database) -> Result<i64, StoreError> {
    #[derive(Deserialize)]
    struct Count {
        n: i64,
    }
    let query = "SELECT COALESCE(SUM(closed_without_settlement), 0) AS n FROM ledger_totals";
    Ok(db.prepare(query).first::<Count>(None).await?.map_or(0, |c| c.n))
}

/// Per model: requests, what the gateway charged and what the upstream reported it cost
/// (where it reported), so an operator sees the margin and any charge below cost.
pub async fn margin_by_model(db: &D1Database) -> Result<Vec<serde_json::Value>, StoreError> {
    #[derive(Deserialize)]
    struct Row {
        model: String,
        requests: i64,
        charged: i64,
        upstream_cost: i64,
        below_cost: i64,
    }
    let query = "SELECT model, requests, charged, upstream_cost, below_cost FROM usage_totals_model ORDER BY model";
    let rows: Vec<Row> = db.prepare(query).all().await?.results()?;
    Ok(rows
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "model": r.model, "requests": r.requests, "charged": crate::domain::money::micros_to_usd(r.charged),
                "upstream_cost": crate::domain::money::micros_to_usd(r.upstream_cost),
                "margin": crate::domain::money::micros_to_usd(r.charged - r.upstream_cost),
                "requests_charged_below_upstream_cost": r.below_cost,
            })
        })
        .collect())
}

/// Whose usage a stats query covers.
#[derive(Debug, Clone)]
pub enum Scope {
    User(String),
    /// A user's keys in one organization (`None`: those outside any), what a key without `admin` sees.
    UserInOrg(String, Option<String>),
    Key(String),
    Org(String),
    All,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Bucket {
    pub bucket: Option<String>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
}

/// A page of the totals per bucket over the days of `range` (both ends included), ordered by bucket, and
/// how many buckets there are in all.
pub async fn stats(
    db: &D1Database,
    scope: &Scope,
    range: &DayRange,
    group: GroupBy,
    page: Page,
) -> Result<(Vec<Bucket>, i64), StoreError> {
    let (filter, mut args): (&str, Vec<JsValue>) = match scope {
        Scope::User(id) => ("user_id = ?3 AND ", vec![text(id)]),
        Scope::UserInOrg(id, org) => ("user_id = ?3 AND org_id IS ?4 AND ", vec![text(id), opt_text(org.as_deref())]),
        Scope::Key(id) => ("key_id = ?3 AND ", vec![text(id)]),
        Scope::Org(id) => ("org_id = ?3 AND ", vec![text(id)]),
        Scope::All => ("", vec![]),
    };
    args.splice(0..0, [text(&range.start), text(&range.end)]);
    let column = group.column();
    let table = match (scope, group) {
        (_, GroupBy::EndUser) => "usage_daily_end_user",
        (Scope::All, GroupBy::Day | GroupBy::Model | GroupBy::Provider) => "usage_daily_global",
        (Scope::All, GroupBy::User) => "usage_daily_user",
        (Scope::All, GroupBy::Key) => "usage_daily_key",
        _ => "usage_daily",
    };
    let grouped = format!("FROM {table} WHERE {filter}day BETWEEN ?1 AND ?2 GROUP BY {column}");
    let query = format!(
        "SELECT {column} AS bucket, SUM(requests) AS requests, SUM(prompt_tokens) AS prompt_tokens, \
         SUM(completion_tokens) AS completion_tokens, SUM(cost_micros) AS cost_micros \
         {grouped} ORDER BY {column} LIMIT {} OFFSET {}",
        page.size,
        page.offset()
    );
    let buckets = db.prepare(&query).bind(&args)?.all().await?.results::<Bucket>()?;
    // Counted only when this page does not tell (a full page, or one past the end).
    let total = match buckets.len() {
        n if n > 0 && n < page.size as usize => page.offset() + n as i64,
        _ => super::count(db, &format!("SELECT COUNT(*) AS n FROM (SELECT 1 {grouped})"), &args).await?,
    };
    Ok((buckets, total))
}

/// One alert and its delivery (`alert_deliveries`).
#[derive(Debug, Deserialize)]
pub struct AlertRow {
    pub id: String,
    pub r#type: String,
    pub body: String,
    pub status: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub delivered_at: Option<String>,
}

/// Alerts, newest first, and how many there are.
pub async fn alerts(db: &D1Database, page: crate::domain::paging::Page) -> Result<(Vec<AlertRow>, i64), StoreError> {
    #[derive(Deserialize)]
    struct Count {
        n: i64,
    }
    let rows = db
        .prepare("SELECT * FROM alert_deliveries ORDER BY created_at DESC, id LIMIT ?1 OFFSET ?2")
        .bind(&[int(i64::from(page.size)), int(page.offset())])?
        .all()
        .await?
        .results::<AlertRow>()?;
    let total = db.prepare("SELECT COUNT(*) AS n FROM alert_deliveries").first::<Count>(None).await?.map_or(0, |c| c.n);
    Ok((rows, total))
}

/// The operator's overview: money and counts across the tenant.
#[derive(Debug, Deserialize)]
pub struct Overview {
    /// The ledger's sum in D1 (every balance, as of the last ledger copy).
    pub total_balance_micros: i64,
    pub users: i64,
    pub active_keys: i64,
    pub spend_today_micros: i64,
    pub requests_today: i64,
    pub spend_month_micros: i64,
    pub requests_month: i64,
}

const OVERVIEW: &str = "SELECT \
    (SELECT balance FROM tenant_totals WHERE id = 1) AS total_balance_micros, \
    (SELECT users FROM tenant_totals WHERE id = 1) AS users, \
    (SELECT usable_keys FROM tenant_totals WHERE id = 1) - (SELECT COUNT(*) FROM api_keys \
        WHERE expires_at IS NOT NULL AND expires_at <= ?1 AND deleted_at IS NULL AND disabled = 0) AS active_keys, \
    (SELECT COALESCE(SUM(cost_micros), 0) FROM usage_daily_global WHERE day = ?2) AS spend_today_micros, \
    (SELECT COALESCE(SUM(requests), 0) FROM usage_daily_global WHERE day = ?2) AS requests_today, \
    (SELECT COALESCE(SUM(cost_micros), 0) FROM usage_daily_global WHERE day >= ?3 AND day <= ?2) AS spend_month_micros, \
    (SELECT COALESCE(SUM(requests), 0) FROM usage_daily_global WHERE day >= ?3 AND day <= ?2) AS requests_month";

/// `today` and `month_start` as `YYYY-MM-DD` (UTC).
pub async fn overview(db: &D1Database, now_iso: &str, today: &str, month_start: &str) -> Result<Overview, StoreError> {
    db.prepare(OVERVIEW)
        .bind(&[text(now_iso), text(today), text(month_start)])?
        .first::<Overview>(None)
        .await?
        .ok_or_else(|| StoreError::D1("overview returned no row".into()))
}
