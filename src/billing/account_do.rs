//! The account Durable Object (binding `ACCOUNTS`, class `AccountDo`): one per
//! paying account (named by user id), SQLite storage, one request at a time.
//! It is the authority for the account's balance, reservations, key spend
//! windows, key state and ledger. A thin shell: rules live in `domain`.
//!
//! Every balance change appends a ledger row in the same synchronous SQL
//! step, so the ledger always sums to the balance. Rows are then copied to
//! D1 (`balance_transactions`) through an outbox: unsynced rows are retried
//! by an alarm until D1 takes them.

use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{durable_object, DurableObject, Env, Headers, Request, Response, Result, SqlStorage, State};

use super::protocol::{AccountRequest, AccountResponse, KeyUsage, LedgerEntry, Settlement, MESSAGE_HEADER};
use std::cell::RefCell;
use std::rc::Rc;

use crate::domain::account::{Ask, Book, Charge, Decision, Held, RESERVATION_TTL_MS};
use crate::domain::keys::KeyState;
use crate::domain::orgs::{check_month, MonthUse};
use crate::domain::time::to_iso;
use crate::domain::usage::UsageRecord;
use crate::domain::windows::{self, Reset};

const SCHEMA: &str = "
  CREATE TABLE IF NOT EXISTS key_state (
    key_id TEXT PRIMARY KEY, hash TEXT NOT NULL, previous_hash TEXT, previous_until_ms REAL,
    expires_at_ms REAL, disabled INTEGER NOT NULL, deleted INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY CHECK (id = 1), balance REAL NOT NULL, account_id TEXT);
  INSERT OR IGNORE INTO account (id, balance) VALUES (1, 0);
  CREATE TABLE IF NOT EXISTS reservations (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, amount REAL NOT NULL, created_ms REAL NOT NULL);
  CREATE TABLE IF NOT EXISTS key_spend (key_id TEXT PRIMARY KEY, window_start REAL NOT NULL, spent REAL NOT NULL);
  CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, amount REAL NOT NULL,
    balance_after REAL NOT NULL, reference_id TEXT, description TEXT, key_id TEXT, created_ms REAL NOT NULL,
    synced INTEGER NOT NULL DEFAULT 0);
  CREATE INDEX IF NOT EXISTS ledger_key ON ledger(key_id, created_ms);
  CREATE INDEX IF NOT EXISTS ledger_unsynced ON ledger(synced) WHERE synced = 0;
  CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, answer TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS usage_outbox (id TEXT PRIMARY KEY, record TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS org_month (month_start REAL PRIMARY KEY, requests REAL NOT NULL, tokens REAL NOT NULL, cost REAL NOT NULL);
  CREATE TABLE IF NOT EXISTS org_reservations (id TEXT PRIMARY KEY, tokens REAL NOT NULL, cost REAL NOT NULL, created_ms REAL NOT NULL);";
// key_state gained limit columns after v1 of this object: add them where missing.
const KEY_STATE_LIMITS: &str =
    "ALTER TABLE key_state ADD COLUMN limit_micros REAL; ALTER TABLE key_state ADD COLUMN limit_reset TEXT;";

/// Retry delay for copying the ledger to D1.
const OUTBOX_RETRY_MS: i64 = 5_000;
/// Rows copied to D1 per batch (of each kind).
const OUTBOX_BATCH: u32 = 100;
/// Batches one `Flush` copies at most (the alarm takes any rest).
const MAX_FLUSH_BATCHES: u32 = 50;
/// Ledger rows are copied to D1 in batches, this long after the first unsynced one.
const OUTBOX_DELAY_MS: u64 = 500;

#[durable_object]
pub struct AccountDo {
    state: State,
    env: Env,
    /// The schema exists (created on the first message after a start).
    ready: std::cell::Cell<bool>,
    /// An outbox alarm is set (saves a storage read on every settlement).
    alarm_set: Rc<std::cell::Cell<bool>>,
    /// Balance, reservations, key states and spend, loaded once (written through on change).
    book: RefCell<Option<Book>>,
    /// Settlements a reservation carried, decided in the book but written only after its
    /// answer has left (else the answer would wait for their storage commit).
    deferred: Rc<Deferred>,
}

#[derive(Deserialize)]
struct KeyStateRow {
    key_id: String,
    hash: String,
    previous_hash: Option<String>,
    previous_until_ms: Option<f64>,
    expires_at_ms: Option<f64>,
    disabled: i64,
    deleted: i64,
    limit_micros: Option<f64>,
    limit_reset: Option<String>,
}

impl From<KeyStateRow> for KeyState {
    fn from(r: KeyStateRow) -> Self {
        Self {
            key_id: r.key_id,
            hash: r.hash,
            previous_hash: r.previous_hash,
            previous_until_ms: r.previous_until_ms.map(|v| v as i64),
            expires_at_ms: r.expires_at_ms.map(|v| v as i64),
            disabled: r.disabled != 0,
            deleted: r.deleted != 0,
            limit_micros: r.limit_micros.map(|v| v as i64),
            limit_reset: r.limit_reset.as_deref().and_then(Reset::parse),
        }
    }
}

#[derive(Deserialize)]
struct LedgerRow {
    id: String,
    r#type: String,
    amount: f64,
    balance_after: f64,
    reference_id: Option<String>,
    description: Option<String>,
    key_id: Option<String>,
    created_ms: f64,
}

impl From<LedgerRow> for LedgerEntry {
    fn from(r: LedgerRow) -> Self {
        Self {
            id: r.id,
            kind: r.r#type,
            amount: r.amount as i64,
            balance_after: r.balance_after as i64,
            reference_id: r.reference_id,
            description: r.description,
            key_id: r.key_id,
            created_ms: r.created_ms as i64,
        }
    }
}

#[derive(Deserialize)]
struct Num {
    n: Option<f64>,
}

fn num(v: Option<i64>) -> JsValue {
    v.map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64))
}

