//! This isolate's budget leases (`domain::lease`), one current lease per key
//! plus those still draining (requests started on them not yet settled).
//! An isolate runs one request at a time between awaits, so a `RefCell` in a
//! thread-local is the whole concurrency story: taking from a lease is one
//! synchronous step.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use crate::domain::lease::{self, Granted, LeaseAsk, LocalLease};

#[derive(Default)]
struct KeyLeases {
    /// The account (object) the leases are held by.
    account_id: String,
    current: Option<LocalLease>,
    draining: Vec<LocalLease>,
    /// Requests started on the last lease that ended its use (sizes the next one).
    started_on_last: u32,
    /// Changes of the key made here (`end_use`): a lease asked for before one is not used.
    changes: u64,
}

thread_local! {
    static LEASES: RefCell<HashMap<String, KeyLeases>> = RefCell::new(HashMap::new());
    /// Keys with a lease being asked for.
    static ASKING: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Leases taken out to be given back and not yet confirmed given back: `(account id, lease id, when a
    /// message giving it back was sent)`. One whose message failed (`None`), or whose message's task died
    /// under it (sent `RETURN_STALE_MS` ago), goes with the next message that gives leases back.
    static UNRETURNED: RefCell<Vec<(String, String, Option<i64>)>> = const { RefCell::new(Vec::new()) };
}

/// A lease's giving back still unconfirmed this long is taken to have died with its task (a message is
/// tried for 20 s at most: `batch::SEND_RETRY_MS`).
const RETURN_STALE_MS: i64 = 25_000;

/// Starts request `request_id` of `key_id` on its current lease when that covers `worst_case`: the lease's id.
pub fn take(key_id: &str, request_id: &str, hash: &str, worst_case: i64, now: i64) -> Option<String> {
    LEASES.with_borrow_mut(|all| {
        let lease = all.get_mut(key_id)?.current.as_mut()?;
        lease.take(request_id, hash, worst_case, now).then(|| lease.lease_id.clone())
    })
}

/// What to ask the object for along with a reservation of `worst_case` for `key_id` (`random`: the lease
/// id's bytes), and the key's count of changes made here (for `granted`).
pub fn ask(key_id: &str, worst_case: i64, random: [u8; 12]) -> (LeaseAsk, u64) {
    LEASES.with_borrow(|all| {
        let key = all.get(key_id);
        let started =
            key.map_or(0, |k| k.current.as_ref().map_or(k.started_on_last, |l| l.started.max(k.started_on_last)));
        let ask = LeaseAsk {
            lease_id: format!("lease-{}", hex::encode(random)),
            amount: lease::amount_to_ask(worst_case, started),
            use_ms: lease::MAX_USE_MS,
        };
        (ask, key.map_or(0, |k| k.changes))
    })
}

/// A lease the account's object granted becomes the key's current one; the one before drains. A lease
/// asked for before the key changed here (`changes_then` behind) is not used: it goes straight to drain.
/// `asked_at`: when it was asked for, by this isolate's clock (its use ends a second after, at the latest).
pub fn granted(
    account_id: &str,
    key_id: &str,
    granted: &Granted,
    hash: &str,
    (changes_then, asked_at): (u64, i64),
    now: i64,
) {
    LEASES.with_borrow_mut(|all| {
        let leases = all.entry(key_id.to_string()).or_default();
        leases.account_id = account_id.to_string();
        let mut lease = LocalLease::new(granted, hash, asked_at);
        if leases.changes != changes_then {
            lease.use_until_ms = lease.use_until_ms.min(now);
            leases.draining.push(lease);
            return;
        }
        if let Some(old) = leases.current.replace(lease) {
            leases.started_on_last = old.started;
            leases.draining.push(old);
        }
    });
}

/// No new request of `key_id` starts on this isolate's leases (its state changed here: the next request
/// asks the object, which knows the change).
pub fn end_use(key_id: &str, now: i64) {
    LEASES.with_borrow_mut(|all| {
        let leases = all.entry(key_id.to_string()).or_default();
        leases.changes += 1;
        if let Some(mut lease) = leases.current.take() {
            lease.use_until_ms = lease.use_until_ms.min(now);
            leases.draining.push(lease);
        }
    });
}

/// Request `request_id`, started on `lease_id`, has settled; `held_now`: what the object says the lease
/// still holds (`None`: the settlement was not confirmed). Told twice, it counts once.
pub fn settled(key_id: &str, lease_id: &str, request_id: &str, held_now: Option<i64>) {
    LEASES.with_borrow_mut(|all| {
        let Some(leases) = all.get_mut(key_id) else { return };
        let lease = leases.current.iter_mut().chain(leases.draining.iter_mut()).find(|l| l.lease_id == lease_id);
        if let Some(lease) = lease {
            lease.settled(request_id, held_now);
        }
    });
}

