//! Organizations: status and monthly limits from the wire.

use serde::{Deserialize, Serialize};

use super::money::usd_to_micros;
use super::InvalidRequest;

/// Monthly limits as the API speaks them (`monthly_cost` in USD); absent or null = unlimited.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
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

/// What an organization is, as of a version (D1's `updated_at` in ms: a later change has a larger one). Its
/// object keeps the newest it was told (by a change, or by a reservation from an isolate that read it), so a
/// suspension or a lowered limit binds at once, however old the row an isolate's cache still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgState {
    #[serde(default)]
    pub version: i64,
    #[serde(default = "active")]
    pub active: bool,
    #[serde(default)]
    pub monthly_requests: Option<i64>,
    #[serde(default)]
    pub monthly_tokens: Option<i64>,
    #[serde(default)]
    pub monthly_cost_micros: Option<i64>,
}

fn active() -> bool {
    true
}

impl OrgState {
    pub fn limits(&self) -> Limits {
        Limits {
            monthly_requests: self.monthly_requests,
            monthly_tokens: self.monthly_tokens,
            monthly_cost_micros: self.monthly_cost_micros,
        }
    }

    /// The newer of what the object knows and what a message states (a tie is the same change: the message's).
    pub fn newer(known: Option<&OrgState>, stated: OrgState) -> OrgState {
        match known {
            Some(k) if k.version > stated.version => *k,
            _ => stated,
        }
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
    let over = |limit: Option<i64>, used: i64, more: i64| limit.is_some_and(|l| used.saturating_add(more) > l);
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

/// A request held against an organization's month until it settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgHold {
    /// The month it was reserved in (its use counts there, whenever it settles).
    pub month: i64,
    pub tokens: i64,
    pub cost: i64,
    pub expires_ms: i64,
    /// Its lease ran out: it was counted as what it held (a late settlement corrects that).
    pub counted: bool,
}

/// A change to one month's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthChange {
    pub month: i64,
    pub requests: i64,
    pub tokens: i64,
    pub cost: i64,
}

/// How long a hold counted at its expiry is kept for a late settlement to correct it.
pub const KEEP_COUNTED_MS: i64 = 24 * 3_600_000;

/// An organization's month counts and the requests it holds, as its Durable Object keeps
/// them. Pure: the object restores it from storage and writes what each answer changes.
/// Rules: a request runs only if this month's counts plus what is held stay within every
/// limit; a settlement counts once, in the month its request was reserved in; a hold whose
/// settlement has not come when its lease ends counts as what it held, and a settlement
/// that still comes corrects the count; a request that failed before any answer counts nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgBook {
    months: std::collections::BTreeMap<i64, MonthUse>,
    holds: std::collections::HashMap<String, OrgHold>,
}

fn month_of(now: i64) -> i64 {
    super::windows::Reset::Monthly.window_start(now)
}

impl OrgBook {
    pub fn restore(
        months: impl IntoIterator<Item = (i64, MonthUse)>,
        holds: impl IntoIterator<Item = (String, OrgHold)>,
    ) -> Self {
        Self { months: months.into_iter().collect(), holds: holds.into_iter().collect() }
    }

    /// A month's use: what was counted, plus what is held and not counted yet.
    pub fn usage(&self, now: i64) -> MonthUse {
        let month = month_of(now);
        let mut used = self.months.get(&month).copied().unwrap_or_default();
        for hold in self.holds.values().filter(|h| h.month == month && !h.counted) {
            used.requests += 1;
            used.tokens = used.tokens.saturating_add(hold.tokens);
            used.cost = used.cost.saturating_add(hold.cost);
        }
        used
    }

    pub fn hold(&self, request_id: &str) -> Option<&OrgHold> {
        self.holds.get(request_id)
    }

    /// Holds a request when the month's limits allow it; returns the hold to store.
    pub fn reserve(
        &mut self,
        request_id: &str,
        limits: &Limits,
        tokens: i64,
        cost: i64,
        lease_ms: i64,
        now: i64,
    ) -> Result<Option<OrgHold>, OrgLimitHit> {
        if self.holds.contains_key(request_id) {
            return Ok(None); // a repeated message
        }
        check_month(limits, self.usage(now), tokens, cost)?;
        let hold = OrgHold { month: month_of(now), tokens, cost, expires_ms: now + lease_ms, counted: false };
        self.holds.insert(request_id.to_string(), hold.clone());
        Ok(Some(hold))
    }

