//! Requests and tokens per minute, per key, as the account's object counts
//! them. The window slides: a request counts for the 60 s after it was
//! admitted. Its tokens are held at admission as its worst case (the prompt's
//! bound plus the output bound) and corrected to what it used when it
//! settles (at most that worst case); one that can no longer settle keeps its worst case.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub const WINDOW_MS: i64 = 60_000;

/// A key's limits per minute; `None`: no such limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<i64>,
}

impl RateLimits {
    pub fn is_none(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }

    /// Each limit the key sets, else the tenant's default.
    pub fn or(self, default: Self) -> Self {
        Self { rpm: self.rpm.or(default.rpm), tpm: self.tpm.or(default.tpm) }
    }
}

/// A per-minute limit from the wire (`rpm_limit`, `tpm_limit`): a whole number ≥ 1, or null for none.
pub fn validate(field: &str, value: Option<i64>) -> Result<Option<i64>, super::InvalidRequest> {
    match value {
        Some(n) if !(1..=super::money::MAX_SAFE).contains(&n) => {
            Err(super::InvalidRequest::param(format!("`{field}` must be a whole number ≥ 1, or null"), field))
        }
        other => Ok(other),
    }
}

/// One admitted request, counted in its key's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub request_id: String,
    pub at_ms: i64,
    pub tokens: i64,
}

/// The tokens `admitted` requests hold (a settled count may be as large as a reservation's bound).
fn tokens_in(admitted: &[Admitted]) -> i64 {
    admitted.iter().fold(0, |sum, a| sum.saturating_add(a.tokens))
}

/// Where one limit stands, as OpenAI's `x-ratelimit-{limit,remaining,reset}-*` headers say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    pub limit: i64,
    pub remaining: i64,
    /// Milliseconds until nothing counted now is counted any more (the limit is back to its start).
    pub reset_ms: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Standing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Standing>,
}

/// Which per-minute limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateHit {
    Requests,
    Tokens,
    /// The request alone may use more tokens than the key may in a minute.
    TooLarge,
}

/// A refusal: which limit, when to try again, and where the limits stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateRefusal {
    pub hit: RateHit,
    pub retry_after_ms: i64,
    pub status: RateStatus,
}

/// The admitted requests of every key with a limit, each key's in admission order (`order`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rates {
    keys: HashMap<String, Vec<Admitted>>,
}

impl Rates {
    /// As storage holds them: `(key_id, admitted)` in any order.
    pub fn restore(rows: impl IntoIterator<Item = (String, Admitted)>) -> Self {
        let mut keys: HashMap<String, Vec<Admitted>> = HashMap::new();
        for (key_id, a) in rows {
            keys.entry(key_id).or_default().push(a);
        }
        for list in keys.values_mut() {
            list.sort_by(order);
        }
        Self { keys }
    }

    /// The key's requests still in the window at `now`.
    fn live(&self, key_id: &str, now: i64) -> &[Admitted] {
        let list = self.keys.get(key_id).map_or(&[][..], Vec::as_slice);
        let first = list.partition_point(|a| a.at_ms <= now - WINDOW_MS);
        &list[first..]
    }

    /// Where the key's limits stand at `now`.
    pub fn status(&self, key_id: &str, limits: RateLimits, now: i64) -> RateStatus {
        let live = self.live(key_id, now);
        let reset_ms = live.last().map_or(0, |a| a.at_ms + WINDOW_MS - now);
        let used_tokens = tokens_in(live);
        let standing = |limit: i64, used: i64| Standing { limit, remaining: (limit - used).max(0), reset_ms };
        RateStatus {
            requests: limits.rpm.map(|l| standing(l, live.len() as i64)),
            tokens: limits.tpm.map(|l| standing(l, used_tokens)),
        }
    }

    /// May one more request of at most `tokens` tokens start at `now`? When not, says when it could.
    pub fn check(&self, key_id: &str, limits: RateLimits, tokens: i64, now: i64) -> Result<(), RateRefusal> {
        let live = self.live(key_id, now);
        let refuse = |hit, retry_after_ms: i64| RateRefusal {
            hit,
            retry_after_ms: retry_after_ms.max(1),
            status: self.status(key_id, limits, now),
        };
        if let Some(rpm) = limits.rpm {
            let count = live.len() as i64;
            if count + 1 > rpm {
                // Room comes when the (count - rpm + 1)th oldest leaves the window.
                let retry = match usize::try_from(count - rpm.max(0)).ok().and_then(|i| live.get(i)) {
                    Some(a) => a.at_ms + WINDOW_MS - now,
                    None => WINDOW_MS,
                };
                return Err(refuse(RateHit::Requests, retry));
            }
        }
        if let Some(tpm) = limits.tpm {
            if tokens > tpm {
                return Err(refuse(RateHit::TooLarge, WINDOW_MS));
            }
            let mut used = tokens_in(live);
            if used.saturating_add(tokens) > tpm {
                let mut retry = WINDOW_MS;
                for a in live {
                    used = used.saturating_sub(a.tokens);
                    if used.saturating_add(tokens) <= tpm {
                        retry = a.at_ms + WINDOW_MS - now;
                        break;
                    }
                }
                return Err(refuse(RateHit::Tokens, retry));
            }
        }
        Ok(())
    }

