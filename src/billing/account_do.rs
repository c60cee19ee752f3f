//! The account Durable Object (binding `ACCOUNTS`, class `AccountDo`): one per
//! paying account, named by user id. A thin shell: the rules are
//! `domain::account::Book`, the SQL is `store`, the copy to D1 is `outbox`.
//! Each message is decided in the book and its writes are made in the same
//! synchronous step, so the runtime holds the answer until they are durable:
//! a reservation exists in storage before its request is forwarded.

use std::cell::{Cell, RefCell};

use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use super::protocol::{AccountRequest, AccountResponse, KeyUsage, LedgerEntry, Settlement};
use super::{message, outbox, store};
use crate::domain::account::{Ask, Book, Closed, Decision};
use crate::domain::money::micros_to_usd;
use crate::domain::usage::UsageRecord;
use crate::domain::windows::Reset;

/// The copy to D1 follows a change by this much (rows go in batches).
const OUTBOX_DELAY_MS: i64 = 500;
/// Retry delay when the copy to D1 failed.
const OUTBOX_RETRY_MS: i64 = 5_000;
/// Batches one `Flush` copies at most (the alarm takes any rest).
const MAX_FLUSH_BATCHES: u32 = 50;

#[durable_object]
pub struct AccountDo {
    state: State,
    env: Env,
    ready: Cell<bool>,
    book: RefCell<Option<Book>>,
    /// When the alarm is set for (saves a storage read per message).
    alarm_at: Cell<Option<i64>>,
    /// Ledger rows or usage records wait for the copy to D1.
    copy_waiting: Cell<bool>,
    /// The account's id is recorded in storage.
    owned: Cell<bool>,
}

fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

impl AccountDo {
    fn sql(&self) -> Result<SqlStorage> {
        let sql = self.state.storage().sql();
        if !self.ready.get() {
            store::migrate(&sql)?;
            self.copy_waiting.set(outbox::waiting(&sql)?);
            self.ready.set(true);
        }
        Ok(sql)
    }

    /// Runs `f` on the book, loading it from storage on first use after a start.
    fn with_book<T>(&self, sql: &SqlStorage, f: impl FnOnce(&mut Book) -> T) -> Result<T> {
        let mut slot = self.book.borrow_mut();
        let book = match slot.as_mut() {
            Some(book) => book,
            None => slot.insert(store::load_book(sql, now_ms())?),
        };
        Ok(f(book))
    }

    fn handle(&self, sql: &SqlStorage, req: AccountRequest, now: i64) -> Result<AccountResponse> {
        Ok(match req {
            AccountRequest::PutKey { state } => {
                store::put_key(sql, &state)?;
                self.with_book(sql, |b| b.put_key(state))?;
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
                lease_ms,
            } => {
                let ask = Ask {
                    request_id: &request_id,
                    key_id: &key_id,
                    hash: &hash,
                    limit_micros,
                    limit_reset,
                    worst_case,
                    min_to_run,
                    caps,
                    lease_ms,
                };
                let (decision, held) = self.with_book(sql, |b| b.reserve(&ask, now))?;
                if let Some(held) = held {
                    store::hold(sql, &request_id, &held)?;
                }
                match decision {
                    Decision::Refused(reason) => AccountResponse::Refused { reason },
                    Decision::TooMany(scope) => AccountResponse::TooManyInFlight { scope: scope.to_string() },
                    Decision::Decided { reservation, resets_at_ms } => {
                        AccountResponse::Reserved { reservation, resets_at_ms }
                    }
                }
            }
            AccountRequest::Touch { request_id, evidence, lease_ms } => {
                let held = self.with_book(sql, |b| b.touch(&request_id, evidence, lease_ms, now).cloned())?;
                if let Some(held) = &held {
                    store::hold(sql, &request_id, held)?;
                }
                AccountResponse::Touched { held: held.is_some() }
            }
            AccountRequest::Settle { account_id, settlements } => {
                self.own(sql, &account_id)?;
                let mut charged = 0;
                for Settlement { request_id, cost, description, usage } in settlements {
                    match self.with_book(sql, |b| b.settle(&request_id, cost, now))? {
                        Some(closed) => {
                            charged += closed.amount;
                            write_closed(sql, &closed, description, usage, now)?;
                        }
                        // Closed without its settlement earlier: charged nothing more, but what it
                        // really cost is recorded (as uncollected, and in its usage record).
                        None => late_settlement(sql, &request_id, cost, usage)?,
                    }
                    self.copy_waiting.set(true);
                }
                AccountResponse::Settled { charged, balance: self.with_book(sql, |b| b.balance())? }
            }
            AccountRequest::Credit { account_id, amount, kind, description, idempotency_key } => {
                if let Some(key) = idempotency_key.as_deref() {
                    if let Some((transaction_id, balance)) = store::earlier_credit(sql, key)? {
                        return Ok(AccountResponse::Credited { transaction_id, balance });
                    }
                    if let Some(saved) = store::saved_answer(sql, key)? {
                        return Ok(serde_json::from_str(&saved)?);
                    }
                }
                self.own(sql, &account_id)?;
                let balance = match self.with_book(sql, |b| b.credit(amount))? {
                    Ok(balance) => balance,
                    Err(over) => return Ok(AccountResponse::Overdrawn { available: over.available }),
                };
                let mut random = [0u8; 12];
                getrandom::getrandom(&mut random).map_err(|e| worker::Error::RustError(e.to_string()))?;
                let id = format!("tx-{}", hex::encode(random));
                let entry = LedgerEntry {
                    id: id.clone(),
                    kind,
                    amount,
                    balance_after: balance,
                    reference_id: idempotency_key.clone(),
                    description,
                    key_id: None,
                    created_ms: now,
                };
                // One row: the credit and its idempotency key are written together or not at all.
                store::post(sql, &entry, 0, None)?;
                self.copy_waiting.set(true);
                AccountResponse::Credited { transaction_id: id, balance }
            }
            AccountRequest::Summary { key_id } => self.summary(sql, key_id.as_deref(), now)?,
            AccountRequest::Transactions { page, page_size } => {
                let (rows, total) = store::transactions(sql, page, page_size)?;
                AccountResponse::Transactions { rows, total }
            }
            // Answered in `fetch`, which can await the copy.
            AccountRequest::Flush => AccountResponse::Ok,
            AccountRequest::Ping => AccountResponse::Pong { pings: 1 },
        })
    }