    /// Counts a settled request (once). `None`: not held (settled already, or never reserved).
    /// A request counts at most what its hold admitted (as its account charges at most what it held): one
    /// that used more than its bound (an upstream past the output cap) counts its bound, so no month passes a
    /// limit; its usage record keeps what it used.
    pub fn settle(&mut self, request_id: &str, tokens: i64, cost: i64, failed: bool) -> Option<MonthChange> {
        let hold = self.holds.remove(request_id)?;
        let (tokens, cost) = (tokens.clamp(0, hold.tokens.max(0)), cost.clamp(0, hold.cost.max(0)));
        let (requests, tokens, cost) = match (hold.counted, failed) {
            (false, true) => (0, 0, 0),
            (false, false) => (1, tokens, cost),
            (true, true) => (-1, -hold.tokens, -hold.cost),
            (true, false) => (0, tokens - hold.tokens, cost - hold.cost),
        };
        Some(self.count(MonthChange { month: hold.month, requests, tokens, cost }))
    }

    /// Counts the holds whose lease has ended as what they held, and forgets those counted a day ago.
    /// Returns the ids of the holds counted now with their changes, and the ids forgotten.
    pub fn expire(&mut self, now: i64) -> (Vec<(String, MonthChange)>, Vec<String>) {
        let mut due: Vec<String> =
            self.holds.iter().filter(|(_, h)| !h.counted && h.expires_ms <= now).map(|(id, _)| id.clone()).collect();
        due.sort();
        let mut counted = Vec::new();
        for id in due {
            let Some(hold) = self.holds.get_mut(&id) else { continue };
            hold.counted = true;
            let change = MonthChange { month: hold.month, requests: 1, tokens: hold.tokens, cost: hold.cost };
            counted.push((id, self.count(change)));
        }
        let forgotten: Vec<String> = self
            .holds
            .iter()
            .filter(|(_, h)| h.counted && h.expires_ms <= now - KEEP_COUNTED_MS)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &forgotten {
            self.holds.remove(id);
        }
        (counted, forgotten)
    }

    fn count(&mut self, change: MonthChange) -> MonthChange {
        let used = self.months.entry(change.month).or_default();
        used.requests += change.requests;
        used.tokens = used.tokens.saturating_add(change.tokens);
        used.cost = used.cost.saturating_add(change.cost);
        change
    }

    /// The counts of a month (what storage keeps per month).
    pub fn month(&self, month: i64) -> MonthUse {
        self.months.get(&month).copied().unwrap_or_default()
    }

    pub fn holds(&self) -> impl Iterator<Item = (&String, &OrgHold)> {
        self.holds.iter()
    }

    pub fn months(&self) -> impl Iterator<Item = (&i64, &MonthUse)> {
        self.months.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newer_state_wins_and_an_old_stored_one_reads_as_active() {
        let state = |version, active, cost| OrgState {
            version,
            active,
            monthly_requests: None,
            monthly_tokens: None,
            monthly_cost_micros: cost,
        };
        let suspended = state(20, false, Some(5));
        assert_eq!(OrgState::newer(Some(&suspended), state(10, true, None)), suspended, "a stale isolate's view loses");
        assert_eq!(
            OrgState::newer(Some(&suspended), state(30, true, None)),
            state(30, true, None),
            "a later change wins"
        );
        assert_eq!(OrgState::newer(None, state(1, true, None)), state(1, true, None));
        let old: OrgState =
            serde_json::from_str(r#"{"monthly_requests":3,"monthly_tokens":null,"monthly_cost_micros":null}"#)
                .expect("limits stored before versions");
        assert_eq!((old.version, old.active, old.limits().monthly_requests), (0, true, Some(3)));
    }

    #[test]
    fn a_month_counted_to_the_top_still_refuses() {
        let limits = Limits { monthly_requests: None, monthly_tokens: Some(1_000), monthly_cost_micros: None };
        let used = MonthUse { requests: 1, tokens: i64::MAX, cost: 0 };
        assert_eq!(check_month(&limits, used, 1, 0), Err(OrgLimitHit::Tokens), "no wrap past the top");
    }

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

    const NOW: i64 = 1_767_225_600_000;

    #[test]
    fn an_expired_hold_counts_what_it_held_until_its_settlement_corrects_it() {
        let limits = Limits { monthly_requests: Some(10), monthly_tokens: Some(100), monthly_cost_micros: None };
        let mut org = OrgBook::default();
        org.reserve("r1", &limits, 60, 5, 1_000, NOW).expect("fits");
        assert_eq!(org.reserve("r2", &limits, 60, 5, 1_000, NOW), Err(OrgLimitHit::Tokens));
        let (counted, _) = org.expire(NOW + 1_000);
        assert_eq!(counted.len(), 1);
        assert_eq!(org.usage(NOW + 1_000), MonthUse { requests: 1, tokens: 60, cost: 5 });
        org.settle("r1", 20, 2, false);
        assert_eq!(org.usage(NOW + 2_000), MonthUse { requests: 1, tokens: 20, cost: 2 });
        assert_eq!(org.settle("r1", 20, 2, false), None, "once");
        org.reserve("r3", &limits, 10, 1, 1_000, NOW).expect("fits");
        org.settle("r3", 0, 0, true);
        assert_eq!(org.usage(NOW).requests, 1, "a failed request counts nothing");
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
