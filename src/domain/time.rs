//! UTC time as milliseconds since the Unix epoch, and its ISO-8601 text form.
//! Callers pass `now` in; nothing here reads a clock.

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

const MS_PER_DAY: i64 = 86_400_000;

/// Days since the epoch for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month 1-12, day 1-31) for days since the epoch.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// `2026-11-24T09:05:03.120Z`
pub fn to_iso(ms: Millis) -> String {
    let (days, rem) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// 9999-12-31T23:59:59.999Z: the last instant `to_iso` writes in four digits of year.
const LAST_MS: Millis = 253_402_300_799_999;

/// Parses `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM[:SS[.fff]]` followed by `Z` or `±HH:MM`: an instant of
/// the years 0000 to 9999 in UTC (an offset may not carry it outside: what is stored reads back).
pub fn parse_iso(text: &str) -> Option<Millis> {
    let first_ms = days_from_civil(0, 1, 1) * MS_PER_DAY;
    parse_any_year(text).filter(|ms| (first_ms..=LAST_MS).contains(ms))
}

fn parse_any_year(text: &str) -> Option<Millis> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = text.get(from..from + len)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)? as u32, num(8, 2)? as u32);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * MS_PER_DAY;
    if b.len() == 10 {
        return Some(ms);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 16 || b[13] != b':' {
        return None;
    }
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
    if hour > 23 || minute > 59 {
        return None;
    }
    ms += hour * 3_600_000 + minute * 60_000;
    let mut i = 16;
    if b.get(i) == Some(&b':') {
        let second = num(i + 1, 2)?;
        if second > 59 {
            return None;
        }
        ms += second * 1000;
        i += 3;
        if b.get(i) == Some(&b'.') {
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            let len = digits.min(3);
            ms += num(i + 1, len)? * 10_i64.pow(3 - len as u32);
            i += 1 + digits;
        }
    }
    // Bytes, not `str` slices: a multi-byte character must not land on a slice boundary.
    match &b[i..] {
        b"Z" | b"z" => Some(ms),
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (zh, zm) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if zh > 23 || zm > 59 {
                return None;
            }
            let offset = (zh * 60 + zm) * 60_000;
            Some(if *sign == b'+' { ms - offset } else { ms + offset })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trips() {
        for ms in [0, 1_764_000_000_123, 951_782_400_000 /* 2000-02-29 */, 4_102_444_799_999] {
            assert_eq!(parse_iso(&to_iso(ms)), Some(ms), "{}", to_iso(ms));
        }
        assert_eq!(to_iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(to_iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    proptest::proptest! {
        /// Whatever is accepted, with any offset, is written back as the same instant.
        #[test]
        fn what_parses_reads_back(y in 0i64..=9999, mo in 1u32..=12, d in 1u32..=31, h in 0i64..24, mi in 0i64..60,
                                  sign in proptest::bool::ANY, zh in 0i64..24, zm in 0i64..60) {
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}{}{zh:02}:{zm:02}", if sign { '+' } else { '-' });
            if let Some(ms) = parse_iso(&text) {
                proptest::prop_assert_eq!(parse_iso(&to_iso(ms)), Some(ms), "{}", text);
            }
        }
    }

    #[test]
    fn an_offset_cannot_carry_an_instant_past_year_9999() {
        assert_eq!(parse_iso("9999-12-31T23:59:59.999Z"), Some(LAST_MS));
        assert_eq!(to_iso(LAST_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(parse_iso("9999-12-31T23:59-23:59"), None, "10000-01-01 in UTC");
        assert_eq!(parse_iso("0000-01-01T00:00+00:01"), None, "before year 0 in UTC");
        assert!(parse_iso("0000-01-01T00:00Z").is_some());
    }

    #[test]
    fn parses_common_forms() {
        let base = parse_iso("2026-11-24T10:00:00Z").expect("valid");
        assert_eq!(parse_iso("2026-11-24T10:00Z"), Some(base));
        assert_eq!(parse_iso("2026-11-24T12:00:00+02:00"), Some(base));
        assert_eq!(parse_iso("2026-11-24T10:00:00.5Z"), Some(base + 500));
        assert_eq!(parse_iso("2026-11-24"), Some(base - 10 * 3_600_000));
    }

    #[test]
    fn rejects_impossible_dates_and_garbage() {
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-11-31",
            "2026-11-24T24:00Z",
            "tomorrow",
            "2026-11-24T10:00",
            "",
            "2026-11-24T10:00:00.Z",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
        assert!(parse_iso("2024-02-29").is_some());
    }

    #[test]
    fn multi_byte_characters_are_refused_not_a_panic() {
        for bad in
            ["2026-01-01T00:00+0é00", "2026-01-01T00:00é", "2026-01-01T00:00:0é", "2026-01-01T00:00:00.é", "é026-01-01"]
        {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse_iso(&text);
        }

        #[test]
        fn never_panics_near_valid_forms(prefix in "20[0-9]{2}-[0-1][0-9]-[0-3][0-9]", rest in "[T:+\\-.0-9Zé ]{0,14}") {
            let _ = parse_iso(&format!("{prefix}{rest}"));
        }

        #[test]
        fn round_trips(ms in -62_000_000_000_000i64..250_000_000_000_000) {
            proptest::prop_assert_eq!(parse_iso(&to_iso(ms)), Some(ms));
        }
    }
}
