//! What each message does to an account: decided in its `Book`, then written
//! through `store` in the same synchronous step (see `account_do`).

use std::cell::Cell;

use worker::{Result, SqlStorage};

use super::protocol::{AccountRequest, AccountResponse, EndUserRow, KeyUsage, LedgerEntry, OnLease, Settlement};
use super::store;
use crate::domain::account::{Book, Closed, CreditRefused, Decision};
use crate::domain::alerts::AlertRules;
use crate::domain::ledger::CLOSED_WITHOUT_SETTLEMENT;
use crate::domain::money::micros_to_decimal;
use crate::domain::usage::UsageRecord;
use crate::domain::windows::Reset;
use crate::env::Faults;

/// The most end users an account's object keeps in memory before it forgets the idle ones (a few MB).
const END_USERS_IN_MEMORY: usize = 10_000;

/// The end users a message names, as `(key id, end user)`: those its book decides on.
fn named_end_users(req: &AccountRequest, book: &Book) -> Vec<(String, String)> {
    match req {
        AccountRequest::Reserve(ask) => ask.end_user.iter().map(|e| (ask.key_id.clone(), e.clone())).collect(),
        AccountRequest::PutEndUserBudget { key_id, end_user, .. } => vec![(key_id.clone(), end_user.clone())],
        AccountRequest::Touch { on_lease: on, .. } => on.iter().filter_map(|on| leased_end_user(on, book)).collect(),
        AccountRequest::Settle { settlements, .. } => settled_end_users(settlements, book),
        _ => Vec::new(),
    }
}

/// The end users of settlements of requests started on leases (the others are in flight, so in memory).
fn settled_end_users(settlements: &[Settlement], book: &Book) -> Vec<(String, String)> {
    settlements.iter().filter_map(|s| leased_end_user(s.on_lease.as_ref()?, book)).collect()
}

/// A request on a lease names its key through the lease (one ended names none: nothing is charged to it).
fn leased_end_user(on: &OnLease, book: &Book) -> Option<(String, String)> {
    Some((book.lease(&on.lease_id)?.key_id.clone(), on.end_user.clone()?))
}

/// One message's view of the account: its storage, its book, the time.
pub struct Account<'a> {
    /// The object's state, for transactions inside the message's (`js::atomically`).
    pub state: &'a worker::State,
    pub sql: &'a SqlStorage,
    pub book: &'a mut Book,
    pub now: i64,
    /// What to alert on, when the tenant has alerts.
    pub alerts: Option<&'a AlertRules>,
    /// The account's id is recorded in storage.
    pub owned: &'a Cell<bool>,
    /// Ledger rows or usage records were written (for the copy to D1).
    pub wrote: bool,
    /// Tests only: faults to inject (`env::Faults`).
    pub faults: &'a Faults,
}

