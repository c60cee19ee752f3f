//! Usage records (one per inference request) and the stats queries over them:
//! date ranges and groupings, validated here; the SQL lives in `store::usage`.

use serde::{Deserialize, Serialize};

use super::time::{civil_from_days, parse_iso, Millis};
use super::InvalidRequest;

/// Days a stats query covers when the caller names no start.
pub const DEFAULT_DAYS: i64 = 30;
/// The longest range one stats query may cover.
pub const MAX_DAYS: i64 = 3_660;

/// What the gateway remembers of one request. Money in micro-USD, times in ms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The generation id: the request id the client saw in `x-request-id`.
    pub id: String,
    /// The id the upstream gave its answer (the `id` the client's answer carried).
    #[serde(default)]
    pub upstream_id: Option<String>,
    pub key_id: String,
    pub user_id: String,
    pub org_id: Option<String>,
    pub model: String,
    pub provider: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub cached_tokens: u64,
    /// What the gateway charged (the account object fills it in when it settles).
    pub cost_micros: i64,
    pub upstream_cost_micros: Option<i64>,
    pub latency_ms: u64,
    pub status: u16,
    pub streamed: bool,
    pub cancelled: bool,
    pub estimated: bool,
    pub created_ms: Millis,
    /// Whom the request was made for (`domain::end_users`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
}

/// How stats are bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Model,
    Provider,
    User,
    Key,
    EndUser,
}

impl GroupBy {
    /// `user` and `key` groupings reveal other users' activity: only the global (admin) view takes them.
    pub fn parse(text: Option<&str>, global: bool) -> Result<Self, InvalidRequest> {
        let allowed =
            if global { "day, model, provider, user, key or end_user" } else { "day, model, provider or end_user" };
        match text.unwrap_or("day") {
            "day" | "" => Ok(Self::Day),
            "model" => Ok(Self::Model),
            "provider" => Ok(Self::Provider),
            "user" if global => Ok(Self::User),
            "key" if global => Ok(Self::Key),
            "end_user" => Ok(Self::EndUser),
            other => Err(InvalidRequest::param(format!("`group_by` must be {allowed}, not `{other}`"), "group_by")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Model => "model",
            Self::Provider => "provider",
            Self::User => "user",
            Self::Key => "key",
            Self::EndUser => "end_user",
        }
    }

    /// The roll-up column that names a bucket.
    pub fn column(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Model => "model",
            Self::Provider => "provider",
            Self::User => "user_id",
            Self::Key => "key_id",
            Self::EndUser => "end_user",
        }
    }
}

/// An inclusive range of UTC days, as `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRange {
    pub start: String,
    pub end: String,
}

/// `start`/`end` as ISO dates (a full timestamp counts as its day); by default
/// the last 30 days up to today.
pub fn day_range(start: Option<&str>, end: Option<&str>, now: Millis) -> Result<DayRange, InvalidRequest> {
    let today = now.div_euclid(86_400_000);
    let end_day = match end.filter(|s| !s.is_empty()) {
        Some(text) => parse_day(text, "end")?,
        None => today,
    };
    let start_day = match start.filter(|s| !s.is_empty()) {
        Some(text) => parse_day(text, "start")?,
        None => end_day - (DEFAULT_DAYS - 1),
    };
    if start_day > end_day {
        return Err(InvalidRequest::param("`start` must not be after `end`", "start"));
    }
    if end_day - start_day >= MAX_DAYS {
        return Err(InvalidRequest::param(format!("a range may cover at most {MAX_DAYS} days"), "start"));
    }
    Ok(DayRange { start: format_day(start_day), end: format_day(end_day) })
}

/// The UTC day of an ISO date or timestamp.
fn parse_day(text: &str, name: &str) -> Result<i64, InvalidRequest> {
    parse_iso(text)
        .map(|ms| ms.div_euclid(86_400_000))
        .ok_or_else(|| InvalidRequest::param(format!("`{name}` must be a date like 2026-01-31"), name))
}

fn format_day(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The upstream ids an answer's `id` may stand for. A Messages answer is `msg_…` and a Responses answer
/// `resp_…`, made from the chat answer's id (`gen-…` from OpenRouter, `chatcmpl-…` from OpenAI, Anthropic's
/// own `msg_…`) without its prefix; the record keeps the chat answer's id. Any other id stands for itself.
pub fn upstream_ids(answer_id: &str) -> Vec<String> {
    let mut ids = vec![answer_id.to_string()];
    if let Some(rest) = answer_id.strip_prefix("msg_").or_else(|| answer_id.strip_prefix("resp_")) {
        ids.extend(["gen-", "chatcmpl-", ""].map(|prefix| format!("{prefix}{rest}")));
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_id_of_another_dialect_finds_its_chat_answer() {
        assert_eq!(upstream_ids("gen-1"), ["gen-1"]);
        assert_eq!(upstream_ids("msg_1"), ["msg_1", "gen-1", "chatcmpl-1", "1"]);
        assert_eq!(upstream_ids("resp_msg_1"), ["resp_msg_1", "gen-msg_1", "chatcmpl-msg_1", "msg_1"]);
    }

    fn at(iso: &str) -> Millis {
        parse_iso(iso).expect("valid")
    }

    #[test]
    fn default_range_is_the_last_30_days() {
        let r = day_range(None, None, at("2026-03-01T12:00:00Z")).expect("valid");
        assert_eq!(r, DayRange { start: "2026-01-31".into(), end: "2026-03-01".into() });
        let r = day_range(None, Some("2024-03-01"), 0).expect("valid");
        assert_eq!(r.start, "2024-02-01", "a leap year's February has 29 days");
    }

    #[test]
    fn explicit_ranges_and_timestamps() {
        let r = day_range(Some("2026-01-01T10:00:00Z"), Some("2026-01-01"), 0).expect("valid");
        assert_eq!(r, DayRange { start: "2026-01-01".into(), end: "2026-01-01".into() });
    }

    #[test]
    fn bad_ranges_name_the_parameter() {
        assert_eq!(day_range(Some("2026-02-30"), None, 0).unwrap_err().param.as_deref(), Some("start"));
        assert_eq!(day_range(None, Some("yesterday"), 0).unwrap_err().param.as_deref(), Some("end"));
        assert_eq!(day_range(Some("2026-02-02"), Some("2026-02-01"), 0).unwrap_err().param.as_deref(), Some("start"));
        assert!(day_range(Some("2000-01-01"), Some("2026-01-01"), 0).is_err());
    }

    #[test]
    fn user_and_key_groupings_are_global_only() {
        assert_eq!(GroupBy::parse(None, false), Ok(GroupBy::Day));
        assert_eq!(GroupBy::parse(Some("model"), false), Ok(GroupBy::Model));
        assert!(GroupBy::parse(Some("user"), false).is_err());
        assert_eq!(GroupBy::parse(Some("user"), true), Ok(GroupBy::User));
        assert_eq!(GroupBy::parse(Some("key"), true).map(GroupBy::column), Ok("key_id"));
        assert!(GroupBy::parse(Some("week"), true).is_err());
    }
}
