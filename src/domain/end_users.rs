//! End users: the people an application serves through one key, named by the
//! request (`X-Tollgate-End-User`, else `safety_identifier`, else `user`). A
//! key may give each of them a budget (an amount per window), and single end
//! users a budget of their own. The account's object counts each end user's
//! spend per day, as it does a key's, so a budget is held like a key limit:
//! spend in the window plus money held for the end user's requests in flight.
//! An end user's record is made by its first request, in the object's one
//! step, so concurrent first requests cannot pass the budget.

use std::collections::HashMap;

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

/// One end user of a key, as the object keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndUser {
    pub first_ms: i64,
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

/// Every key's end users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndUsers {
    keys: HashMap<String, HashMap<String, EndUser>>,
}

impl EndUsers {
    pub fn get(&self, key_id: &str, end_user: &str) -> Option<&EndUser> {
        self.keys.get(key_id)?.get(end_user)
    }

    /// The end user's record, made at `now` if it has none; `true` when it was made.
    pub fn see(&mut self, key_id: &str, end_user: &str, now: i64) -> bool {
        let users = self.keys.entry(key_id.to_string()).or_default();
        if users.contains_key(end_user) {
            return false;
        }
        users.insert(end_user.to_string(), EndUser { first_ms: now, ..EndUser::default() });
        true
    }

    /// A record as storage holds it.
    pub fn restore(&mut self, key_id: &str, end_user: &str, first_ms: i64, own_budget: Option<Option<Budget>>) {
        let users = self.keys.entry(key_id.to_string()).or_default();
        let user = users.entry(end_user.to_string()).or_default();
        (user.first_ms, user.own_budget) = (first_ms, own_budget);
    }

    pub fn record(&mut self, key_id: &str, end_user: &str, at_ms: i64, amount: i64) {
        let users = self.keys.entry(key_id.to_string()).or_default();
        users.entry(end_user.to_string()).or_insert_with(|| EndUser { first_ms: at_ms, ..EndUser::default() });
        if let Some(user) = users.get_mut(end_user) {
            user.spend.record(at_ms, amount);
        }
    }

    /// Gives the end user a budget of its own (`Some(None)`: none), or back the key's default (`None`).
    pub fn set_budget(&mut self, key_id: &str, end_user: &str, own_budget: Option<Option<Budget>>, now: i64) {
        self.see(key_id, end_user, now);
        if let Some(user) = self.keys.get_mut(key_id).and_then(|u| u.get_mut(end_user)) {
            user.own_budget = own_budget;
        }
    }

    /// Does any end user of the key have a budget of its own?
    pub fn any_own_budget(&self, key_id: &str) -> bool {
        self.keys.get(key_id).is_some_and(|u| u.values().any(|e| matches!(e.own_budget, Some(Some(_)))))
    }

    pub fn of_key(&self, key_id: &str) -> impl Iterator<Item = (&String, &EndUser)> {
        self.keys.get(key_id).into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_budget_replaces_the_default_and_none_means_unlimited() {
        let default = Some(Budget { limit_micros: 100, reset: Some(Reset::Daily) });
        let mut users = EndUsers::default();
        assert!(users.see("k", "alice", 5));
        assert!(!users.see("k", "alice", 6), "made once");
        assert_eq!(users.get("k", "alice").map(|u| (u.first_ms, u.budget(default))), Some((5, default)));
        users.set_budget("k", "alice", Some(None), 7);
        assert_eq!(users.get("k", "alice").and_then(|u| u.budget(default)), None);
        assert!(!users.any_own_budget("k"));
        let own = Some(Budget { limit_micros: 7, reset: None });
        users.set_budget("k", "bob", Some(own), 8);
        assert!(users.any_own_budget("k"));
        assert_eq!(users.get("k", "bob").and_then(|u| u.budget(default)), own);
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
