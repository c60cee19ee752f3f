//! The request log: for a key that opts in (`request_log_days`), the bodies of
//! its requests and of the answers, kept for that many days and bounded in
//! size. Off by default: bodies are the tenant's users' words.

use serde::{Deserialize, Serialize};

use super::InvalidRequest;

/// The most of one body kept (a longer one is cut, and says so).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest a key may keep its request log.
pub const MAX_DAYS: i64 = 90;

/// `request_log_days` from the wire: 1 to `MAX_DAYS`, or null for off.
pub fn validate_days(days: Option<i64>) -> Result<Option<i64>, InvalidRequest> {
    match days {
        Some(d) if !(1..=MAX_DAYS).contains(&d) => Err(InvalidRequest::param(
            format!("`request_log_days` must be a whole number from 1 to {MAX_DAYS}, or null (off)"),
            "request_log_days",
        )),
        other => Ok(other),
    }
}

/// Up to `MAX_BODY_BYTES` of a body, as it passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

impl Capture {
    pub fn of(bytes: &[u8]) -> Self {
        let mut c = Self::default();
        c.push(bytes);
        c
    }

    pub fn push(&mut self, chunk: &[u8]) {
        let room = MAX_BODY_BYTES.saturating_sub(self.bytes.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// The text kept (a multi-byte character cut at the end is dropped, not garbled).
    pub fn text(&self) -> String {
        match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.to_string(),
            Err(e) => String::from_utf8_lossy(&self.bytes[..e.valid_up_to()]).into_owned(),
        }
    }
}

/// One logged request, as stored (R2 object) and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub key_id: String,
    pub model: String,
    pub status: u16,
    pub streamed: bool,
    pub created_at: String,
    pub request: String,
    pub request_truncated: bool,
    pub response: String,
    pub response_truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_keeps_at_most_its_bound_and_says_when_it_cut() {
        let mut c = Capture::default();
        c.push(&vec![b'a'; MAX_BODY_BYTES - 1]);
        assert!(!c.truncated);
        c.push("éé".as_bytes());
        assert!(c.truncated);
        assert_eq!(c.bytes.len(), MAX_BODY_BYTES);
        assert!(c.text().ends_with('a'), "the cut character is dropped");
        c.push(b"more");
        assert_eq!(c.bytes.len(), MAX_BODY_BYTES);
    }

    #[test]
    fn days_are_bounded() {
        assert_eq!(validate_days(Some(7)), Ok(Some(7)));
        assert_eq!(validate_days(None), Ok(None));
        assert!(validate_days(Some(0)).is_err());
        assert!(validate_days(Some(MAX_DAYS + 1)).is_err());
    }
}
