//! Money is integer micro-USD (`Micros`) inside; USD decimals on the wire.
//! Every amount stays inside JavaScript's safe integer range, because D1 and
//! Durable Object storage carry numbers as JS doubles.

use super::InvalidRequest;

/// Largest integer a JS number holds exactly (2^53 − 1).
pub const MAX_SAFE: i64 = 9_007_199_254_740_991;
pub const MICROS_PER_USD: i64 = 1_000_000;

/// Converts a USD amount from the wire to micro-USD, refusing more than 6 decimals of noise,
/// non-finite values and amounts outside the safe range.
pub fn usd_to_micros(field: &str, usd: f64) -> Result<i64, InvalidRequest> {
    let bad = |why: &str| InvalidRequest::param(format!("`{field}` {why}"), field);
    if !usd.is_finite() {
        return Err(bad("must be a finite number"));
    }
    let micros = (usd * MICROS_PER_USD as f64).round();
    if micros.abs() > MAX_SAFE as f64 {
        return Err(bad("is too large"));
    }
    Ok(micros as i64)
}

/// Micro-USD as a USD JSON number (exact to 6 decimals).
pub fn micros_to_usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_USD as f64
}

/// Micro-USD as USD in decimal, exactly (an f64 of USD is not, past about 2^53 / 10^6 dollars).
pub fn micros_to_decimal(micros: i64) -> String {
    decimal(micros, 6)
}

/// `value` / 10^`places` in decimal, exactly, without trailing zeros.
pub fn decimal(value: i64, places: usize) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let scale = 10u64.pow(places as u32);
    let (units, fraction) = (value.unsigned_abs() / scale, value.unsigned_abs() % scale);
    let fraction = format!("{fraction:0places$}");
    match fraction.trim_end_matches('0') {
        "" => format!("{sign}{units}"),
        digits => format!("{sign}{units}.{digits}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_in_decimal_are_exact() {
        assert_eq!(micros_to_decimal(MAX_SAFE), "9007199254.740991");
        assert_eq!(micros_to_decimal(-1_500_000), "-1.5");
        assert_eq!(micros_to_decimal(7), "0.000007");
        assert_eq!(micros_to_decimal(i64::MIN), "-9223372036854.775808");
    }

    #[test]
    fn converts_both_ways_exactly_at_six_decimals() {
        assert_eq!(usd_to_micros("amount", 10.0).expect("ok"), 10_000_000);
        assert_eq!(usd_to_micros("amount", 0.000001).expect("ok"), 1);
        assert_eq!(usd_to_micros("amount", 0.1 + 0.2).expect("ok"), 300_000);
        assert_eq!(usd_to_micros("amount", -2.5).expect("ok"), -2_500_000);
        assert_eq!(micros_to_usd(1_234_567), 1.234567);
        for m in [0, 1, 999_999, 123_456_789, MAX_SAFE / 1000] {
            assert_eq!(usd_to_micros("a", micros_to_usd(m)).expect("ok"), m);
        }
    }

    #[test]
    fn refuses_non_finite_and_huge_amounts() {
        assert!(usd_to_micros("limit", f64::NAN).is_err());
        assert!(usd_to_micros("limit", f64::INFINITY).is_err());
        assert_eq!(usd_to_micros("limit", 1e13).expect_err("too big").param.as_deref(), Some("limit"));
    }
}
