//! Messages between the Worker and an account's Durable Object.

use serde::{Deserialize, Serialize};

use crate::domain::keys::{KeyRefusal, KeyState};
use crate::domain::ledger::{InFlightCaps, Reservation};
use crate::domain::orgs::{Limits, MonthUse, OrgLimitHit};
use crate::domain::usage::UsageRecord;
use crate::domain::windows::Reset;

/// The header that carries a message (JSON) to the object and its answer back.
pub const MESSAGE_HEADER: &str = "x-tollgate-message";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AccountRequest {
    /// Records a key's authoritative state (after every change to the key).
    PutKey { state: KeyState },
    /// Checks the presented secret against the key's state, then reserves up to `worst_case` micro-USD.
    /// `limit_*` are the gateway's view of the key's limit, used when the object
    /// has no state for the key.
    Reserve {
        request_id: String,
        key_id: String,
        hash: String,
        limit_micros: Option<i64>,
        limit_reset: Option<Reset>,
        worst_case: i64,
        min_to_run: i64,
        #[serde(default)]
        caps: InFlightCaps,
        /// The account (for its ledger rows) and settlements of earlier requests to apply first:
        /// one round trip settles the last request and reserves the next.
        account_id: String,
        #[serde(default)]
        settle_first: Vec<Settlement>,
    },
    /// Turns reservations into their actual costs (each capped at its reservation).
    Settle { account_id: String, settlements: Vec<Settlement> },
    /// Adds money (recharge, refund, adjustment — the last may be negative).
    Credit {
        account_id: String,
        amount: i64,
        kind: String,
        description: Option<String>,
        idempotency_key: Option<String>,
    },
    /// Balance and totals; with `key_id`, that key's spend per window.
    Summary { key_id: Option<String> },
    /// Ledger rows, newest first.
    Transactions { page: u32, page_size: u32 },
    /// An organization's object: may this request run under the monthly limits?
    /// Holds `tokens` and `cost` in flight until `OrgSettle`.
    OrgReserve { request_id: String, limits: Limits, tokens: i64, cost: i64 },
    /// Counts the request's actual tokens and cost in the month.
    OrgSettle { request_id: String, tokens: i64, cost: i64 },
    /// The organization's use this month.
    OrgUsage,
    /// Copies the ledger's unsynced rows to D1 now (reconciliation asks first).
    Flush,
    /// Liveness probe for `/health?deep=1`.
    Ping,
}

/// The actual cost of one reserved request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub request_id: String,
    pub cost: i64,
    pub description: String,
    /// The reservation as the Worker remembers it: charged against when the
    /// object no longer holds it (it restarted, or the reservation expired).
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub reserved: i64,
    /// The request's usage record; the object fills in the charge and copies it to D1.
    #[serde(default)]
    pub usage: Option<UsageRecord>,
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
#[serde(tag = "result", rename_all = "snake_case")]
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
    },
    Settled {
        charged: i64,
        balance: i64,
    },
    Credited {
        transaction_id: String,
        balance: i64,
    },
    Summary {
        balance: i64,
        reserved: i64,
        total_credits: i64,
        total_usage: i64,
        key: Option<KeyUsage>,
    },
    Transactions {
        rows: Vec<LedgerEntry>,
        total: i64,
    },
    /// Too many requests of this key or account are in flight.
    TooManyInFlight {
        scope: String,
    },
    OrgReserved,
    OrgRefused {
        hit: OrgLimitHit,
        resets_at_ms: i64,
    },
    OrgUsage {
        used: MonthUse,
    },
    Error {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let req = AccountRequest::Settle {
            account_id: "u1".into(),
            settlements: vec![Settlement {
                request_id: "r1".into(),
                cost: 5,
                description: "m".into(),
                key_id: Some("k1".into()),
                reserved: 9,
                usage: None,
            }],
        };
        let json = serde_json::to_string(&req).expect("serialize");
        assert_eq!(
            json,
            r#"{"op":"settle","account_id":"u1","settlements":[{"request_id":"r1","cost":5,"description":"m","key_id":"k1","reserved":9,"usage":null}]}"#
        );
        assert_eq!(serde_json::from_str::<AccountRequest>(&json).expect("parse"), req);
        let resp = AccountResponse::Refused { reason: KeyRefusal::Superseded };
        let json = serde_json::to_string(&resp).expect("serialize");
        assert_eq!(json, r#"{"result":"refused","reason":"superseded"}"#);
        assert_eq!(serde_json::from_str::<AccountResponse>(&json).expect("parse"), resp);
    }
}
