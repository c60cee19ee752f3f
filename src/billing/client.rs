//! Typed calls from the Worker to an account's Durable Object.

use worker::{Env, Headers, Method, Request, RequestInit};

use super::protocol::{AccountRequest, AccountResponse, MESSAGE_HEADER};
use crate::env;

/// Messages travel in a header both ways, with empty bodies: a body would cost a
/// stream round trip across the object boundary (≈1 ms locally, see performance.md).
/// Sends one message to the account `account_id`'s object and reads the answer.
pub async fn call(env: &Env, account_id: &str, message: &AccountRequest) -> Result<AccountResponse, String> {
    let stub = env::accounts(env).and_then(|ns| ns.id_from_name(account_id)?.get_stub()).map_err(|e| e.to_string())?;
    let headers = Headers::new();
    headers
        .set(MESSAGE_HEADER, &serde_json::to_string(message).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers);
    let req = Request::new_with_init("https://account/", &init).map_err(|e| e.to_string())?;
    let mut resp = stub.fetch_with_request(req).await.map_err(|e| e.to_string())?;
    let mut answer = resp.headers().get(MESSAGE_HEADER).ok().flatten().ok_or("the account object sent no answer")?;
    if answer == "body" {
        // Large answers (ledger pages) come in the body.
        answer = resp.text().await.map_err(|e| e.to_string())?;
    }
    match serde_json::from_str::<AccountResponse>(&answer).map_err(|e| e.to_string())? {
        AccountResponse::Error { message } => Err(message),
        answer => Ok(answer),
    }
}
