//! One account's money, as its Durable Object holds it: the balance, the
//! reservations of requests in flight, each key's state and each key's spend.
//! Pure: the object restores a `Book` from its storage (`Book::restore`),
//! asks it every question, and writes what each answer says changed. The
//! property test in `account_model_tests.rs` drives it with random
//! interleavings and a "restart" after any step.
//!
//! Rules:
//! - A reservation holds money until its request settles, or until it is
//!   closed because it can no longer settle (`expire`). Nothing else forgets it.
//! - A settlement charges the request's cost, capped at its reservation; the
//!   rest of the cost is reported as uncollected. A request is charged once:
//!   a settlement for a request no longer held charges nothing.
//! - A reservation closed without its settlement is charged the evidence the
//!   gateway last reported of what the upstream generated (`touch`), never more
//!   than was reserved.
//! - Key spend is kept per UTC day, so any window (daily, weekly, monthly,
//!   lifetime) is counted the same way at reservation and at settlement, and a
//!   change of the key's reset counts what was really spent in the new window.
//! - Budget leases (`domain::lease`) are held like reservations: the balance
//!   and the key's limit count them until they are charged or end.

use std::collections::HashMap;

use super::alerts::{self, Alert, AlertRules, Subject};
use super::end_users::{Budget, EndUser, EndUsers};
use super::keys::{KeyRefusal, KeyState};
use super::lease::{self, Granted, Lease, LeaseAsk};
use super::ledger::{self, Headroom, InFlightCaps, LimitSource, Reservation};
use super::rates::{Admitted, RateLimits, RateRefusal, RateStatus, Rates};
use super::windows::{window_start, Reset};

use super::spend::Spend;
pub use super::spend::SPEND_DAYS;

/// Money held for one request in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub key_id: String,
    /// The end user the request was made for, if it named one.
    pub end_user: Option<String>,
    pub amount: i64,
    /// What a close without settlement charges: the cost of what the gateway last
    /// reported the upstream had generated (0 until a report comes).
    pub evidence: i64,
    pub created_ms: i64,
    /// With no settlement and no heartbeat by then, the request can no longer settle.
    pub expires_ms: i64,
}

/// A reservation request, as the Worker sends it (the account object's `Reserve` message).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ask {
    pub request_id: String,
    pub key_id: String,
    /// The SHA-256 of the secret presented, checked against the key's state.
    pub hash: String,
    /// The gateway's view of the key's limit, used when the object has no state for the key.
    pub limit_micros: Option<i64>,
    pub limit_reset: Option<Reset>,
    pub worst_case: i64,
    pub min_to_run: i64,
    #[serde(default)]
    pub caps: InFlightCaps,
    /// How long the reservation lives without a heartbeat or settlement.
    pub lease_ms: i64,
    /// A budget lease for the key, asked for along with the reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseAsk>,
    /// The most tokens the request may use (its prompt's bound plus its output bound).
    #[serde(default)]
    pub tokens: i64,
    /// The gateway's view of the key's per-minute limits, used when the object has no state for the key.
    #[serde(default)]
    pub rates: RateLimits,
    /// The tenant's per-minute limits for keys that set none.
    #[serde(default)]
    pub rate_default: RateLimits,
    /// The end user the request is made for (`domain::end_users`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
    /// The gateway's view of the key's budget per end user, used when the object has no state for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user_budget: Option<Budget>,
    /// The version (`KeyState::version`) of the gateway's view of the key. A state held that is older
    /// missed a change (its message was lost): nothing is decided on it (`Decision::KeyOutOfDate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<i64>,
    /// What the request is (the model the client asked for, the key's organization): kept beside its
    /// reservation, for the usage record of a request closed without settlement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<About>,
}

/// What a request is, for its usage record should it be closed without settlement.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct About {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// The account (user) the request was made on, and when it began (ms).
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub started_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Refused(KeyRefusal),
    /// Too many requests of this scope (`key` or `account`) are in flight.
    TooMany(&'static str),
    /// A per-minute limit of the key.
    RateLimited(RateRefusal),
    /// The key's state held here is older than the gateway's view (`Ask::key_version`): the gateway
    /// sends the key's state (`put_key`) and asks again. Nothing is held.
    KeyOutOfDate,
    Decided {
        reservation: Reservation,
        resets_at_ms: Option<i64>,
        /// The lease granted with it, when one was asked for and the limits leave room.
        lease: Option<Granted>,
        /// Where the key's per-minute limits stand, when it has any.
        rate: Option<RateStatus>,
    },
}

/// A reservation turned into its charge (by a settlement, or by a close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub request_id: String,
    pub key_id: String,
    pub end_user: Option<String>,
    pub reserved: i64,
    /// What the ledger is charged (≤ `reserved`; may be 0).
    pub amount: i64,
    /// Cost above the reservation, not charged.
    pub uncollected: i64,
    pub balance_after: i64,
    /// Closed by `expire`, not by a settlement.
    pub abandoned: bool,
}

/// A key state of version `held` is older than the view of version `seen`. A state without a version
/// (sent before states carried one) is older than any view with one.
fn is_older(held: Option<i64>, seen: Option<i64>) -> bool {
    match (held, seen) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(held), Some(seen)) => held < seen,
    }
}

/// A credit the book refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditRefused {
    /// An adjustment would take the balance below the money held (or below zero): at most `available`
    /// can be taken.
    Overdraw { available: i64 },
    /// The balance would pass `money::MAX_SAFE` (what storage, JavaScript numbers, keeps exactly): at most
    /// `room` can be added.
    OverCeiling { room: i64 },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    balance: i64,
    in_flight: HashMap<String, Held>,
    keys: HashMap<String, KeyState>,
    spend: HashMap<String, Spend>,
    leases: HashMap<String, Lease>,
    rates: Rates,
    end_users: EndUsers,
}

