//! One account's settlements sent together. While a message to the account's
//! object is on its way, the settlements that come meanwhile wait here, and
//! the first of them to find the way free sends them all in the next message
//! (with the leases to give back). Each request's task stays until its own
//! settlement has been sent by someone and answered (or given up on), so no
//! settlement depends on another request's task living on: a waiting task
//! polls its own timer (a wake-up from another request's task would run its
//! I/O in that request's context, which the runtime refuses). Settling is
//! idempotent by request id, so a settlement sent twice charges once.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use worker::Env;

use super::client;
use super::leases;
use super::protocol::Settlement;

/// Settlements in one message at most.
const MAX_BATCH: usize = 64;
/// How often a waiting settlement looks whether its turn has come.
const POLL_MS: u64 = 2;
/// A send in flight this long is taken to have died with its task; a waiting settlement takes over.
const STALE_SEND_MS: f64 = 30_000.0;

struct Pending {
    settlement: Settlement,
    key_id: String,
}

#[derive(Default)]
struct Line {
    /// When the message on its way was sent.
    sending_since: Option<f64>,
    waiting: Vec<Pending>,
    /// Settlements another task sent (answered or given up on): their own tasks may end.
    finished: HashSet<String>,
}

thread_local! {
    static LINES: RefCell<HashMap<String, Line>> = RefCell::new(HashMap::new());
}

/// Settles one request of `account` (a request of `key_id`), with whatever else waits, retried until the
/// object confirms or `retry_for_ms` has passed; `returns` gives the leases to give back with it.
pub async fn settle(
    env: &Env,
    account: &str,
    key_id: &str,
    settlement: Settlement,
    retry_for_ms: i64,
    returns: impl Fn() -> Vec<String>,
) {
    let id = settlement.request_id.clone();
    let deadline = js_sys::Date::now() + retry_for_ms as f64;
    with_line(account, |line| line.waiting.push(Pending { settlement, key_id: key_id.to_string() }));
    loop {
        let now = js_sys::Date::now();
        let turn = with_line(account, |line| {
            if line.finished.remove(&id) {
                return Turn::Done;
            }
            if line.sending_since.is_some_and(|since| now - since < STALE_SEND_MS) {
                return Turn::Wait;
            }
            if !line.waiting.iter().any(|p| p.settlement.request_id == id) {
                return Turn::Done; // sent by a task that died on the way: settled by the object's rule
            }
            line.sending_since = Some(now);
            let take = line.waiting.len().min(MAX_BATCH);
            Turn::Send(line.waiting.drain(..take).collect())
        });
        let batch = match turn {
            Turn::Done => return,
            Turn::Wait if now < deadline => {
                worker::Delay::from(Duration::from_millis(POLL_MS)).await;
                continue;
            }
            Turn::Wait => return,
            Turn::Send(batch) => batch,
        };
        let mine = batch.iter().any(|p| p.settlement.request_id == id);
        let settlements: Vec<Settlement> = batch.iter().map(|p| p.settlement.clone()).collect();
        let held = client::settle(env, account, settlements, returns(), retry_for_ms).await;
        with_line(account, |line| {
            line.sending_since = None;
            for p in &batch {
                if let Some(on) = &p.settlement.on_lease {
                    let held_now = held.as_ref().map(|h| h.iter().find(|(l, _)| *l == on.lease_id).map_or(0, |l| l.1));
                    leases::settled(&p.key_id, &on.lease_id, on.worst_case, held_now);
                }
                if p.settlement.request_id != id {
                    line.finished.insert(p.settlement.request_id.clone());
                }
            }
        });
        if mine {
            LINES.with_borrow_mut(|lines| {
                if lines
                    .get(account)
                    .is_some_and(|l| l.sending_since.is_none() && l.waiting.is_empty() && l.finished.is_empty())
                {
                    lines.remove(account);
                }
            });
            return;
        }
    }
}

enum Turn {
    Done,
    Wait,
    Send(Vec<Pending>),
}

fn with_line<T>(account: &str, f: impl FnOnce(&mut Line) -> T) -> T {
    LINES.with_borrow_mut(|lines| f(lines.entry(account.to_string()).or_default()))
}
