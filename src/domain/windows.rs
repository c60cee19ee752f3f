//! Spend-limit windows, all UTC: daily, weekly (starting Monday 00:00) and
//! monthly. A window is named by its start; spend recorded under an older
//! start is simply ignored, so windows reset lazily.

use serde::{Deserialize, Serialize};

use super::time::{civil_from_days, days_from_civil, Millis};

const DAY: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reset {
    Daily,
    Weekly,
    Monthly,
}

impl Reset {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(Self::Daily),
            "weekly" => Some(Self::Weekly),
            "monthly" => Some(Self::Monthly),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }

    /// Start of the window containing `now` (ms).
    pub fn window_start(self, now: Millis) -> Millis {
        let day = now.div_euclid(DAY);
        match self {
            Self::Daily => day * DAY,
            // 1970-01-01 was a Thursday: Monday-based weekday = (day + 3) mod 7.
            Self::Weekly => (day - (day + 3).rem_euclid(7)) * DAY,
            Self::Monthly => {
                let (y, m, _) = civil_from_days(day);
                days_from_civil(y, m, 1) * DAY
            }
        }
    }

    /// When the window containing `now` ends (the next one starts).
    pub fn window_end(self, now: Millis) -> Millis {
        let start = self.window_start(now);
        match self {
            Self::Daily => start + DAY,
            Self::Weekly => start + 7 * DAY,
            Self::Monthly => {
                let (y, m, _) = civil_from_days(start / DAY);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(ny, nm, 1) * DAY
            }
        }
    }
}

/// Start of the window for an optional reset: `None` (lifetime limit) is one window from the epoch.
pub fn window_start(reset: Option<Reset>, now: Millis) -> Millis {
    reset.map_or(0, |r| r.window_start(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::{parse_iso, to_iso};

    fn at(s: &str) -> Millis {
        parse_iso(s).expect("valid time")
    }

    #[test]
    fn daily_windows() {
        assert_eq!(to_iso(Reset::Daily.window_start(at("2026-11-24T23:59:59.999Z"))), "2026-11-24T00:00:00.000Z");
        assert_eq!(to_iso(Reset::Daily.window_end(at("2026-11-24T00:00:00Z"))), "2026-11-25T00:00:00.000Z");
    }

    #[test]
    fn weeks_start_monday_utc() {
        // 2026-11-23 is a Monday.
        assert_eq!(to_iso(Reset::Weekly.window_start(at("2026-11-29T23:59:59Z"))), "2026-11-23T00:00:00.000Z");
        assert_eq!(to_iso(Reset::Weekly.window_start(at("2026-11-23T00:00:00Z"))), "2026-11-23T00:00:00.000Z");
        assert_eq!(to_iso(Reset::Weekly.window_start(at("2026-11-22T23:59:59Z"))), "2026-11-16T00:00:00.000Z");
        assert_eq!(to_iso(Reset::Weekly.window_end(at("2026-11-25T12:00:00Z"))), "2026-11-30T00:00:00.000Z");
        // a week across a year end: 2026-12-28 is a Monday
        assert_eq!(to_iso(Reset::Weekly.window_start(at("2027-01-02T10:00:00Z"))), "2026-12-28T00:00:00.000Z");
    }

    #[test]
    fn months_end_on_their_last_day_including_leap_february() {
        assert_eq!(to_iso(Reset::Monthly.window_start(at("2028-02-29T23:59:59Z"))), "2028-02-01T00:00:00.000Z");
        assert_eq!(to_iso(Reset::Monthly.window_end(at("2028-02-29T23:59:59Z"))), "2028-03-01T00:00:00.000Z");
        assert_eq!(to_iso(Reset::Monthly.window_end(at("2026-12-31T23:59:59Z"))), "2027-01-01T00:00:00.000Z");
        assert_eq!(to_iso(Reset::Monthly.window_start(at("2026-03-01T00:00:00Z"))), "2026-03-01T00:00:00.000Z");
        assert_eq!(window_start(None, at("2026-03-01T00:00:00Z")), 0);
    }
}