fn int(n: i64) -> JsValue {
    JsValue::from_f64(n as f64)
}

fn text(s: &str) -> JsValue {
    JsValue::from_str(s)
}

fn opt_text(s: Option<&str>) -> JsValue {
    s.map_or(JsValue::NULL, JsValue::from_str)
}

/// A single number from a query (`SELECT … AS n`), 0 when NULL.
fn scalar(sql: &SqlStorage, query: &str, args: Vec<JsValue>) -> Result<i64> {
    let rows: Vec<Num> = sql.exec_raw(query, args)?.to_array()?;
    Ok(rows.first().and_then(|r| r.n).unwrap_or(0.0) as i64)
}

fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

impl AccountDo {
    fn sql(&self) -> Result<SqlStorage> {
        let sql = self.state.storage().sql();
        if !self.ready.get() {
            sql.exec(SCHEMA, None)?;
            let has_limits = scalar(
                &sql,
                "SELECT COUNT(*) AS n FROM pragma_table_info('key_state') WHERE name = 'limit_micros'",
                vec![],
            )?;
            if has_limits == 0 {
                sql.exec(KEY_STATE_LIMITS, None)?;
            }
            self.ready.set(true);
        }
        Ok(sql)
    }

    /// The account's hot state, loaded from storage on first use after a start.
    fn with_book<T>(&self, sql: &SqlStorage, f: impl FnOnce(&mut Book) -> T) -> Result<T> {
        let mut slot = self.book.borrow_mut();
        if slot.is_none() {
            *slot = Some(Self::load_book(sql)?);
        }
        Ok(f(slot.as_mut().expect("loaded just above")))
    }

    fn load_book(sql: &SqlStorage) -> Result<Book> {
        #[derive(Deserialize)]
        struct HeldRow {
            id: String,
            key_id: String,
            amount: f64,
            created_ms: f64,
        }
        #[derive(Deserialize)]
        struct SpendRow {
            key_id: String,
            window_start: f64,
            spent: f64,
        }
        let balance = scalar(sql, "SELECT balance AS n FROM account WHERE id = 1", vec![])?;
        // Reservations live in memory; rows here are from before that (kept until they settle or expire).
        let held: Vec<HeldRow> =
            sql.exec("SELECT id, key_id, amount, created_ms FROM reservations", None)?.to_array()?;
        sql.exec("DELETE FROM reservations", None)?;
        let keys: Vec<KeyStateRow> = sql.exec("SELECT * FROM key_state", None)?.to_array()?;
        let spend: Vec<SpendRow> = sql.exec("SELECT key_id, window_start, spent FROM key_spend", None)?.to_array()?;
        Ok(Book::new(
            balance,
            held.into_iter()
                .map(|h| (h.id, Held { key_id: h.key_id, amount: h.amount as i64, created_ms: h.created_ms as i64 })),
            keys.into_iter().map(KeyState::from),
            spend.into_iter().map(|r| (r.key_id, (r.window_start as i64, r.spent as i64))),
        ))
    }

