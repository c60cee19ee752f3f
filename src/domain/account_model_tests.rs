//! Property test of the account model: random interleavings of reserve, heartbeat, settle (some
//! settlements failing: the book read again from storage), expiry, credit, key edits (some lost on their
//! way to the object, as when every try of `PutKey` fails), time passing, "restart" (the book rebuilt
//! from what storage holds) and budget leases (granted with a reservation, requests started on them by
//! the isolate, their settlements and heartbeats, leases returned, and isolates that die holding them),
//! with per-minute limits and end users' budgets, with every invariant checked after every step. `Store`
//! plays the object's storage and does exactly what the object shell writes for each answer.

use std::collections::HashMap;

use proptest::prelude::*;

use super::account::{Ask, Book, Closed, Decision, Held};
use super::alerts::{AlertRules, Subject};
use super::end_users::{Budget, OwnBudget};
use super::keys::KeyState;
use super::lease::{self, Lease, LeaseAsk, LocalLease};
use super::ledger::{InFlightCaps, Reservation};
use super::money::MAX_SAFE;
use super::rates::{self, Admitted, RateLimits, Rates};
use super::windows::Reset;

const START: i64 = 1_767_225_600_000; // 2026-01-01
const LEASE: i64 = 120_000;
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
/// Whom a request is made for.
const END_USERS: [Option<&str>; 4] = [None, Some("alice"), Some("bob"), Some("carol")];

#[derive(Debug, Clone)]
enum Op {
    /// A new request (`repeat`: the same message again for an earlier one, as a retried call would;
    /// `lease`: asking for a lease of that many micro-USD along with it).
    Reserve {
        req: u8,
        repeat: bool,
        key: usize,
        worst: i64,
        min: i64,
        lease: Option<i64>,
        end_user: usize,
    },
    /// An end user of key 2 gets a budget of its own (`Some(None)`: none), or back the key's default.
    SetEndUserBudget {
        end_user: usize,
        own: Option<Option<i64>>,
    },
    /// The isolate starts a request on one of its leases, without asking the object.
    StartLeased {
        lease: u8,
        worst: i64,
    },
    /// A request started on a lease settles (`confirmed`: the isolate hears the answer; `again`: the
    /// isolate hears of it a second time, as when a waiting request gave up on a slow sender).
    SettleLeased {
        req: u8,
        cost: i64,
        confirmed: bool,
        again: bool,
    },
    /// A stream started on a lease beats.
    TouchLeased {
        req: u8,
        evidence: i64,
    },
    /// The isolate gives back its drained leases.
    ReturnLeases,
    /// The isolate dies: its leases and the requests it started on them are forgotten.
    IsolateDies,
    Touch {
        req: u8,
        evidence: i64,
    },
    Settle {
        req: u8,
        cost: i64,
    },
    /// A settlement (of a request on a lease, `leased`) whose writes fail: memory saw it, storage did not,
    /// and the object reads its book again from storage; the isolate sends it again later.
    SettleFails {
        req: u8,
        cost: i64,
        leased: bool,
    },
    Credit {
        amount: i64,
    },
    /// Keys 0 and 1 keep their limit and reset (only their status changes); 2 and 3 change freely.
    /// `lost`: D1 has the change, the object never heard of it.
    EditKey {
        key: usize,
        limit: Option<i64>,
        reset: Option<Reset>,
        disabled: bool,
        lost: bool,
    },
    /// Another isolate sends the object D1's state of the key (a heal of its own, a repeated change).
    ResendKey {
        key: usize,
    },
    Advance {
        ms: i64,
    },
    Restart,
    /// The object forgets the end users in memory that no request in flight is for (as it does when
    /// it holds many).
    ForgetEndUsers,
}

