//! The account Durable Object (binding `ACCOUNTS`, class `AccountDo`): one per
//! paying account, SQLite storage, one request at a time. It is the authority
//! for its keys' state (and, with billing, for money). A thin shell: decisions
//! live in `domain`.

use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{durable_object, DurableObject, Env, Headers, Request, Response, Result, State};

use super::protocol::{AccountRequest, AccountResponse, MESSAGE_HEADER};
use crate::domain::keys::KeyState;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS key_state (
    key_id TEXT PRIMARY KEY, hash TEXT NOT NULL, previous_hash TEXT, previous_until_ms REAL,
    expires_at_ms REAL, disabled INTEGER NOT NULL, deleted INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);";

#[durable_object]
pub struct AccountDo {
    state: State,
    /// The schema exists (created on the first message after a start).
    ready: std::cell::Cell<bool>,
}

#[derive(Deserialize)]
struct KeyStateRow {
    key_id: String,
    hash: String,
    previous_hash: Option<String>,
    previous_until_ms: Option<f64>,
    expires_at_ms: Option<f64>,
    disabled: i64,
    deleted: i64,
}

impl From<KeyStateRow> for KeyState {
    fn from(r: KeyStateRow) -> Self {
        Self {
            key_id: r.key_id,
            hash: r.hash,
            previous_hash: r.previous_hash,
            previous_until_ms: r.previous_until_ms.map(|v| v as i64),
            expires_at_ms: r.expires_at_ms.map(|v| v as i64),
            disabled: r.disabled != 0,
            deleted: r.deleted != 0,
        }
    }
}

fn num(v: Option<i64>) -> JsValue {
    v.map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64))
}

impl AccountDo {
    fn handle(&self, req: AccountRequest) -> Result<AccountResponse> {
        let sql = self.state.storage().sql();
        if !self.ready.get() {
            sql.exec(SCHEMA, None)?;
            self.ready.set(true);
        }
        Ok(match req {
            AccountRequest::PutKey { state: s } => {
                sql.exec_raw(
                    "INSERT OR REPLACE INTO key_state VALUES (?, ?, ?, ?, ?, ?, ?)",
                    vec![
                        JsValue::from_str(&s.key_id),
                        JsValue::from_str(&s.hash),
                        s.previous_hash.as_deref().map_or(JsValue::NULL, JsValue::from_str),
                        num(s.previous_until_ms),
                        num(s.expires_at_ms),
                        JsValue::from_f64(f64::from(u8::from(s.disabled))),
                        JsValue::from_f64(f64::from(u8::from(s.deleted))),
                    ],
                )?;
                AccountResponse::Ok
            }
            AccountRequest::Authorize { key_id, hash } => {
                let rows: Vec<KeyStateRow> = sql
                    .exec_raw("SELECT * FROM key_state WHERE key_id = ?", vec![JsValue::from_str(&key_id)])?
                    .to_array()?;
                match rows.into_iter().next().map(KeyState::from) {
                    None => AccountResponse::UnknownKey,
                    Some(state) => match state.check(&hash, js_sys::Date::now() as i64) {
                        Ok(()) => AccountResponse::Ok,
                        Err(reason) => AccountResponse::Refused { reason },
                    },
                }
            }
            AccountRequest::Ping => {
                sql.exec("INSERT INTO meta (k, v) VALUES ('pings', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1", None)?;
                #[derive(Deserialize)]
                struct Row {
                    v: i64,
                }
                let row: Row = sql.exec("SELECT v FROM meta WHERE k = 'pings'", None)?.one()?;
                AccountResponse::Pong { pings: row.v }
            }
        })
    }
}

impl DurableObject for AccountDo {
    fn new(state: State, _env: Env) -> Self {
        Self { state, ready: std::cell::Cell::new(false) }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let message = req.headers().get(MESSAGE_HEADER)?.unwrap_or_default();
        let answer = match serde_json::from_str::<AccountRequest>(&message) {
            Ok(message) => self.handle(message).unwrap_or_else(|e| AccountResponse::Error { message: e.to_string() }),
            Err(e) => AccountResponse::Error { message: format!("bad message: {e}") },
        };
        let headers = Headers::new();
        headers.set(MESSAGE_HEADER, &serde_json::to_string(&answer)?)?;
        Ok(Response::empty()?.with_headers(headers))
    }
}
