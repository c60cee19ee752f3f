//! Alerts: soft limits an operator is told about when spend crosses them — a
//! share of a key's limit or of an end user's budget (50 %, 80 %, 100 % by
//! default), or the balance falling below an amount. Decided in the account's
//! object as a charge is written, so each crossing is found once; its id names
//! the crossing (the window it happened in), so the same crossing is never
//! sent twice. Delivery (signed webhooks through the `ALERTS` queue) is that
//! queue's consumer, `webhooks::consume`.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::money::micros_to_usd;
use super::orgs::{Limits, MonthUse};
use super::time::to_iso;

/// What to alert on (the tenant's `ALERT_THRESHOLDS` and `ALERT_BALANCE_BELOW`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRules {
    /// Shares of a limit, in percent, ascending.
    pub percents: Vec<u32>,
    /// Micro-USD.
    pub balance_below: Option<i64>,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self { percents: vec![50, 80, 100], balance_below: None }
    }
}

impl AlertRules {
    /// `"50,80,100"`: whole percents from 1 to 1000; anything unreadable is left out.
    pub fn parse_percents(text: &str) -> Vec<u32> {
        let mut percents: Vec<u32> =
            text.split(',').filter_map(|p| p.trim().parse().ok()).filter(|p| (1..=1000).contains(p)).collect();
        percents.sort_unstable();
        percents.dedup();
        percents
    }
}

/// The shares of `limit` that spend going from `before` to `after` crossed (reached, having been below).
pub fn percents_crossed(before: i64, after: i64, limit: i64, percents: &[u32]) -> Vec<u32> {
    if limit <= 0 || after <= before {
        return Vec::new();
    }
    let reached = |spent: i64, p: u32| i128::from(spent) * 100 >= i128::from(limit) * i128::from(p);
    percents.iter().copied().filter(|p| !reached(before, *p) && reached(after, *p)).collect()
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
pub enum Subject {
    /// A key's spend reached a share of its limit in the window starting `window_start_ms`.
    KeyLimit { key_id: String, percent: u32, limit: i64, window_start_ms: i64, resets_at_ms: Option<i64> },
    /// An end user's spend reached a share of its budget.
    EndUserBudget {
        key_id: String,
        end_user: String,
        percent: u32,
        limit: i64,
        window_start_ms: i64,
        resets_at_ms: Option<i64>,
    },
    /// The balance fell below `threshold` with the charge of `request_id`.
    BalanceBelow { threshold: i64, request_id: String },
    /// An organization's use this month reached a share of one of its monthly limits.
    OrgLimit { org_id: String, limit_kind: OrgLimitKind, percent: u32, limit: i64, month_start_ms: i64 },
}
crate::tag_first!(Subject, "type");

/// Which monthly limit of an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgLimitKind {
    Cost,
    Requests,
    Tokens,
}

impl OrgLimitKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Cost => "cost",
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// The shares of an organization's monthly limits that its use going from `before` to `after` crossed.
pub fn org_alerts(
    org_id: &str,
    (before, after): (MonthUse, MonthUse),
    limits: &Limits,
    rules: &AlertRules,
    month_start_ms: i64,
    now: i64,
) -> Vec<Alert> {
    let kinds = [
        (OrgLimitKind::Cost, limits.monthly_cost_micros, before.cost, after.cost),
        (OrgLimitKind::Requests, limits.monthly_requests, before.requests, after.requests),
        (OrgLimitKind::Tokens, limits.monthly_tokens, before.tokens, after.tokens),
    ];
    let mut alerts = Vec::new();
    for (limit_kind, limit, before, after) in kinds {
        let Some(limit) = limit else { continue };
        for percent in percents_crossed(before, after, limit, &rules.percents) {
            let subject = Subject::OrgLimit { org_id: org_id.to_string(), limit_kind, percent, limit, month_start_ms };
            alerts.push(Alert { subject, account_id: String::new(), value: after, at_ms: now });
        }
    }
    alerts
}

/// One crossing, as the object records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub subject: Subject,
    pub account_id: String,
    /// Spend in the window (or the balance, for `BalanceBelow`) after the charge, micro-USD.
    pub value: i64,
    pub at_ms: i64,
}

impl Alert {
    /// Names the crossing: the same crossing always has the same id. The limit is part of it: a limit
    /// changed within its window is crossed anew (with the old one's id, the crossing was taken as sent).
    pub fn id(&self) -> String {
        match &self.subject {
            Subject::KeyLimit { key_id, percent, window_start_ms, limit, .. } => {
                format!("alert-key-{key_id}-{window_start_ms}-{limit}-{percent}")
            }
            Subject::EndUserBudget { key_id, end_user, percent, window_start_ms, limit, .. } => {
                // The end user is free text: its digest keeps the id short and plain.
                let digest = &super::keys::hash(end_user)[..16];
                format!("alert-enduser-{key_id}-{digest}-{window_start_ms}-{limit}-{percent}")
            }
            Subject::BalanceBelow { threshold, request_id } => {
                format!("alert-balance-{}-{threshold}-{request_id}", self.account_id)
            }
            Subject::OrgLimit { org_id, limit_kind, percent, month_start_ms, limit } => {
                format!("alert-org-{org_id}-{}-{month_start_ms}-{limit}-{percent}", limit_kind.as_str())
            }
        }
    }

