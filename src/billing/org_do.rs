//! The organization Durable Object (binding `ORGS`, class `OrgDo`): one per
//! organization, named by its id. A thin shell around `domain::orgs::OrgBook`
//! (the month counts and the requests held against the monthly limits): each
//! message is decided in the book and its writes are made in the same step,
//! so a hold exists in storage before its answer leaves. Writes are ordered
//! so that a failed statement can only over-count, which never lets a request
//! past a limit: a month's new counts first, then the hold's change.

use std::cell::{Cell, RefCell};

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use super::message;
use super::protocol::{OrgRequest, OrgResponse};
use super::store::{int, scalar, text};
use crate::domain::orgs::{MonthUse, OrgBook, OrgHold};
use crate::domain::windows::Reset;

const SCHEMA: &str = "
  CREATE TABLE IF NOT EXISTS org_month (month_start REAL PRIMARY KEY, requests REAL NOT NULL, tokens REAL NOT NULL, cost REAL NOT NULL);
  CREATE TABLE IF NOT EXISTS org_holds (id TEXT PRIMARY KEY, tokens REAL NOT NULL, cost REAL NOT NULL, expires_ms REAL NOT NULL,
    counted INTEGER NOT NULL DEFAULT 0, month REAL NOT NULL DEFAULT 0);";

#[durable_object]
pub struct OrgDo {
    state: State,
    ready: Cell<bool>,
    book: RefCell<Option<OrgBook>>,
}

fn load(sql: &SqlStorage) -> Result<OrgBook> {
    #[derive(Deserialize)]
    struct Month {
        month_start: f64,
        requests: f64,
        tokens: f64,
        cost: f64,
    }
    #[derive(Deserialize)]
    struct Hold {
        id: String,
        tokens: f64,
        cost: f64,
        expires_ms: f64,
        counted: i64,
        month: f64,
    }
    let months: Vec<Month> = sql.exec("SELECT * FROM org_month", None)?.to_array()?;
    let holds: Vec<Hold> = sql.exec("SELECT * FROM org_holds", None)?.to_array()?;
    Ok(OrgBook::restore(
        months.into_iter().map(|m| {
            let used = MonthUse { requests: m.requests as i64, tokens: m.tokens as i64, cost: m.cost as i64 };
            (m.month_start as i64, used)
        }),
        holds.into_iter().map(|h| {
            let expires_ms = h.expires_ms as i64;
            // Holds stored before they named their month count in the month their lease began.
            let month = if h.month > 0.0 { h.month as i64 } else { Reset::Monthly.window_start(expires_ms) };
            let hold =
                OrgHold { month, tokens: h.tokens as i64, cost: h.cost as i64, expires_ms, counted: h.counted != 0 };
            (h.id, hold)
        }),
    ))
}

/// Writes a month's counts as the book has them.
fn write_month(sql: &SqlStorage, book: &OrgBook, month: i64) -> Result<()> {
    let used = book.month(month);
    sql.exec_raw(
        "INSERT OR REPLACE INTO org_month (month_start, requests, tokens, cost) VALUES (?, ?, ?, ?)",
        vec![int(month), int(used.requests), int(used.tokens), int(used.cost)],
    )?;
    Ok(())
}

fn answer(sql: &SqlStorage, book: &mut OrgBook, req: OrgRequest, now: i64) -> Result<OrgResponse> {
    let (counted, forgotten) = book.expire(now);
    for (id, change) in &counted {
        write_month(sql, book, change.month)?;
        sql.exec_raw("UPDATE org_holds SET counted = 1 WHERE id = ?", vec![text(id)])?;
    }
    for id in &forgotten {
        sql.exec_raw("DELETE FROM org_holds WHERE id = ?", vec![text(id)])?;
    }
    Ok(match req {
        OrgRequest::Reserve { request_id, limits, tokens, cost, lease_ms } => {
            match book.reserve(&request_id, &limits, tokens, cost, lease_ms, now) {
                Ok(hold) => {
                    if let Some(h) = hold {
                        sql.exec_raw(
                            "INSERT INTO org_holds (id, tokens, cost, expires_ms, counted, month) VALUES (?, ?, ?, ?, 0, ?)",
                            vec![text(&request_id), int(h.tokens), int(h.cost), int(h.expires_ms), int(h.month)],
                        )?;
                    }
                    OrgResponse::Reserved
                }
                Err(hit) => OrgResponse::Refused { hit, resets_at_ms: Reset::Monthly.window_end(now) },
            }
        }
        OrgRequest::Settle { request_id, tokens, cost, failed } => {
            if let Some(change) = book.settle(&request_id, tokens, cost, failed) {
                write_month(sql, book, change.month)?;
                sql.exec_raw("DELETE FROM org_holds WHERE id = ?", vec![text(&request_id)])?;
            }
            OrgResponse::Ok
        }
        OrgRequest::Usage => OrgResponse::Usage { used: book.usage(now) },
    })
}

impl OrgDo {
    fn sql(&self) -> Result<SqlStorage> {
        let sql = self.state.storage().sql();
        if !self.ready.get() {
            sql.exec(SCHEMA, None)?;
            let has_month =
                scalar(&sql, "SELECT COUNT(*) AS n FROM pragma_table_info('org_holds') WHERE name = 'month'", vec![])?;
            if has_month == 0 {
                sql.exec("ALTER TABLE org_holds ADD COLUMN month REAL NOT NULL DEFAULT 0", None)?;
            }
            self.ready.set(true);
        }
        Ok(sql)
    }

    fn run(&self, req: OrgRequest, now: i64) -> Result<OrgResponse> {
        let sql = self.sql()?;
        let mut slot = self.book.borrow_mut();
        let book = match slot.as_mut() {
            Some(book) => book,
            None => slot.insert(load(&sql)?),
        };
        answer(&sql, book, req, now)
    }
}

impl DurableObject for OrgDo {
    fn new(state: State, _env: Env) -> Self {
        Self { state, ready: Cell::new(false), book: RefCell::new(None) }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let now = js_sys::Date::now() as i64;
        let answer = match message::read::<OrgRequest>(req).await {
            Ok(m) => self.run(m, now).unwrap_or_else(|e| {
                // Storage refused a write: reload the book from what storage holds.
                self.book.replace(None);
                OrgResponse::Error { message: e.to_string() }
            }),
            Err(e) => OrgResponse::Error { message: format!("bad message: {e}") },
        };
        message::answer(&answer)
    }
}
