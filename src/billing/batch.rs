//! One account's settlements sent together, and this isolate's budget leases
//! given back. While a message to the account's
//! object is on its way, the settlements that come meanwhile wait here, and
//! the first of them to find the way free sends them all in the next message
//! (with the leases to give back). Each request's task stays until its own
//! settlement has been sent by someone and answered (or given up on), so no
//! settlement depends on another request's task living on: a waiting task
//! polls its own timer (a wake-up from another request's task would run its
//! I/O in that request's context, which the runtime refuses). Settling is
//! idempotent by request id, so a settlement sent twice charges once. A
//! settlement the object answers as failed (its writes undone, its batch-mates
//! charged) goes back to its own task, which sends it again after a backoff.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use worker::Env;

use super::client;
use super::leases;
use super::protocol::Settlement;

/// Settlements in one message at most.
const MAX_BATCH: usize = 64;
/// How soon a waiting settlement first looks again whether its turn has come; each further look waits
/// twice as long, up to `MAX_POLL_MS` (a message to a distant object takes tens of milliseconds, and each
/// look costs a timer and a wake-up).
const POLL_MS: u64 = 2;
const MAX_POLL_MS: u64 = 32;
/// How long one message is retried before its settlements go back in line (below the runtime's 30 s
/// for a task after its answer, so a sender's task does not die holding others' settlements).
const SEND_RETRY_MS: i64 = 20_000;
/// A send in flight this long is taken to have died with its task (a live sender gives its batch back
/// after `SEND_RETRY_MS`): its settlements' own tasks, those still alive, send theirs again. It is well
/// inside the 30 s those tasks have, since a sender may have started late in its own.
const STALE_SEND_MS: f64 = 25_000.0;
/// A settlement waiting this long while no message is on its way has lost its own task (a live one takes
/// its turn within `MAX_POLL_MS`): whichever task settles next in this isolate, for any account, sends it.
const STRANDED_MS: f64 = 2_000.0;
/// How long such a rescue is tried: a little, as the task sending it has spent part of its own life.
const RESCUE_TRY_MS: i64 = 5_000;
/// How often a settlement whose own task is gone is sent again after the object answered it as failed.
const RESCUES: u8 = 3;

#[derive(Clone)]
struct Pending {
    settlement: Settlement,
    key_id: String,
    /// When it was put in line.
    queued_ms: f64,
    /// Times it failed in the object with no task of its own left to send it again.
    rescued: u8,
}

#[derive(Default)]
struct Line {
    /// When the message on its way was sent.
    sending_since: Option<f64>,
    /// When the last message ended (a settlement waiting behind it had no turn before).
    free_since: f64,
    waiting: Vec<Pending>,
    /// Settlements on their way, with when their message was sent, and a copy: one whose sender's task
    /// died with it (its send is stale) is put in line again, by its own task or by `tidy`, whatever else is
    /// on its way.
    in_flight: HashMap<String, (f64, Pending)>,
    /// Settlements another task sent (answered or given up on): their own tasks may end (with when: one
    /// whose task has ended, having given up on it, is dropped after `STALE_SEND_MS`), and how it ended.
    finished: HashMap<String, (f64, Confirmed)>,
    /// Settlements the object answered as failed, back to their own tasks, with when they are to be sent
    /// again: when answered, until their own task takes it and sets the end of its backoff (it stays here
    /// meanwhile). One still here `STRANDED_MS` past that time has lost its task: `tidy` puts it in line.
    failed: HashMap<String, (f64, Pending)>,
}

impl Line {
    fn busy(&self, now: f64) -> bool {
        self.sending_since.is_some_and(|since| now - since < STALE_SEND_MS)
    }

    /// The next batch to send, marked on its way.
    fn take_batch(&mut self, now: f64) -> Vec<Pending> {
        self.sending_since = Some(now);
        let take = self.waiting.len().min(MAX_BATCH);
        let batch: Vec<Pending> = self.waiting.drain(..take).collect();
        for p in &batch {
            self.in_flight.insert(p.settlement.request_id.clone(), (now, p.clone()));
        }
        batch
    }

    /// Settlements left waiting by tasks that ended: waiting this long with no message on its way.
    fn stranded(&self, now: f64) -> bool {
        !self.busy(now) && self.waiting.first().is_some_and(|p| now - p.queued_ms.max(self.free_since) > STRANDED_MS)
    }

