//! Upstream-key provisioning rules: limits in cents (as the original notes and
//! API.md have them), sent to OpenRouter in USD, with OpenRouter's reset periods.

use super::InvalidRequest;

/// Cents when `POST /api/admin/provision` names no limit ($10).
pub const DEFAULT_LIMIT_CENTS: i64 = 1_000;
/// The largest limit accepted ($1,000,000).
pub const MAX_LIMIT_CENTS: i64 = 100_000_000;

pub fn validate_limit_cents(cents: i64) -> Result<i64, InvalidRequest> {
    if (0..=MAX_LIMIT_CENTS).contains(&cents) {
        Ok(cents)
    } else {
        Err(InvalidRequest::param(format!("`limit` is in cents: an integer from 0 to {MAX_LIMIT_CENTS}"), "limit"))
    }
}

/// `daily`, `weekly` or `monthly`; `None` means the limit never resets.
pub fn validate_limit_reset(reset: Option<&str>) -> Result<Option<String>, InvalidRequest> {
    match reset {
        None => Ok(None),
        Some(r @ ("daily" | "weekly" | "monthly")) => Ok(Some(r.to_string())),
        Some(other) => Err(InvalidRequest::param(
            format!("`limit_reset` must be daily, weekly, monthly or null, not `{other}`"),
            "limit_reset",
        )),
    }
}

pub fn cents_to_usd(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// OpenRouter's USD limit back in whole cents.
pub fn usd_to_cents(usd: f64) -> i64 {
    // Within what D1 gives back as a JavaScript number, whatever OpenRouter says.
    ((usd * 100.0).round() as i64).clamp(0, super::money::MAX_SAFE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_whole_cents_within_bounds() {
        assert_eq!(validate_limit_cents(500), Ok(500));
        assert_eq!(validate_limit_cents(0), Ok(0));
        assert_eq!(validate_limit_cents(-1).unwrap_err().param.as_deref(), Some("limit"));
        assert!(validate_limit_cents(MAX_LIMIT_CENTS + 1).is_err());
        assert_eq!(cents_to_usd(1_050), 10.5);
        assert_eq!(usd_to_cents(10.5), 1_050);
        assert_eq!(usd_to_cents(0.07), 7);
        assert_eq!(usd_to_cents(1e300), super::super::money::MAX_SAFE);
        assert_eq!(usd_to_cents(-5.0), 0);
    }

    #[test]
    fn resets_are_openrouters_periods() {
        assert_eq!(validate_limit_reset(Some("monthly")), Ok(Some("monthly".into())));
        assert_eq!(validate_limit_reset(None), Ok(None));
        assert_eq!(validate_limit_reset(Some("yearly")).unwrap_err().param.as_deref(), Some("limit_reset"));
    }
}
