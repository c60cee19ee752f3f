//! One account's hot state, held in memory by its Durable Object: the
//! balance, the reservations in flight, each key's state and each key's
//! spend in its current limit window. The object loads it from its storage
//! once, decides every reservation and settlement here without touching
//! storage, and writes through only what changed (see `Change`).

use std::collections::HashMap;

use super::keys::{KeyRefusal, KeyState};
use super::ledger::{self, Headroom, InFlightCaps, Reservation};
use super::windows::{self, Reset};

/// A reservation older than this was abandoned (its Worker died): it stops
/// counting against the headroom. Its settlement, should it still come, is charged.
pub const RESERVATION_TTL_MS: i64 = 15 * 60 * 1000;

/// Money held for one request in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub key_id: String,
    pub amount: i64,
    pub created_ms: i64,
}

/// A reservation request, as the Worker sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask<'a> {
    pub request_id: &'a str,
    pub key_id: &'a str,
    pub hash: &'a str,
    /// The gateway's view of the key's limit, used when the object has no state for the key.
    pub limit_micros: Option<i64>,
    pub limit_reset: Option<Reset>,
    pub worst_case: i64,
    pub min_to_run: i64,
    pub caps: InFlightCaps,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Refused(KeyRefusal),
    /// Too many requests of this scope (`key` or `account`) are in flight.
    TooMany(&'static str),
    Decided {
        reservation: Reservation,
        resets_at_ms: Option<i64>,
    },
}

/// A settled charge: what to append to the ledger and the key's new window spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub key_id: String,
    pub amount: i64,
    pub balance_after: i64,
    pub window_start: i64,
    pub window_spent: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    balance: i64,
    in_flight: HashMap<String, Held>,
    keys: HashMap<String, KeyState>,
    /// key id → (window start, spent in that window).
    spend: HashMap<String, (i64, i64)>,
}

impl Book {
    pub fn new(
        balance: i64,
        in_flight: impl IntoIterator<Item = (String, Held)>,
        keys: impl IntoIterator<Item = KeyState>,
        spend: impl IntoIterator<Item = (String, (i64, i64))>,
    ) -> Self {
        Self {
            balance,
            in_flight: in_flight.into_iter().collect(),
            keys: keys.into_iter().map(|k| (k.key_id.clone(), k)).collect(),
            spend: spend.into_iter().collect(),
        }
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }

    /// Money held by requests in flight.
    pub fn reserved(&self) -> i64 {
        self.in_flight.values().map(|h| h.amount).sum()
    }

    pub fn key(&self, key_id: &str) -> Option<&KeyState> {
        self.keys.get(key_id)
    }

    pub fn put_key(&mut self, state: KeyState) {
        self.keys.insert(state.key_id.clone(), state);
    }

