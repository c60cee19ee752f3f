//! Money rules of one account, applied by its Durable Object one request at
//! a time: reserve the worst case before forwarding, settle to the actual
//! cost after, never charge more than was reserved.

use serde::{Deserialize, Serialize};

/// How the description of a charge closed by the rule (not by its settlement) begins: the account object
/// writes it, and readers recognise such rows by it (retention's restore here; in SQL, `LIKE` on the same
/// words: D1's running count, migrations/0013, and the object's store).
pub const CLOSED_WITHOUT_SETTLEMENT: &str = "closed without settlement";

/// Which limit refused a request (API.md's `metadata.limit_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    Balance,
    KeyLimit,
    OrgLimit,
    EndUserLimit,
}

/// What can be spent now under each limit (micro-USD); `None` = no such limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    pub balance: i64,
    pub key: Option<i64>,
    /// What the end user's budget leaves.
    pub end_user: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
pub enum Reservation {
    /// The worst case is covered.
    Full {
        amount: i64,
    },
    /// Only `amount` is covered: the request runs with its output capped to fit `source`.
    Partial {
        amount: i64,
        source: LimitSource,
    },
    Refused {
        source: LimitSource,
    },
}
crate::tag_first!(Reservation, "decision");

/// `worst_case`: the most the request can cost; `min_to_run`: the prompt plus one output token.
pub fn reserve(headroom: Headroom, worst_case: i64, min_to_run: i64) -> Reservation {
    // The tightest limit binds (the balance on a tie).
    let limits = [(headroom.key, LimitSource::KeyLimit), (headroom.end_user, LimitSource::EndUserLimit)];
    let (cap, source) = limits.into_iter().filter_map(|(cap, source)| Some((cap?, source))).fold(
        (headroom.balance, LimitSource::Balance),
        |tightest, (cap, source)| {
            if cap < tightest.0 {
                (cap, source)
            } else {
                tightest
            }
        },
    );
    if cap >= worst_case {
        Reservation::Full { amount: worst_case.max(0) }
    } else if cap >= min_to_run && cap > 0 {
        Reservation::Partial { amount: cap, source }
    } else {
        Reservation::Refused { source }
    }
}

/// Concurrency caps: how many requests may be in flight at once (`None` = no cap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightCaps {
    pub per_key: Option<u32>,
    pub per_account: Option<u32>,
}

/// Which cap one more request would break, given the counts in flight now.
pub fn in_flight_exceeded(caps: InFlightCaps, key_in_flight: u32, account_in_flight: u32) -> Option<&'static str> {
    if caps.per_key.is_some_and(|cap| key_in_flight >= cap) {
        Some("key")
    } else if caps.per_account.is_some_and(|cap| account_in_flight >= cap) {
        Some("account")
    } else {
        None
    }
}

/// What a settled request is charged: its cost, but never more than its reservation, never negative.
pub fn charge(cost: i64, reserved: i64) -> i64 {
    cost.clamp(0, reserved.max(0))
}

/// Tokens delivered on a stream that ended without a usage report, estimated
/// from the bytes of content sent (about four bytes a token, at least one
/// token when anything was sent).
pub fn estimate_tokens(bytes: u64) -> u64 {
    if bytes == 0 {
        0
    } else {
        bytes.div_ceil(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_the_worst_case_when_covered() {
        assert_eq!(
            reserve(Headroom { balance: 100, key: None, end_user: None }, 100, 10),
            Reservation::Full { amount: 100 }
        );
        assert_eq!(
            reserve(Headroom { balance: 500, key: Some(100), end_user: None }, 100, 10),
            Reservation::Full { amount: 100 }
        );
    }

    #[test]
    fn clamps_to_what_the_tightest_limit_allows() {
        assert_eq!(
            reserve(Headroom { balance: 50, key: None, end_user: None }, 100, 10),
            Reservation::Partial { amount: 50, source: LimitSource::Balance }
        );
        assert_eq!(
            reserve(Headroom { balance: 500, key: Some(30), end_user: None }, 100, 10),
            Reservation::Partial { amount: 30, source: LimitSource::KeyLimit }
        );
        assert_eq!(
            reserve(Headroom { balance: 500, key: Some(30), end_user: Some(20) }, 100, 10),
            Reservation::Partial { amount: 20, source: LimitSource::EndUserLimit }
        );
        assert_eq!(
            reserve(Headroom { balance: 500, key: Some(30), end_user: Some(5) }, 100, 10),
            Reservation::Refused { source: LimitSource::EndUserLimit }
        );
    }

    #[test]
    fn refuses_naming_the_limit_that_tripped() {
        assert_eq!(
            reserve(Headroom { balance: 5, key: None, end_user: None }, 100, 10),
            Reservation::Refused { source: LimitSource::Balance }
        );
        assert_eq!(
            reserve(Headroom { balance: 500, key: Some(5), end_user: None }, 100, 10),
            Reservation::Refused { source: LimitSource::KeyLimit }
        );
        assert_eq!(
            reserve(Headroom { balance: 0, key: None, end_user: None }, 0, 0),
            Reservation::Full { amount: 0 },
            "free models run"
        );
        assert_eq!(
            reserve(Headroom { balance: -3, key: None, end_user: None }, 10, 1),
            Reservation::Refused { source: LimitSource::Balance }
        );
    }

    #[test]
    fn in_flight_caps() {
        let caps = InFlightCaps { per_key: Some(2), per_account: Some(3) };
        assert_eq!(in_flight_exceeded(caps, 1, 1), None);
        assert_eq!(in_flight_exceeded(caps, 2, 2), Some("key"));
        assert_eq!(in_flight_exceeded(caps, 1, 3), Some("account"));
        assert_eq!(in_flight_exceeded(InFlightCaps::default(), 1000, 1000), None);
    }

    #[test]
    fn charges_never_exceed_the_reservation() {
        assert_eq!(charge(40, 100), 40);
        assert_eq!(charge(140, 100), 100);
        assert_eq!(charge(-5, 100), 0);
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(1), 1);
        assert_eq!(estimate_tokens(9), 3);
    }
}