fn reset() -> impl Strategy<Value = Option<Reset>> {
    prop_oneof![Just(None), Just(Some(Reset::Daily)), Just(Some(Reset::Weekly)), Just(Some(Reset::Monthly))]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..24, proptest::bool::weighted(0.1), 0usize..4, 0i64..400, 0i64..60, proptest::option::weighted(0.6, 0i64..2_000), 0usize..4)
            .prop_map(|(req, repeat, key, worst, min, lease, end_user)| Op::Reserve { req, repeat, key, worst, min: min.min(worst), lease, end_user }),
        1 => (1usize..4, proptest::option::of(proptest::option::of(0i64..300)))
            .prop_map(|(end_user, own)| Op::SetEndUserBudget { end_user, own }),
        8 => (0u8..8, 0i64..300).prop_map(|(lease, worst)| Op::StartLeased { lease, worst }),
        4 => (0u8..24, 0i64..400, proptest::bool::weighted(0.9), proptest::bool::weighted(0.2))
            .prop_map(|(req, cost, confirmed, again)| Op::SettleLeased { req, cost, confirmed, again }),
        1 => (0u8..24, 0i64..400).prop_map(|(req, evidence)| Op::TouchLeased { req, evidence }),
        1 => Just(Op::ReturnLeases),
        1 => Just(Op::IsolateDies),
        2 => (0u8..24, 0i64..500).prop_map(|(req, evidence)| Op::Touch { req, evidence }),
        6 => (0u8..24, 0i64..600).prop_map(|(req, cost)| Op::Settle { req, cost }),
        1 => (0u8..24, 0i64..600, any::<bool>()).prop_map(|(req, cost, leased)| Op::SettleFails { req, cost, leased }),
        2 => prop_oneof![9 => -400i64..1_500, 1 => (MAX_SAFE - 3_000)..=MAX_SAFE].prop_map(|amount| Op::Credit { amount }),
        1 => (0usize..4, proptest::option::of(0i64..800), reset(), any::<bool>(), proptest::bool::weighted(0.3))
            .prop_map(|(key, limit, reset, disabled, lost)| Op::EditKey { key, limit, reset, disabled, lost }),
        1 => (0usize..4).prop_map(|key| Op::ResendKey { key }),
        2 => prop_oneof![0i64..5_000, 0i64..LEASE * 2, 0i64..3 * 86_400_000].prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Restart),
        1 => Just(Op::ForgetEndUsers),
    ]
}

/// Steps that meet key 2's end-user budgets with its leases (the general mix meets them rarely): its
/// requests, some asking for a lease, some started on one, budgets set and cleared between them.
fn budget_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, 1i64..60, proptest::option::weighted(0.7, 0i64..400), 0usize..4)
            .prop_map(|(req, worst, lease, end_user)| Op::Reserve { req, repeat: false, key: 2, worst, min: 1, lease, end_user }),
        2 => (1usize..4, proptest::option::weighted(0.8, proptest::option::weighted(0.9, 0i64..100)))
            .prop_map(|(end_user, own)| Op::SetEndUserBudget { end_user, own }),
        6 => (0u8..8, 1i64..60).prop_map(|(lease, worst)| Op::StartLeased { lease, worst }),
        4 => (0u8..24, 0i64..80).prop_map(|(req, cost)| Op::SettleLeased { req, cost, confirmed: true, again: false }),
        3 => (0u8..24, 0i64..80).prop_map(|(req, cost)| Op::Settle { req, cost }),
        1 => Just(Op::ReturnLeases),
        1 => (0i64..3_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::ForgetEndUsers),
    ]
}

/// Key 3 has the tenant's per-minute limits (its state never sets its own).
fn rate_default(key: usize) -> RateLimits {
    if key == 3 {
        RateLimits { rpm: Some(4), tpm: Some(1_000) }
    } else {
        RateLimits::default()
    }
}

/// Key 1 gives each end user 120 a day (its state says the same).
fn end_user_budget(key: usize) -> Option<Budget> {
    (key == 1).then_some(Budget { limit_micros: 120, reset: Some(Reset::Daily) })
}

/// The gateway's view of each key's limit (used while the object holds no state for it).
fn worker_view(key: usize) -> (Option<i64>, Option<Reset>) {
    match key {
        0 => (Some(300), Some(Reset::Daily)),
        1 => (Some(500), Some(Reset::Monthly)),
        2 => (Some(200), None),
        _ => (None, None),
    }
}

struct LedgerRow {
    reference: String,
    key_id: Option<String>,
    end_user: Option<String>,
    amount: i64,
    at: i64,
}

#[derive(Default)]
struct Store {
    balance: i64,
    reservations: HashMap<String, Held>,
    keys: HashMap<String, KeyState>,
    ledger: Vec<LedgerRow>,
    /// Leases as granted (their holding is the grant less their charges), and what was
    /// charged from each or moved out of it, per request.
    leases: HashMap<String, Lease>,
    lease_charges: Vec<(String, String, i64)>,
    /// Requests counted in per-minute windows: request id → (key id, admitted).
    rate_log: HashMap<String, (String, Admitted)>,
    /// End users seen: (key id, end user) → (first seen, own budget).
    end_users: HashMap<(String, String), (i64, OwnBudget)>,
}

impl Store {
    /// What the object writes for an end user seen (a repeat changes nothing).
    fn see(&mut self, key_id: &str, end_user: Option<&str>, now: i64) {
        if let Some(e) = end_user {
            self.end_users.entry((key_id.to_string(), e.to_string())).or_insert((now, OwnBudget::KeyDefault));
        }
    }