impl Book {
    /// The book as storage holds it: the balance, the open reservations, the
    /// key states, and the usage charges per key as `(key_id, charged at, amount)`
    /// (rows older than `SPEND_DAYS` may be summed into one, at any older time).
    pub fn restore(
        balance: i64,
        in_flight: impl IntoIterator<Item = (String, Held)>,
        keys: impl IntoIterator<Item = KeyState>,
        charges: impl IntoIterator<Item = (String, i64, i64)>,
    ) -> Self {
        let mut spend: HashMap<String, Spend> = HashMap::new();
        for (key_id, at_ms, amount) in charges {
            spend.entry(key_id).or_default().record(at_ms, amount);
        }
        Self {
            balance,
            in_flight: in_flight.into_iter().collect(),
            keys: keys.into_iter().map(|k| (k.key_id.clone(), k)).collect(),
            spend,
            leases: HashMap::new(),
            rates: Rates::default(),
            end_users: EndUsers::default(),
        }
    }

    /// The book knowing how many end users of each key have a budget of their own (storage's count).
    pub fn with_own_budgets(mut self, counts: impl IntoIterator<Item = (String, u64)>) -> Self {
        self.end_users = std::mem::take(&mut self.end_users).with_own_budgets(counts);
        self
    }

    /// Whether the end user must be brought from storage before a message naming it is answered.
    pub fn needs_end_user(&self, key_id: &str, end_user: &str) -> bool {
        self.end_users.get(key_id, end_user).is_none()
    }

    /// The end user as storage holds it (`domain::end_users::EndUsers::bring`).
    pub fn bring_end_user(
        &mut self,
        key_id: &str,
        end_user: &str,
        own: Option<Option<Budget>>,
        spent_in_all: i64,
        recent: impl IntoIterator<Item = (i64, i64)>,
    ) {
        self.end_users.bring(key_id, end_user, own, spent_in_all, recent);
    }

    /// Forgets the end users in memory when there are more than `most`, but those of requests in flight
    /// (their settlements and closes name no end user the object could bring).
    pub fn forget_idle_end_users(&mut self, most: usize) {
        if self.end_users.in_memory() <= most {
            return;
        }
        let busy = self.in_flight.values().filter_map(|h| Some((h.key_id.as_str(), h.end_user.as_deref()?))).collect();
        self.end_users.forget_idle(&busy);
    }

    /// The end users of requests in flight, each once (the object brings them when it loads).
    pub fn end_users_in_flight(&self) -> Vec<(String, String)> {
        let mut named: Vec<(String, String)> =
            self.in_flight.values().filter_map(|h| Some((h.key_id.clone(), h.end_user.clone()?))).collect();
        named.sort();
        named.dedup();
        named
    }

    pub fn end_user(&self, key_id: &str, end_user: &str) -> Option<&EndUser> {
        self.end_users.get(key_id, end_user)
    }

    /// The alerts a charge just made crosses (`closed`, from a settlement or a close), read before the
    /// next charge.
    pub fn alerts(&self, account_id: &str, closed: &Closed, rules: &AlertRules, now: i64) -> Vec<Alert> {
        let amount = closed.amount;
        if amount <= 0 {
            return Vec::new();
        }
        let alert = |subject, value| Alert { subject, account_id: account_id.to_string(), value, at_ms: now };
        let mut alerts = Vec::new();
        let key = self.keys.get(&closed.key_id);
        if let Some((limit, reset)) = key.and_then(|k| Some((k.limit_micros?, k.limit_reset))) {
            let after = self.spent_in(&closed.key_id, reset, now);
            for percent in alerts::percents_crossed(after - amount, after, limit, &rules.percents) {
                let subject = Subject::KeyLimit {
                    key_id: closed.key_id.clone(),
                    percent,
                    limit,
                    window_start_ms: window_start(reset, now),
                    resets_at_ms: reset.map(|r| r.window_end(now)),
                };
                alerts.push(alert(subject, after));
            }
        }
        if let Some(end_user) = &closed.end_user {
            let default = key.and_then(|k| k.end_user_budget);
            let user = self.end_users.get(&closed.key_id, end_user);
            if let (Some(user), Some(budget)) = (user, user.and_then(|u| u.budget(default))) {
                let after = user.spend.in_window(budget.reset, now);
                for percent in alerts::percents_crossed(after - amount, after, budget.limit_micros, &rules.percents) {
                    let subject = Subject::EndUserBudget {
                        key_id: closed.key_id.clone(),
                        end_user: end_user.clone(),
                        percent,
                        limit: budget.limit_micros,
                        window_start_ms: window_start(budget.reset, now),
                        resets_at_ms: budget.reset.map(|r| r.window_end(now)),
                    };
                    alerts.push(alert(subject, after));
                }
            }
        }
        if let Some(threshold) = rules.balance_below {
            if closed.balance_after + amount >= threshold && closed.balance_after < threshold {
                let subject = Subject::BalanceBelow { threshold, request_id: closed.request_id.clone() };
                alerts.push(alert(subject, closed.balance_after));
            }
        }
        alerts
    }

    /// Money held for one end user of a key (its requests in flight).
    pub fn held_for_end_user(&self, key_id: &str, end_user: &str) -> i64 {
        let of = |h: &&Held| h.key_id == key_id && h.end_user.as_deref() == Some(end_user);
        self.in_flight.values().filter(of).map(|h| h.amount).sum()
    }