impl Account<'_> {
    /// Answers one message; its writes are made before the answer leaves. The end users it names are
    /// brought from storage first, and when memory holds many, the idle ones are forgotten after.
    pub fn answer(&mut self, req: AccountRequest) -> Result<AccountResponse> {
        self.bring(named_end_users(&req, self.book))?;
        let answer = self.decide(req);
        self.book.forget_idle_end_users(if self.faults.forget_end_users { 0 } else { END_USERS_IN_MEMORY });
        answer
    }

    /// Brings from storage those of the named end users memory does not hold.
    fn bring(&mut self, named: Vec<(String, String)>) -> Result<()> {
        for (key_id, end_user) in named {
            if self.book.needs_end_user(&key_id, &end_user) {
                store::bring_end_user(self.sql, self.book, &key_id, &end_user, self.now)?;
            }
        }
        Ok(())
    }

    fn decide(&mut self, req: AccountRequest) -> Result<AccountResponse> {
        let (sql, now) = (self.sql, self.now);
        Ok(match req {
            AccountRequest::PutKey { state } => {
                if self.book.key(&state.key_id).is_some() {
                    lose_key_change(self.faults.failed_key_changes, &state.key_id)?;
                }
                if let Some(revoked) = self.book.put_key(state.clone(), now) {
                    store::put_key(sql, &state)?;
                    for lease_id in revoked {
                        store::end_lease_use(sql, &lease_id, now)?;
                    }
                }
                AccountResponse::Ok
            }
            AccountRequest::Reserve(ask) => {
                let (decision, held) = self.book.reserve(&ask, now);
                if let Some(held) = held {
                    store::hold(sql, &ask.request_id, &held, ask.about.as_ref())?;
                    if let Some(end_user) = &held.end_user {
                        store::see_end_user(sql, &ask.key_id, end_user, now)?;
                    }
                    if let Some(admitted) = self.book.admitted(&ask.key_id, &ask.request_id) {
                        store::admit(sql, &ask.key_id, admitted)?;
                    }
                }
                match decision {
                    Decision::Refused(reason) => AccountResponse::Refused { reason },
                    Decision::TooMany(scope) => AccountResponse::TooManyInFlight { scope: scope.to_string() },
                    Decision::RateLimited(refusal) => AccountResponse::RateLimited { refusal },
                    Decision::KeyOutOfDate => AccountResponse::KeyOutOfDate,
                    Decision::Decided { reservation, resets_at_ms, lease, rate } => {
                        if let Some(granted) = &lease {
                            if let Some(l) = self.book.lease(&granted.lease_id) {
                                store::grant_lease(sql, &granted.lease_id, l)?;
                            }
                        }
                        AccountResponse::Reserved { reservation, resets_at_ms, lease, rate }
                    }
                }
            }
            AccountRequest::Touch { request_id, evidence, lease_ms, on_lease, about } => {
                let moved = on_lease.is_some() && self.book.held(&request_id).is_none();
                let held = match &on_lease {
                    Some(OnLease { lease_id, worst_case, end_user, .. }) => {
                        let request = (request_id.as_str(), end_user.as_deref());
                        self.book.touch_leased(lease_id, request, *worst_case, evidence, lease_ms, now).cloned()
                    }
                    None => self.book.touch(&request_id, evidence, lease_ms, now).cloned(),
                };
                if let Some(held) = &held {
                    // The reservation first: should the lease's record then fail, the lease holds too much
                    // until it ends, and the request is settled from its reservation.
                    store::hold(sql, &request_id, held, about.as_ref().filter(|_| moved))?;
                    if let (true, Some(on)) = (moved, &on_lease) {
                        store::lease_charge(sql, &on.lease_id, &request_id, held.amount)?;
                    }
                }
                // A key stopped since the request began (disabled, deleted, expired, made read-only) stops it:
                // the stream ends, and its settlement charges what it delivered from the reservation kept.
                let stopped = held.as_ref().is_some_and(|h| !self.book.may_go_on(h, now));
                AccountResponse::Touched { held: held.is_some(), stopped }
            }
            AccountRequest::Settle { account_id, settlements, return_leases } => {
                self.own(&account_id)?;
                let mut leases: Vec<String> = Vec::new();
                for on in settlements.iter().filter_map(|s| s.on_lease.as_ref()) {
                    if !leases.contains(&on.lease_id) {
                        leases.push(on.lease_id.clone());
                    }
                }
                let Outcomes { charged, failed, closed } =
                    if settlements.is_empty() { Outcomes::default() } else { self.settle_all(&settlements)? };
                self.wrote |= !settlements.is_empty();
                for lease_id in return_leases {
                    if self.book.release_lease(&lease_id) {
                        store::end_lease(sql, &lease_id)?;
                    }
                }
                let leases = leases
                    .into_iter()
                    .map(|id| {
                        let held = self.book.lease(&id).map_or(0, |l| l.amount);
                        (id, held)
                    })
                    .collect();
                AccountResponse::Settled { charged, balance: self.book.balance(), leases, failed, closed }
            }
            AccountRequest::Credit { account_id, amount, kind, description, idempotency_key } => {
                if let Some(key) = idempotency_key.as_deref() {
                    if let Some(earlier) = store::earlier_credit(sql, key)? {
                        // A repeat is the same credit; the key reused for another would be a credit not made.
                        if earlier.amount != amount || earlier.kind != kind {
                            return Ok(AccountResponse::CreditKeyReused);
                        }
                        return Ok(AccountResponse::Credited { transaction_id: earlier.id, balance: earlier.balance });
                    }
                    if let Some(saved) = store::saved_answer(sql, key)? {
                        return Ok(serde_json::from_slice(saved.as_bytes())?);
                    }
                }
                self.own(&account_id)?;
                let balance = match self.book.credit(amount) {
                    Ok(balance) => balance,
                    Err(CreditRefused::Overdraw { available }) => return Ok(AccountResponse::Overdrawn { available }),
                    Err(CreditRefused::OverCeiling { room }) => return Ok(AccountResponse::OverCeiling { room }),
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
                store::post(sql, &entry, 0, None, None)?;
                self.wrote = true;
                AccountResponse::Credited { transaction_id: id, balance }
            }
            AccountRequest::Summary { key_id, audit } => self.summary(key_id.as_deref(), audit)?,
            AccountRequest::PutEndUserBudget { key_id, end_user, own } => {
                let own = own.into_option();
                for lease_id in self.book.set_end_user_budget(&key_id, &end_user, own, now) {
                    store::end_lease_use(sql, &lease_id, now)?;
                }
                store::put_end_user_budget(sql, &key_id, &end_user, own, now)?;
                AccountResponse::Ok
            }
            AccountRequest::EndUsers { key_id, default, page, page_size } => {
                let (named, total) = store::end_users_page(sql, &key_id, page, page_size)?;
                let default = self.book.key(&key_id).map_or(default, |k| k.end_user_budget);
                let mut users = Vec::with_capacity(named.len());
                for (end_user, first_ms) in named {
                    if self.book.needs_end_user(&key_id, &end_user) {
                        store::bring_end_user(sql, self.book, &key_id, &end_user, now)?;
                    }
                    let b = &*self.book;
                    let Some(u) = b.end_user(&key_id, &end_user) else { continue };
                    let budget = u.budget(default);
                    let reset = budget.and_then(|b| b.reset);
                    users.push(EndUserRow {
                        budget,
                        own: u.own_budget.is_some(),
                        spent: u.spend.in_window(reset, now),
                        total: u.spend.in_window(None, now),
                        held: b.held_for_end_user(&key_id, &end_user),
                        resets_ms: reset.map(|r| r.window_end(now)),
                        end_user,
                        first_ms,
                    });
                }
                AccountResponse::EndUsers { users, total: Some(total) }
            }
            AccountRequest::Transactions { page, page_size } => {
                let (rows, total) = store::transactions(sql, page, page_size)?;
                AccountResponse::Transactions { rows, total }
            }
            // Answered in `fetch`, which can await the copy.
            AccountRequest::Flush => AccountResponse::Ok,
            AccountRequest::Reconcile { account_id } => {
                self.own(&account_id)?;
                AccountResponse::Ok
            }
            AccountRequest::Ping => AccountResponse::Pong { pings: 1 },
        })
    }

    /// Settles a message's requests: together, in one transaction inside the message's (one savepoint a
    /// message: one a settlement made its writes cost about half as much again, in workerd). Should one of
    /// them fail, none of their writes stay, memory goes back to what storage holds, and each is settled
    /// again in a transaction of its own: one that fails again leaves none of its writes and the others
    /// stand (its sender sends it again). Answers what was charged and the ids of those that failed.
    fn settle_all(&mut self, settlements: &[Settlement]) -> Result<Outcomes> {
        let state = self.state;
        let together = crate::js::atomically(state, || {
            let mut outcomes = Outcomes::default();
            for settlement in settlements {
                outcomes.add(&settlement.request_id, self.settle_one(settlement)?);
            }
            Ok(outcomes)
        });
        let e = match together {
            Ok(outcomes) => return Ok(outcomes),
            Err(e) => e,
        };
        // Memory saw their changes, storage did not: memory goes back to what storage holds (reading it
        // sums the whole ledger, so once a message: from here on memory is kept aside instead).
        *self.book = store::load_book(self.sql, self.now)?;
        self.bring(settled_end_users(settlements, self.book))?;
        if let [alone] = settlements {
            crate::log::job_error("settle_one", &format!("{}: {e}", alone.request_id));
            return Ok(Outcomes { failed: vec![alone.request_id.clone()], ..Outcomes::default() });
        }
        crate::log::job_error("settle_all", &format!("settled one by one after: {e}"));
        let mut outcomes = Outcomes::default();
        for settlement in settlements {
            let before = self.book.clone();
            match crate::js::atomically(state, || self.settle_one(settlement)) {
                Ok(outcome) => outcomes.add(&settlement.request_id, outcome),
                Err(e) => {
                    crate::log::job_error("settle_one", &format!("{}: {e}", settlement.request_id));
                    *self.book = before;
                    outcomes.failed.push(settlement.request_id.clone());
                }
            }
        }
        Ok(outcomes)
    }

    /// Charges one settled request (its writes: the ledger row, its usage record, the lease's charge);
    /// returns what was charged, or that it had been closed without settlement before.
    fn settle_one(&mut self, settlement: &Settlement) -> Result<Outcome> {
        let (sql, now) = (self.sql, self.now);
        let Settlement { request_id, cost, description, usage, on_lease } = settlement;
        let cost = *cost;
        // A request charged straight from a lease has no reservation row to remove.
        let reserved = self.book.held(request_id).is_some();
        let closed = match on_lease {
            Some(OnLease { lease_id, worst_case, end_user }) => {
                let from_lease = !reserved;
                let request = (request_id.as_str(), end_user.as_deref());
                let closed = self.book.settle_leased(lease_id, request, *worst_case, cost, now);
                if let (true, Some(c)) = (from_lease, &closed) {
                    store::lease_charge(sql, lease_id, request_id, c.amount)?;
                }
                closed
            }
            None => self.book.settle(request_id, cost, now),
        };
        match closed {
            Some(closed) => {
                self.raise_alerts(&closed)?;
                // Its key's per-minute window counts the tokens it used from now on.
                let used = usage.as_ref().map(|u| u.prompt_tokens.saturating_add(u.completion_tokens));
                if let Some(tokens) = used.and_then(|t| i64::try_from(t).ok()) {
                    if let Some(counted) = self.book.count_tokens(&closed.key_id, request_id, tokens) {
                        store::count_tokens(sql, request_id, counted)?;
                    }
                }
                strike(self.faults, sql, usage.as_ref(), request_id)?;
                write_closed(sql, &closed, description.clone(), usage.clone(), now, reserved)?;
                Ok(Outcome::Charged(closed.amount))
            }
            // Started on a lease that has ended (expired: its isolate went quiet): nothing holds
            // money for it any more, so it is not charged, and its cost is recorded as uncollected.
            None if cost > 0
                && on_lease.as_ref().is_some_and(|on| self.book.lease(&on.lease_id).is_none())
                && !store::has_ledger_row(sql, request_id)? =>
            {
                // A close that charges nothing and says what the request cost (uncollected).
                let closed = Closed {
                    request_id: request_id.clone(),
                    key_id: usage.as_ref().map(|u| u.key_id.clone()).unwrap_or_default(),
                    end_user: on_lease.as_ref().and_then(|on| on.end_user.clone()),
                    reserved: 0,
                    amount: 0,
                    uncollected: cost,
                    balance_after: self.book.balance(),
                    abandoned: true,
                };
                let why = format!("{CLOSED_WITHOUT_SETTLEMENT}: its budget lease had ended when it settled");
                write_closed(sql, &closed, why, usage.clone(), now, false)?;
                // As a settlement that comes after its close: the organization keeps what it held.
                Ok(Outcome::ClosedBefore)
            }
            // Closed without its settlement earlier: charged nothing more, but what it
            // really cost is recorded (as uncollected, and in its usage record).
            None => late_settlement(sql, request_id, cost, usage.clone()),
        }
    }

    /// Keeps the alerts a charge crossed for delivery, in the charge's own step.
    fn raise_alerts(&mut self, closed: &Closed) -> Result<()> {
        let Some(rules) = self.alerts else { return Ok(()) };
        let account_id = store::account_id(self.sql)?.unwrap_or_default();
        for alert in self.book.alerts(&account_id, closed, rules, self.now) {
            store::queue_alert(self.sql, &alert, self.now)?;
            self.wrote = true;
        }
        Ok(())
    }

    fn summary(&self, key_id: Option<&str>, audit: bool) -> Result<AccountResponse> {
        let (sql, now, b) = (self.sql, self.now, &*self.book);
        let (total_credits, total_usage) = store::totals(sql)?;
        let (ledger_sum, uncollected) = if audit { store::ledger_totals(sql)? } else { (0, 0) };
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
        Ok(AccountResponse::Summary {
            balance: b.balance(),
            reserved: b.reserved(),
            total_credits,
            total_usage,
            key,
            ledger_sum,
            uncollected,
            open: b.in_flight().count() as i64,
        })
    }

    /// Closes the reservations whose requests can no longer settle, and the leases whose requests
    /// have all settled or can no longer.
    pub fn expire(&mut self) -> Result<()> {
        let (sql, now) = (self.sql, self.now);
        for (lease_id, lease) in self.book.expire_leases(now) {
            store::end_lease(sql, &lease_id)?;
            // Its isolate never gave it back: it died, could not reach this object, or only its giving back was
            // lost. A request it had started whose settlement never came is not charged (architecture.md,
            // "Budget leases"): told, so an operator can see that it may have happened.
            crate::log::job_error(
                "lease_not_returned",
                &format!(
                    "lease {lease_id} of key {} ended without being given back ({} requests charged on it, {} µ$ unused); a request started on it whose settlement never came was not charged, if there was one",
                    lease.key_id,
                    lease.charged.len(),
                    lease.amount
                ),
            );
        }
        while let Some(c) = self.book.expire_next(now) {
            self.wrote = true;
            self.raise_alerts(&c)?;
            let description = format!(
                "{CLOSED_WITHOUT_SETTLEMENT}: charged the {} USD the gateway last reported of it",
                micros_to_decimal(c.amount)
            );
            let usage = closed_usage(sql, &c, now)?;
            write_closed(sql, &c, description, usage, now, true)?;
        }
        Ok(())
    }

    /// Records which account this object is, once.
    fn own(&self, account_id: &str) -> Result<()> {
        if !self.owned.get() {
            store::own(self.sql, account_id)?;
            self.owned.set(true);
        }
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
    reserved: bool,
) -> Result<()> {
    let upstream_id = usage.as_ref().and_then(|u| u.upstream_id.clone());
    if let Some(mut record) = usage {
        record.cost_micros = c.amount;
        store::queue_usage(sql, &record)?;
    }
    if c.uncollected > 0 {
        description
            .push_str(&format!(" (uncollected: {} USD above the reservation)", micros_to_decimal(c.uncollected)));
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
        store::post(sql, &entry, c.uncollected, upstream_id.as_deref(), c.end_user.as_deref())?;
    }
    if let Some(end_user) = &c.end_user {
        store::see_end_user(sql, &c.key_id, end_user, now)?;
    }
    if reserved {
        store::release(sql, &c.request_id)?;
    }
    Ok(())
}

/// The usage record of a request closed without settlement: its model and organization as its reservation
/// noted them, no tokens known (estimated, from what the gateway last reported: the charge), its status 502
/// (its client got no whole answer). `None` for a reservation that noted nothing (made before they did).
fn closed_usage(sql: &SqlStorage, c: &Closed, now: i64) -> Result<Option<UsageRecord>> {
    // (Its `about` is read before `write_closed` releases the reservation.)
    let Some(about) = store::about(sql, &c.request_id)? else { return Ok(None) };
    Ok(Some(UsageRecord {
        id: c.request_id.clone(),
        upstream_id: None,
        key_id: c.key_id.clone(),
        user_id: about.user_id,
        org_id: about.org_id,
        model: about.model,
        provider: String::new(),
        prompt_tokens: 0,
        completion_tokens: 0,
        reasoning_tokens: 0,
        cached_tokens: 0,
        cost_micros: c.amount,
        upstream_cost_micros: None,
        latency_ms: 0, // not known: it never ended
        status: 502,
        streamed: false,
        cancelled: false,
        estimated: true,
        created_ms: if about.started_ms > 0 { about.started_ms } else { now },
        end_user: c.end_user.clone(),
    }))
}

/// Tests only: the settle faults for this request's model, between its writes: `FAULT_FAIL_SETTLE` or
/// `FAULT_PANIC_SETTLE` once per isolate, `FAULT_POISON_SETTLE` every time.
fn strike(faults: &Faults, sql: &SqlStorage, usage: Option<&UsageRecord>, request_id: &str) -> Result<()> {
    let Some(model) = usage.map(|u| u.model.as_str()) else { return Ok(()) };
    let fail = |why: &str| {
        crate::log::job_error("settle_fault", &format!("{why}: settling {request_id} fails between its writes"));
        sql.exec("SELECT * FROM settle_fault_injected", None).map(|_| ())
    };
    if faults.poison_settle.as_deref() == Some(model) {
        return fail("FAULT_POISON_SETTLE");
    }
    let Some(fault) = faults.settle.as_ref().filter(|f| f.model == model) else { return Ok(()) };
    // A failing statement strikes the first two settlements of the model to run (together with others or
    // alone), so one of them is named failed and sent again; a panic strikes once.
    if !crate::js::first_times("settle_fault", if fault.panic { 1 } else { 2 }) {
        return Ok(());
    }
    if fault.panic {
        panic!("FAULT_PANIC_SETTLE: settling {request_id} panics between its writes");
    }
    fail("FAULT_FAIL_SETTLE")
}

/// Tests only: the first `failures` changes to keys the object holds fail, in this isolate.
fn lose_key_change(failures: u32, key_id: &str) -> Result<()> {
    if crate::js::first_times("key_change_fault", failures) {
        let message = format!("FAULT_FAIL_PUT_KEY: the change to key {key_id} is lost");
        crate::log::job_error("put_key_fault", &message);
        return Err(worker::Error::RustError(message));
    }
    Ok(())
}

/// A settlement for a request the object no longer holds: a repeat (nothing to do), or a request
/// closed without it, whose real cost above the close's charge is recorded as uncollected.
fn late_settlement(sql: &SqlStorage, request_id: &str, cost: i64, usage: Option<UsageRecord>) -> Result<Outcome> {
    // Settled already (this same settlement, its answer lost): nothing more.
    let Some((ledger_id, charged)) = store::closed_charge(sql, request_id)? else { return Ok(Outcome::Charged(0)) };
    if let Some(mut record) = usage {
        record.cost_micros = charged;
        // It knows more than its close's record (tokens, provider, upstream id): in its place, if that
        // still waits to be copied.
        store::queue_usage(sql, &record)?;
        store::requeue_usage(sql, &record)?;
    }
    store::note_uncollected(sql, &ledger_id, (cost - charged).max(0))?;
    Ok(Outcome::ClosedBefore)
}

/// What one settlement did.
enum Outcome {
    /// Charged this much (0 included).
    Charged(i64),
    /// Nothing: its request had been closed without settlement.
    ClosedBefore,
}

/// What a message's settlements did, for its answer.
#[derive(Default)]
struct Outcomes {
    charged: i64,
    failed: Vec<String>,
    closed: Vec<String>,
}

impl Outcomes {
    fn add(&mut self, request_id: &str, outcome: Outcome) {
        match outcome {
            Outcome::Charged(amount) => self.charged += amount,
            Outcome::ClosedBefore => self.closed.push(request_id.to_string()),
        }
    }
}