    fn summary(&self, sql: &SqlStorage, key_id: Option<&str>, now: i64) -> Result<AccountResponse> {
        let (total_credits, total_usage) = store::totals(sql)?;
        let (ledger_sum, uncollected, _) = store::ledger_totals(sql)?;
        self.with_book(sql, |b| {
            let key = key_id.map(|key_id| {
                let reset = b.key(key_id).and_then(|k| k.limit_reset);
                KeyUsage {
                    total: b.spent_in(key_id, None, now),
                    daily: b.spent_in(key_id, Some(Reset::Daily), now),
                    weekly: b.spent_in(key_id, Some(Reset::Weekly), now),
                    monthly: b.spent_in(key_id, Some(Reset::Monthly), now),
                    in_window: b.spent_in(key_id, reset, now),
                    window_resets_ms: reset.map(|r| r.window_end(now)),
                }
            });
            let open = b.in_flight().count() as i64;
            AccountResponse::Summary {
                balance: b.balance(),
                reserved: b.reserved(),
                total_credits,
                total_usage,
                key,
                ledger_sum,
                uncollected,
                open,
            }
        })
    }

    /// Closes the reservations whose requests can no longer settle.
    fn expire(&self, sql: &SqlStorage, now: i64) -> Result<()> {
        let closed = self.with_book(sql, |b| b.expire(now))?;
        if closed.is_empty() {
            return Ok(());
        }
        self.copy_waiting.set(true);
        for c in &closed {
            let description = format!(
                "closed without settlement: charged the {} USD the gateway last reported of it",
                micros_to_usd(c.amount)
            );
            write_closed(sql, c, description, None, now)?;
        }
        Ok(())
    }

    /// Records which account this object is, once.
    fn own(&self, sql: &SqlStorage, account_id: &str) -> Result<()> {
        if !self.owned.get() {
            store::own(sql, account_id)?;
            self.owned.set(true);
        }
        Ok(())
    }

    /// Sets the alarm for the first thing due: a reservation's expiry or the copy to D1.
    async fn arm(&self, sql: &SqlStorage, copy_in: Option<i64>, now: i64) -> Result<()> {
        let expiry = self.with_book(sql, |b| b.next_expiry())?;
        let copy = copy_in.filter(|_| self.copy_waiting.get()).map(|delay| now + delay);
        let Some(due) = [expiry, copy].into_iter().flatten().min() else { return Ok(()) };
        if self.alarm_at.get().is_some_and(|at| at <= due) {
            return Ok(());
        }
        self.state.storage().set_alarm(std::time::Duration::from_millis((due - now).max(1) as u64)).await?;
        self.alarm_at.set(Some(due));
        Ok(())
    }
}