    fn idle(&self) -> bool {
        self.sending_since.is_none()
            && self.waiting.is_empty()
            && self.in_flight.is_empty()
            && self.finished.is_empty()
            && self.failed.is_empty()
    }

    /// What tasks that ended left behind, back in line (for the next rescue), and what no task can take
    /// any more, gone: settlements answered as failed that no task took (or whose task died in its
    /// backoff); settlements whose message died with its sender's task.
    fn tidy(&mut self, now: f64) {
        self.finished.retain(|_, (at, _)| now - *at < STALE_SEND_MS);
        let abandoned: Vec<String> =
            self.failed.iter().filter(|(_, (at, _))| now - *at > STRANDED_MS).map(|(id, _)| id.clone()).collect();
        for id in abandoned {
            let Some((_, p)) = self.failed.remove(&id) else { continue };
            if p.rescued < RESCUES {
                self.queue_again(Pending { queued_ms: now, rescued: p.rescued + 1, ..p });
            } else {
                let why =
                    format!("settlement {id} kept failing with no task of its own: left to its reservation's rule");
                crate::log::job_error("settle", &why);
            }
        }
        let lost: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, (since, _))| now - *since >= STALE_SEND_MS)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            if let Some((_, p)) = self.in_flight.remove(&id) {
                self.queue_again(Pending { queued_ms: now, ..p });
            }
        }
        if !self.busy(now) {
            self.sending_since = None;
        }
    }

    /// In line again, unless it already is.
    fn queue_again(&mut self, pending: Pending) {
        if !self.waiting.iter().any(|p| p.settlement.request_id == pending.settlement.request_id) {
            self.waiting.push(pending);
        }
    }
}

thread_local! {
    static LINES: RefCell<HashMap<String, Line>> = RefCell::new(HashMap::new());
}

/// How a settlement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// The object charged it.
    Charged,
    /// The object had closed its request without settlement before it came (charged its evidence).
    ClosedBefore,
    /// Not confirmed: the object settles it by its rule, at its expiry.
    No,
}

/// Tests only (`FAULT_ABANDON_SETTLE`): puts a settlement in line and leaves, as a task the runtime ended
/// before its turn came.
pub fn abandon(account: &str, key_id: &str, settlement: Settlement) {
    let queued_ms = js_sys::Date::now();
    with_line(account, |line| {
        line.waiting.push(Pending { settlement, key_id: key_id.to_string(), queued_ms, rescued: 0 })
    });
}