    /// Moves the balance by a credit (negative for an adjustment down); returns the new balance.
    pub fn credit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }

    /// Forgets reservations older than the TTL; returns their ids.
    pub fn expire(&mut self, now: i64) -> Vec<String> {
        let old: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, h)| h.created_ms < now - RESERVATION_TTL_MS)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            self.in_flight.remove(id);
        }
        old
    }

    /// Checks the key and, when the limits allow, holds money for the request.
    /// Returns the decision and, when money is held, the reservation to store.
    pub fn reserve(&mut self, ask: &Ask, now: i64) -> (Decision, Option<Held>) {
        let (limit, reset) = match self.keys.get(ask.key_id) {
            Some(state) => {
                if let Err(reason) = state.check(ask.hash, now) {
                    return (Decision::Refused(reason), None);
                }
                (state.limit_micros, state.limit_reset)
            }
            None => (ask.limit_micros, ask.limit_reset),
        };
        let key_in_flight = self.in_flight.values().filter(|h| h.key_id == ask.key_id);
        let (key_count, key_held) = key_in_flight.fold((0u32, 0i64), |(n, sum), h| (n + 1, sum + h.amount));
        if let Some(scope) = ledger::in_flight_exceeded(ask.caps, key_count, self.in_flight.len() as u32) {
            return (Decision::TooMany(scope), None);
        }
        let key_headroom = limit.map(|limit| limit - self.spent_in_window(ask.key_id, reset, now) - key_held);
        let headroom = Headroom { balance: self.balance - self.reserved(), key: key_headroom };
        let reservation = ledger::reserve(headroom, ask.worst_case, ask.min_to_run);
        let held = match reservation {
            Reservation::Full { amount } | Reservation::Partial { amount } => {
                let held = Held { key_id: ask.key_id.to_string(), amount, created_ms: now };
                self.in_flight.insert(ask.request_id.to_string(), held.clone());
                Some(held)
            }
            Reservation::Refused { .. } => None,
        };
        let resets_at_ms = limit.and(reset).map(|r| r.window_end(now));
        (Decision::Decided { reservation, resets_at_ms }, held)
    }

    /// Whether a reservation is held for this request.
    pub fn holds(&self, request_id: &str) -> bool {
        self.in_flight.contains_key(request_id)
    }

    /// Turns a request's reservation into its charge: `cost`, capped at what was
    /// held. A request the object no longer holds (it expired, or the object
    /// restarted and lost it) is charged against `fallback`, the reservation as the
    /// Worker remembers it — the caller must first make sure it was not charged
    /// already. Returns `None` when nothing is charged.
    pub fn settle(&mut self, request_id: &str, cost: i64, fallback: Option<Held>, now: i64) -> Option<Charge> {
        let held = self.in_flight.remove(request_id).or(fallback)?;
        let amount = ledger::charge(cost, held.amount);
        if amount == 0 {
            return None;
        }
        self.balance -= amount;
        let reset = self.keys.get(&held.key_id).and_then(|k| k.limit_reset);
        let start = windows::window_start(reset, now);
        let spent = self.spent_in_window(&held.key_id, reset, now) + amount;
        self.spend.insert(held.key_id.clone(), (start, spent));
        Some(Charge {
            key_id: held.key_id,
            amount,
            balance_after: self.balance,
            window_start: start,
            window_spent: spent,
        })
    }

    fn spent_in_window(&self, key_id: &str, reset: Option<Reset>, now: i64) -> i64 {
        let start = windows::window_start(reset, now);
        match self.spend.get(key_id) {
            Some((s, spent)) if *s == start => *spent,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn ask<'a>(request_id: &'a str, key_id: &'a str, worst_case: i64) -> Ask<'a> {
        Ask {
            request_id,
            key_id,
            hash: "h",
            limit_micros: None,
            limit_reset: None,
            worst_case,
            min_to_run: 1,
            caps: InFlightCaps::default(),
        }
    }

    fn key(key_id: &str, limit: Option<i64>, reset: Option<Reset>) -> KeyState {
        KeyState {
            key_id: key_id.into(),
            hash: "h".into(),
            previous_hash: None,
            previous_until_ms: None,
            expires_at_ms: None,
            disabled: false,
            deleted: false,
            limit_micros: limit,
            limit_reset: reset,
        }
    }

    fn full(amount: i64) -> Decision {
        Decision::Decided { reservation: Reservation::Full { amount }, resets_at_ms: None }
    }

    #[test]
    fn reservations_in_flight_hold_the_balance() {
        let mut book = Book::new(100, [], [], []);
        assert_eq!(book.reserve(&ask("r1", "k", 60), NOW).0, full(60));
        assert_eq!(
            book.reserve(&ask("r2", "k", 60), NOW).0,
            Decision::Decided { reservation: Reservation::Partial { amount: 40 }, resets_at_ms: None }
        );
        assert_eq!(book.reserved(), 100);
        let (decision, held) = book.reserve(&ask("r3", "k", 60), NOW);
        assert!(matches!(decision, Decision::Decided { reservation: Reservation::Refused { .. }, .. }));
        assert_eq!(held, None);
    }

    #[test]
    fn settling_charges_the_cost_capped_at_the_reservation_once() {
        let mut book = Book::new(100, [], [], []);
        book.reserve(&ask("r1", "k", 60), NOW);
        let charge = book.settle("r1", 25, None, NOW).expect("charged");
        assert_eq!((charge.amount, charge.balance_after), (25, 75));
        assert_eq!(book.settle("r1", 25, None, NOW), None, "a repeat charges nothing");
        book.reserve(&ask("r2", "k", 10), NOW);
        assert_eq!(book.settle("r2", 999, None, NOW).map(|c| c.amount), Some(10));
        assert_eq!((book.balance(), book.reserved()), (65, 0));
    }

    #[test]
    fn a_forgotten_reservation_is_charged_from_the_workers_copy() {
        let mut book = Book::new(100, [], [], []);
        let fallback = Held { key_id: "k".into(), amount: 30, created_ms: NOW };
        assert_eq!(book.settle("lost", 50, Some(fallback), NOW).map(|c| c.amount), Some(30));
        assert_eq!(book.balance(), 70);
    }

    #[test]
    fn key_limits_count_spend_in_the_window_and_money_in_flight() {
        let mut book = Book::new(1_000, [], [key("k", Some(100), Some(Reset::Daily))], []);
        book.reserve(&ask("r1", "k", 60), NOW);
        book.settle("r1", 50, None, NOW);
        book.reserve(&ask("r2", "k", 30), NOW);
        let (decision, _) = book.reserve(&ask("r3", "k", 30), NOW);
        let Decision::Decided { reservation, resets_at_ms } = decision else { panic!("decided") };
        assert_eq!(reservation, Reservation::Partial { amount: 20 });
        assert_eq!(resets_at_ms, Some(Reset::Daily.window_end(NOW)));
        // The next day the window starts again.
        let tomorrow = NOW + 86_400_000;
        book.settle("r2", 0, None, tomorrow);
        book.settle("r3", 0, None, tomorrow);
        assert_eq!(
            book.reserve(&ask("r4", "k", 100), tomorrow).0,
            Decision::Decided {
                reservation: Reservation::Full { amount: 100 },
                resets_at_ms: Some(Reset::Daily.window_end(tomorrow))
            }
        );
    }

    #[test]
    fn key_state_and_caps_are_checked_first() {
        let mut disabled = key("k", None, None);
        disabled.disabled = true;
        let mut book = Book::new(1_000, [], [disabled], []);
        assert_eq!(book.reserve(&ask("r1", "k", 1), NOW).0, Decision::Refused(KeyRefusal::Disabled));
        let mut capped = ask("r2", "k2", 1);
        capped.caps = InFlightCaps { per_key: Some(1), per_account: None };
        book.reserve(&capped, NOW);
        capped.request_id = "r3";
        assert_eq!(book.reserve(&capped, NOW).0, Decision::TooMany("key"));
    }

    #[test]
    fn abandoned_reservations_expire() {
        let mut book = Book::new(100, [], [], []);
        book.reserve(&ask("r1", "k", 100), NOW);
        assert_eq!(book.expire(NOW + RESERVATION_TTL_MS), Vec::<String>::new());
        assert_eq!(book.expire(NOW + RESERVATION_TTL_MS + 1), vec!["r1".to_string()]);
        assert_eq!(book.reserve(&ask("r2", "k", 100), NOW).0, full(100));
    }
}
