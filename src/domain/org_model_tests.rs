//! Property test of the organization model: random interleavings of reserve,
//! settle (for at most what was held, or failed), time passing (leases end,
//! months turn) and "restart" (the book rebuilt from what storage holds).
//! After every step, no month's counts plus holds pass a limit, and storage
//! holds the whole book.

use std::collections::HashMap;

use proptest::prelude::*;

use super::orgs::{Limits, MonthChange, MonthUse, OrgBook, OrgHold};

const START: i64 = 1_767_225_600_000; // 2026-01-01
const LEASE: i64 = 120_000;

#[derive(Debug, Clone)]
enum Op {
    Reserve {
        tokens: i64,
        cost: i64,
    },
    /// Settles an earlier request for `percent` of what it held (or as failed).
    Settle {
        req: u8,
        percent: i64,
        failed: bool,
    },
    Advance {
        ms: i64,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0i64..400, 0i64..300).prop_map(|(tokens, cost)| Op::Reserve { tokens, cost }),
        // Up to three times what was held: an upstream past the output cap, a usage report counting more.
        4 => (any::<u8>(), prop_oneof![3 => 0i64..=100, 1 => 100i64..=300], proptest::bool::weighted(0.2))
            .prop_map(|(req, percent, failed)| Op::Settle { req, percent, failed }),
        2 => prop_oneof![0i64..LEASE * 2, 0i64..40 * 86_400_000].prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Restart),
    ]
}

#[derive(Default)]
struct Store {
    months: HashMap<i64, MonthUse>,
    holds: HashMap<String, OrgHold>,
}

impl Store {
    fn apply(&mut self, c: &MonthChange) {
        let used = self.months.entry(c.month).or_default();
        used.requests += c.requests;
        used.tokens += c.tokens;
        used.cost += c.cost;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn no_month_passes_a_limit(
        requests in 1i64..12, tokens in 100i64..2_000, cost in 50i64..1_500,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let limits = Limits { monthly_requests: Some(requests), monthly_tokens: Some(tokens), monthly_cost_micros: Some(cost) };
        let (mut org, mut store, mut now) = (OrgBook::default(), Store::default(), START);
        let mut issued: Vec<String> = Vec::new();
        for op in &ops {
            let (counted, forgotten) = org.expire(now);
            for (id, change) in &counted {
                store.apply(change);
                if let Some(h) = store.holds.get_mut(id) {
                    h.counted = true;
                }
            }
            for id in &forgotten {
                store.holds.remove(id);
            }
            match *op {
                Op::Reserve { tokens, cost } => {
                    let id = format!("r{}", issued.len());
                    issued.push(id.clone());
                    if let Ok(Some(hold)) = org.reserve(&id, &limits, tokens, cost, LEASE, now) {
                        store.holds.insert(id, hold);
                    }
                }
                Op::Settle { req, percent, failed } => {
                    if issued.is_empty() {
                        continue;
                    }
                    let id = issued[usize::from(req) % issued.len()].clone();
                    let Some(hold) = org.hold(&id).cloned() else { continue };
                    let (t, c) = (hold.tokens * percent / 100, hold.cost * percent / 100);
                    let change = org.settle(&id, t, c, failed).expect("held");
                    prop_assert_eq!(change.month, hold.month, "counted in the month it was reserved in");
                    store.apply(&change);
                    store.holds.remove(&id);
                }
                Op::Advance { ms } => now += ms,
                Op::Restart => {
                    let restored = OrgBook::restore(
                        store.months.iter().map(|(m, u)| (*m, *u)),
                        store.holds.iter().map(|(id, h)| (id.clone(), h.clone())),
                    );
                    let mut expected = org.clone();
                    // Months with no counts are not stored.
                    expected = OrgBook::restore(
                        expected.months().filter(|(m, _)| store.months.contains_key(m)).map(|(m, u)| (*m, *u)),
                        expected.holds().map(|(id, h)| (id.clone(), h.clone())),
                    );
                    prop_assert_eq!(&restored, &expected, "storage holds the whole book");
                    org = restored;
                }
            }
            let months: Vec<i64> = org.months().map(|(m, _)| *m).chain(org.holds().map(|(_, h)| h.month)).collect();
            for month in months {
                let used = org.usage(month);
                prop_assert!(used.requests <= requests && used.tokens <= tokens && used.cost <= cost,
                    "month {}: {:?} against {:?}", month, used, limits);
                prop_assert!(used.requests >= 0 && used.tokens >= 0 && used.cost >= 0);
            }
        }
    }
}