    fn balance(&self, sql: &SqlStorage) -> Result<i64> {
        self.with_book(sql, |b| b.balance())
    }

    /// Turns one reservation into its charge (capped at the reservation) and writes it; returns the charge.
    fn settle(&self, sql: &SqlStorage, account_id: &str, s: Settlement, now: i64) -> Result<i64> {
        let posting = self.settle_in_memory(sql, account_id, s, now)?;
        let charged = posting.charged();
        write_posting(sql, &posting)?;
        Ok(charged)
    }

    /// Decides one settlement in the book; the rows to write come back.
    /// A repeat charges nothing; a reservation this object no longer holds is
    /// charged once, against the Worker's copy of it.
    fn settle_in_memory(&self, sql: &SqlStorage, account_id: &str, mut s: Settlement, now: i64) -> Result<Posting> {
        let usage = s.usage.take();
        let id = format!("tx-{}", s.request_id);
        let held = self.with_book(sql, |b| b.holds(&s.request_id))?;
        let fallback = match (&s.key_id, held) {
            (Some(key_id), false) if s.cost > 0 => {
                let charged = self.deferred.holds(&id)
                    || scalar(sql, "SELECT COUNT(*) AS n FROM ledger WHERE id = ?", vec![text(&id)])? > 0;
                (!charged).then(|| Held { key_id: key_id.clone(), amount: s.reserved, created_ms: now })
            }
            _ => None,
        };
        let charge = self.with_book(sql, |b| b.settle(&s.request_id, s.cost, fallback, now))?.map(|charge| {
            let entry = LedgerEntry {
                id,
                kind: "usage".into(),
                amount: -charge.amount,
                balance_after: charge.balance_after,
                reference_id: Some(s.request_id),
                description: Some(s.description),
                key_id: Some(charge.key_id.clone()),
                created_ms: now,
            };
            (entry, charge)
        });
        let usage = usage.map(|mut record| {
            record.cost_micros = charge.as_ref().map_or(0, |(_, c)| c.amount);
            record
        });
        Ok(Posting { account_id: account_id.to_string(), charge, usage })
    }

    /// Writes the settlements decided while answering a reservation (see `fetch`).
    /// Every message writes them first, so rows stay in the order the book made them.
    fn write_deferred(&self) {
        if let Ok(sql) = self.sql() {
            self.deferred.write(&sql);
        }
        if self.deferred.failed.take() {
            // Storage and memory disagree now: reload the book from storage.
            self.book.replace(None);
        }
    }

    /// This month's use, counting what is in flight.
    fn org_month_use(sql: &SqlStorage, now: i64) -> Result<MonthUse> {
        let month = int(Reset::Monthly.window_start(now));
        let done = |col: &str| {
            scalar(sql, &format!("SELECT {col} AS n FROM org_month WHERE month_start = ?"), vec![month.clone()])
        };
        Ok(MonthUse {
            requests: done("requests")? + scalar(sql, "SELECT COUNT(*) AS n FROM org_reservations", vec![])?,
            tokens: done("tokens")? + scalar(sql, "SELECT SUM(tokens) AS n FROM org_reservations", vec![])?,
            cost: done("cost")? + scalar(sql, "SELECT SUM(cost) AS n FROM org_reservations", vec![])?,
        })
    }