/// The writes of a reservation turned into its charge, in an order that leaves storage right
/// whichever fails: the usage record (ignored when repeated), the ledger row (the charge itself),
/// then the reservation's removal (a leftover one is dropped when the book loads).
fn write_closed(
    sql: &SqlStorage,
    c: &Closed,
    mut description: String,
    usage: Option<UsageRecord>,
    now: i64,
) -> Result<()> {
    let upstream_id = usage.as_ref().and_then(|u| u.upstream_id.clone());
    if let Some(mut record) = usage {
        record.cost_micros = c.amount;
        store::queue_usage(sql, &record)?;
    }
    if c.uncollected > 0 {
        description.push_str(&format!(" (uncollected: {} USD above the reservation)", micros_to_usd(c.uncollected)));
    }
    // A close always leaves a row (reconciliation counts them); a settlement that charged nothing does not.
    if c.amount > 0 || c.uncollected > 0 || c.abandoned {
        let entry = LedgerEntry {
            id: format!("tx-{}", c.request_id),
            kind: "usage".into(),
            amount: -c.amount,
            balance_after: c.balance_after,
            reference_id: Some(c.request_id.clone()),
            description: Some(description),
            key_id: Some(c.key_id.clone()),
            created_ms: now,
        };
        store::post(sql, &entry, c.uncollected, upstream_id.as_deref())?;
    }
    store::release(sql, &c.request_id)
}

/// A settlement for a request the object no longer holds: a repeat (nothing to do), or a request
/// closed without it, whose real cost above the close's charge is recorded as uncollected.
fn late_settlement(sql: &SqlStorage, request_id: &str, cost: i64, usage: Option<UsageRecord>) -> Result<()> {
    let Some((ledger_id, charged)) = store::closed_charge(sql, request_id)? else { return Ok(()) };
    if let Some(mut record) = usage {
        record.cost_micros = charged;
        store::queue_usage(sql, &record)?;
    }
    store::note_uncollected(sql, &ledger_id, (cost - charged).max(0))
}

impl DurableObject for AccountDo {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            ready: Cell::new(false),
            book: RefCell::new(None),
            alarm_at: Cell::new(None),
            copy_waiting: Cell::new(false),
            owned: Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let now = now_ms();
        let sql = self.sql()?;
        let parsed = message::read::<AccountRequest>(req).await;
        let flush_now = matches!(parsed, Ok(AccountRequest::Flush));
        let answer = match parsed {
            Ok(message) => self.expire(&sql, now).and_then(|()| self.handle(&sql, message, now)),
            Err(e) => Ok(AccountResponse::Error { message: format!("bad message: {e}") }),
        };
        let answer = answer.unwrap_or_else(|e| {
            // Storage refused a write: reload the book from what storage holds.
            self.book.replace(None);
            AccountResponse::Error { message: e.to_string() }
        });
        if flush_now {
            // Everything waiting, batch after batch (bounded), so a reconciliation compares complete ledgers.
            for _ in 0..MAX_FLUSH_BATCHES {
                match outbox::flush(&sql, &self.env).await {
                    Ok(true) => continue,
                    Ok(false) => {
                        self.copy_waiting.set(false);
                        break;
                    }
                    Err(e) => return message::answer(&AccountResponse::Error { message: e.to_string() }),
                }
            }
        }
        // The message is committed whatever happens to the alarm: its failure must not
        // turn a done change into an error the caller would retry (the next message re-arms).
        if let Err(e) = self.arm(&sql, Some(OUTBOX_DELAY_MS), now).await {
            self.alarm_at.set(None);
            crate::log::job_error("account_alarm", &e.to_string());
        }
        message::answer(&answer)
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm_at.set(None);
        let (sql, now) = (self.sql()?, now_ms());
        if let Err(e) = self.expire(&sql, now) {
            self.book.replace(None);
            return Err(e);
        }
        let retry = match outbox::flush(&sql, &self.env).await {
            Ok(more) => {
                self.copy_waiting.set(more);
                more.then_some(1)
            }
            Err(e) => {
                crate::log::job_error("ledger_outbox", &e.to_string());
                Some(OUTBOX_RETRY_MS)
            }
        };
        self.arm(&sql, retry, now).await?;
        Response::empty()
    }
}
