//! The account Durable Object (binding `ACCOUNTS`, class `AccountDo`): one per
//! paying account, named by user id. A thin shell (storage, alarm, dispatch):
//! the rules are `domain::account::Book`, what each message does is `account`,
//! the SQL is `store`, the copy to D1 is `outbox`.
//! Each message is decided in the book and its writes are made in the same
//! synchronous step, so the runtime holds the answer until they are durable:
//! a reservation exists in storage before its request is forwarded. The writes
//! of one message are one storage transaction (`transactionSync`): should a
//! statement fail or the module trap among them, none stays.

use std::cell::{Cell, RefCell};

use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use super::account::Account;
use super::protocol::{AccountRequest, AccountResponse};
use super::{message, outbox, store};
use crate::domain::account::Book;

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
    /// Ledger rows or usage records wait for the copy to D1, or alerts for the queue.
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

    /// Runs one message (or, with `None`, only the closing of what is due) against the account, its
    /// writes one storage transaction (a failure leaves none of them; the caller reloads the book).
    fn run(&self, sql: &SqlStorage, message: Option<AccountRequest>, now: i64) -> Result<AccountResponse> {
        crate::js::atomically(&self.state, || {
            let mut slot = self.book.borrow_mut();
            let book = match slot.as_mut() {
                Some(book) => book,
                None => slot.insert(store::load_book(sql, now)?),
            };
            let config = crate::env::Config::get(&self.env);
            let alerts = config.alerts.as_ref().map(|a| &a.rules);
            let faults = &config.faults;
            let mut account =
                Account { state: &self.state, sql, book, now, alerts, owned: &self.owned, wrote: false, faults };
            let answer = account.expire().and_then(|()| match message {
                Some(message) => account.answer(message),
                None => Ok(AccountResponse::Ok),
            });
            if account.wrote {
                self.copy_waiting.set(true);
            }
            answer
        })
    }

    /// After a failed message, whose writes storage undid: what memory holds is read again from storage.
    fn forget(&self) {
        self.book.replace(None);
        self.owned.set(false);
    }

    /// Sets the alarm for the first thing due: a reservation's expiry or the copy to D1.
    async fn arm(&self, copy_in: Option<i64>, now: i64) -> Result<()> {
        let expiry = self.book.borrow().as_ref().and_then(Book::next_expiry);
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
            Ok(message) => self.run(&sql, Some(message), now),
            Err(e) => Ok(AccountResponse::Error { message: format!("bad message: {e}") }),
        };
        let answer = answer.unwrap_or_else(|e| {
            self.forget();
            AccountResponse::Error { message: e.to_string() }
        });
        if flush_now {
            // Alerts once (a failing queue leaves them to the alarm, and is no reason to fail the flush);
            // then every row waiting, batch after batch (bounded), so a reconciliation compares complete
            // ledgers.
            let alerts_left = outbox::send_alerts(&sql, &self.env).await.unwrap_or_else(|e| {
                crate::log::job_error("alert_outbox", &e.to_string());
                true
            });
            for _ in 0..MAX_FLUSH_BATCHES {
                match outbox::copy(&sql, &self.env).await {
                    Ok(true) => continue,
                    Ok(false) => {
                        self.copy_waiting.set(alerts_left);
                        break;
                    }
                    Err(e) => return message::answer(&AccountResponse::Error { message: e.to_string() }),
                }
            }
        }
        // The message is committed whatever happens to the alarm: its failure must not
        // turn a done change into an error the caller would retry (the next message re-arms).
        if let Err(e) = self.arm(Some(OUTBOX_DELAY_MS), now).await {
            self.alarm_at.set(None);
            crate::log::job_error("account_alarm", &e.to_string());
        }
        message::answer(&answer)
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm_at.set(None);
        let (sql, now) = (self.sql()?, now_ms());
        if let Err(e) = self.run(&sql, None, now) {
            self.forget();
            return Err(e);
        }
        // Alerts and rows each on their own: either failing waits `OUTBOX_RETRY_MS`, more of either goes on
        // at once.
        let alerts = outbox::send_alerts(&sql, &self.env).await.map_err(|e| {
            crate::log::job_error("alert_outbox", &e.to_string());
        });
        let rows = outbox::copy(&sql, &self.env).await.map_err(|e| {
            crate::log::job_error("ledger_outbox", &e.to_string());
        });
        self.copy_waiting.set(rows != Ok(false) || alerts != Ok(false));
        let retry = match (rows, alerts) {
            (Ok(true), _) | (_, Ok(true)) => Some(1),
            (Err(()), _) | (_, Err(())) => Some(OUTBOX_RETRY_MS),
            (Ok(false), Ok(false)) => None,
        };
        self.arm(retry, now).await?;
        Response::empty()
    }
}