    /// What may be in flight for one end user of a key: its reservations, and all that the key's leases
    /// hold. A lease does not know its requests' end users, and the key's leases may have been granted
    /// before a budget applied to them (a budget ends their use, but requests started on them may still
    /// run): until they end, all of their money counts against each end user's budget.
    fn may_hold_for_end_user(&self, key_id: &str, end_user: &str) -> i64 {
        self.held_for_end_user(key_id, end_user) + self.leased_for_key(key_id)
    }

    /// What the key's leases still hold.
    fn leased_for_key(&self, key_id: &str) -> i64 {
        self.leases.values().filter(|l| l.key_id == key_id).map(|l| l.amount).sum()
    }

    /// Gives an end user a budget of its own (`Some(None)`: none), or back the key's default (`None`).
    /// The key's leases end for new requests (their requests are not counted per end user): returns
    /// their ids (to store), as `put_key` does.
    pub fn set_end_user_budget(
        &mut self,
        key_id: &str,
        end_user: &str,
        own: Option<Option<Budget>>,
        now: i64,
    ) -> Vec<String> {
        self.end_users.set_budget(key_id, end_user, own);
        self.end_lease_use(key_id, now)
    }

    fn end_lease_use(&mut self, key_id: &str, now: i64) -> Vec<String> {
        let mut revoked = Vec::new();
        for (id, lease) in self.leases.iter_mut().filter(|(_, l)| l.key_id == key_id) {
            if lease.use_until_ms > now {
                lease.use_until_ms = now;
                revoked.push(id.clone());
            }
        }
        revoked.sort();
        revoked
    }

    /// The book with the requests storage counts in per-minute windows.
    pub fn with_rates(mut self, rates: Rates) -> Self {
        self.rates = rates;
        self
    }

    /// A request counted in its key's per-minute window (to store once admitted).
    pub fn admitted(&self, key_id: &str, request_id: &str) -> Option<&Admitted> {
        self.rates.admitted(key_id, request_id)
    }

    /// A settled request counts the tokens it used in its key's window; `false`: it is not counted there.
    pub fn count_tokens(&mut self, key_id: &str, request_id: &str, tokens: i64) -> Option<i64> {
        self.rates.settle(key_id, request_id, tokens)
    }

    /// The book with the leases storage holds.
    pub fn with_leases(mut self, leases: impl IntoIterator<Item = (String, Lease)>) -> Self {
        self.leases = leases.into_iter().collect();
        self
    }

    pub fn lease(&self, lease_id: &str) -> Option<&Lease> {
        self.leases.get(lease_id)
    }

    pub fn leases(&self) -> impl Iterator<Item = (&String, &Lease)> {
        self.leases.iter()
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }

    /// Money held by requests in flight and by leases.
    pub fn reserved(&self) -> i64 {
        self.in_flight.values().map(|h| h.amount).sum::<i64>() + self.leases.values().map(|l| l.amount).sum::<i64>()
    }

    /// Money held for one key (its requests in flight and its leases).
    pub fn held_for_key(&self, key_id: &str) -> i64 {
        let requests = self.in_flight.values().filter(|h| h.key_id == key_id).map(|h| h.amount);
        requests.sum::<i64>() + self.leased_for_key(key_id)
    }

    pub fn held(&self, request_id: &str) -> Option<&Held> {
        self.in_flight.get(request_id)
    }

    pub fn in_flight(&self) -> impl Iterator<Item = (&String, &Held)> {
        self.in_flight.iter()
    }

    /// When the first reservation or lease expires (the object's alarm).
    pub fn next_expiry(&self) -> Option<i64> {
        let leases = self.leases.values().map(|l| l.expires_ms);
        self.in_flight.values().map(|h| h.expires_ms).chain(leases).min()
    }

    pub fn key(&self, key_id: &str) -> Option<&KeyState> {
        self.keys.get(key_id)
    }

    /// Takes a key's new state; `None` (and nothing changes) when the state held is newer, or is this
    /// very state sent again (several isolates healing the object at once).
    /// No new request starts on the key's leases after this (the next one asks the object):
    /// returns the ids of the leases so ended for new requests (to store).
    pub fn put_key(&mut self, state: KeyState, now: i64) -> Option<Vec<String>> {
        if let Some(held) = self.keys.get(&state.key_id) {
            let newer = held.version.zip(state.version).is_some_and(|(held, new)| held > new);
            if newer || held == &state {
                return None;
            }
        }
        let revoked = self.end_lease_use(&state.key_id, now);
        self.keys.insert(state.key_id.clone(), state);
        Some(revoked)
    }

    /// The key's spend in its limit window (its own reset, else `fallback`).
    pub fn spent(&self, key_id: &str, fallback: Option<Reset>, now: i64) -> i64 {
        let reset = self.keys.get(key_id).map_or(fallback, |k| k.limit_reset);
        self.spend.get(key_id).map_or(0, |s| s.in_window(reset, now))
    }

    /// The key's charges in a window of the given kind (`None`: all time).
    pub fn spent_in(&self, key_id: &str, reset: Option<Reset>, now: i64) -> i64 {
        self.spend.get(key_id).map_or(0, |s| s.in_window(reset, now))
    }