/// Takes out the leases no request may start on any more and none is in flight on, to give back to
/// their objects: `(account id, lease id)`; only `account`'s when given.
pub fn take_drained(now: i64, account: Option<&str>) -> Vec<(String, String)> {
    LEASES.with_borrow_mut(|all| {
        let mut ids = Vec::new();
        for leases in all.values_mut().filter(|l| account.is_none_or(|a| l.account_id == a)) {
            if let Some(done) = leases.current.take_if(|l| l.drained(now)) {
                leases.started_on_last = done.started;
                ids.push((leases.account_id.clone(), done.lease_id));
            }
            let account_id = &leases.account_id;
            leases.draining.retain(|l| {
                let drained = l.drained(now);
                if drained {
                    ids.push((account_id.clone(), l.lease_id.clone()));
                }
                !drained
            });
        }
        all.retain(|_, l| l.current.is_some() || !l.draining.is_empty() || l.started_on_last > 0 || l.changes > 0);
        UNRETURNED.with_borrow_mut(|unreturned| {
            for (a, id, sent) in unreturned.iter_mut() {
                let free = sent.is_none_or(|at| now - at >= RETURN_STALE_MS);
                if free && account.is_none_or(|wanted| a == wanted) {
                    *sent = Some(now);
                    ids.push((a.clone(), id.clone()));
                }
            }
            // Kept until confirmed given back (`returned`): a task that dies sending them loses none.
            for (a, id) in &ids {
                if !unreturned.iter().any(|(ua, uid, _)| ua == a && uid == id) {
                    unreturned.push((a.clone(), id.clone(), Some(now)));
                }
            }
        });
        ids
    })
}

/// Leases whose giving back was not confirmed: they go with the next message that gives leases back.
pub fn not_returned(account: &str, lease_ids: Vec<String>) {
    UNRETURNED.with_borrow_mut(|unreturned| {
        for id in lease_ids {
            match unreturned.iter_mut().find(|(a, uid, _)| a == account && *uid == id) {
                Some((_, _, sent)) => *sent = None,
                None => unreturned.push((account.to_string(), id, None)),
            }
        }
    });
}

/// Leases the object confirmed given back.
pub fn returned(account: &str, lease_ids: &[String]) {
    UNRETURNED.with_borrow_mut(|unreturned| unreturned.retain(|(a, id, _)| a != account || !lease_ids.contains(id)));
}

/// Claims the leases in use with nothing in flight on them that no one has yet claimed to give back when
/// their use ends: when the last of them ends (the claimer waits for it, then gives back what is drained).
pub fn claim_idle(now: i64) -> Option<i64> {
    LEASES.with_borrow_mut(|all| {
        let leases = all.values_mut().flat_map(|k| k.current.iter_mut().chain(k.draining.iter_mut()));
        leases
            .filter(|l| l.idle_in_use(now) && !l.return_claimed)
            .map(|l| {
                l.return_claimed = true;
                l.use_until_ms
            })
            .max()
    })
}

/// One lease asked for per key at a time: `Some` makes the caller the one that asks (until it drops the
/// guard, after the answer); `None`: another request is asking (see `is_asking`). Waiting requests poll
/// on their own timers: a wake-up sent from another request would run their I/O in its context, which
/// the runtime refuses.
pub fn start_asking(key_id: &str) -> Option<AskGuard> {
    ASKING.with_borrow_mut(|asking| asking.insert(key_id.to_string()).then(|| AskGuard(key_id.to_string())))
}

pub fn is_asking(key_id: &str) -> bool {
    ASKING.with_borrow(|asking| asking.contains(key_id))
}

/// Held by the request asking for a key's lease.
pub struct AskGuard(String);

impl Drop for AskGuard {
    fn drop(&mut self) {
        ASKING.with_borrow_mut(|asking| asking.remove(&self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: &str, amount: i64) -> Granted {
        Granted { lease_id: id.into(), amount, use_until_ms: 1_000 }
    }

    #[test]
    fn a_lease_asked_for_before_the_key_changed_here_is_not_used() {
        let (_, before) = ask("k-change", 10, [1; 12]);
        end_use("k-change", 0);
        granted("a", "k-change", &grant("l-old", 100), "h", (before, 0), 0);
        assert_eq!(take("k-change", "r1", "h", 10, 0), None, "asked before the change: not used");
        let (_, now) = ask("k-change", 10, [2; 12]);
        granted("a", "k-change", &grant("l-new", 100), "h", (now, 0), 0);
        assert_eq!(take("k-change", "r1", "h", 10, 0).as_deref(), Some("l-new"));
        end_use("k-change", 5);
        assert_eq!(take("k-change", "r2", "h", 10, 5), None, "a change here ends the lease's use at once");
    }

    #[test]
    fn drained_leases_are_taken_out_per_account_and_idle_ones_claimed_once() {
        let (_, changes) = ask("k-drain", 10, [3; 12]);
        granted("acct-1", "k-drain", &grant("l-1", 100), "h", (changes, 0), 0);
        assert_eq!(claim_idle(0), Some(1_000), "idle while in use: one settlement waits for its end");
        assert_eq!(claim_idle(0), None, "claimed once");
        assert_eq!(take("k-drain", "r1", "h", 10, 0).as_deref(), Some("l-1"));
        assert!(take_drained(1_000, Some("acct-1")).is_empty(), "a request is still in flight on it");
        settled("k-drain", "l-1", "r1", Some(95));
        assert!(take_drained(1_000, Some("other")).is_empty());
        assert_eq!(take_drained(1_000, Some("acct-1")), vec![("acct-1".to_string(), "l-1".to_string())]);
        assert!(take_drained(1_001, None).is_empty(), "on its way: not given back twice");
        not_returned("acct-1", vec!["l-1".into()]);
        assert_eq!(take_drained(1_002, None), vec![("acct-1".to_string(), "l-1".to_string())], "tried again later");
        assert!(take_drained(2_000, None).is_empty());
        // Its message's task died under it: taken again once that message is stale.
        assert_eq!(take_drained(1_002 + RETURN_STALE_MS, None).len(), 1);
        returned("acct-1", &["l-1".to_string()]);
        assert!(take_drained(1_002 + 2 * RETURN_STALE_MS, None).is_empty(), "confirmed: gone");
    }
}
