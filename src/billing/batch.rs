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

struct Pending {
    settlement: Settlement,
    key_id: String,
}

#[derive(Default)]
struct Line {
    /// When the message on its way was sent.
    sending_since: Option<f64>,
    waiting: Vec<Pending>,
    /// Settlements another task sent (answered or given up on): their own tasks may end (with when: one
    /// whose task has ended, having given up on it, is dropped after `STALE_SEND_MS`), and how it ended.
    finished: HashMap<String, (f64, Confirmed)>,
    /// Settlements the object answered as failed, back to their own tasks (with when: one whose task
    /// has ended is dropped after `STALE_SEND_MS`).
    failed: HashMap<String, (f64, Pending)>,
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
    with_line(account, |line| line.waiting.push(Pending { settlement, key_id: key_id.to_string() }));
    let mut failures = 0u32;
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
            if let Some((_, pending)) = line.failed.remove(&id) {
                line.waiting.retain(|p| p.settlement.request_id != id);
                return Turn::Failed(Box::new(pending));
            }
            line.failed.retain(|_, (at, _)| now - *at < STALE_SEND_MS);
            let queued = line.waiting.iter().position(|p| p.settlement.request_id == id);
            let busy = line.sending_since.is_some_and(|since| now - since < STALE_SEND_MS);
            match (queued, busy) {
                (Some(i), _) if now >= deadline => {
                    line.waiting.remove(i);
                    Turn::GaveUp
                }
                (_, true) => Turn::Wait,
                // On its way in a message whose task died: in line again (settling twice charges once).
                (None, false) if now < deadline => {
                    line.waiting.push(Pending { settlement: mine.clone(), key_id: key_id.to_string() });
                    Turn::Wait
                }
                // Past its time: the object settles it by its rule.
                (None, false) => Turn::GaveUp,
                (Some(_), false) => {
                    line.sending_since = Some(now);
                    let take = line.waiting.len().min(MAX_BATCH);
                    Turn::Send(line.waiting.drain(..take).collect())
                }
            }
        });
        let batch = match turn {
            Turn::Done(how) => return how,
            Turn::GaveUp => return give_up(),
            // Failed in the object: sent again after 0.25 s doubling to 8 s, as an unanswered message is.
            Turn::Failed(pending) => {
                let wait = client::backoff_ms(failures);
                failures += 1;
                if js_sys::Date::now() + wait as f64 > deadline {
                    return give_up();
                }
                worker::Delay::from(Duration::from_millis(wait)).await;
                with_line(account, |line| line.waiting.push(*pending));
                continue;
            }
            // On its way (in a message bounded by `SEND_RETRY_MS`, or taken for dead after `STALE_SEND_MS`):
            // its sender accounts for it, so it is waited for even past the deadline.
            Turn::Wait => {
                worker::Delay::from(Duration::from_millis(poll_ms)).await;
                poll_ms = (poll_ms * 2).min(MAX_POLL_MS);
                continue;
            }
            Turn::Send(batch) => batch,
        };
        let settlements: Vec<Settlement> = batch.iter().map(|p| p.settlement.clone()).collect();
        let sent_mine = batch.iter().any(|p| p.settlement.request_id == id);
        let tries_for = retry_for_ms.min(SEND_RETRY_MS);
        let returning = returns();
        let settled = client::settle(env, account, settlements, returning.clone(), tries_for).await;
        let Some(settled) = settled else {
            // Not confirmed: back in line, for the next sender (or each request's own task) to try again.
            leases::not_returned(account, returning);
            with_line(account, |line| {
                line.sending_since = None;
                line.waiting.splice(0..0, batch);
            });
            worker::Delay::from(Duration::from_millis(POLL_MS)).await;
            continue;
        };
        let mine_failed = settled.failed.contains(&id);
        with_line(account, |line| {
            line.sending_since = None;
            for p in batch {
                let request_id = p.settlement.request_id.clone();
                if settled.failed.contains(&request_id) {
                    line.failed.insert(request_id, (js_sys::Date::now(), p));
                    continue;
                }
                if let Some(on) = &p.settlement.on_lease {
                    let held_now = settled.leases.iter().find(|(l, _)| *l == on.lease_id).map_or(0, |l| l.1);
                    leases::settled(&p.key_id, &on.lease_id, &request_id, Some(held_now));
                }
                if request_id != id {
                    let how =
                        if settled.closed.contains(&request_id) { Confirmed::ClosedBefore } else { Confirmed::Charged };
                    line.finished.insert(request_id, (js_sys::Date::now(), how));
                }
            }
        });
        if mine_failed {
            continue;
        }
        if sent_mine {
            LINES.with_borrow_mut(|lines| {
                let idle = |l: &Line| {
                    l.sending_since.is_none() && l.waiting.is_empty() && l.finished.is_empty() && l.failed.is_empty()
                };
                if lines.get(account).is_some_and(idle) {
                    lines.remove(account);
                }
            });
            return if settled.closed.contains(&id) { Confirmed::ClosedBefore } else { Confirmed::Charged };
        }
    }
}

enum Turn {
    Done(Confirmed),
    GaveUp,
    Failed(Box<Pending>),
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
        if client::settle(env, &account, Vec::new(), ids.clone(), 10_000).await.is_none() {
            leases::not_returned(&account, ids);
        }
    }
}
