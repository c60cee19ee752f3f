//! Messages between the Worker and an account's Durable Object.

use serde::{Deserialize, Serialize};

use crate::domain::keys::{KeyRefusal, KeyState};

/// The header that carries a message (JSON) to the object and its answer back.
pub const MESSAGE_HEADER: &str = "x-tollgate-message";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AccountRequest {
    /// Records a key's authoritative state (after every change to the key).
    PutKey { state: KeyState },
    /// May this secret of this key be used now?
    Authorize { key_id: String, hash: String },
    /// Liveness probe for `/health?deep=1`.
    Ping,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AccountResponse {
    Ok,
    /// The DO has no state for the key: nothing changed since it was created,
    /// so the gateway's own record decides.
    UnknownKey,
    Refused {
        reason: KeyRefusal,
    },
    Pong {
        pings: i64,
    },
    Error {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let req = AccountRequest::Authorize { key_id: "k1".into(), hash: "h".into() };
        let json = serde_json::to_string(&req).expect("serialize");
        assert_eq!(json, r#"{"op":"authorize","key_id":"k1","hash":"h"}"#);
        assert_eq!(serde_json::from_str::<AccountRequest>(&json).expect("parse"), req);
        let resp = AccountResponse::Refused { reason: KeyRefusal::Superseded };
        let json = serde_json::to_string(&resp).expect("serialize");
        assert_eq!(json, r#"{"result":"refused","reason":"superseded"}"#);
        assert_eq!(serde_json::from_str::<AccountResponse>(&json).expect("parse"), resp);
    }
}
