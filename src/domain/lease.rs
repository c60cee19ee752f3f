//! Budget leases: money an isolate may spend for one key without asking the
//! account's object, which holds it for that isolate. Pure, on both sides:
//! `Lease` is the object's record (kept in `account::Book`), `LocalLease` the
//! isolate's view of it.
//!
//! Rules (the object's side is in `Book`):
//! - A lease is granted with a reservation, out of what is left after it: at
//!   most half of what the balance and the key's limit leave, and only when it
//!   covers at least one more request like the one asking. It is held like a
//!   reservation, so the balance and the key's limit count it.
//! - An isolate starts a request on a lease only while the lease is in use
//!   (`use_until_ms`, at most `MAX_USE_MS` after the grant: the bound on how
//!   late a revocation or a credit is seen) and while what it holds, less the
//!   worst cases of the requests it has started and not settled, covers the
//!   new request's worst case.
//! - A request started on a lease is charged from it once (by request id),
//!   never more than the lease holds; a stream's heartbeat moves its worst
//!   case out of the lease into a reservation of its own, which then lives and
//!   closes by the reservation rules.
//! - A lease ends when its isolate returns it (what it still holds goes back to
//!   the account) or at `expires_ms`, by when every request started on it has
//!   settled or can no longer settle. An isolate that dies holding a lease
//!   loses nothing but its unused part being held until then.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// The longest a lease is in use: the bound on how late a key's revocation, a permission
/// change or a credit is seen by an isolate holding a lease.
pub const MAX_USE_MS: i64 = 1_000;

/// Most worst cases an isolate asks to lease at once.
const MAX_REQUESTS_LEASED: i64 = 64;

/// A lease as the object holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key_id: String,
    /// What it still holds: granted, less what was charged from it or moved into reservations.
    pub amount: i64,
    /// Requests may start on it until then.
    pub use_until_ms: i64,
    /// When the object ends it, if its isolate has not.
    pub expires_ms: i64,
    /// Requests charged from it, or moved out of it (none is charged twice).
    pub charged: BTreeSet<String>,
}

/// What an isolate asks for along with a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAsk {
    /// Chosen by the isolate (random), so a repeated message grants nothing twice.
    pub lease_id: String,
    pub amount: i64,
    /// How long requests may start on it (capped at `MAX_USE_MS`).
    pub use_ms: i64,
}

/// A lease granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub lease_id: String,
    pub amount: i64,
    pub use_until_ms: i64,
}

/// How much an isolate asks to lease: enough for twice the requests it started on its last
/// lease for this key (at least two, at most `MAX_REQUESTS_LEASED`) at this request's worst case.
pub fn amount_to_ask(worst_case: i64, started_on_last: u32) -> i64 {
    let requests = (i64::from(started_on_last) * 2).clamp(2, MAX_REQUESTS_LEASED);
    worst_case.max(0).saturating_mul(requests)
}

/// What the object grants of `asked`, with `available` left under every limit after the request's own
/// reservation: at most half of it, in whole `worst_case`s (so no part of it is too small for a request
/// like this one), and nothing unless that is at least one.
pub fn amount_to_grant(asked: i64, available: i64, worst_case: i64) -> i64 {
    let grant = asked.min(available / 2).max(0);
    let grant = if worst_case > 0 { grant - grant % worst_case } else { grant };
    if grant > 0 && grant >= worst_case {
        grant
    } else {
        0
    }
}

/// An isolate's view of one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLease {
    pub lease_id: String,
    /// The secret's hash the lease was granted to: another secret asks the object.
    pub hash: String,
    pub use_until_ms: i64,
    /// What the object holds for it, as last heard (it only falls).
    held: i64,
    /// The requests started on it and not yet settled, with their worst cases (by request id, so a
    /// settlement heard twice, given up on and then confirmed, counts once).
    in_flight: HashMap<String, i64>,
    /// Requests started on it in all (sizes the next lease).
    pub started: u32,
    /// A settlement waits for its use to end, to give it back.
    pub return_claimed: bool,
}

impl LocalLease {
    /// `asked_at_ms`: when this isolate asked for it, by its own clock. Requests start on it until the object's
    /// stamp or `MAX_USE_MS` after the ask, whichever comes first: the ask came before the grant, so a clock
    /// running behind the object's does not stretch the lease's use past its second.
    pub fn new(granted: &Granted, hash: &str, asked_at_ms: i64) -> Self {
        Self {
            lease_id: granted.lease_id.clone(),
            hash: hash.to_string(),
            use_until_ms: granted.use_until_ms.min(asked_at_ms.saturating_add(MAX_USE_MS)),
            held: granted.amount,
            in_flight: HashMap::new(),
            started: 0,
            return_claimed: false,
        }
    }