    fn handle(&self, req: AccountRequest) -> Result<AccountResponse> {
        let sql = self.sql()?;
        let now = now_ms();
        Ok(match req {
            AccountRequest::PutKey { state: s } => {
                sql.exec_raw(
                    "INSERT OR REPLACE INTO key_state (key_id, hash, previous_hash, previous_until_ms, expires_at_ms, \
                     disabled, deleted, limit_micros, limit_reset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    vec![
                        text(&s.key_id),
                        text(&s.hash),
                        opt_text(s.previous_hash.as_deref()),
                        num(s.previous_until_ms),
                        num(s.expires_at_ms),
                        int(i64::from(s.disabled)),
                        int(i64::from(s.deleted)),
                        num(s.limit_micros),
                        opt_text(s.limit_reset.map(|r| r.as_str())),
                    ],
                )?;
                self.with_book(&sql, |b| b.put_key(s))?;
                AccountResponse::Ok
            }
            AccountRequest::Reserve {
                request_id,
                key_id,
                hash,
                limit_micros,
                limit_reset,
                worst_case,
                min_to_run,
                caps,
                account_id,
                settle_first,
            } => {
                for settlement in settle_first {
                    let posting = self.settle_in_memory(&sql, &account_id, settlement, now)?;
                    self.deferred.postings.borrow_mut().push(posting);
                }
                let ask = Ask {
                    request_id: &request_id,
                    key_id: &key_id,
                    hash: &hash,
                    limit_micros,
                    limit_reset,
                    worst_case,
                    min_to_run,
                    caps,
                };
                // Decided in memory: a reservation writes nothing, so the answer leaves at once.
                let decision = self.with_book(&sql, |b| {
                    b.expire(now);
                    b.reserve(&ask, now).0
                })?;
                match decision {
                    Decision::Refused(reason) => AccountResponse::Refused { reason },
                    Decision::TooMany(scope) => AccountResponse::TooManyInFlight { scope: scope.to_string() },
                    Decision::Decided { reservation, resets_at_ms } => {
                        AccountResponse::Reserved { reservation, resets_at_ms }
                    }
                }
            }
            AccountRequest::Settle { account_id, settlements } => {
                let mut charged = 0;
                for settlement in settlements {
                    charged += self.settle(&sql, &account_id, settlement, now)?;
                }
                AccountResponse::Settled { charged, balance: self.balance(&sql)? }
            }
            AccountRequest::Credit { account_id, amount, kind, description, idempotency_key } => {
                if let Some(key) = &idempotency_key {
                    #[derive(Deserialize)]
                    struct Saved {
                        answer: String,
                    }
                    let saved: Vec<Saved> =
                        sql.exec_raw("SELECT answer FROM idempotency WHERE key = ?", vec![text(key)])?.to_array()?;
                    if let Some(saved) = saved.into_iter().next() {
                        return Ok(serde_json::from_str(&saved.answer)?);
                    }
                }
                let balance = self.balance(&sql)? + amount;
                let mut random = [0u8; 12];
                getrandom::getrandom(&mut random).map_err(|e| worker::Error::RustError(e.to_string()))?;
                let id = format!("tx-{}", hex::encode(random));
                post(
                    &sql,
                    &account_id,
                    &LedgerEntry {
                        id: id.clone(),
                        kind,
                        amount,
                        balance_after: balance,
                        reference_id: idempotency_key.clone(),
                        description,
                        key_id: None,
                        created_ms: now,
                    },
                )?;
                self.with_book(&sql, |b| b.credit(amount))?;
                let answer = AccountResponse::Credited { transaction_id: id, balance };
                if let Some(key) = &idempotency_key {
                    sql.exec_raw(
                        "INSERT INTO idempotency (key, answer) VALUES (?, ?)",
                        vec![text(key), text(&serde_json::to_string(&answer)?)],
                    )?;
                }
                answer
            }
            AccountRequest::Summary { key_id } => {
                let (balance, reserved) = self.with_book(&sql, |b| (b.balance(), b.reserved()))?;
                let total_credits = scalar(&sql, "SELECT SUM(amount) AS n FROM ledger WHERE type <> 'usage'", vec![])?;
                let total_usage = -scalar(&sql, "SELECT SUM(amount) AS n FROM ledger WHERE type = 'usage'", vec![])?;
                let key = match key_id {
                    None => None,
                    Some(key_id) => {
                        let since = |start: i64| {
                            scalar(
                                &sql,
                                "SELECT -SUM(amount) AS n FROM ledger WHERE key_id = ? AND type = 'usage' AND created_ms >= ?",
                                vec![text(&key_id), int(start)],
                            )
                        };
                        let reset = self.with_book(&sql, |b| b.key(&key_id).and_then(|s| s.limit_reset))?;
                        Some(KeyUsage {
                            total: since(0)?,
                            daily: since(Reset::Daily.window_start(now))?,
                            weekly: since(Reset::Weekly.window_start(now))?,
                            monthly: since(Reset::Monthly.window_start(now))?,
                            in_window: since(windows::window_start(reset, now))?,
                            window_resets_ms: reset.map(|r| r.window_end(now)),
                        })
                    }
                };
                AccountResponse::Summary { balance, reserved, total_credits, total_usage, key }
            }
            AccountRequest::Transactions { page, page_size } => {
                let total = scalar(&sql, "SELECT COUNT(*) AS n FROM ledger", vec![])?;
                let offset = i64::from(page.saturating_sub(1)) * i64::from(page_size);
                let rows: Vec<LedgerRow> = sql
                    .exec_raw(
                        "SELECT * FROM ledger ORDER BY seq DESC LIMIT ? OFFSET ?",
                        vec![int(i64::from(page_size)), int(offset)],
                    )?
                    .to_array()?;
                AccountResponse::Transactions { rows: rows.into_iter().map(Into::into).collect(), total }
            }
            AccountRequest::OrgReserve { request_id, limits, tokens, cost } => {
                sql.exec_raw("DELETE FROM org_reservations WHERE created_ms < ?", vec![int(now - RESERVATION_TTL_MS)])?;
                let used = Self::org_month_use(&sql, now)?;
                match check_month(&limits, used, tokens, cost) {
                    Ok(()) => {
                        sql.exec_raw(
                            "INSERT OR REPLACE INTO org_reservations (id, tokens, cost, created_ms) VALUES (?, ?, ?, ?)",
                            vec![text(&request_id), int(tokens), int(cost), int(now)],
                        )?;
                        AccountResponse::OrgReserved
                    }
                    Err(hit) => AccountResponse::OrgRefused { hit, resets_at_ms: Reset::Monthly.window_end(now) },
                }
            }
            AccountRequest::OrgSettle { request_id, tokens, cost } => {
                let held =
                    scalar(&sql, "SELECT COUNT(*) AS n FROM org_reservations WHERE id = ?", vec![text(&request_id)])?;
                if held > 0 {
                    sql.exec_raw("DELETE FROM org_reservations WHERE id = ?", vec![text(&request_id)])?;
                    sql.exec_raw(
                        "INSERT INTO org_month (month_start, requests, tokens, cost) VALUES (?1, 1, ?2, ?3) \
                         ON CONFLICT(month_start) DO UPDATE SET requests = requests + 1, tokens = tokens + ?2, cost = cost + ?3",
                        vec![int(Reset::Monthly.window_start(now)), int(tokens), int(cost)],
                    )?;
                }
                AccountResponse::Ok
            }
            AccountRequest::OrgUsage => AccountResponse::OrgUsage { used: Self::org_month_use(&sql, now)? },
            // Answered in `fetch`, which can await the copy.
            AccountRequest::Flush => AccountResponse::Ok,
            AccountRequest::Ping => {
                sql.exec("INSERT INTO meta (k, v) VALUES ('pings', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1", None)?;
                AccountResponse::Pong { pings: scalar(&sql, "SELECT v AS n FROM meta WHERE k = 'pings'", vec![])? }
            }
        })
    }

    /// Copies unsynced ledger rows and waiting usage records to D1 in one batch;
    /// on failure, an alarm tries again. Answers whether more rows are waiting.
    async fn flush_outbox(&self) -> Result<bool> {
        #[derive(Deserialize)]
        struct Owner {
            account_id: Option<String>,
        }
        #[derive(Deserialize)]
        struct Waiting {
            id: String,
            record: String,
        }
        let sql = self.sql()?;
        let owner: Vec<Owner> = sql.exec("SELECT account_id FROM account WHERE id = 1", None)?.to_array()?;
        let account_id = owner.into_iter().next().and_then(|o| o.account_id).unwrap_or_default();
        let rows: Vec<LedgerRow> = if account_id.is_empty() {
            Vec::new()
        } else {
            sql.exec(&format!("SELECT * FROM ledger WHERE synced = 0 ORDER BY seq LIMIT {OUTBOX_BATCH}"), None)?
                .to_array()?
        };
        let waiting: Vec<Waiting> =
            sql.exec(&format!("SELECT id, record FROM usage_outbox LIMIT {OUTBOX_BATCH}"), None)?.to_array()?;
        if rows.is_empty() && waiting.is_empty() {
            return Ok(false);
        }
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let records: Vec<UsageRecord> = waiting.iter().filter_map(|w| serde_json::from_str(&w.record).ok()).collect();
        match self.copy_to_d1(&account_id, rows, &records).await {
            Ok(()) => {
                for id in &ids {
                    sql.exec_raw("UPDATE ledger SET synced = 1 WHERE id = ?", vec![text(id)])?;
                }
                for w in &waiting {
                    sql.exec_raw("DELETE FROM usage_outbox WHERE id = ?", vec![text(&w.id)])?;
                }
                let left = scalar(&sql, "SELECT COUNT(*) AS n FROM ledger WHERE synced = 0", vec![])?
                    + scalar(&sql, "SELECT COUNT(*) AS n FROM usage_outbox", vec![])?;
                if left > 0 {
                    self.alarm_set.set(true);
                    self.state.storage().set_alarm(std::time::Duration::from_millis(1)).await?;
                }
                Ok(left > 0)
            }
            Err(e) => {
                worker::console_error!(
                    "{}",
                    serde_json::json!({"level": "error", "job": "ledger_outbox", "detail": e.to_string()})
                );
                self.alarm_set.set(true);
                self.state.storage().set_alarm(std::time::Duration::from_millis(OUTBOX_RETRY_MS as u64)).await?;
                Err(e)
            }
        }
    }

    async fn copy_to_d1(&self, account_id: &str, rows: Vec<LedgerRow>, records: &[UsageRecord]) -> Result<()> {
        let db = crate::env::db(&self.env)?;
        let mut statements = Vec::with_capacity(rows.len() + records.len());
        for r in rows {
            statements.push(db.prepare(
                "INSERT OR IGNORE INTO balance_transactions (id, user_id, type, amount, balance_after, reference_id, description, key_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            ).bind(&[
                text(&r.id),
                text(account_id),
                text(&r.r#type),
                JsValue::from_f64(r.amount),
                JsValue::from_f64(r.balance_after),
                opt_text(r.reference_id.as_deref()),
                opt_text(r.description.as_deref()),
                opt_text(r.key_id.as_deref()),
                text(&to_iso(r.created_ms as i64)),
            ])?);
        }
        for record in records {
            statements.push(crate::store::usage::insert_statement(&db, record)?);
        }
        db.batch(statements).await?;
        Ok(())
    }
}

