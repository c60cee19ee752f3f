//! Typed calls from the Worker to an account's Durable Object.

use worker::{Env, Method, Request, RequestInit};

use super::protocol::{AccountRequest, AccountResponse};
use crate::env;

/// Sends one message to the account `account_id`'s object and reads the answer.
pub async fn call(env: &Env, account_id: &str, message: &AccountRequest) -> Result<AccountResponse, String> {
    let stub = env::accounts(env).and_then(|ns| ns.id_from_name(account_id)?.get_stub()).map_err(|e| e.to_string())?;
    let body = serde_json::to_string(message).map_err(|e| e.to_string())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let req = Request::new_with_init("https://account/", &init).map_err(|e| e.to_string())?;
    let mut resp = stub.fetch_with_request(req).await.map_err(|e| e.to_string())?;
    match resp.json::<AccountResponse>().await.map_err(|e| e.to_string())? {
        AccountResponse::Error { message } => Err(message),
        answer => Ok(answer),
    }
}