    fn post_closed(&mut self, c: &Closed, now: i64) {
        self.reservations.remove(&c.request_id);
        self.see(&c.key_id, c.end_user.as_deref(), now);
        if c.amount > 0 {
            self.ledger.push(LedgerRow {
                reference: c.request_id.clone(),
                key_id: Some(c.key_id.clone()),
                end_user: c.end_user.clone(),
                amount: -c.amount,
                at: now,
            });
            self.balance = c.balance_after;
        }
    }

    /// What the object brings for an end user a message names (`store::bring_end_user`).
    fn bring(&self, book: &mut Book, key_id: &str, end_user: Option<&str>) {
        let Some(end_user) = end_user.filter(|e| book.needs_end_user(key_id, e)) else { return };
        let own =
            self.end_users.get(&(key_id.to_string(), end_user.to_string())).map_or(OwnBudget::KeyDefault, |e| e.1);
        let charges: Vec<(i64, i64)> = self
            .ledger
            .iter()
            .filter(|r| r.key_id.as_deref() == Some(key_id) && r.end_user.as_deref() == Some(end_user))
            .map(|r| (r.at, -r.amount))
            .collect();
        let spent_in_all = charges.iter().map(|(_, amount)| amount).sum();
        // Every charge as a recent one: memory keeps its days relative to its last charge, storage to now,
        // which differ only in days no window reaches (`domain::end_users` tests the split).
        book.bring_end_user(key_id, end_user, own.into_option(), spent_in_all, charges);
    }

    /// What the object brings for a request started on a lease: the lease names its key.
    fn bring_leased(&self, book: &mut Book, lease_id: &str, end_user: Option<&str>) {
        if let Some(key_id) = book.lease(lease_id).map(|l| l.key_id.clone()) {
            self.bring(book, &key_id, end_user);
        }
    }

    fn restore(&self) -> Book {
        let charges = self.ledger.iter().filter_map(|r| Some((r.key_id.clone()?, r.at, -r.amount)));
        let book = Book::restore(
            self.balance,
            self.reservations.iter().map(|(id, h)| (id.clone(), h.clone())),
            self.keys.values().cloned(),
            charges,
        )
        .with_leases(self.leases.iter().map(|(id, granted)| {
            let mut lease = granted.clone();
            for (request_id, _, amount) in self.lease_charges.iter().filter(|(_, l, _)| l == id) {
                lease.amount -= amount;
                lease.charged.insert(request_id.clone());
            }
            (id.clone(), lease)
        }))
        .with_rates(Rates::restore(self.rate_log.values().cloned()))
        .with_own_budgets(self.own_budget_counts());
        let mut book = book;
        for (key_id, end_user) in book.end_users_in_flight() {
            self.bring(&mut book, &key_id, Some(&end_user));
        }
        book
    }

    fn own_budget_counts(&self) -> Vec<(String, u64)> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for ((key_id, _), _) in self.end_users.iter().filter(|(_, (_, own))| matches!(own, OwnBudget::Own { .. })) {
            *counts.entry(key_id.clone()).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// What the object writes for a request admitted under per-minute limits: its row, and the
    /// key's rows out of the window gone.
    fn admit(&mut self, key_id: &str, a: &Admitted) {
        self.rate_log.retain(|_, (k, old)| k != key_id || old.at_ms > a.at_ms - rates::WINDOW_MS);
        self.rate_log.insert(a.request_id.clone(), (key_id.to_string(), a.clone()));
    }

    fn grant_lease(&mut self, lease_id: &str, lease: &Lease) {
        self.leases.entry(lease_id.to_string()).or_insert_with(|| lease.clone());
    }

    fn lease_charge(&mut self, lease_id: &str, request_id: &str, amount: i64) {
        self.lease_charges.push((request_id.to_string(), lease_id.to_string(), amount));
    }

    fn end_lease(&mut self, lease_id: &str) {
        self.leases.remove(lease_id);
        self.lease_charges.retain(|(_, l, _)| l != lease_id);
    }
}

fn key_state(key: usize, limit: Option<i64>, reset: Option<Reset>, disabled: bool) -> KeyState {
    KeyState {
        key_id: KEYS[key].into(),
        hash: "h".into(),
        previous_hash: None,
        previous_until_ms: None,
        expires_at_ms: None,
        disabled,
        deleted: false,
        limit_micros: limit,
        limit_reset: reset,
        permissions: None,
        version: None,
        rates: Default::default(),
        end_user_budget: end_user_budget(key),
    }
}

struct World {
    book: Book,
    store: Store,
    now: i64,
    /// Request ids settled by a settlement that found them held, with what was reserved.
    settled: HashMap<String, i64>,
    /// Every request id reserved so far (the gateway makes a new random one per request).
    issued: Vec<String>,
    /// The isolate's leases, and the requests it started on them and has not settled:
    /// (request id, lease id, worst case, moved into a reservation of its own).
    local: Vec<(LocalLease, usize)>,
    local_requests: Vec<(String, String, i64, bool, Option<&'static str>)>,
    /// Requests started on leases and settled: what each could cost at most.
    settled_leased: HashMap<String, i64>,
    /// The ids of the alerts found so far.
    alert_ids: std::collections::HashSet<String>,
    /// Each edited key as D1 has it, versioned (the gateway's view, sent with its reservations).
    d1: HashMap<usize, KeyState>,
    /// Key 2's end users with a budget of their own: (its limit, when it was set, the end user's spend in
    /// its week then, and what requests already running for it then could still cost).
    budgets: HashMap<&'static str, (i64, i64, i64, i64)>,
}

impl World {
    /// The alerts a charge crossed: for keys whose limit never changes (0 and 1), a crossing is never
    /// found twice; a balance crossing is one from at or above the threshold to below it.
    fn alerted(&mut self, closed: &Closed) -> Result<(), TestCaseError> {
        let rules = AlertRules { percents: vec![50, 80, 100], balance_below: Some(500) };
        for alert in self.book.alerts("acct", closed, &rules, self.now) {
            let fixed =
                matches!(&alert.subject, Subject::KeyLimit { key_id, .. } if key_id == KEYS[0] || key_id == KEYS[1]);
            if let Subject::BalanceBelow { .. } = alert.subject {
                prop_assert!(closed.balance_after < 500 && closed.balance_after + closed.amount >= 500);
            }
            prop_assert!(self.alert_ids.insert(alert.id()) || !fixed, "{} found twice", alert.id());
        }
        Ok(())
    }