    /// Moves the balance by a credit (negative for an adjustment down) and returns
    /// the new balance; an adjustment may not take away money held or not there, and a credit may not
    /// take the balance past `money::MAX_SAFE`.
    pub fn credit(&mut self, amount: i64) -> Result<i64, CreditRefused> {
        let available = self.balance - self.reserved();
        if amount < 0 && available.saturating_add(amount) < 0 {
            return Err(CreditRefused::Overdraw { available: available.max(0) });
        }
        let room = (super::money::MAX_SAFE - self.balance).max(0);
        if amount > room {
            return Err(CreditRefused::OverCeiling { room });
        }
        self.balance += amount;
        Ok(self.balance)
    }

    /// Checks the key and, when the limits allow, holds money for the request.
    /// Returns the decision and, when money is newly held, the reservation to store.
    pub fn reserve(&mut self, ask: &Ask, now: i64) -> (Decision, Option<Held>) {
        let held_state = self.keys.get(&ask.key_id);
        if held_state.is_some_and(|state| is_older(state.version, ask.key_version)) {
            return (Decision::KeyOutOfDate, None);
        }
        let (limit, reset, rates, end_user_default) = match held_state {
            Some(state) => {
                if let Err(reason) = state.check(&ask.hash, now) {
                    return (Decision::Refused(reason), None);
                }
                (state.limit_micros, state.limit_reset, state.rates, state.end_user_budget)
            }
            None => (ask.limit_micros, ask.limit_reset, ask.rates, ask.end_user_budget),
        };
        let rates = rates.or(ask.rate_default);
        let rate_status = |book: &Self| (!rates.is_none()).then(|| book.rates.status(&ask.key_id, rates, now));
        let mut resets_at_ms = limit.and(reset).map(|r| r.window_end(now));
        if let Some(held) = self.in_flight.get(&ask.request_id) {
            // A repeated message: the same amount, nothing held or counted twice; what was only part of the
            // worst case is said to be so (the output is capped to it). Which limit bound it is not kept, so
            // the balance is named: only a refusal's message would say more, and a repeat is never refused.
            let reservation = match held.amount < ask.worst_case {
                true => Reservation::Partial { amount: held.amount, source: LimitSource::Balance },
                false => Reservation::Full { amount: held.amount },
            };
            let lease = ask.lease.as_ref().and_then(|l| self.granted(&l.lease_id));
            return (Decision::Decided { reservation, resets_at_ms, lease, rate: rate_status(self) }, None);
        }
        let key_count = self.in_flight.values().filter(|h| h.key_id == ask.key_id).count() as u32;
        if let Some(scope) = ledger::in_flight_exceeded(ask.caps, key_count, self.in_flight.len() as u32) {
            return (Decision::TooMany(scope), None);
        }
        if let Err(refusal) = self.rates.check(&ask.key_id, rates, ask.tokens, now) {
            return (Decision::RateLimited(refusal), None);
        }
        let key_headroom = self.key_headroom(&ask.key_id, limit, reset, now);
        let end_user = ask.end_user.as_deref().map(|e| (e, self.end_user_budget(&ask.key_id, e, end_user_default)));
        // An end user not brought from storage has a spend and a budget this book does not know: nothing
        // is held for it (the object brings every end user an ask names, so this is never reached).
        let unknown = ask.end_user.as_deref().is_some_and(|e| self.needs_end_user(&ask.key_id, e));
        let end_user_headroom = match (unknown, end_user) {
            (true, _) => Some(0),
            (false, end_user) => end_user.and_then(|(e, budget)| {
                let b = budget?;
                let spent = self.end_users.get(&ask.key_id, e).map_or(0, |u| u.spend.in_window(b.reset, now));
                Some(b.limit_micros - spent - self.may_hold_for_end_user(&ask.key_id, e))
            }),
        };
        let headroom =
            Headroom { balance: self.balance - self.reserved(), key: key_headroom, end_user: end_user_headroom };
        let reservation = ledger::reserve(headroom, ask.worst_case, ask.min_to_run);
        if let Reservation::Partial { source: LimitSource::EndUserLimit, .. }
        | Reservation::Refused { source: LimitSource::EndUserLimit } = reservation
        {
            resets_at_ms = end_user.and_then(|(_, b)| b?.reset).map(|r| r.window_end(now));
        }
        let held = match reservation {
            Reservation::Full { amount } | Reservation::Partial { amount, .. } => {
                let held = Held {
                    key_id: ask.key_id.clone(),
                    end_user: ask.end_user.clone(),
                    amount,
                    evidence: 0,
                    created_ms: now,
                    expires_ms: now + ask.lease_ms,
                };
                self.in_flight.insert(ask.request_id.clone(), held.clone());
                if !rates.is_none() {
                    self.rates.admit(&ask.key_id, &ask.request_id, ask.tokens, now);
                }
                Some(held)
            }
            Reservation::Refused { .. } => None,
        };
        // Leases only where nothing counts requests: the object cannot count those started on one (per
        // minute, per end user).
        let counted = !rates.is_none() || end_user_default.is_some() || self.end_users.any_own_budget(&ask.key_id);
        let lease = match (&reservation, &ask.lease) {
            (Reservation::Full { .. }, Some(asked)) if ask.caps == InFlightCaps::default() && !counted => {
                self.grant(asked, (&ask.key_id, &ask.hash), (limit, reset), ask.worst_case, ask.lease_ms, now)
            }
            _ => None,
        };
        (Decision::Decided { reservation, resets_at_ms, lease, rate: rate_status(self) }, held)
    }

    /// The budget that binds an end user of a key: its own, else the key's default.
    fn end_user_budget(&self, key_id: &str, end_user: &str, default: Option<Budget>) -> Option<Budget> {
        self.end_users.get(key_id, end_user).map_or(default, |u| u.budget(default))
    }