/// Appends a ledger row and moves the balance. The row goes first: should it be
/// refused (a repeated id), the balance has not moved. The first post also
/// records which account this object is (reconciliation lists accounts by it).
fn post(sql: &SqlStorage, account_id: &str, entry: &LedgerEntry) -> Result<()> {
    sql.exec_raw(
        "INSERT INTO ledger (id, type, amount, balance_after, reference_id, description, key_id, created_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            text(&entry.id),
            text(&entry.kind),
            int(entry.amount),
            int(entry.balance_after),
            opt_text(entry.reference_id.as_deref()),
            opt_text(entry.description.as_deref()),
            opt_text(entry.key_id.as_deref()),
            int(entry.created_ms),
        ],
    )?;
    sql.exec_raw(
        "UPDATE account SET balance = ?, account_id = COALESCE(account_id, ?) WHERE id = 1",
        vec![int(entry.balance_after), text(account_id)],
    )?;
    Ok(())
}

/// A settlement decided in the book: its ledger row and window spend (when it
/// charged anything) and its usage record, still to be written.
struct Posting {
    account_id: String,
    charge: Option<(LedgerEntry, Charge)>,
    usage: Option<UsageRecord>,
}

impl Posting {
    fn charged(&self) -> i64 {
        self.charge.as_ref().map_or(0, |(_, c)| c.amount)
    }
}