    /// The webhook's body.
    pub fn payload(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "id": self.id(), "created_at": to_iso(self.at_ms) });
        if !self.account_id.is_empty() {
            body["account_id"] = self.account_id.clone().into();
        }
        let fields = match &self.subject {
            Subject::KeyLimit { key_id, percent, limit, resets_at_ms, .. } => serde_json::json!({
                "type": "key_limit.threshold", "key_id": key_id, "threshold_percent": percent,
                "usage": micros_to_usd(self.value), "limit": micros_to_usd(*limit), "resets_at": resets_at_ms.map(to_iso),
            }),
            Subject::EndUserBudget { key_id, end_user, percent, limit, resets_at_ms, .. } => serde_json::json!({
                "type": "end_user_budget.threshold", "key_id": key_id, "end_user": end_user,
                "threshold_percent": percent, "usage": micros_to_usd(self.value), "limit": micros_to_usd(*limit),
                "resets_at": resets_at_ms.map(to_iso),
            }),
            Subject::BalanceBelow { threshold, request_id } => serde_json::json!({
                "type": "balance.below", "threshold": micros_to_usd(*threshold),
                "balance": micros_to_usd(self.value), "request_id": request_id,
            }),
            Subject::OrgLimit { org_id, limit_kind, percent, limit, month_start_ms } => {
                let money = |v: i64| {
                    if *limit_kind == OrgLimitKind::Cost {
                        micros_to_usd(v).into()
                    } else {
                        serde_json::Value::from(v)
                    }
                };
                serde_json::json!({
                    "type": "org_limit.threshold", "org_id": org_id, "limit_kind": limit_kind.as_str(),
                    "threshold_percent": percent, "usage": money(self.value), "limit": money(*limit),
                    "month_start": to_iso(*month_start_ms),
                    "resets_at": to_iso(super::windows::Reset::Monthly.window_end(*month_start_ms)),
                })
            }
        };
        if let (Some(body), serde_json::Value::Object(fields)) = (body.as_object_mut(), fields) {
            body.extend(fields);
        }
        body
    }
}

/// The webhook's signature: `v1=` and the hex HMAC-SHA256, under the tenant's secret, of
/// `"{timestamp}.{body}"` (the `x-tollgate-timestamp` header, a dot, the raw body).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Seconds before delivery attempt `attempt + 1` (after `attempt` failures): doubling from `base`, at most an hour.
pub fn backoff_secs(base: u32, attempt: u32) -> u32 {
    base.max(1).saturating_mul(1u32 << attempt.saturating_sub(1).min(12)).min(3_600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_crossed_once_when_spend_reaches_it() {
        let p = [50, 80, 100];
        assert_eq!(percents_crossed(0, 79, 100, &p), vec![50]);
        assert_eq!(percents_crossed(79, 80, 100, &p), vec![80]);
        assert_eq!(percents_crossed(80, 95, 100, &p), Vec::<u32>::new(), "80 % was reached before");
        assert_eq!(percents_crossed(10, 150, 100, &p), vec![50, 80, 100], "one charge can cross several");
        assert_eq!(percents_crossed(10, 150, 0, &p), Vec::<u32>::new(), "no limit, no share");
        assert_eq!(percents_crossed(i64::MAX - 1, i64::MAX, 3, &p), Vec::<u32>::new(), "no overflow");
    }

    #[test]
    fn thresholds_from_the_environment_are_read_leniently() {
        assert_eq!(AlertRules::parse_percents(" 80, 50,abc,100,0,5000,80"), vec![50, 80, 100]);
    }

    #[test]
    fn the_signature_follows_the_documented_recipe() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn the_same_crossing_has_the_same_id() {
        let crossing = |percent, limit| Alert {
            subject: Subject::KeyLimit { key_id: "k1".into(), percent, limit, window_start_ms: 5, resets_at_ms: None },
            account_id: "u1".into(),
            value: 80,
            at_ms: 9,
        };
        let alert = |percent| crossing(percent, 100);
        assert_eq!(alert(80).id(), alert(80).id());
        assert_ne!(alert(80).id(), alert(100).id());
        assert_ne!(alert(80).id(), crossing(80, 200).id(), "a limit raised in its window is crossed anew");
        assert_eq!(alert(80).payload()["type"], "key_limit.threshold");
        assert_eq!(backoff_secs(2, 1), 2);
        assert_eq!(backoff_secs(2, 3), 8);
        assert_eq!(backoff_secs(2, 40), 3_600);
    }

    #[test]
    fn an_organization_is_told_of_each_monthly_limit_it_nears() {
        let limits = Limits { monthly_requests: Some(10), monthly_tokens: None, monthly_cost_micros: Some(1_000) };
        let rules = AlertRules::default();
        let before = MonthUse { requests: 7, tokens: 50, cost: 400 };
        let after = MonthUse { requests: 8, tokens: 90, cost: 850 };
        let alerts = org_alerts("o1", (before, after), &limits, &rules, 0, 5);
        let found: Vec<String> = alerts.iter().map(Alert::id).collect();
        assert_eq!(
            found,
            ["alert-org-o1-cost-0-1000-50", "alert-org-o1-cost-0-1000-80", "alert-org-o1-requests-0-10-80"]
        );
        assert_eq!(alerts[0].payload()["usage"], 0.00085);
        assert_eq!(alerts[2].payload()["usage"], 8);
        assert!(alerts[0].payload().get("account_id").is_none());
    }
}
