//! Organizations: status and monthly limits from the wire.

use serde::Deserialize;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