    /// What the key's limit leaves (its window's spend and everything held for it counted).
    fn key_headroom(&self, key_id: &str, limit: Option<i64>, reset: Option<Reset>, now: i64) -> Option<i64> {
        limit.map(|limit| limit - self.spent_in(key_id, reset, now) - self.held_for_key(key_id))
    }

    fn granted(&self, lease_id: &str) -> Option<Granted> {
        let l = self.leases.get(lease_id)?;
        Some(Granted { lease_id: lease_id.to_string(), amount: l.amount, use_until_ms: l.use_until_ms })
    }

    /// Grants a lease for the key out of what every limit leaves (`domain::lease::amount_to_grant`), in
    /// use for at most `lease::MAX_USE_MS` (and not past the key's expiry), held until its requests
    /// can have settled (`lease_ms` later).
    fn grant(
        &mut self,
        asked: &LeaseAsk,
        (key_id, hash): (&str, &str),
        (limit, reset): (Option<i64>, Option<Reset>),
        worst_case: i64,
        lease_ms: i64,
        now: i64,
    ) -> Option<Granted> {
        let balance_left = self.balance - self.reserved();
        let available = self.key_headroom(key_id, limit, reset, now).map_or(balance_left, |k| k.min(balance_left));
        let amount = lease::amount_to_grant(asked.amount, available, worst_case);
        if amount <= 0 || self.leases.contains_key(&asked.lease_id) {
            return None;
        }
        // Not past the key's expiry, nor past the grace of a rotated-out secret it was asked with.
        let key = self.keys.get(key_id);
        let grace = key.filter(|k| k.previous_hash.as_deref() == Some(hash)).and_then(|k| k.previous_until_ms);
        let key_expiry = key.and_then(|k| k.expires_at_ms).into_iter().chain(grace).min().unwrap_or(i64::MAX);
        let use_until_ms = (now + asked.use_ms.clamp(0, lease::MAX_USE_MS)).min(key_expiry);
        let lease = Lease {
            key_id: key_id.to_string(),
            amount,
            use_until_ms,
            expires_ms: use_until_ms + lease_ms,
            charged: Default::default(),
        };
        self.leases.insert(asked.lease_id.clone(), lease);
        self.granted(&asked.lease_id)
    }

    /// Charges a request started on a lease: its cost, capped at its worst case and at what the lease
    /// holds, once. A request whose worst case was moved into a reservation of its own settles that.
    /// `None`: charged already, or the lease has ended (nothing is charged).
    /// `end_user`: whom it was made for (its charge counts in the end user's spend).
    pub fn settle_leased(
        &mut self,
        lease_id: &str,
        (request_id, end_user): (&str, Option<&str>),
        worst_case: i64,
        cost: i64,
        now: i64,
    ) -> Option<Closed> {
        if self.in_flight.contains_key(request_id) {
            return self.settle(request_id, cost, now);
        }
        let lease = self.leases.get_mut(lease_id)?;
        if !lease.charged.insert(request_id.to_string()) {
            return None;
        }
        let cap = worst_case.clamp(0, lease.amount);
        let amount = ledger::charge(cost, cap);
        lease.amount -= amount;
        let held = Held {
            key_id: lease.key_id.clone(),
            end_user: end_user.map(String::from),
            amount: cap,
            evidence: 0,
            created_ms: now,
            expires_ms: now,
        };
        Some(self.close(request_id, held, cost, false, now))
    }

    /// A heartbeat of a request started on a lease: the first moves its worst case out of the lease
    /// into a reservation of its own (which then lives and closes as any); then as `touch`.
    pub fn touch_leased(
        &mut self,
        lease_id: &str,
        (request_id, end_user): (&str, Option<&str>),
        worst_case: i64,
        evidence: i64,
        lease_ms: i64,
        now: i64,
    ) -> Option<&Held> {
        if !self.in_flight.contains_key(request_id) {
            let lease = self.leases.get_mut(lease_id)?;
            if !lease.charged.insert(request_id.to_string()) {
                return None;
            }
            let amount = worst_case.clamp(0, lease.amount);
            lease.amount -= amount;
            let held = Held {
                key_id: lease.key_id.clone(),
                end_user: end_user.map(String::from),
                amount,
                evidence: 0,
                created_ms: now,
                expires_ms: now,
            };
            self.in_flight.insert(request_id.to_string(), held);
        }
        self.touch(request_id, evidence, lease_ms, now)
    }

    /// Ends a lease its isolate gives back: what it still holds is the account's again.
    pub fn release_lease(&mut self, lease_id: &str) -> bool {
        self.leases.remove(lease_id).is_some()
    }

    /// Ends the leases whose requests have all settled or can no longer (their isolates never gave them
    /// back); returns them, as they ended.
    pub fn expire_leases(&mut self, now: i64) -> Vec<(String, Lease)> {
        let mut due: Vec<String> =
            self.leases.iter().filter(|(_, l)| l.expires_ms <= now).map(|(id, _)| id.clone()).collect();
        due.sort();
        due.into_iter().filter_map(|id| self.leases.remove(&id).map(|lease| (id, lease))).collect()
    }

    /// May the request held as `held` go on: is its key still live and allowed (the object's state of it)?
    /// A stream's heartbeat asks, so a key disabled, deleted or expired mid-stream stops its streams
    /// within a beat (the reservation stays, to be settled for what was delivered).
    pub fn may_go_on(&self, held: &Held, now: i64) -> bool {
        self.keys.get(&held.key_id).is_none_or(|state| state.may_go_on(now).is_ok())
    }