    /// The gateway's view of a key's limit: D1's, once the key was edited.
    fn view(&self, key: usize) -> (Option<i64>, Option<Reset>) {
        self.d1.get(&key).map_or(worker_view(key), |s| (s.limit_micros, s.limit_reset))
    }

    /// The object takes a key's state, and writes what it must; the isolate that sent it starts no more
    /// of the key's requests on its leases (here: at once, as a lease's use ends by `MAX_USE_MS` anyway).
    fn put_key(&mut self, key: usize, state: KeyState) -> Result<(), TestCaseError> {
        if let Some(revoked) = self.book.put_key(state.clone(), self.now) {
            for id in revoked {
                prop_assert!(self.book.lease(&id).is_some_and(|l| l.use_until_ms <= self.now));
                if let Some(stored) = self.store.leases.get_mut(&id) {
                    stored.use_until_ms = self.now;
                }
            }
            self.store.keys.insert(state.key_id.clone(), state);
        }
        self.end_local_use(key);
        Ok(())
    }

    fn end_local_use(&mut self, key: usize) {
        for (local, _) in self.local.iter_mut().filter(|(_, k)| *k == key) {
            local.use_until_ms = local.use_until_ms.min(self.now);
        }
    }

    /// An earlier request's id (or one never reserved).
    fn earlier(&self, req: u8) -> String {
        match self.issued.len() {
            0 => format!("unknown-{req}"),
            n => self.issued[usize::from(req) % n].clone(),
        }
    }
}

impl World {
    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        // The object closes what is due before every message (and on its alarm).
        while let Some(closed) = self.book.expire_next(self.now) {
            prop_assert!(closed.abandoned && closed.amount <= closed.reserved);
            self.alerted(&closed)?;
            self.store.post_closed(&closed, self.now);
        }
        for (id, _) in self.book.expire_leases(self.now) {
            self.store.end_lease(&id);
        }
        match *op {
            Op::Reserve { req, repeat, key, worst, min, lease, end_user } => {
                let id = if repeat && !self.issued.is_empty() {
                    let id = self.earlier(req);
                    if self.book.held(&id).is_none() {
                        return self.check(); // a settled request's id is never reserved again
                    }
                    id
                } else {
                    self.issued.push(format!("r{}", self.issued.len()));
                    self.issued[self.issued.len() - 1].clone()
                };
                let (limit_micros, limit_reset) = self.view(key);
                let ask = Ask {
                    request_id: id.clone(),
                    key_id: KEYS[key].into(),
                    hash: "h".into(),
                    limit_micros,
                    limit_reset,
                    worst_case: worst,
                    min_to_run: min,
                    // Leases are asked for only without in-flight caps (the gateway's rule).
                    caps: if lease.is_some() {
                        InFlightCaps::default()
                    } else {
                        InFlightCaps { per_key: Some(6), per_account: Some(16) }
                    },
                    lease_ms: LEASE,
                    lease: lease.map(|amount| LeaseAsk {
                        lease_id: format!("lease-{id}"),
                        amount,
                        use_ms: lease::MAX_USE_MS,
                    }),
                    tokens: worst,
                    rates: RateLimits::default(),
                    rate_default: rate_default(key),
                    end_user: END_USERS[end_user].map(String::from),
                    end_user_budget: end_user_budget(key),
                    key_version: self.d1.get(&key).and_then(|s| s.version),
                    about: None,
                };
                let was_held = self.book.held(&id).is_some();
                self.store.bring(&mut self.book, KEYS[key], END_USERS[end_user]);
                let (mut decision, mut held) = self.book.reserve(&ask, self.now);
                if decision == Decision::KeyOutOfDate {
                    // The object missed a change: it holds nothing, the gateway sends D1's state and asks again.
                    prop_assert!(held.is_none());
                    let state = self.d1.get(&key).cloned().expect("a version comes from an edit");
                    self.put_key(key, state)?;
                    (decision, held) = self.book.reserve(&ask, self.now);
                    prop_assert!(decision != Decision::KeyOutOfDate, "decided once the object has the state");
                }
                if let Decision::Decided { lease: Some(granted), .. } = &decision {
                    // A repeated message answers the lease as it stands now (spent, perhaps); a new grant holds money.
                    prop_assert!(was_held || granted.amount > 0);
                    prop_assert!(granted.use_until_ms <= self.now + lease::MAX_USE_MS);
                    if let Some(lease) = self.book.lease(&granted.lease_id) {
                        self.store.grant_lease(&granted.lease_id, lease);
                    }
                    if !self.local.iter().any(|(l, _)| l.lease_id == granted.lease_id) {
                        self.local.push((LocalLease::new(granted, "h", self.now), key));
                    }
                }
                if let (Decision::Decided { lease: Some(_), .. }, false) = (&decision, was_held) {
                    prop_assert!(rate_default(key).is_none(), "no lease for a key whose requests are counted");
                }
                if let Some(held) = held {
                    prop_assert!(!was_held, "a request is held once");
                    prop_assert!(held.amount <= worst.max(0));
                    // Money newly held is within the key's limit as D1 has it, edits lost or not.
                    if let (Some(limit), reset) = self.view(key) {
                        let (spent, held) =
                            (self.book.spent_in(KEYS[key], reset, self.now), self.book.held_for_key(KEYS[key]));
                        prop_assert!(
                            spent + held <= limit,
                            "{}: spent {} + held {} > {}",
                            KEYS[key],
                            spent,
                            held,
                            limit
                        );
                    }
                    if let Some(a) = self.book.admitted(KEYS[key], &id).cloned() {
                        self.store.admit(KEYS[key], &a);
                    }
                    self.store.see(KEYS[key], END_USERS[end_user], self.now);
                    self.store.reservations.insert(id, held);
                } else if let Decision::Decided {
                    reservation: Reservation::Full { .. } | Reservation::Partial { .. },
                    ..
                } = decision
                {
                    prop_assert!(was_held, "money held is stored");
                }
            }
            Op::Touch { req, evidence } => {
                let id = self.earlier(req);
                if let Some(held) = self.book.touch(&id, evidence, LEASE, self.now).cloned() {
                    self.store.reservations.insert(id, held);
                }
            }
            Op::Settle { req, cost } => {
                let id = self.earlier(req);
                let reserved = self.book.held(&id).map(|h| h.amount);
                match self.book.settle(&id, cost, self.now) {
                    Some(closed) => {
                        prop_assert_eq!(Some(closed.reserved), reserved);
                        prop_assert_eq!(closed.amount, cost.min(closed.reserved).max(0));
                        prop_assert_eq!(closed.amount + closed.uncollected, cost.max(closed.amount));
                        // It used its cost in tokens, which may be more than it was admitted with: it counts
                        // at most that.
                        let admitted = self.book.admitted(&closed.key_id, &id).map(|a| a.tokens);
                        if let Some(admitted) = admitted {
                            let counted = self.book.count_tokens(&closed.key_id, &id, cost);
                            prop_assert_eq!(counted, Some(cost.clamp(0, admitted)));
                            if let (Some((_, a)), Some(counted)) = (self.store.rate_log.get_mut(&id), counted) {
                                a.tokens = counted;
                            }
                        }
                        self.settled.insert(id, closed.reserved);
                        self.alerted(&closed)?;
                        self.store.post_closed(&closed, self.now);
                    }
                    None => prop_assert!(reserved.is_none()),
                }
            }
            Op::SettleFails { req, cost, leased } => {
                if leased && !self.local_requests.is_empty() {
                    let n = usize::from(req) % self.local_requests.len();
                    let (id, lease_id, worst, _, end_user) = self.local_requests[n].clone();
                    self.store.bring_leased(&mut self.book, &lease_id, end_user);
                    let _ = self.book.settle_leased(&lease_id, (&id, end_user), worst, cost, self.now);
                } else {
                    let _ = self.book.settle(&self.earlier(req), cost, self.now);
                }
                self.book = self.store.restore();
            }
            Op::StartLeased { lease, worst } => {
                if self.local.is_empty() {
                    return self.check();
                }
                let n = usize::from(lease) % self.local.len();
                let (local, _) = &mut self.local[n];
                let id = format!("r{}", self.issued.len());
                if local.take(&id, "h", worst, self.now) {
                    self.issued.push(id.clone());
                    let end_user = END_USERS[usize::from(lease) % END_USERS.len()];
                    self.local_requests.push((id, local.lease_id.clone(), worst, false, end_user));
                }
            }
            Op::SettleLeased { req, cost, confirmed, again } => {
                if self.local_requests.is_empty() {
                    return self.check();
                }
                let (id, lease_id, worst, _, end_user) =
                    self.local_requests.remove(usize::from(req) % self.local_requests.len());
                let from_lease = self.book.held(&id).is_none();
                self.store.bring_leased(&mut self.book, &lease_id, end_user);
                if let Some(closed) = self.book.settle_leased(&lease_id, (&id, end_user), worst, cost, self.now) {
                    prop_assert!(closed.amount <= worst, "a leased request is charged at most its worst case");
                    prop_assert_eq!(closed.amount, cost.min(worst).max(0), "the lease covered it");
                    self.settled_leased.insert(id.clone(), worst);
                    if from_lease {
                        self.store.lease_charge(&lease_id, &id, closed.amount);
                    }
                    self.alerted(&closed)?;
                    self.store.post_closed(&closed, self.now);
                }
                let held_now = self.book.lease(&lease_id).map(|l| l.amount);
                if let Some((local, _)) = self.local.iter_mut().find(|(l, _)| l.lease_id == lease_id) {
                    local.settled(&id, if confirmed { held_now } else { None });
                    if again {
                        // Given up on, then confirmed by its sender after all: heard twice, counted once.
                        local.settled(&id, held_now);
                    }
                }
            }
            Op::TouchLeased { req, evidence } => {
                if self.local_requests.is_empty() {
                    return self.check();
                }
                let n = usize::from(req) % self.local_requests.len();
                let (id, lease_id, worst, _, end_user) = self.local_requests[n].clone();
                let moved = self.book.held(&id).is_none();
                self.store.bring_leased(&mut self.book, &lease_id, end_user);
                let touched = self.book.touch_leased(&lease_id, (&id, end_user), worst, evidence, LEASE, self.now);
                if let Some(held) = touched.cloned() {
                    prop_assert!(held.amount <= worst);
                    self.local_requests[n].3 = true;
                    if moved {
                        self.store.lease_charge(&lease_id, &id, held.amount);
                    }
                    self.store.reservations.insert(id, held);
                }
            }
            Op::ReturnLeases => {
                let now = self.now;
                let (drained, kept): (Vec<_>, Vec<_>) = self.local.drain(..).partition(|(l, _)| l.drained(now));
                self.local = kept;
                for (local, _) in drained {
                    if self.book.release_lease(&local.lease_id) {
                        self.store.end_lease(&local.lease_id);
                    }
                }
            }
            Op::IsolateDies => {
                self.local.clear();
                self.local_requests.clear();
            }
            Op::Credit { amount } => {
                if amount != 0 {
                    let before = self.book.balance();
                    let credited = self.book.credit(amount);
                    if amount > 0 {
                        // Refused exactly when it would take the balance past what storage keeps exactly.
                        prop_assert_eq!(credited.is_err(), before + amount > MAX_SAFE);
                    }
                    if let Ok(balance) = credited {
                        self.store.ledger.push(LedgerRow {
                            reference: format!("credit-{}", self.store.ledger.len()),
                            key_id: None,
                            end_user: None,
                            amount,
                            at: self.now,
                        });
                        self.store.balance = balance;
                    }
                }
            }
            Op::ResendKey { key } => {
                let Some(state) = self.d1.get(&key).cloned() else { return Ok(()) };
                let held = self.book.key(&state.key_id).cloned();
                let leases: Vec<_> = self.book.leases().map(|(id, l)| (id.clone(), l.clone())).collect();
                match self.book.put_key(state.clone(), self.now) {
                    None => {
                        // The same state again, or an older one: nothing changes, no lease ends.
                        prop_assert!(held.as_ref() == Some(&state) || held.is_some_and(|h| h.version > state.version));
                        let after: Vec<_> = self.book.leases().map(|(id, l)| (id.clone(), l.clone())).collect();
                        prop_assert_eq!(after, leases);
                    }
                    Some(revoked) => {
                        // The object had missed the change: taken as the edit's own message would have been.
                        prop_assert!(held.as_ref() != Some(&state));
                        for id in revoked {
                            if let Some(stored) = self.store.leases.get_mut(&id) {
                                stored.use_until_ms = self.now;
                            }
                        }
                        self.store.keys.insert(state.key_id.clone(), state);
                    }
                }
            }
            Op::EditKey { key, limit, reset, disabled, lost } => {
                let (limit, reset) = if key < 2 { worker_view(key) } else { (limit, reset) };
                let version = self.d1.values().filter_map(|s| s.version).max().unwrap_or(0) + 1;
                let state = KeyState { version: Some(version), ..key_state(key, limit, reset, disabled) };
                self.d1.insert(key, state.clone());
                if lost {
                    self.end_local_use(key); // the sender's isolate ends its own leases' use all the same
                } else {
                    self.put_key(key, state)?;
                }
            }
            Op::SetEndUserBudget { end_user, own } => {
                let (key_id, end_user) = (KEYS[2], END_USERS[end_user].expect("a named end user"));
                let own = own.map(|o| o.map(|limit_micros| Budget { limit_micros, reset: Some(Reset::Weekly) }));
                self.store.bring(&mut self.book, key_id, Some(end_user));
                for id in self.book.set_end_user_budget(key_id, end_user, own, self.now) {
                    if let Some(stored) = self.store.leases.get_mut(&id) {
                        stored.use_until_ms = self.now;
                    }
                    for (local, _) in self.local.iter_mut().filter(|(l, _)| l.lease_id == id) {
                        local.use_until_ms = local.use_until_ms.min(self.now);
                    }
                }
                match own {
                    Some(Some(budget)) => {
                        let spent = week_spend(&self.book, end_user, self.now);
                        // Running for it: its reservations, and what it started on key 2's leases.
                        let leased: i64 = self
                            .local_requests
                            .iter()
                            .filter(|(_, lease, _, moved, user)| {
                                *user == Some(end_user)
                                    && !moved
                                    && self.book.lease(lease).is_some_and(|l| l.key_id == key_id)
                            })
                            .map(|(_, _, worst, _, _)| worst)
                            .sum();
                        let running = self.book.held_for_end_user(key_id, end_user) + leased;
                        self.budgets.insert(end_user, (budget.limit_micros, self.now, spent, running));
                    }
                    _ => {
                        self.budgets.remove(end_user);
                    }
                }
                let named = (key_id.to_string(), end_user.to_string());
                let first = self.store.end_users.get(&named).map_or(self.now, |e| e.0);
                self.store
                    .end_users
                    .insert((key_id.to_string(), end_user.to_string()), (first, OwnBudget::from_option(own)));
            }
            Op::Advance { ms } => self.now += ms,
            Op::Restart => {
                let restored = self.store.restore();
                // Memory holds the end users messages brought; storage brings those of requests in flight.
                let mut live = self.book.clone();
                live.forget_idle_end_users(0);
                prop_assert_eq!(&restored, &live, "storage holds the whole book");
                self.book = restored;
            }
            Op::ForgetEndUsers => self.book.forget_idle_end_users(0),
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let (book, store) = (&self.book, &self.store);
        // Memory holds each end user it holds as storage does (a charge counted twice or missed shows here).
        for (key_id, end_user) in KEYS.iter().flat_map(|k| END_USERS.iter().flatten().map(move |e| (*k, *e))) {
            if let Some(in_memory) = book.end_user(key_id, end_user) {
                let mut fresh = Book::default();
                store.bring(&mut fresh, key_id, Some(end_user));
                prop_assert_eq!(
                    fresh.end_user(key_id, end_user),
                    Some(in_memory),
                    "{} of {} as stored",
                    end_user,
                    key_id
                );
            }
        }
        // Every end user's spend as storage has it, in memory or not.
        let mut known = book.clone();
        for (key_id, end_user) in KEYS.iter().flat_map(|k| END_USERS.iter().map(move |e| (k, e))) {
            store.bring(&mut known, key_id, *end_user);
        }
        prop_assert!(book.balance() - book.reserved() >= 0, "reservations never exceed the balance");
        prop_assert!((0..=MAX_SAFE).contains(&book.balance()), "storage keeps the balance exactly");
        let ledger_sum: i64 = store.ledger.iter().map(|r| r.amount).sum();
        prop_assert_eq!(ledger_sum, book.balance(), "the ledger sums to the balance");
        prop_assert_eq!(store.balance, book.balance(), "storage has the balance");
        let mut charges: HashMap<&str, u32> = HashMap::new();
        for row in store.ledger.iter().filter(|r| r.key_id.is_some()) {
            *charges.entry(row.reference.as_str()).or_default() += 1;
        }
        prop_assert!(charges.values().all(|n| *n == 1), "no request is charged twice");
        for (id, reserved) in self.settled.iter().chain(&self.settled_leased) {
            let charged: i64 = store.ledger.iter().filter(|r| &r.reference == id).map(|r| -r.amount).sum();
            prop_assert!(charged <= *reserved, "{} charged {} of {}", id, charged, reserved);
        }
        // What the isolate may still start on a lease is money the object holds for it.
        for (local, _) in &self.local {
            let in_flight: i64 = self
                .local_requests
                .iter()
                .filter(|(_, lease, _, moved, _)| *lease == local.lease_id && !moved)
                .map(|(_, _, worst, _, _)| worst)
                .sum();
            if let Some(lease) = book.lease(&local.lease_id) {
                prop_assert!(local.spendable() + in_flight <= lease.amount, "{} overcommitted", local.lease_id);
            }
        }
        // Key 1's end users stay within its budget for each of them.
        if let Some(budget) = end_user_budget(1) {
            for end_user in END_USERS.iter().flatten() {
                let spent = known.end_user(KEYS[1], end_user).map_or(0, |u| u.spend.in_window(budget.reset, self.now));
                let held = book.held_for_end_user(KEYS[1], end_user);
                prop_assert!(spent + held <= budget.limit_micros, "{}: {} + {} held", end_user, spent, held);
            }
        }
        // Key 2's end users with a budget of their own: what starts after it stays within it; only what was
        // already running for them (on its reservations, or on the key's leases) may pass it.
        for (end_user, (limit, set_ms, spent_then, running)) in &self.budgets {
            let same_week = Reset::Weekly.window_end(*set_ms) == Reset::Weekly.window_end(self.now);
            let bound = (*limit).max(if same_week { spent_then } else { &0 } + running);
            let (spent, held) = (week_spend(&known, end_user, self.now), book.held_for_end_user(KEYS[2], end_user));
            prop_assert!(spent + held <= bound, "{}: {} + {} held > {}", end_user, spent, held, bound);
        }
        // Key 3's per-minute limits hold in every window that ends now.
        let limits = rate_default(3);
        let live: Vec<&Admitted> = store
            .rate_log
            .values()
            .filter(|(k, a)| k == KEYS[3] && a.at_ms > self.now - rates::WINDOW_MS)
            .map(|(_, a)| a)
            .collect();
        prop_assert!(live.len() as i64 <= limits.rpm.unwrap_or(i64::MAX), "{} requests in a minute", live.len());
        let tokens: i64 = live.iter().map(|a| a.tokens).sum();
        prop_assert!(tokens <= limits.tpm.unwrap_or(i64::MAX), "{} tokens in a minute", tokens);
        // Keys 0 and 1 never change limit or reset: their window is never exceeded.
        for (key, id) in KEYS.iter().enumerate().take(2) {
            let (Some(limit), reset) = worker_view(key) else { continue };
            let held = book.held_for_key(id);
            let spent = book.spent(id, reset, self.now);
            prop_assert!(spent + held <= limit, "{}: spent {} + held {} > {}", id, spent, held, limit);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn money_invariants_hold_after_every_step(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops)?;
    }

    #[test]
    fn end_user_budgets_hold_while_leased_requests_run(ops in proptest::collection::vec(budget_op(), 1..40)) {
        let funded: Vec<Op> = std::iter::once(Op::Credit { amount: 10_000 }).chain(ops).collect();
        run(&funded)?;
    }
}

/// Runs `ops` from an empty account, checking the invariants after every step; then closes what is left.
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    {
        let mut world = World {
            book: Book::restore(0, [], [], []),
            store: Store::default(),
            now: START,
            settled: HashMap::new(),
            issued: Vec::new(),
            local: Vec::new(),
            local_requests: Vec::new(),
            settled_leased: HashMap::new(),
            alert_ids: Default::default(),
            d1: HashMap::new(),
            budgets: HashMap::new(),
        };
        for op in ops {
            world.step(op)?;
        }
        // Whatever was left in flight is closed in the end, and the books still balance.
        world.now += 10 * LEASE;
        world.step(&Op::Advance { ms: 0 })?;
        prop_assert_eq!(world.book.reserved(), 0);
        prop_assert!(world.store.reservations.is_empty());
        prop_assert!(world.store.leases.is_empty());
    }
    Ok(())
}

/// What an end user of key 2 has spent in the week of `now`, as the book holds it.
fn week_spend(book: &Book, end_user: &str, now: i64) -> i64 {
    book.end_user(KEYS[2], end_user).map_or(0, |u| u.spend.in_window(Some(Reset::Weekly), now))
}
