//! Charges counted per UTC day, so any limit window (daily, weekly, monthly,
//! lifetime) is counted the same way when money is held and when it is charged.

use std::collections::BTreeMap;

use super::windows::Reset;

const DAY_MS: i64 = 86_400_000;
/// Days of per-day spend kept in memory (a monthly window is at most 31).
pub const SPEND_DAYS: i64 = 32;

/// One spender's charges (a key's, an end user's): in all, and per UTC day for the last `SPEND_DAYS` days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spend {
    total: i64,
    days: BTreeMap<i64, i64>,
}

impl Spend {
    pub fn record(&mut self, at_ms: i64, amount: i64) {
        self.total += amount;
        let day = at_ms.div_euclid(DAY_MS);
        *self.days.entry(day).or_default() += amount;
        let newest = *self.days.keys().next_back().unwrap_or(&day);
        self.days.retain(|d, _| *d > newest - SPEND_DAYS);
    }

    /// What was charged in the window of the given kind containing `now` (`None`: all time).
    pub fn in_window(&self, reset: Option<Reset>, now: i64) -> i64 {
        match reset {
            None => self.total,
            Some(r) => {
                let first = r.window_start(now).div_euclid(DAY_MS);
                self.days.range(first..).map(|(_, v)| v).sum()
            }
        }
    }
}