/// Settlements decided in the book whose rows are still to be written.
#[derive(Default)]
struct Deferred {
    postings: RefCell<Vec<Posting>>,
    /// A write failed: the book must be reloaded from storage.
    failed: std::cell::Cell<bool>,
}

impl Deferred {
    fn write(&self, sql: &SqlStorage) {
        let postings = std::mem::take(&mut *self.postings.borrow_mut());
        for p in &postings {
            if let Err(e) = write_posting(sql, p) {
                let reference = p.charge.as_ref().map(|(entry, _)| entry.id.as_str());
                worker::console_error!(
                    "{}",
                    serde_json::json!({"level": "error", "job": "settle", "ledger_id": reference, "detail": e.to_string()})
                );
                self.failed.set(true);
            }
        }
    }

    /// A ledger row with this id waits to be written.
    fn holds(&self, ledger_id: &str) -> bool {
        self.postings.borrow().iter().any(|p| p.charge.as_ref().is_some_and(|(entry, _)| entry.id == ledger_id))
    }
}

fn write_posting(sql: &SqlStorage, p: &Posting) -> Result<()> {
    if let Some((entry, charge)) = &p.charge {
        post(sql, &p.account_id, entry)?;
        sql.exec_raw(
            "INSERT INTO key_spend (key_id, window_start, spent) VALUES (?1, ?2, ?3) \
             ON CONFLICT(key_id) DO UPDATE SET window_start = ?2, spent = ?3",
            vec![text(&charge.key_id), int(charge.window_start), int(charge.window_spent)],
        )?;
    }
    if let Some(record) = &p.usage {
        // Waits in the outbox with the ledger row, for the next copy to D1.
        sql.exec_raw(
            "INSERT OR IGNORE INTO usage_outbox (id, record) VALUES (?, ?)",
            vec![text(&record.id), text(&serde_json::to_string(record)?)],
        )?;
    }
    Ok(())
}