    /// Starts a request on the lease when it may: still in use, the same secret, and its worst case
    /// covered by what the lease holds less what requests in flight on it may still cost.
    pub fn take(&mut self, request_id: &str, hash: &str, worst_case: i64, now: i64) -> bool {
        if now >= self.use_until_ms || hash != self.hash || worst_case < 0 {
            return false;
        }
        if self.spendable() < worst_case || self.in_flight.contains_key(request_id) {
            return false;
        }
        self.in_flight.insert(request_id.to_string(), worst_case);
        self.started += 1;
        true
    }

    /// A request started on it has settled; `held_now` is what the object said the lease holds
    /// after it (`None`: unknown, as when the settlement was not confirmed: the worst is assumed).
    /// Heard again for the same request, only a lower `held_now` counts.
    pub fn settled(&mut self, request_id: &str, held_now: Option<i64>) {
        let worst_case = self.in_flight.remove(request_id);
        self.held = match (held_now, worst_case) {
            (Some(held), _) => self.held.min(held),
            (None, Some(worst_case)) => self.held - worst_case,
            (None, None) => self.held,
        };
    }

    /// No request may start on it any more and none is in flight: it can be returned.
    pub fn drained(&self, now: i64) -> bool {
        now >= self.use_until_ms && self.in_flight.is_empty()
    }

    /// Still in use, with nothing in flight on it: unless a request starts on it, it can be given back
    /// when its use ends.
    pub fn idle_in_use(&self, now: i64) -> bool {
        now < self.use_until_ms && self.in_flight.is_empty()
    }

    /// What a new request could still start with.
    pub fn spendable(&self) -> i64 {
        self.held - self.in_flight.values().sum::<i64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(amount: i64) -> Granted {
        Granted { lease_id: "l1".into(), amount, use_until_ms: 1_000 }
    }

    #[test]
    fn requests_start_on_a_lease_while_it_covers_their_worst_case() {
        let mut lease = LocalLease::new(&granted(100), "h", 0);
        assert!(lease.take("r1", "h", 60, 0));
        assert!(!lease.take("r2", "h", 50, 0), "60 of 100 may still be spent by the first");
        assert!(lease.take("r2", "h", 40, 0));
        lease.settled("r1", Some(70)); // charged 30
        assert_eq!(lease.spendable(), 30);
        assert!(!lease.take("r3", "other", 1, 0), "another secret asks the object");
        assert!(!lease.take("r3", "h", 1, 1_000), "not after its use");
        lease.settled("r2", None);
        assert_eq!(lease.spendable(), 30, "an unconfirmed settlement is assumed to have cost its worst case");
        assert!(lease.drained(1_000));
        assert!(!lease.drained(999));
    }

    #[test]
    fn a_clock_behind_the_object_s_does_not_stretch_the_lease_s_use() {
        // The isolate asked at 0 by its clock; the object, 5 s ahead, stamped its use until 6,000.
        let stamped = Granted { lease_id: "l1".into(), amount: 100, use_until_ms: 6_000 };
        let mut lease = LocalLease::new(&stamped, "h", 0);
        assert_eq!(lease.use_until_ms, MAX_USE_MS, "a second from the ask, by the isolate's own clock");
        assert!(!lease.take("r1", "h", 1, MAX_USE_MS));
        assert!(lease.drained(MAX_USE_MS), "given back when its second ends here");
        // A clock ahead of the object's: the object's stamp comes first.
        assert_eq!(LocalLease::new(&granted(100), "h", 5_000).use_until_ms, 1_000);
    }

    #[test]
    fn a_settlement_heard_twice_counts_once() {
        let mut lease = LocalLease::new(&granted(100), "h", 0);
        assert!(lease.take("r1", "h", 30, 0));
        assert!(lease.take("r2", "h", 30, 0));
        lease.settled("r1", None); // given up on: its worst case is assumed spent
        lease.settled("r1", Some(80)); // its sender's confirmation comes after all
        assert_eq!(lease.spendable(), 40, "r2 is still in flight with its worst case");
        assert!(!lease.drained(1_000), "r2 is still in flight");
        lease.settled("r2", Some(80));
        assert!(lease.drained(1_000));
    }

    #[test]
    fn lease_sizes_follow_the_rate_and_leave_room_for_others() {
        assert_eq!(amount_to_ask(10, 0), 20, "a quiet key asks for little");
        assert_eq!(amount_to_ask(10, 5), 100);
        assert_eq!(amount_to_ask(10, 1_000), 640);
        assert_eq!(amount_to_grant(100, 1_000, 10), 100);
        assert_eq!(amount_to_grant(100, 60, 10), 30, "half of what is left");
        assert_eq!(amount_to_grant(100, 70, 10), 30, "in whole worst cases");
        assert_eq!(amount_to_grant(100, 15, 10), 0, "not even one more request");
        assert_eq!(amount_to_grant(0, 1_000, 0), 0);
    }
}
