//! Messages between the Worker and an account's Durable Object.

use serde::{Deserialize, Serialize};

use crate::domain::account::Ask;
use crate::domain::end_users::{Budget, OwnBudget};
use crate::domain::keys::{KeyRefusal, KeyState};
use crate::domain::lease::Granted;
use crate::domain::ledger::Reservation;
use crate::domain::orgs::{Limits, MonthUse, OrgLimitHit, OrgState};
use crate::domain::rates::{RateRefusal, RateStatus};
use crate::domain::usage::UsageRecord;

/// The header that carries a message (JSON) to the object and its answer back.
pub const MESSAGE_HEADER: &str = "x-tollgate-message";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
pub enum AccountRequest {
    /// Records a key's authoritative state (after every change to the key).
    PutKey { state: KeyState },
    /// Checks the presented secret against the key's state, then reserves up to `worst_case` micro-USD.
    /// `limit_*` are the gateway's view of the key's limit, used when the object
    /// has no state for the key. The reservation is stored before the answer
    /// leaves and lives `lease_ms` without a heartbeat (`Touch`) or settlement.
    Reserve(Ask),
    /// A request still runs: its reservation lives on, and the upstream has generated
    /// at least `evidence` micro-USD worth (what a close without settlement charges).
    /// A request started on a lease (`on_lease`) gets a reservation of its own out of the lease.
    Touch {
        request_id: String,
        evidence: i64,
        lease_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_lease: Option<OnLease>,
        /// What a request started on a lease is, kept beside the reservation its first beat makes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        about: Option<crate::domain::account::About>,
    },
    /// Turns reservations into their actual costs (each capped at its reservation).
    /// A settlement for a request no longer held charges nothing. `return_leases`: leases
    /// the isolate gives back (what they still hold is the account's again).
    Settle {
        account_id: String,
        settlements: Vec<Settlement>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        return_leases: Vec<String>,
    },
    /// Adds money (recharge, refund, adjustment — the last may be negative).
    Credit {
        account_id: String,
        amount: i64,
        kind: String,
        description: Option<String>,
        idempotency_key: Option<String>,
    },
    /// Balance and totals; with `key_id`, that key's spend per window.
    /// With `audit`, also the ledger's own sums (what an earlier version's reconciliation asked for; this
    /// one sends `Reconcile`).
    Summary {
        key_id: Option<String>,
        #[serde(default)]
        audit: bool,
    },
    /// Ledger rows, newest first.
    Transactions { page: u32, page_size: u32 },
    /// Gives an end user of a key a budget of its own, none, or back the key's default.
    PutEndUserBudget { key_id: String, end_user: String, own: OwnBudget },
    /// A page of a key's end users with their spend, most spent in all first; `default` is D1's view of
    /// the key's budget per end user, used when the object has no state for the key. (A gateway of before
    /// pages sends neither: the first page of `END_USERS_PAGE`.)
    EndUsers {
        key_id: String,
        default: Option<Budget>,
        #[serde(default = "first_page")]
        page: u32,
        #[serde(default = "end_users_page")]
        page_size: u32,
    },
    /// Copies the ledger's unsynced rows to D1 now (reconciliation by an earlier version asked first).
    Flush,
    /// Copies what waits to D1, then reads D1's sum of the account's ledger while no other copy runs, and
    /// answers `Reconciled` (reconciliation). The object learns `account_id` if it did not know it.
    Reconcile { account_id: String },
    /// Liveness probe for `/health?deep=1`.
    Ping,
}
crate::tag_first!(AccountRequest, "op");

/// The page size of a key's end users when the gateway names none.
pub const END_USERS_PAGE: u32 = 100;

fn first_page() -> u32 {
    1
}

fn end_users_page() -> u32 {
    END_USERS_PAGE
}