    /// A heartbeat from the request: it still runs, and the upstream has generated
    /// at least `evidence` worth so far. Returns the updated reservation, if held.
    pub fn touch(&mut self, request_id: &str, evidence: i64, lease_ms: i64, now: i64) -> Option<&Held> {
        let held = self.in_flight.get_mut(request_id)?;
        held.evidence = held.evidence.max(evidence.clamp(0, held.amount));
        held.expires_ms = held.expires_ms.max(now + lease_ms);
        Some(held)
    }

    /// Turns a request's reservation into its charge: `cost`, capped at what was held.
    /// `None`: this request is not held (settled or closed already): nothing is charged.
    pub fn settle(&mut self, request_id: &str, cost: i64, now: i64) -> Option<Closed> {
        let held = self.in_flight.remove(request_id)?;
        Some(self.close(request_id, held, cost, false, now))
    }

    /// Closes the first (by request id) reservation whose request can no longer settle, charging its
    /// evidence. One at a time, so what each close crossed (`alerts`) is read before the next one charges.
    pub fn expire_next(&mut self, now: i64) -> Option<Closed> {
        let id = self.in_flight.iter().filter(|(_, h)| h.expires_ms <= now).map(|(id, _)| id).min()?.clone();
        let held = self.in_flight.remove(&id)?;
        let evidence = held.evidence;
        Some(self.close(&id, held, evidence, true, now))
    }

