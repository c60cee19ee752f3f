//! End users: the people an application serves through one key, named by the
//! request (`X-Tollgate-End-User`, else `safety_identifier`, else `user`). A
//! key may give each of them a budget (an amount per window), and single end
//! users a budget of their own. The account's object counts each end user's
//! spend per day, as it does a key's, so a budget is held like a key limit:
//! spend in the window plus money held for the end user's requests in flight.
//! An end user's record is made by its first request, in the object's one
//! step, so concurrent first requests cannot pass the budget. Storage holds
//! every end user; memory those the object's messages name (`EndUsers`).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::money::usd_to_micros;
use super::spend::Spend;
use super::windows::Reset;
use super::InvalidRequest;

/// An amount per window (micro-USD; `reset` `None`: for all time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub limit_micros: i64,
    #[serde(default)]
    pub reset: Option<Reset>,
}

/// A budget as the API speaks it: `{limit: USD, limit_reset: daily|weekly|monthly|null}`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BudgetInput {
    pub limit: f64,
    #[serde(default)]
    pub limit_reset: Option<String>,
}

impl BudgetInput {
    pub fn validate(&self, field: &str) -> Result<Budget, InvalidRequest> {
        if !self.limit.is_finite() || self.limit < 0.0 {
            return Err(InvalidRequest::param(format!("`{field}.limit` must be a number ≥ 0 (USD)"), field));
        }
        let reset = match self.limit_reset.as_deref() {
            None => None,
            Some(s) => Some(Reset::parse(s).ok_or_else(|| {
                InvalidRequest::param(
                    format!("`{field}.limit_reset` is `{s}`; expected daily, weekly, monthly or null"),
                    format!("{field}.limit_reset"),
                )
            })?),
        };
        Ok(Budget { limit_micros: usd_to_micros(&format!("{field}.limit"), self.limit)?, reset })
    }
}

impl Budget {
    /// The budget as the API shows it.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "limit": super::money::micros_to_usd(self.limit_micros),
            "limit_reset": self.reset.map(Reset::as_str),
        })
    }
}

/// An end user's own budget, as messages carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
pub enum OwnBudget {
    /// The key's default binds it.
    KeyDefault,
    /// No budget at all.
    Unlimited,
    Own {
        budget: Budget,
    },
}
crate::tag_first!(OwnBudget, "kind");

impl OwnBudget {
    pub fn from_option(own: Option<Option<Budget>>) -> Self {
        match own {
            None => Self::KeyDefault,
            Some(None) => Self::Unlimited,
            Some(Some(budget)) => Self::Own { budget },
        }
    }

    pub fn into_option(self) -> Option<Option<Budget>> {
        match self {
            Self::KeyDefault => None,
            Self::Unlimited => Some(None),
            Self::Own { budget } => Some(Some(budget)),
        }
    }
}

/// One end user of a key, as the object keeps it in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndUser {
    pub spend: Spend,
    /// A budget of its own (`Some(None)`: none at all, whatever the key's default); `None`: the key's default.
    pub own_budget: Option<Option<Budget>>,
}

impl EndUser {
    /// The budget that binds it: its own, else the key's default.
    pub fn budget(&self, default: Option<Budget>) -> Option<Budget> {
        self.own_budget.unwrap_or(default)
    }
}

/// The end users in memory, brought from storage on demand: an application may serve millions through
/// one key, more than an object's memory holds, so memory keeps those the object's messages name (and
/// those with requests in flight), and forgets the rest when there are many (`forget_idle`). Storage
/// holds every end user and every charge, so one brought back is as it was. The object brings each end
/// user a message names before the book decides on it (`Book::needs_end_user`, `Book::bring_end_user`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndUsers {
    keys: HashMap<String, HashMap<String, EndUser>>,
    /// How many end users of each key have a budget of their own, in memory or not.
    own_budgets: HashMap<String, u64>,
}

impl EndUsers {
    pub fn get(&self, key_id: &str, end_user: &str) -> Option<&EndUser> {
        self.keys.get(key_id)?.get(end_user)
    }

    /// The end user as storage holds it, in memory from now on: its own budget, its spend in all, and its
    /// charges of the last `SPEND_DAYS` days as `(charged at, amount)` (what the rest of its spend was, was
    /// charged before them). An end user storage does not know has none of them.
    pub fn bring(
        &mut self,
        key_id: &str,
        end_user: &str,
        own_budget: Option<Option<Budget>>,
        spent_in_all: i64,
        recent: impl IntoIterator<Item = (i64, i64)>,
    ) {
        let mut user = EndUser { own_budget, ..EndUser::default() };
        let mut older = spent_in_all;
        for (at_ms, amount) in recent {
            user.spend.record(at_ms, amount);
            older -= amount;
        }
        if older != 0 {
            user.spend.record(0, older);
        }
        self.keys.entry(key_id.to_string()).or_default().insert(end_user.to_string(), user);
    }

    /// Counts a charge to the end user, when it is in memory (storage counts it either way).
    pub fn record(&mut self, key_id: &str, end_user: &str, at_ms: i64, amount: i64) {
        if let Some(user) = self.keys.get_mut(key_id).and_then(|u| u.get_mut(end_user)) {
            user.spend.record(at_ms, amount);
        }
    }

