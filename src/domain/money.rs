//! Money is integer micro-USD (`Micros`) inside; USD decimals on the wire.
//! Every amount stays inside JavaScript's safe integer range, because D1 and
//! Durable Object storage carry numbers as JS doubles.

use super::InvalidRequest;

/// Largest integer a JS number holds exactly (2^53 − 1).
pub const MAX_SAFE: i64 = 9_007_199_254_740_991;
pub const MICROS_PER_USD: i64 = 1_000_000;

/// Converts a USD amount a caller sent to micro-USD, refusing non-finite values, amounts outside the safe
/// range and more than 6 decimals (a fraction of a micro-USD would be rounded away without a word: a key
/// `limit` of 0.0000004 would become a limit of nothing). Float noise (0.1 + 0.2) is not a decimal.
pub fn usd_to_micros(field: &str, usd: f64) -> Result<i64, InvalidRequest> {
    let bad = |why: &str| InvalidRequest::param(format!("`{field}` {why}"), field);
    let micros = usd_in_micros(usd).ok_or_else(|| bad("must be a finite number of USD within ±9,007,199,254"))?;
    let scaled = usd * MICROS_PER_USD as f64;
    // What a double cannot tell apart at this size is noise too (a few units in its last place).
    if (scaled - micros as f64).abs() > 1e-3_f64.max(scaled.abs() * 4.0 * f64::EPSILON) {
        return Err(bad("has more than 6 decimals (the smallest amount is 0.000001 USD)"));
    }
    Ok(micros)
}

/// Micro-USD nearest a USD amount that may carry more than 6 decimals (an upstream's cost, a setting), or
/// none when it is not a finite amount within the safe range.
pub fn nearest_micros(usd: f64) -> Option<i64> {
    usd_in_micros(usd)
}

fn usd_in_micros(usd: f64) -> Option<i64> {
    let micros = (usd * MICROS_PER_USD as f64).round();
    (micros.is_finite() && micros.abs() <= MAX_SAFE as f64).then_some(micros as i64)
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
    use proptest::prelude::*;

    const EXACT_USD_BOUND: i64 = 1_000_000_000 * MICROS_PER_USD;

    proptest! {
        /// Every amount the gateway shows (micro-USD as a USD number) is taken back as itself, up to a
        /// billion USD (past it a double holds fewer than 6 decimals; `micros_to_decimal` is exact there).
        #[test]
        fn every_amount_shown_is_read_back_exactly(micros in -EXACT_USD_BOUND..=EXACT_USD_BOUND) {
            prop_assert_eq!(usd_to_micros("amount", micros_to_usd(micros)).expect("shown amounts are exact"), micros);
        }
    }

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

    #[test]
    fn refuses_fractions_of_a_micro_usd_but_rounds_what_upstreams_report() {
        for usd in [1.0000004, 0.0000004, 0.0000015, -2.0000001] {
            let refused = usd_to_micros("limit", usd).expect_err("more than 6 decimals");
            assert_eq!(refused.param.as_deref(), Some("limit"));
            assert!(refused.message.contains("6 decimals"), "{}", refused.message);
        }
        assert_eq!(usd_to_micros("amount", 123_456.789012).expect("ok"), 123_456_789_012);
        for huge in [MAX_SAFE - 1, 1 - MAX_SAFE, MAX_SAFE - 12_345] {
            let read = usd_to_micros("amount", micros_to_usd(huge)).expect("no decimal a double can hold is refused");
            assert!((read - huge).abs() <= 2, "{huge} read as {read}");
        }
        assert_eq!(nearest_micros(0.0000123456), Some(12));
        assert_eq!(nearest_micros(0.0000004), Some(0));
        assert_eq!(nearest_micros(f64::NAN), None);
        assert_eq!(nearest_micros(1e13), None);
    }
}