    /// Counts a request admitted at `now`, and forgets the key's requests out of the window.
    pub fn admit(&mut self, key_id: &str, request_id: &str, tokens: i64, now: i64) -> &Admitted {
        let list = self.keys.entry(key_id.to_string()).or_default();
        list.retain(|a| a.at_ms > now - WINDOW_MS);
        let a = Admitted { request_id: request_id.to_string(), at_ms: now, tokens: tokens.max(0) };
        let at = list.partition_point(|b| order(b, &a).is_lt());
        list.insert(at, a);
        &list[at]
    }

    /// A request settled having used `tokens`: it counts those from now on, at most what it was admitted
    /// with (its worst case: one that used more, an upstream past the output cap, counts that, so the window
    /// passes no limit). Answers what it counts; `None`: not counted (not admitted under a limit, or out of
    /// the window already).
    pub fn settle(&mut self, key_id: &str, request_id: &str, tokens: i64) -> Option<i64> {
        let a = self.keys.get_mut(key_id)?.iter_mut().find(|a| a.request_id == request_id)?;
        a.tokens = tokens.clamp(0, a.tokens);
        Some(a.tokens)
    }

    pub fn admitted(&self, key_id: &str, request_id: &str) -> Option<&Admitted> {
        self.keys.get(key_id)?.iter().find(|a| a.request_id == request_id)
    }
}

/// Admission order, as storage can tell it: by time, then by request id.
fn order(a: &Admitted, b: &Admitted) -> std::cmp::Ordering {
    (a.at_ms, &a.request_id).cmp(&(b.at_ms, &b.request_id))
}

/// A wait as OpenAI's `x-ratelimit-reset-*` headers write it: `250ms`, `1.5s`, `1m0s`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let seconds = |ms: i64| {
        let s = format!("{}.{:03}", ms / 1_000, ms % 1_000);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if ms < 60_000 {
        format!("{}s", seconds(ms))
    } else {
        format!("{}m{}s", ms / 60_000, seconds(ms % 60_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn limits(rpm: Option<i64>, tpm: Option<i64>) -> RateLimits {
        RateLimits { rpm, tpm }
    }

    #[test]
    fn requests_per_minute_slide_and_say_when_room_comes() {
        let mut rates = Rates::default();
        let l = limits(Some(3), None);
        for (i, at) in [0, 10_000, 20_000].into_iter().enumerate() {
            assert_eq!(rates.check("k", l, 0, NOW + at), Ok(()));
            rates.admit("k", &format!("r{i}"), 0, NOW + at);
        }
        let refused = rates.check("k", l, 0, NOW + 30_000).expect_err("a fourth in the minute");
        assert_eq!((refused.hit, refused.retry_after_ms), (RateHit::Requests, 30_000));
        let requests = refused.status.requests.expect("a request limit");
        assert_eq!((requests.limit, requests.remaining, requests.reset_ms), (3, 0, 50_000));
        assert_eq!(rates.check("k", l, 0, NOW + WINDOW_MS), Ok(()), "the first has left the window");
        assert_eq!(rates.check("other", l, 0, NOW + 30_000), Ok(()), "per key");
    }

    #[test]
    fn tokens_are_held_at_their_worst_case_until_the_request_settles() {
        let mut rates = Rates::default();
        let l = limits(None, Some(1_000));
        rates.admit("k", "r1", 600, NOW);
        rates.admit("k", "r2", 300, NOW + 5_000);
        let refused = rates.check("k", l, 200, NOW + 6_000).expect_err("900 + 200 > 1000");
        assert_eq!((refused.hit, refused.retry_after_ms), (RateHit::Tokens, 54_000), "when r1 leaves");
        assert_eq!(rates.settle("k", "r1", 100), Some(100));
        assert_eq!(rates.check("k", l, 200, NOW + 6_000), Ok(()));
        let tokens = rates.status("k", l, NOW + 6_000).tokens.expect("a token limit");
        assert_eq!((tokens.remaining, tokens.reset_ms), (600, 59_000));
        let alone = rates.check("k", l, 1_001, NOW + 6_000).expect_err("never fits");
        assert_eq!(alone.hit, RateHit::TooLarge);
        assert_eq!(rates.settle("k", "unknown", 5), None);
        assert_eq!(rates.settle("k", "r2", 5_000), Some(300), "no more than it was admitted with");
    }

    #[test]
    fn restored_out_of_order_counts_the_same() {
        let rows = [
            ("k".to_string(), Admitted { request_id: "b".into(), at_ms: NOW + 1, tokens: 5 }),
            ("k".to_string(), Admitted { request_id: "a".into(), at_ms: NOW, tokens: 7 }),
        ];
        let rates = Rates::restore(rows);
        let refused = rates.check("k", limits(Some(2), None), 0, NOW + 2).expect_err("two in the window");
        assert_eq!(refused.retry_after_ms, WINDOW_MS - 2);
    }

    #[test]
    fn waits_are_written_as_openai_writes_them() {
        assert_eq!(duration(250), "250ms");
        assert_eq!(duration(1_000), "1s");
        assert_eq!(duration(1_500), "1.5s");
        assert_eq!(duration(59_999), "59.999s");
        assert_eq!(duration(60_000), "1m0s");
        assert_eq!(duration(-5), "0ms");
    }
}