    /// Gives the end user a budget of its own (`Some(None)`: none), or back the key's default (`None`).
    /// The end user is in memory (brought first).
    pub fn set_budget(&mut self, key_id: &str, end_user: &str, own_budget: Option<Option<Budget>>) {
        let users = self.keys.entry(key_id.to_string()).or_default();
        let user = users.entry(end_user.to_string()).or_default();
        let (had, has) = (matches!(user.own_budget, Some(Some(_))), matches!(own_budget, Some(Some(_))));
        user.own_budget = own_budget;
        let count = self.own_budgets.entry(key_id.to_string()).or_default();
        match (had, has) {
            (false, true) => *count += 1,
            (true, false) => *count = count.saturating_sub(1),
            _ => {}
        }
        if *count == 0 {
            self.own_budgets.remove(key_id);
        }
    }

    /// How many end users of each key have a budget of their own, as storage counts them.
    pub fn with_own_budgets(mut self, counts: impl IntoIterator<Item = (String, u64)>) -> Self {
        self.own_budgets = counts.into_iter().filter(|(_, n)| *n > 0).collect();
        self
    }

    /// Does any end user of the key have a budget of its own?
    pub fn any_own_budget(&self, key_id: &str) -> bool {
        self.own_budgets.contains_key(key_id)
    }

    /// How many end users are in memory.
    pub fn in_memory(&self) -> usize {
        self.keys.values().map(HashMap::len).sum()
    }

    /// Forgets every end user in memory but those `busy` names as `(key id, end user)` (requests in flight).
    pub fn forget_idle(&mut self, busy: &HashSet<(&str, &str)>) {
        for (key_id, users) in self.keys.iter_mut() {
            users.retain(|end_user, _| busy.contains(&(key_id.as_str(), end_user.as_str())));
        }
        self.keys.retain(|_, users| !users.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_budget_replaces_the_default_and_none_means_unlimited() {
        let default = Some(Budget { limit_micros: 100, reset: Some(Reset::Daily) });
        let mut users = EndUsers::default();
        users.bring("k", "alice", None, 30, [(5, 30)]);
        assert_eq!(
            users.get("k", "alice").map(|u| (u.spend.in_window(None, 6), u.budget(default))),
            Some((30, default))
        );
        users.set_budget("k", "alice", Some(None));
        assert_eq!(users.get("k", "alice").and_then(|u| u.budget(default)), None);
        assert!(!users.any_own_budget("k"));
        let own = Some(Budget { limit_micros: 7, reset: None });
        users.set_budget("k", "bob", Some(own));
        assert!(users.any_own_budget("k"));
        assert_eq!(users.get("k", "bob").and_then(|u| u.budget(default)), own);
        users.set_budget("k", "bob", Some(own));
        users.set_budget("k", "bob", None);
        assert!(!users.any_own_budget("k"), "counted once, and uncounted");
    }

    #[test]
    fn one_brought_counts_its_spend_in_all_and_its_recent_days() {
        const DAY: i64 = 86_400_000;
        let now = 20_010 * DAY + 5; // 2024-10-14: ten days before is in its month
        let mut users = EndUsers::default();
        // 100 in all: 30 today, 20 ten days ago, the rest long before.
        users.bring("k", "alice", None, 100, [(now - 10 * DAY, 20), (now, 30)]);
        let spend = &users.get("k", "alice").expect("brought").spend;
        assert_eq!(spend.in_window(None, now), 100);
        assert_eq!(spend.in_window(Some(Reset::Daily), now), 30);
        assert_eq!(spend.in_window(Some(Reset::Monthly), now), 50);
        users.bring("k", "bob", None, 7, []);
        let spend = &users.get("k", "bob").expect("brought").spend;
        assert_eq!((spend.in_window(None, now), spend.in_window(Some(Reset::Monthly), now)), (7, 0));
    }

    #[test]
    fn memory_forgets_the_idle_and_counts_own_budgets_it_does_not_hold() {
        let mut users = EndUsers::default().with_own_budgets([("k".to_string(), 2), ("quiet".to_string(), 0)]);
        assert!(users.any_own_budget("k") && !users.any_own_budget("quiet"));
        users.bring("k", "alice", None, 0, []);
        users.bring("k", "bob", None, 4, [(1, 4)]);
        users.record("k", "carol", 2, 9);
        assert!(users.get("k", "carol").is_none(), "a charge to one not in memory is storage's alone");
        users.forget_idle(&HashSet::from([("k", "bob")]));
        assert_eq!(users.in_memory(), 1);
        assert_eq!(users.get("k", "bob").map(|u| u.spend.in_window(None, 3)), Some(4));
        assert!(users.any_own_budget("k"), "forgetting keeps the count");
    }

    #[test]
    fn budgets_from_the_wire_are_checked() {
        let input = |limit: f64, reset: Option<&str>| BudgetInput { limit, limit_reset: reset.map(String::from) };
        assert_eq!(
            input(1.5, Some("monthly")).validate("end_user_budget"),
            Ok(Budget { limit_micros: 1_500_000, reset: Some(Reset::Monthly) })
        );
        assert!(input(-1.0, None).validate("end_user_budget").is_err());
        assert!(input(f64::NAN, None).validate("end_user_budget").is_err());
        let e = input(1.0, Some("hourly")).validate("end_user_budget").expect_err("unknown window");
        assert_eq!(e.param.as_deref(), Some("end_user_budget.limit_reset"));
    }
}