/// The actual cost of one reserved request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub request_id: String,
    /// Price × tokens, uncapped: the object charges it up to the reservation.
    pub cost: i64,
    pub description: String,
    /// The request's usage record; the object fills in the charge and copies it to D1.
    #[serde(default)]
    pub usage: Option<UsageRecord>,
    /// The lease the request was started on (it has no reservation of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_lease: Option<OnLease>,
}

/// A request started on a budget lease: which, and the most it may cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnLease {
    pub lease_id: String,
    pub worst_case: i64,
    /// The end user the request was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
}

/// One end user of a key as the object reports it (micro-USD, ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndUserRow {
    pub end_user: String,
    pub first_ms: i64,
    /// The budget that binds it, and whether it is its own (not the key's default).
    pub budget: Option<Budget>,
    pub own: bool,
    /// Spend in the budget's window (all time without a budget), all time, and money held now.
    pub spent: i64,
    pub total: i64,
    pub held: i64,
    pub resets_ms: Option<i64>,
}

/// One ledger row (amounts in micro-USD; times in ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub reference_id: Option<String>,
    pub description: Option<String>,
    pub key_id: Option<String>,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsage {
    pub total: i64,
    pub daily: i64,
    pub weekly: i64,
    pub monthly: i64,
    /// Spend in the key's own limit window.
    pub in_window: i64,
    pub window_resets_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
pub enum AccountResponse {
    Ok,
    Refused {
        reason: KeyRefusal,
    },
    Pong {
        pings: i64,
    },
    Reserved {
        reservation: Reservation,
        resets_at_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<Granted>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate: Option<RateStatus>,
    },
    /// A per-minute limit of the key refused the request.
    RateLimited {
        refusal: RateRefusal,
    },
    /// The key's state held is older than the reservation's view of it: send the key's state, ask again.
    KeyOutOfDate,
    Settled {
        charged: i64,
        balance: i64,
        /// What each lease the settlements were charged from still holds (0: it has ended).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        leases: Vec<(String, i64)>,
        /// Settlements that failed (none of their writes stayed): to send again.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        failed: Vec<String>,
        /// Settlements that came after their request was closed without settlement (charged its
        /// evidence, not what they say): an organization is not told them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        closed: Vec<String>,
    },
    Touched {
        held: bool,
        /// Held, but its key may no longer run requests (disabled, deleted, expired, lost `write`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stopped: bool,
    },
    /// An adjustment down would take money held or not there.
    Overdrawn {
        available: i64,
    },
    /// A credit would take the balance past what storage keeps exactly (`money::MAX_SAFE`).
    OverCeiling {
        room: i64,
    },
    Credited {
        transaction_id: String,
        balance: i64,
    },
    /// The idempotency key was used for a credit of another amount or type: nothing was done.
    CreditKeyReused,
    Summary {
        balance: i64,
        reserved: i64,
        total_credits: i64,
        total_usage: i64,
        key: Option<KeyUsage>,
        /// For reconciliation: the ledger's own sum, the cost it could not charge, open reservations.
        #[serde(default)]
        ledger_sum: i64,
        #[serde(default)]
        uncollected: i64,
        #[serde(default)]
        open: i64,
    },
    /// The object's balance and ledger against D1's copy, read at one point of the copy.
    Reconciled {
        balance: i64,
        /// The ledger's own sum, and the cost it could not charge.
        ledger_sum: i64,
        uncollected: i64,
        /// The sum of the ledger rows copied to D1, and D1's sum of the account's rows (`amount +
        /// archived` of `ledger_totals`), read while no copy ran: they are equal unless D1's copy drifted.
        copied_sum: i64,
        d1_sum: i64,
        /// Reservations open.
        open: i64,
    },
    Transactions {
        rows: Vec<LedgerEntry>,
        total: i64,
    },
    /// Too many requests of this key or account are in flight.
    TooManyInFlight {
        scope: String,
    },
    EndUsers {
        users: Vec<EndUserRow>,
        /// How many end users the key has (an object of before pages did not say, and sent them all).
        #[serde(default)]
        total: Option<i64>,
    },
    Error {
        message: String,
    },
}
crate::tag_first!(AccountResponse, "result");

/// Messages to an organization's object (class `OrgDo`, one per organization):
/// its monthly counters and the requests it holds in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
pub enum OrgRequest {
    /// May this request run under the monthly limits? Holds `tokens` and `cost` until
    /// `Settle`, or for `lease_ms`; a hold that expires counts as what it held.
    /// `org_id` names the organization (for its alerts: an object cannot read its own name).
    Reserve {
        request_id: String,
        limits: Limits,
        tokens: i64,
        cost: i64,
        lease_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        org_id: Option<String>,
        /// The version of the organization's row `limits` were read from (`OrgState::version`): an object that
        /// knows a newer state decides on that (refusing the request when it is no longer active).
        #[serde(default)]
        version: i64,
    },
    /// The organization changed (its status or limits): the object decides on this state from now on,
    /// unless it knows a newer one.
    Put { org_id: String, state: OrgState },
    /// Counts the request's actual tokens and cost in the month (once: a repeat changes nothing).
    /// `failed`: the request got no answer; its hold is released and nothing is counted.
    Settle {
        request_id: String,
        tokens: i64,
        cost: i64,
        #[serde(default)]
        failed: bool,
    },
    /// The organization's use this month, counting what is held.
    Usage,
}
crate::tag_first!(OrgRequest, "op");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
pub enum OrgResponse {
    Ok,
    Reserved,
    Refused {
        hit: OrgLimitHit,
        resets_at_ms: i64,
    },
    /// The organization is not active, as the object knows it (a change newer than the isolate's view).
    Suspended,
    Usage {
        used: MonthUse,
    },
    Error {
        message: String,
    },
}
crate::tag_first!(OrgResponse, "result");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_is_its_ask_under_the_op_tag() {
        let ask = Ask {
            request_id: "r1".into(),
            key_id: "k1".into(),
            hash: "h".into(),
            limit_micros: Some(150),
            limit_reset: Some(crate::domain::windows::Reset::Daily),
            worst_case: 90,
            min_to_run: 3,
            caps: crate::domain::ledger::InFlightCaps { per_key: Some(2), per_account: None },
            lease_ms: 120_000,
            lease: None,
            tokens: 500,
            rates: crate::domain::rates::RateLimits { rpm: Some(10), tpm: None },
            rate_default: Default::default(),
            end_user: Some("alice".into()),
            end_user_budget: None,
            key_version: Some(7),
            about: Some(crate::domain::account::About {
                model: "openai/gpt-4o".into(),
                org_id: None,
                user_id: "u-1".into(),
                started_ms: 1_700_000_000_000,
            }),
        };
        let json = serde_json::to_string(&AccountRequest::Reserve(ask.clone())).expect("serialize");
        assert!(json.starts_with(r#"{"op":"reserve","request_id":"r1""#), "{json}");
        assert_eq!(serde_json::from_str::<AccountRequest>(&json).expect("parse"), AccountRequest::Reserve(ask));
    }

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let req = AccountRequest::Settle {
            account_id: "u1".into(),
            settlements: vec![Settlement {
                request_id: "r1".into(),
                cost: 5,
                description: "m".into(),
                usage: None,
                on_lease: None,
            }],
            return_leases: Vec::new(),
        };
        let json = serde_json::to_string(&req).expect("serialize");
        assert_eq!(
            json,
            r#"{"op":"settle","account_id":"u1","settlements":[{"request_id":"r1","cost":5,"description":"m","usage":null}]}"#
        );
        assert_eq!(serde_json::from_str::<AccountRequest>(&json).expect("parse"), req);
        let resp = AccountResponse::Refused { reason: KeyRefusal::Superseded };
        let json = serde_json::to_string(&resp).expect("serialize");
        assert_eq!(json, r#"{"result":"refused","reason":"superseded"}"#);
        assert_eq!(serde_json::from_str::<AccountResponse>(&json).expect("parse"), resp);
    }
}