/// Settles one request of `account` (a request of `key_id`), with whatever else waits, until the object
/// confirms or `retry_for_ms` has passed; `returns` gives the leases to give back with it. Answers how
/// the object took it.
pub async fn settle(
    env: &Env,
    account: &str,
    key_id: &str,
    settlement: Settlement,
    retry_for_ms: i64,
    returns: impl Fn() -> Vec<String>,
) -> Confirmed {
    let id = settlement.request_id.clone();
    let on_lease = settlement.on_lease.clone();
    // Given up on: this isolate's lease no longer counts the request as in flight (the worst is assumed).
    let give_up = || {
        if let Some(on) = &on_lease {
            leases::settled(key_id, &on.lease_id, &id, None);
        }
        Confirmed::No
    };
    let deadline = js_sys::Date::now() + retry_for_ms as f64;
    // Kept to send again should the message carrying it die with its sender's task.
    let mine = settlement.clone();
    let pending = |settlement: Settlement| Pending {
        settlement,
        key_id: key_id.to_string(),
        queued_ms: js_sys::Date::now(),
        rescued: 0,
    };
    with_line(account, |line| line.waiting.push(pending(settlement)));
    let mut failures = 0u32;
    // The end of the backoff under way, after the object answered this settlement as failed.
    let mut backoff_until: Option<f64> = None;
    let mut poll_ms = POLL_MS;
    loop {
        let now = js_sys::Date::now();
        let turn = with_line(account, |line| {
            if let Some((_, how)) = line.finished.remove(&id) {
                // A copy put in line again (its sender was taken for dead, and was only slow) is not sent.
                line.waiting.retain(|p| p.settlement.request_id != id);
                return Turn::Done(how);
            }
            line.finished.retain(|_, (at, _)| now - *at < STALE_SEND_MS);
            // Failed in the object: it stays in `failed` through its backoff (0.25 s doubling to 8 s, as an
            // unanswered message is), marked with the backoff's end, then goes back in line.
            if let Some((at, _)) = line.failed.get_mut(&id) {
                return match backoff_until {
                    None => {
                        let wait = client::backoff_ms(failures) as f64;
                        if now + wait > deadline {
                            line.failed.remove(&id);
                            return Turn::GaveUp;
                        }
                        *at = now + wait;
                        Turn::Backoff(now + wait)
                    }
                    Some(until) if now < until => Turn::Backoff(until),
                    Some(_) => {
                        if let Some((_, pending)) = line.failed.remove(&id) {
                            line.queue_again(Pending { queued_ms: now, ..pending });
                        }
                        Turn::Again
                    }
                };
            }
            let live = line.in_flight.get(&id).is_some_and(|(since, _)| now - *since < STALE_SEND_MS);
            if !live {
                line.in_flight.remove(&id);
            }
            let queued = line.waiting.iter().position(|p| p.settlement.request_id == id);
            match (queued, line.busy(now), live) {
                (Some(i), _, _) if now >= deadline => {
                    line.waiting.remove(i);
                    Turn::GaveUp
                }
                (Some(_), false, _) => Turn::Send(line.take_batch(now)),
                (Some(_), true, _) => Turn::Wait,
                // On its way (in a message bounded by `SEND_RETRY_MS`, or taken for dead after `STALE_SEND_MS`):
                // its sender accounts for it, so it is waited for even past the deadline.
                (None, _, true) => Turn::Wait,
                // On its way in a message whose task died: in line again (settling twice charges once),
                // whatever else is on its way meanwhile.
                (None, _, false) if now < deadline => {
                    line.waiting.push(pending(mine.clone()));
                    Turn::Wait
                }
                // Past its time: the object settles it by its rule.
                (None, _, false) => Turn::GaveUp,
            }
        });
        let batch = match turn {
            Turn::Done(how) => return how,
            Turn::GaveUp => return give_up(),
            // Its backoff over and in line again: a later failure starts a backoff of its own.
            Turn::Again => {
                backoff_until = None;
                continue;
            }
            Turn::Backoff(until) => {
                if backoff_until.is_none() {
                    failures += 1;
                    backoff_until = Some(until);
                }
                let wait = (until - js_sys::Date::now()).max(0.0) as u64 + 1;
                worker::Delay::from(Duration::from_millis(wait)).await;
                continue;
            }
            Turn::Wait => {
                worker::Delay::from(Duration::from_millis(poll_ms)).await;
                poll_ms = (poll_ms * 2).min(MAX_POLL_MS);
                continue;
            }
            Turn::Send(batch) => batch,
        };
        let sent_mine = batch.iter().any(|p| p.settlement.request_id == id);
        let Some(settled) = send(env, account, batch, returns(), retry_for_ms.min(SEND_RETRY_MS), Some(&id)).await
        else {
            worker::Delay::from(Duration::from_millis(POLL_MS)).await;
            continue;
        };
        if settled.failed.contains(&id) {
            continue;
        }
        if sent_mine {
            LINES.with_borrow_mut(|lines| {
                if lines.get(account).is_some_and(Line::idle) {
                    lines.remove(account);
                }
            });
            return if settled.closed.contains(&id) { Confirmed::ClosedBefore } else { Confirmed::Charged };
        }
    }
}

