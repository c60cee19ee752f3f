//! D1, the system of record. SQL lives here as constants next to its `*Row` type.

/// `updated_at` (a row's version: a key's `KeyRow::version`, an organization's) after a change stamped
/// at `$now`, the editing isolate's clock: that time, unless it is not after the version stored (another isolate, its clock
/// ahead, changed the row last); then a millisecond past the stored one. So a row's versions only grow,
/// whichever isolates stamp them, and its account object, which keeps the newest state it is sent,
/// never mistakes a change for an older one.
macro_rules! stamp {
    ($now:literal) => {
        concat!(
            "updated_at = CASE WHEN julianday(updated_at) IS NULL OR julianday(",
            $now,
            ") > julianday(updated_at) THEN ",
            $now,
            " ELSE strftime('%Y-%m-%dT%H:%M:%fZ', updated_at, '+0.001 seconds') END"
        )
    };
}

pub mod keys;
pub mod openrouter_keys;
pub mod orgs;
pub mod prices;
pub mod request_logs;
pub mod usage;
pub mod users;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::D1Database;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("D1: {0}")]
    D1(String),
    #[error("already exists: {0}")]
    Conflict(String),
}

impl From<worker::Error> for StoreError {
    fn from(e: worker::Error) -> Self {
        let text = e.to_string();
        if text.contains("UNIQUE constraint failed") {
            Self::Conflict(text)
        } else {
            Self::D1(text)
        }
    }
}

impl From<StoreError> for crate::api::error::ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => {
                Self::Conflict(format!("already exists ({})", what.rsplit(':').next().unwrap_or("").trim()))
            }
            StoreError::D1(detail) => Self::internal(detail),
        }
    }
}

/// Every row a query answers, typed.
pub async fn all<T: DeserializeOwned>(db: &D1Database, query: &str, args: &[JsValue]) -> Result<Vec<T>, StoreError> {
    Ok(db.prepare(query).bind(args)?.all().await?.results()?)
}

/// The number a query answers as `n` (`SELECT COUNT(*) AS n …`); 0 when it answers no row.
pub async fn count(db: &D1Database, query: &str, args: &[JsValue]) -> Result<i64, StoreError> {
    #[derive(Deserialize)]
    struct N {
        n: Option<i64>,
    }
    Ok(db.prepare(query).bind(args)?.first::<N>(None).await?.and_then(|r| r.n).unwrap_or(0))
}

/// What an operator may name by id in a read: deleted rows included, since what they did stays readable.
#[derive(Debug, Clone, Copy)]
pub enum Named {
    User,
    Org,
    Key,
}

impl Named {
    fn query(self) -> &'static str {
        match self {
            Self::User => "SELECT COUNT(*) AS n FROM users WHERE id = ?1",
            Self::Org => "SELECT COUNT(*) AS n FROM organizations WHERE id = ?1",
            Self::Key => "SELECT COUNT(*) AS n FROM api_keys WHERE id = ?1",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Org => "organization",
            Self::Key => "key",
        }
    }
}

/// Whether a user, organization or key of this id was ever made (deleted or not).
pub async fn known(db: &D1Database, what: Named, id: &str) -> Result<bool, StoreError> {
    Ok(count(db, what.query(), &[text(id)]).await? > 0)
}

/// D1 has no BigInt: integers travel as JS numbers (always inside ±2^53).
pub fn int(v: i64) -> JsValue {
    JsValue::from_f64(v as f64)
}

pub fn text(v: &str) -> JsValue {
    JsValue::from_str(v)
}

pub fn opt_text(v: Option<&str>) -> JsValue {
    v.map_or(JsValue::NULL, JsValue::from_str)
}

pub fn opt_int(v: Option<i64>) -> JsValue {
    v.map_or(JsValue::NULL, int)
}

/// A condition that `column` holds the text bound at `?n` anywhere, ASCII case ignored, every character
/// taken literally. Not `LIKE`: its pattern has a length limit (a longer search would fail the query).
pub fn contains(column: &str, n: usize) -> String {
    format!("instr(lower({column}), lower(?{n})) > 0")
}
