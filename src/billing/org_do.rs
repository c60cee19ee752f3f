//! The organization Durable Object (binding `ORGS`, class `OrgDo`): one per
//! organization, named by its id. A thin shell around `domain::orgs::OrgBook`
//! (the month counts and the requests held against the monthly limits): each
//! message is decided in the book and its writes are made in the same step,
//! so a hold exists in storage before its answer leaves. A message's writes are
//! one storage transaction: a statement that fails, or a trap, undoes them all.

use std::cell::{Cell, RefCell};

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use super::message;
use super::protocol::{OrgRequest, OrgResponse};
use super::store::{int, scalar, text};
use crate::domain::alerts::{org_alerts, AlertRules};
use crate::domain::orgs::{MonthChange, MonthUse, OrgBook, OrgHold, OrgState};
use crate::domain::windows::Reset;

const SCHEMA: &str = "
  CREATE TABLE IF NOT EXISTS org_month (month_start REAL PRIMARY KEY, requests REAL NOT NULL, tokens REAL NOT NULL, cost REAL NOT NULL);
  CREATE TABLE IF NOT EXISTS org_holds (id TEXT PRIMARY KEY, tokens REAL NOT NULL, cost REAL NOT NULL, expires_ms REAL NOT NULL,
    counted INTEGER NOT NULL DEFAULT 0, month REAL NOT NULL DEFAULT 0);
  CREATE TABLE IF NOT EXISTS org_limits (id INTEGER PRIMARY KEY CHECK (id = 1), org_id TEXT NOT NULL, limits TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS alert_outbox (id TEXT PRIMARY KEY, body TEXT NOT NULL, sent INTEGER NOT NULL DEFAULT 0, created_ms REAL NOT NULL);";

/// Retry delay when alerts could not be handed to the queue.
const ALERT_RETRY_MS: u64 = 5_000;

/// The organization's id and the newest state it was told (by a change or a reservation): what reservations
/// are decided on when it is newer than theirs, and what its alerts compare with.
#[derive(Debug, Clone)]
struct Known {
    org_id: String,
    state: OrgState,
}

#[durable_object]
pub struct OrgDo {
    state: State,
    env: Env,
    ready: Cell<bool>,
    book: RefCell<Option<OrgBook>>,
    known: RefCell<Option<Known>>,
    /// Alerts wait in the outbox (true at start: a restart looks once).
    alerts_waiting: Cell<bool>,
}

/// The book as storage holds it; `lease_ms` is a reservation's life (what a hold's expiry is after its start).
fn load(sql: &SqlStorage, lease_ms: i64) -> Result<OrgBook> {
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
            let began = expires_ms.saturating_sub(lease_ms);
            let month = if h.month > 0.0 { h.month as i64 } else { Reset::Monthly.window_start(began) };
            let hold =
                OrgHold { month, tokens: h.tokens as i64, cost: h.cost as i64, expires_ms, counted: h.counted != 0 };
            (h.id, hold)
        }),
    ))
}

/// What the organization is, as its last reservation stated it (stored by `OrgDo::learn`).
fn stored_known(sql: &SqlStorage) -> Result<Option<Known>> {
    #[derive(Deserialize)]
    struct Row {
        org_id: String,
        limits: String,
    }
    let rows: Vec<Row> = sql.exec("SELECT org_id, limits FROM org_limits WHERE id = 1", None)?.to_array()?;
    // The column holds the `OrgState` (limits alone, read as version 0 and active, before versions).
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| Some(Known { org_id: r.org_id, state: serde_json::from_slice(r.limits.as_bytes()).ok()? })))
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

/// Keeps the alerts a month's change crossed for delivery, in the change's own step.
fn raise_alerts(sql: &SqlStorage, book: &OrgBook, change: &MonthChange, alerts: Alerting, now: i64) -> Result<()> {
    let (Some(rules), Some(known), waiting) = alerts else { return Ok(()) };
    let after = book.month(change.month);
    let before = MonthUse {
        requests: after.requests - change.requests,
        tokens: after.tokens - change.tokens,
        cost: after.cost - change.cost,
    };
    for alert in org_alerts(&known.org_id, (before, after), &known.state.limits(), rules, change.month, now) {
        sql.exec_raw(
            "INSERT OR IGNORE INTO alert_outbox (id, body, created_ms) VALUES (?, ?, ?)",
            vec![text(&alert.id()), text(&alert.payload().to_string()), int(now)],
        )?;
        waiting.set(true);
    }
    Ok(())
}

/// What alerts need: the tenant's rules (when it has alerts), what the organization is, and the flag
/// that says alerts wait to be sent.
type Alerting<'a> = (Option<&'a AlertRules>, Option<&'a Known>, &'a Cell<bool>);

fn answer(sql: &SqlStorage, book: &mut OrgBook, req: OrgRequest, now: i64, alerts: Alerting) -> Result<OrgResponse> {
    let (counted, forgotten) = book.expire(now);
    for (id, change) in &counted {
        write_month(sql, book, change.month)?;
        sql.exec_raw("UPDATE org_holds SET counted = 1 WHERE id = ?", vec![text(id)])?;
        raise_alerts(sql, book, change, alerts, now)?;
    }
    for id in &forgotten {
        sql.exec_raw("DELETE FROM org_holds WHERE id = ?", vec![text(id)])?;
    }
    Ok(match req {
        OrgRequest::Reserve { request_id, limits, tokens, cost, lease_ms, .. } => {
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
                raise_alerts(sql, book, &change, alerts, now)?;
            }
            OrgResponse::Ok
        }
        OrgRequest::Usage => OrgResponse::Usage { used: book.usage(now) },
        OrgRequest::Put { .. } => OrgResponse::Ok,
    })
}

