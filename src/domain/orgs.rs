//! Organizations: status and monthly limits from the wire.

use serde::{Deserialize, Serialize};

use super::money::usd_to_micros;
use super::InvalidRequest;

/// Monthly limits as the API speaks them (`monthly_cost` in USD); absent or null = unlimited.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsInput {
    pub monthly_requests: Option<i64>,
    pub monthly_tokens: Option<i64>,
    pub monthly_cost: Option<f64>,
}

/// The same limits, validated, cost in micro-USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub monthly_requests: Option<i64>,
    pub monthly_tokens: Option<i64>,
    pub monthly_cost_micros: Option<i64>,
}

fn count(field: &str, v: Option<i64>) -> Result<Option<i64>, InvalidRequest> {
    match v {
        Some(n) if !(0..=super::money::MAX_SAFE).contains(&n) => Err(InvalidRequest::param(
            format!("`limits.{field}` must be a whole number ≥ 0"),
            format!("limits.{field}"),
        )),
        other => Ok(other),
    }
}

impl LimitsInput {
    pub fn validate(&self) -> Result<Limits, InvalidRequest> {
        let cost = match self.monthly_cost {
            Some(usd) if usd < 0.0 => {
                return Err(InvalidRequest::param("`limits.monthly_cost` must not be negative", "limits.monthly_cost"))
            }
            Some(usd) => Some(usd_to_micros("limits.monthly_cost", usd)?),
            None => None,
        };
        Ok(Limits {
            monthly_requests: count("monthly_requests", self.monthly_requests)?,
            monthly_tokens: count("monthly_tokens", self.monthly_tokens)?,
            monthly_cost_micros: cost,
        })
    }
}

pub fn validate_status(s: &str) -> Result<String, InvalidRequest> {
    match s {
        "active" | "suspended" => Ok(s.to_string()),
        other => Err(InvalidRequest::param(format!("`status` is `{other}`; expected active or suspended"), "status")),
    }
}

/// An organization's use this month, counting requests still in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthUse {
    pub requests: i64,
    pub tokens: i64,
    pub cost: i64,
}

/// Which monthly limit a request would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgLimitHit {
    Requests,
    Tokens,
    Cost,
}

/// May one more request of at most `tokens` tokens and `cost` micro-USD run?
pub fn check_month(limits: &Limits, used: MonthUse, tokens: i64, cost: i64) -> Result<(), OrgLimitHit> {
    let over = |limit: Option<i64>, used: i64, more: i64| limit.is_some_and(|l| used + more > l);
    if over(limits.monthly_requests, used.requests, 1) {
        Err(OrgLimitHit::Requests)
    } else if over(limits.monthly_tokens, used.tokens, tokens) {
        Err(OrgLimitHit::Tokens)
    } else if over(limits.monthly_cost_micros, used.cost, cost) {
        Err(OrgLimitHit::Cost)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monthly_limits_count_what_is_in_flight() {
        let limits = Limits { monthly_requests: Some(10), monthly_tokens: Some(1000), monthly_cost_micros: Some(500) };
        let used = MonthUse { requests: 9, tokens: 900, cost: 400 };
        assert_eq!(check_month(&limits, used, 100, 100), Ok(()));
        assert_eq!(check_month(&limits, MonthUse { requests: 10, ..used }, 1, 1), Err(OrgLimitHit::Requests));
        assert_eq!(check_month(&limits, used, 101, 1), Err(OrgLimitHit::Tokens));
        assert_eq!(check_month(&limits, used, 1, 101), Err(OrgLimitHit::Cost));
        assert_eq!(check_month(&Limits::default(), MonthUse { requests: i64::MAX / 2, ..used }, 1, 1), Ok(()));
    }

    #[test]
    fn limits_validate_and_convert_cost() {
        let ok = LimitsInput { monthly_requests: Some(1000), monthly_tokens: None, monthly_cost: Some(25.5) };
        assert_eq!(
            ok.validate().expect("valid"),
            Limits { monthly_requests: Some(1000), monthly_tokens: None, monthly_cost_micros: Some(25_500_000) }
        );
        let bad = LimitsInput { monthly_requests: Some(-1), ..Default::default() };
        assert_eq!(bad.validate().expect_err("negative").param.as_deref(), Some("limits.monthly_requests"));
        let bad = LimitsInput { monthly_cost: Some(-0.5), ..Default::default() };
        assert!(bad.validate().is_err());
        assert!(validate_status("suspended").is_ok());
        assert!(validate_status("gone").is_err());
    }
}