/// Sends a batch taken from `account`'s line (with the leases `returning`) and records how each of its
/// settlements ended for its own task (`own`, the sender's, is answered to it directly). `None`: not
/// confirmed, and the batch is back in line for the next sender.
async fn send(
    env: &Env,
    account: &str,
    batch: Vec<Pending>,
    returning: Vec<String>,
    tries_for_ms: i64,
    own: Option<&str>,
) -> Option<client::Settled> {
    let settlements: Vec<Settlement> = batch.iter().map(|p| p.settlement.clone()).collect();
    let settled = client::settle(env, account, settlements, returning.clone(), tries_for_ms).await;
    if settled.is_some() {
        leases::returned(account, &returning);
    }
    let Some(settled) = settled else {
        // Not confirmed: back in line, for the next sender (or each request's own task) to try again.
        leases::not_returned(account, returning);
        with_line(account, |line| {
            line.sending_since = None;
            line.free_since = js_sys::Date::now();
            for p in &batch {
                line.in_flight.remove(&p.settlement.request_id);
            }
            line.waiting.splice(0..0, batch);
        });
        return None;
    };
    with_line(account, |line| {
        line.sending_since = None;
        let now = js_sys::Date::now();
        line.free_since = now;
        for p in batch {
            let request_id = p.settlement.request_id.clone();
            line.in_flight.remove(&request_id);
            if settled.failed.contains(&request_id) {
                // Back to its own task; one no task takes is put in line again (`Line::tidy`).
                line.failed.insert(request_id, (now, p));
                continue;
            }
            if let Some(on) = &p.settlement.on_lease {
                let held_now = settled.leases.iter().find(|(l, _)| *l == on.lease_id).map_or(0, |l| l.1);
                leases::settled(&p.key_id, &on.lease_id, &request_id, Some(held_now));
            }
            if own != Some(request_id.as_str()) {
                let how =
                    if settled.closed.contains(&request_id) { Confirmed::ClosedBefore } else { Confirmed::Charged };
                line.finished.insert(request_id, (now, how));
            }
        }
    });
    Some(settled)
}

/// Sends what a task since ended left waiting in an account's line of this isolate, one account's batch
/// (the runtime ends a task 30 s after its answer; with the object slow or away that long, a settlement
/// may still be in line then, and only another settling task can send it). Called last in a request's
/// settling, and tried briefly, as the calling task has spent part of its life. Settling twice charges
/// once, so a settlement whose own task was alive after all is not harmed.
pub async fn rescue_stranded(env: &Env) {
    let now = js_sys::Date::now();
    let stranded: Option<(String, Vec<Pending>)> = LINES.with_borrow_mut(|lines| {
        for line in lines.values_mut() {
            line.tidy(now);
        }
        lines.retain(|_, line| !line.idle());
        let (account, line) = lines.iter_mut().find(|(_, line)| line.stranded(now))?;
        Some((account.clone(), line.take_batch(now)))
    });
    let Some((account, batch)) = stranded else { return };
    crate::log::job_error(
        "settle",
        &format!("sending {} settlement(s) of ended requests of account {account}", batch.len()),
    );
    send(env, &account, batch, Vec::new(), RESCUE_TRY_MS, None).await;
}

enum Turn {
    Done(Confirmed),
    GaveUp,
    /// Failed in the object: sent again once this time has come.
    Backoff(f64),
    /// Put in line again after its backoff.
    Again,
    Wait,
    Send(Vec<Pending>),
}

fn with_line<T>(account: &str, f: impl FnOnce(&mut Line) -> T) -> T {
    LINES.with_borrow_mut(|lines| f(lines.entry(account.to_string()).or_default()))
}

/// Gives this isolate's leases back once nothing may start on them and nothing is in flight on them:
/// those drained now at once; those idle but still in use when their use ends, the calling task staying
/// (in its own `wait_until`, at most a lease's use) for them unless another already does. A lease a
/// request starts on meanwhile is given back by that request's settlement.
pub async fn return_leases(env: Env) {
    let env = &env;
    give_back(env, leases::take_drained(js_sys::Date::now() as i64, None)).await;
    let now = js_sys::Date::now() as i64;
    if let Some(end) = leases::claim_idle(now) {
        let wait = (end - now).clamp(0, crate::domain::lease::MAX_USE_MS) as u64 + 1;
        worker::Delay::from(Duration::from_millis(wait)).await;
        give_back(env, leases::take_drained(js_sys::Date::now() as i64, None)).await;
    }
}

/// Gives leases back to their accounts' objects, one message per account.
async fn give_back(env: &Env, drained: Vec<(String, String)>) {
    let mut by_account: Vec<(String, Vec<String>)> = Vec::new();
    for (account, lease_id) in drained {
        match by_account.iter_mut().find(|(a, _)| *a == account) {
            Some((_, ids)) => ids.push(lease_id),
            None => by_account.push((account, vec![lease_id])),
        }
    }
    for (account, ids) in by_account {
        match client::settle(env, &account, Vec::new(), ids.clone(), 10_000).await {
            Some(_) => leases::returned(&account, &ids),
            None => leases::not_returned(&account, ids),
        }
    }
}