impl OrgDo {
    fn sql(&self) -> Result<SqlStorage> {
        let sql = self.state.storage().sql();
        if !self.ready.get() {
            sql.exec(SCHEMA, None)?;
            // Columns added since an object's table was made (each with a default its old rows read as).
            for (column, definition) in
                [("counted", "INTEGER NOT NULL DEFAULT 0"), ("month", "REAL NOT NULL DEFAULT 0")]
            {
                let query = "SELECT COUNT(*) AS n FROM pragma_table_info('org_holds') WHERE name = ?";
                if scalar(&sql, query, vec![text(column)])? == 0 {
                    sql.exec(&format!("ALTER TABLE org_holds ADD COLUMN {column} {definition}"), None)?;
                }
            }
            self.ready.set(true);
        }
        Ok(sql)
    }

    /// Runs one message, its writes one storage transaction (a failure leaves none of them).
    fn run(&self, mut req: OrgRequest, now: i64) -> Result<OrgResponse> {
        let sql = self.sql()?;
        crate::js::atomically(&self.state, || {
            // What the organization is, for its alerts: from storage after a restart (a settlement may be the
            // first message to come, and cross a limit), and news from a reservation.
            if self.known.borrow().is_none() {
                *self.known.borrow_mut() = stored_known(&sql)?;
            }
            // A change, or a reservation's view of the organization: the newer state is kept, and a
            // reservation is decided on it.
            let stated = match &mut req {
                OrgRequest::Reserve { org_id: Some(org_id), limits, version, .. } => {
                    let stated = OrgState {
                        version: *version,
                        active: true,
                        monthly_requests: limits.monthly_requests,
                        monthly_tokens: limits.monthly_tokens,
                        monthly_cost_micros: limits.monthly_cost_micros,
                    };
                    Some((org_id.clone(), stated))
                }
                OrgRequest::Put { org_id, state } => Some((org_id.clone(), *state)),
                _ => None,
            };
            if let Some((org_id, stated)) = stated {
                let known = self.known.borrow().as_ref().map(|k| k.state);
                self.learn(&sql, &org_id, OrgState::newer(known.as_ref(), stated))?;
            }
            if let (OrgRequest::Reserve { limits, .. }, Some(known)) = (&mut req, self.known.borrow().as_ref()) {
                if !known.state.active {
                    return Ok(OrgResponse::Suspended);
                }
                *limits = known.state.limits();
            }
            let config = crate::env::Config::get(&self.env);
            let mut slot = self.book.borrow_mut();
            let book = match slot.as_mut() {
                Some(book) => book,
                None => slot.insert(load(&sql, config.reservation_lease_ms())?),
            };
            let known = self.known.borrow();
            let alerting = (config.alerts.as_ref().map(|a| &a.rules), known.as_ref(), &self.alerts_waiting);
            answer(&sql, book, req, now, alerting)
        })
    }

    /// Remembers what the organization is and its state, when they are news (stored for a restart).
    fn learn(&self, sql: &SqlStorage, org_id: &str, state: OrgState) -> Result<()> {
        let unchanged = self.known.borrow().as_ref().is_some_and(|k| k.org_id == org_id && k.state == state);
        if !unchanged {
            sql.exec_raw(
                "INSERT OR REPLACE INTO org_limits (id, org_id, limits) VALUES (1, ?, ?)",
                vec![text(org_id), text(&serde_json::to_string(&state)?)],
            )?;
            *self.known.borrow_mut() = Some(Known { org_id: org_id.to_string(), state });
        }
        Ok(())
    }

    /// Hands waiting alerts to the queue (no storage read when none wait); on failure the alarm tries again.
    async fn send_alerts(&self) {
        if !self.alerts_waiting.get() {
            return;
        }
        let Ok(sql) = self.sql() else { return };
        match super::outbox::send_alerts(&sql, &self.env).await {
            Ok(more) => self.alerts_waiting.set(more),
            Err(e) => {
                crate::log::job_error("org_alert_outbox", &e.to_string());
                let _ = self.state.storage().set_alarm(std::time::Duration::from_millis(ALERT_RETRY_MS)).await;
            }
        }
    }
}

impl DurableObject for OrgDo {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            ready: Cell::new(false),
            book: RefCell::new(None),
            known: RefCell::new(None),
            alerts_waiting: Cell::new(true),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let message = message::read::<OrgRequest>(req).await;
        // The time of the step that decides, read after the body (other messages may run while it is read).
        let now = js_sys::Date::now() as i64;
        let answer = match message {
            Ok(m) => self.run(m, now).unwrap_or_else(|e| {
                // Storage refused a write (and undid the message's others): reload from what storage holds.
                self.book.replace(None);
                self.known.replace(None);
                OrgResponse::Error { message: e.to_string() }
            }),
            Err(e) => OrgResponse::Error { message: format!("bad message: {e}") },
        };
        self.send_alerts().await;
        message::answer(&answer)
    }

    async fn alarm(&self) -> Result<Response> {
        self.send_alerts().await;
        Response::empty()
    }
}