fn error_answer(message: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set(MESSAGE_HEADER, &serde_json::to_string(&AccountResponse::Error { message: message.to_string() })?)?;
    Ok(Response::empty()?.with_headers(headers))
}

impl DurableObject for AccountDo {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            ready: std::cell::Cell::new(false),
            alarm_set: Rc::default(),
            book: RefCell::new(None),
            deferred: Rc::default(),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.write_deferred();
        let message = req.headers().get(MESSAGE_HEADER)?.unwrap_or_default();
        let parsed = serde_json::from_str::<AccountRequest>(&message);
        let moves_money = match &parsed {
            Ok(AccountRequest::Settle { .. } | AccountRequest::Credit { .. }) => true,
            Ok(AccountRequest::Reserve { settle_first, .. }) => !settle_first.is_empty(),
            _ => false,
        };
        let flush_now = matches!(parsed, Ok(AccountRequest::Flush));
        let answer = match parsed {
            Ok(message) => self.handle(message).unwrap_or_else(|e| {
                // Storage and memory may disagree now: reload the book from storage next time.
                self.book.replace(None);
                AccountResponse::Error { message: e.to_string() }
            }),
            Err(e) => AccountResponse::Error { message: format!("bad message: {e}") },
        };
        if flush_now {
            // Everything waiting, batch after batch (bounded), so a reconciliation compares complete ledgers.
            for _ in 0..MAX_FLUSH_BATCHES {
                match self.flush_outbox().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => return error_answer(&e.to_string()),
                }
            }
        }
        let carried = !self.deferred.postings.borrow().is_empty();
        if moves_money && !carried && !self.alarm_set.replace(true) {
            // The copy to D1 follows in a batch.
            self.state.storage().set_alarm(std::time::Duration::from_millis(OUTBOX_DELAY_MS)).await?;
        }
        if carried {
            // The answer leaves first; the carried settlements are written right after it (with
            // the outbox alarm, itself a storage write), or by the next message if that comes
            // sooner. Should the object die in between, those requests go uncharged (as when an
            // isolate dies holding them), never charged twice.
            let (deferred, storage, alarm_set) = (self.deferred.clone(), self.state.storage(), self.alarm_set.clone());
            self.state.wait_until(async move {
                worker::Delay::from(std::time::Duration::from_millis(0)).await;
                deferred.write(&storage.sql());
                if !alarm_set.replace(true)
                    && storage.set_alarm(std::time::Duration::from_millis(OUTBOX_DELAY_MS)).await.is_err()
                {
                    alarm_set.set(false);
                }
            });
        }
        let body = serde_json::to_string(&answer)?;
        if body.len() > 4096 {
            let headers = Headers::new();
            headers.set(MESSAGE_HEADER, "body")?;
            return Ok(Response::ok(body)?.with_headers(headers));
        }
        let headers = Headers::new();
        headers.set(MESSAGE_HEADER, &body)?;
        Ok(Response::empty()?.with_headers(headers))
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm_set.set(false);
        self.write_deferred();
        // A failure has already set the retry alarm.
        let _ = self.flush_outbox().await;
        Response::empty()
    }
}
