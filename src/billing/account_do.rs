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
/// How long `FAULT_DELAY_SETTLE` holds the message it delays (past a sender's try: `client::SETTLE_TRY_MS`).
const DELAYED_MESSAGE_MS: u64 = 20_000;
/// Batches one `Flush` copies at most (the alarm takes any rest).
const MAX_FLUSH_BATCHES: u32 = 50;
/// How long a copy waits for another one to end before giving up (the alarm tries again).
const COPY_WAIT_MS: f64 = 10_000.0;

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
    /// A copy to D1 runs (one at a time: see `copy_turn`).
    copying: Cell<bool>,
}

/// The turn to copy to D1, given back when dropped.
struct CopyTurn<'a>(&'a Cell<bool>);

impl Drop for CopyTurn<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
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
            // A message about requests in hand (their settlements, their heartbeats) is answered before what
            // is due is closed: one that reaches the object after its request fell due, but before the alarm
            // closed it, is taken as it is (charged its cost, or kept alive), not as late. Any other message
            // sees what is due closed first (its money free again).
            let answer = match message {
                Some(m @ (AccountRequest::Settle { .. } | AccountRequest::Touch { .. })) => {
                    account.answer(m).and_then(|answer| account.expire().map(|()| answer))
                }
                Some(m) => account.expire().and_then(|()| account.answer(m)),
                None => account.expire().map(|()| AccountResponse::Ok),
            };
            if account.wrote {
                self.copy_waiting.set(true);
            }
            answer
        })
    }

    /// Waits for the turn to copy to D1. Copies run one at a time, so while a reconciliation holds the turn,
    /// D1 holds exactly the ledger rows marked copied (a copy marks its rows in the same step its D1 batch
    /// is confirmed): rows charged meanwhile wait, and the comparison is exact however busy the account.
    async fn copy_turn(&self) -> Result<CopyTurn<'_>> {
        let since = js_sys::Date::now();
        while self.copying.get() {
            if js_sys::Date::now() - since > COPY_WAIT_MS {
                return Err(worker::Error::RustError("another copy to D1 is still running".into()));
            }
            worker::Delay::from(std::time::Duration::from_millis(5)).await;
        }
        self.copying.set(true);
        Ok(CopyTurn(&self.copying))
    }

    /// Copies everything waiting to D1 (alerts first, apart: a failing queue leaves them to the alarm, and is
    /// no reason to fail the flush; nor does a slow one hold the turn to copy), batch after batch (bounded),
    /// so a reconciliation compares complete ledgers; for a reconciliation, then compares (its answer).
    async fn flush(&self, sql: &SqlStorage, reconcile: Option<&str>, now: i64) -> Result<Option<AccountResponse>> {
        let alerts_left = outbox::send_alerts(sql, &self.env).await.unwrap_or_else(|e| {
            crate::log::job_error("alert_outbox", &e.to_string());
            true
        });
        let _turn = self.copy_turn().await?;
        for _ in 0..MAX_FLUSH_BATCHES {
            if !outbox::copy(sql, &self.env).await? {
                self.copy_waiting.set(alerts_left);
                break;
            }
        }
        match reconcile {
            Some(account_id) => Ok(Some(self.reconciled(sql, account_id, now).await?)),
            None => Ok(None),
        }
    }

    /// Reads D1's sum of the account's ledger, then (in one step, nothing between) the object's own
    /// sums, while holding the copy turn.
    async fn reconciled(&self, sql: &SqlStorage, account_id: &str, now: i64) -> Result<AccountResponse> {
        #[derive(serde::Deserialize)]
        struct Sum {
            total: Option<f64>,
        }
        let slow_ms = crate::env::Config::get(&self.env).faults.slow_reconcile_ms;
        if slow_ms > 0 {
            worker::Delay::from(std::time::Duration::from_millis(slow_ms)).await;
        }
        let sum: Option<Sum> = crate::env::db(&self.env)?
            .prepare("SELECT amount + archived AS total FROM ledger_totals WHERE user_id = ?1")
            .bind(&[account_id.into()])?
            .first(None)
            .await?;
        let d1_sum = sum.and_then(|s| s.total).map_or(0, |t| t as i64);
        let (ledger_sum, uncollected) = store::ledger_totals(sql)?;
        let uncopied = store::scalar(sql, "SELECT COALESCE(SUM(amount), 0) AS n FROM ledger WHERE synced = 0", vec![])?;
        let mut slot = self.book.borrow_mut();
        let book = match slot.as_mut() {
            Some(book) => book,
            None => slot.insert(store::load_book(sql, now)?),
        };
        Ok(AccountResponse::Reconciled {
            balance: book.balance(),
            ledger_sum,
            uncollected,
            copied_sum: ledger_sum - uncopied,
            d1_sum,
            open: book.in_flight().count() as i64,
        })
    }

    /// Tests only: the first settlement message for the model of `FAULT_DELAY_SETTLE`, or the first
    /// heartbeat with `FAULT_DELAY_BEAT`, in this isolate, is held `DELAYED_MESSAGE_MS` before it runs,
    /// as one slow on its way (its sender has given the try up and sent it again by then).
    async fn delay_if_faulted(&self, message: &AccountRequest) {
        let faults = &crate::env::Config::get(&self.env).faults;
        let fault = match message {
            AccountRequest::Settle { settlements, .. } => faults
                .delay_settle
                .as_deref()
                .filter(|model| settlements.iter().any(|s| s.usage.as_ref().is_some_and(|u| u.model == *model)))
                .map(|_| "FAULT_DELAY_SETTLE: a settlement message"),
            AccountRequest::Touch { .. } if faults.delay_beat => Some("FAULT_DELAY_BEAT: a heartbeat"),
            _ => None,
        };
        let Some(what) = fault.filter(|what| crate::js::first_times(what, 1)) else { return };
        crate::log::job_error("settle_fault", &format!("{what} is held"));
        worker::Delay::from(std::time::Duration::from_millis(DELAYED_MESSAGE_MS)).await;
        crate::log::job_error("settle_fault", &format!("{what}, held, runs now"));
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
            copying: Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let sql = self.sql()?;
        let parsed = message::read::<AccountRequest>(req).await;
        if let Ok(message) = &parsed {
            self.delay_if_faulted(message).await;
        }
        // The time of the step that decides, read after the body (other messages may run while it is read).
        let now = now_ms();
        let reconcile = match &parsed {
            Ok(AccountRequest::Reconcile { account_id }) => Some(account_id.clone()),
            _ => None,
        };
        let flush_now = matches!(parsed, Ok(AccountRequest::Flush)) || reconcile.is_some();
        let answer = match parsed {
            Ok(message) => self.run(&sql, Some(message), now),
            Err(e) => Ok(AccountResponse::Error { message: format!("bad message: {e}") }),
        };
        let mut answer = answer.unwrap_or_else(|e| {
            self.forget();
            AccountResponse::Error { message: e.to_string() }
        });
        if flush_now && !matches!(answer, AccountResponse::Error { .. }) {
            match self.flush(&sql, reconcile.as_deref(), now).await {
                Ok(Some(reconciled)) => answer = reconciled,
                Ok(None) => {}
                Err(e) => answer = AccountResponse::Error { message: e.to_string() },
            }
        }
        // The message is committed whatever happens to the alarm: its failure must not
        // turn a done change into an error the caller would retry (the next message re-arms).
        if let Err(e) = self.arm(Some(OUTBOX_DELAY_MS), now_ms()).await {
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
        // Alerts and rows each on their own (alerts outside the turn to copy, which a slow queue would
        // hold): either failing waits `OUTBOX_RETRY_MS`, more of either goes on at once.
        let alerts = outbox::send_alerts(&sql, &self.env).await.map_err(|e| {
            crate::log::job_error("alert_outbox", &e.to_string());
        });
        let rows = match self.copy_turn().await {
            Ok(_turn) => outbox::copy(&sql, &self.env).await,
            Err(e) => Err(e),
        };
        let rows = rows.map_err(|e| crate::log::job_error("ledger_outbox", &e.to_string()));
        self.copy_waiting.set(rows != Ok(false) || alerts != Ok(false));
        let retry = match (rows, alerts) {
            (Ok(true), _) | (_, Ok(true)) => Some(1),
            (Err(()), _) | (_, Err(())) => Some(OUTBOX_RETRY_MS),
            (Ok(false), Ok(false)) => None,
        };
        self.arm(retry, now_ms()).await?;
        Response::empty()
    }
}
