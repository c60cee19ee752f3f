//! The organization Durable Object (binding `ORGS`, class `OrgDo`): one per
//! organization, named by its id. It counts the organization's month
//! (requests, tokens, cost) and holds the requests in flight against the
//! monthly limits. Holds are stored before the answer leaves; a settlement
//! counts once; a hold whose settlement has not come when it expires counts as
//! what it held (an organization's limit is never passed by a lost one), and
//! a settlement that still comes later corrects that count to the actual use.
//! A request that failed before any answer is not counted.

use std::cell::Cell;

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use super::message;
use super::protocol::{OrgRequest, OrgResponse};
use super::store::{int, scalar, text};
use crate::domain::orgs::{check_month, MonthUse};
use crate::domain::windows::Reset;

const SCHEMA: &str = "
  CREATE TABLE IF NOT EXISTS org_month (month_start REAL PRIMARY KEY, requests REAL NOT NULL, tokens REAL NOT NULL, cost REAL NOT NULL);
  CREATE TABLE IF NOT EXISTS org_holds (id TEXT PRIMARY KEY, tokens REAL NOT NULL, cost REAL NOT NULL, expires_ms REAL NOT NULL,
    counted INTEGER NOT NULL DEFAULT 0);
  CREATE INDEX IF NOT EXISTS org_holds_open ON org_holds(counted, expires_ms);";

/// Expired holds are kept this long for a late settlement to correct them.
const KEEP_COUNTED_MS: i64 = 24 * 3_600_000;

#[durable_object]
pub struct OrgDo {
    state: State,
    ready: Cell<bool>,
}

impl OrgDo {
    fn sql(&self) -> Result<SqlStorage> {
        let sql = self.state.storage().sql();
        if !self.ready.get() {
            sql.exec(SCHEMA, None)?;
            self.ready.set(true);
        }
        Ok(sql)
    }

    fn handle(&self, sql: &SqlStorage, req: OrgRequest, now: i64) -> Result<OrgResponse> {
        expire(sql, now)?;
        Ok(match req {
            OrgRequest::Reserve { request_id, limits, tokens, cost, lease_ms } => {
                match check_month(&limits, month_use(sql, now)?, tokens, cost) {
                    Ok(()) => {
                        sql.exec_raw(
                            "INSERT OR IGNORE INTO org_holds (id, tokens, cost, expires_ms) VALUES (?, ?, ?, ?)",
                            vec![text(&request_id), int(tokens), int(cost), int(now + lease_ms)],
                        )?;
                        OrgResponse::Reserved
                    }
                    Err(hit) => OrgResponse::Refused { hit, resets_at_ms: Reset::Monthly.window_end(now) },
                }
            }
            OrgRequest::Settle { request_id, tokens, cost, failed } => {
                #[derive(Deserialize)]
                struct Held {
                    tokens: f64,
                    cost: f64,
                    counted: i64,
                }
                let held: Vec<Held> = sql
                    .exec_raw("SELECT tokens, cost, counted FROM org_holds WHERE id = ?", vec![text(&request_id)])?
                    .to_array()?;
                if let Some(h) = held.into_iter().next() {
                    // Counted already when the hold expired: correct the count to the actual use.
                    let (requests, tokens, cost) = match (h.counted != 0, failed) {
                        (false, true) => (0, 0, 0),
                        (false, false) => (1, tokens, cost),
                        (true, true) => (-1, -(h.tokens as i64), -(h.cost as i64)),
                        (true, false) => (0, tokens - h.tokens as i64, cost - h.cost as i64),
                    };
                    count(sql, now, requests, tokens, cost)?;
                    sql.exec_raw("DELETE FROM org_holds WHERE id = ?", vec![text(&request_id)])?;
                }
                OrgResponse::Ok
            }
            OrgRequest::Usage => OrgResponse::Usage { used: month_use(sql, now)? },
        })
    }
}

/// Adds to this month's counts (the count and the hold's change are one statement each, in this
/// order: should the second fail, a repeated settlement finds the hold and counts again, so the
/// failure can only over-count, which never lets a request past a limit).
fn count(sql: &SqlStorage, now: i64, requests: i64, tokens: i64, cost: i64) -> Result<()> {
    if (requests, tokens, cost) == (0, 0, 0) {
        return Ok(());
    }
    sql.exec_raw(
        "INSERT INTO org_month (month_start, requests, tokens, cost) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(month_start) DO UPDATE SET requests = requests + ?2, tokens = tokens + ?3, cost = cost + ?4",
        vec![int(Reset::Monthly.window_start(now)), int(requests), int(tokens), int(cost)],
    )?;
    Ok(())
}

/// Holds whose settlement has not come count as what they held (kept a day, marked, for a late one).
fn expire(sql: &SqlStorage, now: i64) -> Result<()> {
    #[derive(Deserialize)]
    struct Hold {
        id: String,
        tokens: f64,
        cost: f64,
    }
    let due: Vec<Hold> = sql
        .exec_raw("SELECT id, tokens, cost FROM org_holds WHERE counted = 0 AND expires_ms <= ?", vec![int(now)])?
        .to_array()?;
    for hold in due {
        count(sql, now, 1, hold.tokens as i64, hold.cost as i64)?;
        sql.exec_raw("UPDATE org_holds SET counted = 1 WHERE id = ?", vec![text(&hold.id)])?;
    }
    sql.exec_raw("DELETE FROM org_holds WHERE counted = 1 AND expires_ms <= ?", vec![int(now - KEEP_COUNTED_MS)])?;
    Ok(())
}

/// This month's use, counting what is held.
fn month_use(sql: &SqlStorage, now: i64) -> Result<MonthUse> {
    let month = int(Reset::Monthly.window_start(now));
    let done = |col: &str| {
        scalar(sql, &format!("SELECT {col} AS n FROM org_month WHERE month_start = ?"), vec![month.clone()])
    };
    Ok(MonthUse {
        requests: done("requests")? + scalar(sql, "SELECT COUNT(*) AS n FROM org_holds WHERE counted = 0", vec![])?,
        tokens: done("tokens")? + scalar(sql, "SELECT SUM(tokens) AS n FROM org_holds WHERE counted = 0", vec![])?,
        cost: done("cost")? + scalar(sql, "SELECT SUM(cost) AS n FROM org_holds WHERE counted = 0", vec![])?,
    })
}

impl DurableObject for OrgDo {
    fn new(state: State, _env: Env) -> Self {
        Self { state, ready: Cell::new(false) }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let now = js_sys::Date::now() as i64;
        let answer = match message::read::<OrgRequest>(req).await {
            Ok(m) => self.sql().and_then(|sql| self.handle(&sql, m, now)),
            Err(e) => Ok(OrgResponse::Error { message: format!("bad message: {e}") }),
        };
        message::answer(&answer.unwrap_or_else(|e| OrgResponse::Error { message: e.to_string() }))
    }
}
