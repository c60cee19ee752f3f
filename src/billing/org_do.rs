//! The organization Durable Object (binding `ORGS`, class `OrgDo`): one per
//! organization, named by its id. It counts the organization's month
//! (requests, tokens, cost) and holds the requests in flight against the
//! monthly limits. Holds are stored before the answer leaves; a settlement
//! counts once; a hold whose settlement never comes counts, when it expires,
//! as what it held (an organization's limit is never passed by a lost one).

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
  CREATE TABLE IF NOT EXISTS org_holds (id TEXT PRIMARY KEY, tokens REAL NOT NULL, cost REAL NOT NULL, expires_ms REAL NOT NULL);";

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
            OrgRequest::Settle { request_id, tokens, cost } => {
                if scalar(sql, "SELECT COUNT(*) AS n FROM org_holds WHERE id = ?", vec![text(&request_id)])? > 0 {
                    sql.exec_raw("DELETE FROM org_holds WHERE id = ?", vec![text(&request_id)])?;
                    count(sql, now, tokens, cost)?;
                }
                OrgResponse::Ok
            }
            OrgRequest::Usage => OrgResponse::Usage { used: month_use(sql, now)? },
        })
    }
}

fn count(sql: &SqlStorage, now: i64, tokens: i64, cost: i64) -> Result<()> {
    sql.exec_raw(
        "INSERT INTO org_month (month_start, requests, tokens, cost) VALUES (?1, 1, ?2, ?3) \
         ON CONFLICT(month_start) DO UPDATE SET requests = requests + 1, tokens = tokens + ?2, cost = cost + ?3",
        vec![int(Reset::Monthly.window_start(now)), int(tokens), int(cost)],
    )?;
    Ok(())
}

/// Holds whose settlement never came count as what they held.
fn expire(sql: &SqlStorage, now: i64) -> Result<()> {
    #[derive(Deserialize)]
    struct Hold {
        id: String,
        tokens: f64,
        cost: f64,
    }
    let due: Vec<Hold> =
        sql.exec_raw("SELECT id, tokens, cost FROM org_holds WHERE expires_ms <= ?", vec![int(now)])?.to_array()?;
    for hold in due {
        sql.exec_raw("DELETE FROM org_holds WHERE id = ?", vec![text(&hold.id)])?;
        count(sql, now, hold.tokens as i64, hold.cost as i64)?;
    }
    Ok(())
}

/// This month's use, counting what is held.
fn month_use(sql: &SqlStorage, now: i64) -> Result<MonthUse> {
    let month = int(Reset::Monthly.window_start(now));
    let done = |col: &str| {
        scalar(sql, &format!("SELECT {col} AS n FROM org_month WHERE month_start = ?"), vec![month.clone()])
    };
    Ok(MonthUse {
        requests: done("requests")? + scalar(sql, "SELECT COUNT(*) AS n FROM org_holds", vec![])?,
        tokens: done("tokens")? + scalar(sql, "SELECT SUM(tokens) AS n FROM org_holds", vec![])?,
        cost: done("cost")? + scalar(sql, "SELECT SUM(cost) AS n FROM org_holds", vec![])?,
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