    fn close(&mut self, request_id: &str, held: Held, cost: i64, abandoned: bool, now: i64) -> Closed {
        let amount = ledger::charge(cost, held.amount);
        self.balance -= amount;
        if amount > 0 {
            self.spend.entry(held.key_id.clone()).or_default().record(now, amount);
        }
        if let (Some(end_user), true) = (&held.end_user, amount > 0) {
            self.end_users.record(&held.key_id, end_user, now, amount);
        }
        Closed {
            request_id: request_id.to_string(),
            key_id: held.key_id,
            end_user: held.end_user,
            reserved: held.amount,
            amount,
            uncollected: (cost - amount).max(0),
            balance_after: self.balance,
            abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const LEASE: i64 = 60_000;

    fn ask(request_id: &str, key_id: &str, worst_case: i64) -> Ask {
        Ask {
            request_id: request_id.into(),
            key_id: key_id.into(),
            hash: "h".into(),
            limit_micros: None,
            limit_reset: None,
            worst_case,
            min_to_run: 1,
            caps: InFlightCaps::default(),
            lease_ms: LEASE,
            lease: None,
            tokens: 0,
            rates: RateLimits::default(),
            rate_default: RateLimits::default(),
            end_user: None,
            end_user_budget: None,
            key_version: None,
            about: None,
        }
    }

    pub(crate) fn key(key_id: &str, limit: Option<i64>, reset: Option<Reset>) -> KeyState {
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
            permissions: None,
            version: None,
            rates: Default::default(),
            end_user_budget: None,
        }
    }

    fn full(amount: i64) -> Decision {
        Decision::Decided { reservation: Reservation::Full { amount }, resets_at_ms: None, lease: None, rate: None }
    }

    #[test]
    fn a_request_goes_on_only_while_its_key_is_live_and_may_write() {
        let mut book = Book::restore(1_000, [], [key("k", None, None)], []);
        assert_eq!(book.reserve(&ask("r1", "k", 60), NOW).0, full(60));
        let held = book.touch("r1", 10, LEASE, NOW).cloned().expect("held");
        assert!(book.may_go_on(&held, NOW));
        // Rotated: the running request's secret was checked when it began; it goes on.
        let rotated = KeyState { hash: "new".into(), ..key("k", None, None) };
        book.put_key(rotated.clone(), NOW);
        assert!(book.may_go_on(&held, NOW));
        for stopped in [
            KeyState { disabled: true, ..rotated.clone() },
            KeyState { deleted: true, ..rotated.clone() },
            KeyState { expires_at_ms: Some(NOW), ..rotated.clone() },
            KeyState { permissions: Some("read".into()), ..rotated.clone() },
        ] {
            book.put_key(stopped, NOW);
            assert!(!book.may_go_on(&held, NOW));
            book.put_key(rotated.clone(), NOW);
        }
        // Still held, to be settled for what it delivered.
        assert_eq!(book.settle("r1", 30, NOW).map(|c| c.amount), Some(30));
    }

    #[test]
    fn reservations_in_flight_hold_the_balance() {
        let mut book = Book::restore(100, [], [], []);
        let partial = Decision::Decided {
            reservation: Reservation::Partial { amount: 40, source: LimitSource::Balance },
            resets_at_ms: None,
            lease: None,
            rate: None,
        };
        assert_eq!(book.reserve(&ask("r1", "k", 60), NOW).0, full(60));
        assert_eq!(book.reserve(&ask("r2", "k", 60), NOW).0, partial);
        assert_eq!(book.reserved(), 100);
        // The same message again holds nothing more, and still says only part was covered.
        assert_eq!(book.reserve(&ask("r2", "k", 60), NOW).0, partial);
        assert_eq!(book.reserve(&ask("r1", "k", 60), NOW).0, full(60));
        assert_eq!(book.reserved(), 100);
        let (decision, held) = book.reserve(&ask("r3", "k", 60), NOW);
        assert!(matches!(decision, Decision::Decided { reservation: Reservation::Refused { .. }, .. }));
        assert_eq!(held, None);
    }

    #[test]
    fn settling_charges_the_cost_capped_at_the_reservation_once() {
        let mut book = Book::restore(100, [], [], []);
        book.reserve(&ask("r1", "k", 60), NOW);
        let closed = book.settle("r1", 25, NOW).expect("held");
        assert_eq!((closed.amount, closed.balance_after, closed.uncollected), (25, 75, 0));
        assert_eq!(book.settle("r1", 25, NOW), None, "a repeat charges nothing");
        book.reserve(&ask("r2", "k", 10), NOW);
        let closed = book.settle("r2", 999, NOW).expect("held");
        assert_eq!((closed.amount, closed.uncollected), (10, 989));
        assert_eq!((book.balance(), book.reserved()), (65, 0));
        assert_eq!(book.settle("never-reserved", 50, NOW), None);
    }

    #[test]
    fn sequential_spending_stops_at_a_key_limit_with_a_reset() {
        // The bug of issue 14.1: the key's window is the same at reservation and settlement.
        for reset in [Reset::Daily, Reset::Weekly, Reset::Monthly] {
            let mut book = Book::restore(1_000_000, [], [], []);
            let mut charged = 0;
            for i in 0..10 {
                let id = format!("r{i}");
                let mut a = ask(&id, "k", 60);
                (a.limit_micros, a.limit_reset, a.min_to_run) = (Some(150), Some(reset), 10);
                if let (
                    Decision::Decided {
                        reservation: Reservation::Full { amount } | Reservation::Partial { amount, .. },
                        ..
                    },
                    _,
                ) = book.reserve(&a, NOW)
                {
                    charged += book.settle(&id, 55.min(amount), NOW).expect("held").amount;
                }
            }
            assert!(charged <= 150, "{reset:?}: {charged}");
            assert_eq!(book.spent("k", Some(reset), NOW), charged);
        }
    }

    #[test]
    fn key_limits_count_spend_in_the_window_and_money_in_flight() {
        let mut book = Book::restore(1_000, [], [key("k", Some(100), Some(Reset::Daily))], []);
        book.reserve(&ask("r1", "k", 60), NOW);
        book.settle("r1", 50, NOW);
        book.reserve(&ask("r2", "k", 30), NOW);
        let (decision, _) = book.reserve(&ask("r3", "k", 30), NOW);
        let Decision::Decided { reservation, resets_at_ms, .. } = decision else { panic!("decided") };
        assert_eq!(reservation, Reservation::Partial { amount: 20, source: LimitSource::KeyLimit });
        assert_eq!(resets_at_ms, Some(Reset::Daily.window_end(NOW)));
        let tomorrow = NOW + 86_400_000;
        book.settle("r2", 0, tomorrow);
        book.settle("r3", 0, tomorrow);
        assert_eq!(
            book.reserve(&ask("r4", "k", 100), tomorrow).0,
            Decision::Decided {
                reservation: Reservation::Full { amount: 100 },
                resets_at_ms: Some(Reset::Daily.window_end(tomorrow)),
                lease: None,
                rate: None
            }
        );
        // A monthly window counts yesterday's spend too.
        book.put_key(key("k", Some(100), Some(Reset::Monthly)), tomorrow);
        assert_eq!(book.spent("k", None, tomorrow), 50);
    }

    #[test]
    fn key_state_and_caps_are_checked_first() {
        let mut disabled = key("k", None, None);
        disabled.disabled = true;
        let mut book = Book::restore(1_000, [], [disabled], []);
        assert_eq!(book.reserve(&ask("r1", "k", 1), NOW).0, Decision::Refused(KeyRefusal::Disabled));
        let mut capped = ask("r2", "k2", 1);
        capped.caps = InFlightCaps { per_key: Some(1), per_account: None };
        book.reserve(&capped, NOW);
        capped.request_id = "r3".into();
        assert_eq!(book.reserve(&capped, NOW).0, Decision::TooMany("key"));
    }

    #[test]
    fn a_reservation_lives_while_it_heartbeats_and_is_closed_at_its_evidence() {
        let mut book = Book::restore(100, [], [], []);
        book.reserve(&ask("r1", "k", 80), NOW);
        let expire = |book: &mut Book, now| std::iter::from_fn(|| book.expire_next(now)).collect::<Vec<_>>();
        assert!(expire(&mut book, NOW + LEASE - 1).is_empty());
        book.touch("r1", 30, LEASE, NOW + LEASE - 1);
        book.touch("r1", 500, LEASE, NOW + LEASE - 1);
        assert_eq!(book.held("r1").map(|h| h.evidence), Some(80), "evidence is capped at the reservation");
        assert!(expire(&mut book, NOW + LEASE).is_empty(), "the heartbeat extended it");
        let closed = expire(&mut book, NOW + 2 * LEASE);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].amount, closed[0].abandoned), (80, true));
        assert_eq!(book.settle("r1", 10, NOW + 2 * LEASE), None, "a late settlement charges nothing more");
        assert_eq!(book.balance(), 20);
    }

    #[test]
    fn an_older_key_state_does_not_replace_a_newer_one() {
        let mut book = Book::restore(100, [], [], []);
        let state = |disabled, version| KeyState { disabled, version: Some(version), ..key("k", None, None) };
        assert!(book.put_key(state(true, 20), NOW).is_some());
        assert!(book.put_key(state(false, 10), NOW).is_none(), "the enable that lost the race");
        assert!(
            book.put_key(state(true, 20), NOW).is_none(),
            "the same state again (another isolate's heal) changes nothing"
        );
        // Two changes stamped in one millisecond (before D1 stamped versions apart): the second is taken.
        assert!(book.put_key(KeyState { disabled: false, limit_micros: Some(5), ..state(true, 20) }, NOW).is_some());
        assert!(book.put_key(state(true, 30), NOW).is_some());
        assert_eq!(book.reserve(&ask("r1", "k", 1), NOW).0, Decision::Refused(KeyRefusal::Disabled));
        assert!(book.put_key(state(false, 30), NOW).is_some());
    }

    #[test]
    fn nothing_is_decided_on_a_key_state_older_than_the_gateway_view() {
        let limited = |limit, version| KeyState { version, ..key("k", Some(limit), None) };
        let mut book = Book::restore(1_000, [], [limited(500, Some(10))], []);
        let seen = |version| Ask { key_version: version, ..ask("r1", "k", 100) };
        // The change to version 20 (say, the limit lowered) never reached the object.
        assert_eq!(book.reserve(&seen(Some(20)), NOW), (Decision::KeyOutOfDate, None));
        assert_eq!(book.reserved(), 0, "nothing held");
        for version in [Some(10), Some(5), None] {
            assert!(matches!(book.reserve(&seen(version), NOW).0, Decision::Decided { .. }), "{version:?}");
            book.settle("r1", 0, NOW);
        }
        // Once the gateway sends the state it saw, that state decides.
        assert!(book.put_key(limited(50, Some(20)), NOW).is_some());
        let Decision::Decided { reservation, .. } =
            book.reserve(&Ask { request_id: "r2".into(), ..seen(Some(20)) }, NOW).0
        else {
            panic!("decided on the new state")
        };
        assert_eq!(reservation, Reservation::Partial { amount: 50, source: LimitSource::KeyLimit });
        // A state without a version (sent before states carried one) is older than any view with one.
        let mut unversioned = Book::restore(1_000, [], [limited(500, None)], []);
        assert_eq!(unversioned.reserve(&seen(Some(1)), NOW).0, Decision::KeyOutOfDate);
        assert!(matches!(unversioned.reserve(&seen(None), NOW).0, Decision::Decided { .. }));
    }

    #[test]
    fn a_lease_is_granted_out_of_what_is_left_and_not_past_a_rotated_secret_grace() {
        let rotated =
            KeyState { previous_hash: Some("old".into()), previous_until_ms: Some(NOW + 100), ..key("k", None, None) };
        let mut book = Book::restore(1_000, [], [rotated], []);
        let mut a = ask("r1", "k", 100);
        a.hash = "old".into();
        a.lease = Some(LeaseAsk { lease_id: "l1".into(), amount: 2_000, use_ms: 1_000 });
        let Decision::Decided { lease: Some(granted), .. } = book.reserve(&a, NOW).0 else { panic!("a lease") };
        assert_eq!(granted.amount, 400, "half of the 900 left, in whole worst cases");
        assert_eq!(granted.use_until_ms, NOW + 100, "not past the old secret's grace");
        assert_eq!(book.reserved(), 500);
        let closed = book.settle_leased("l1", ("r2", None), 100, 70, NOW).expect("charged");
        assert_eq!((closed.amount, book.lease("l1").map(|l| l.amount)), (70, Some(330)));
        assert_eq!(book.settle_leased("l1", ("r2", None), 100, 70, NOW), None, "once");
        assert!(book.release_lease("l1"));
        assert_eq!(book.reserved(), 100);
    }

    #[test]
    fn a_budget_set_while_leased_requests_run_counts_their_lease() {
        use crate::domain::end_users::Budget;
        let mut book = Book::restore(10_000, [], [key("k", None, None)], []);
        let mut first = ask("r0", "k", 100);
        first.lease = Some(LeaseAsk { lease_id: "l1".into(), amount: 400, use_ms: 1_000 });
        let Decision::Decided { lease: Some(granted), .. } = book.reserve(&first, NOW).0 else { panic!("a lease") };
        assert_eq!(granted.amount, 400);
        // r1 and r2 start on the lease for alice (in the isolate, unseen); then alice gets 150 a day.
        book.set_end_user_budget(
            "k",
            "alice",
            Some(Some(Budget { limit_micros: 150, reset: Some(Reset::Daily) })),
            NOW,
        );
        let mut r3 = ask("r3", "k", 100);
        r3.end_user = Some("alice".into());
        let (decision, _) = book.reserve(&r3, NOW + 1);
        assert!(
            matches!(
                decision,
                Decision::Decided { reservation: Reservation::Refused { source: LimitSource::EndUserLimit }, .. }
            ),
            "the lease's 400 may be alice's: nothing is left of her 150 until it ends ({decision:?})"
        );
        for r in ["r1", "r2"] {
            book.settle_leased("l1", (r, Some("alice")), 100, 100, NOW + 2).expect("charged");
        }
        assert!(book.release_lease("l1"));
        let spent =
            |book: &Book| book.end_user("k", "alice").map_or(0, |u| u.spend.in_window(Some(Reset::Daily), NOW + 3));
        assert_eq!(spent(&book), 200, "what started before the budget");
        let (decision, _) = book.reserve(&r3, NOW + 3);
        assert!(matches!(decision, Decision::Decided { reservation: Reservation::Refused { .. }, .. }), "{decision:?}");
    }

    #[test]
    fn adjustments_cannot_take_money_held_or_not_there() {
        let mut book = Book::restore(100, [], [], []);
        book.reserve(&ask("r1", "k", 60), NOW);
        assert_eq!(book.credit(-41), Err(CreditRefused::Overdraw { available: 40 }));
        assert_eq!(book.credit(-40), Ok(60));
        assert_eq!(book.credit(5), Ok(65));
    }
}
