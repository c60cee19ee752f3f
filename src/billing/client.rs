//! Typed calls from the Worker to an account's Durable Object.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::worker_sys::{self, web_sys};
use worker::Env;

use super::protocol::{AccountRequest, AccountResponse, MESSAGE_HEADER};
use crate::{env, js};

/// Messages travel in a header both ways, with empty bodies: a body would cost a
/// stream round trip across the object boundary (≈1 ms locally, see performance.md).
/// The runtime's `Request` and `Response` are used as they are: `worker::Request`
/// and `worker::Response` would copy their headers and `cf` into new objects.
/// Sends one message to the account `account_id`'s object and reads the answer.
pub async fn call(env: &Env, account_id: &str, message: &AccountRequest) -> Result<AccountResponse, String> {
    let stub = env::accounts(env).and_then(|ns| ns.id_from_name(account_id)?.get_stub()).map_err(|e| e.to_string())?;
    let stub: worker_sys::DurableObject = stub.into_rpc();
    let headers = web_sys::Headers::new().map_err(|e| js::message(&e))?;
    headers
        .set(MESSAGE_HEADER, &serde_json::to_string(message).map_err(|e| e.to_string())?)
        .map_err(|e| js::message(&e))?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    let req = web_sys::Request::new_with_str_and_init("https://account/", &init).map_err(|e| js::message(&e))?;
    let promise = stub.fetch_with_request(&req).map_err(|e| js::message(&e))?;
    let resp: web_sys::Response = JsFuture::from(promise).await.map_err(|e| js::message(&e))?.unchecked_into();
    let mut answer = resp.headers().get(MESSAGE_HEADER).ok().flatten().ok_or("the account object sent no answer")?;
    if answer == "body" {
        // Large answers (ledger pages) come in the body.
        let text = JsFuture::from(resp.text().map_err(|e| js::message(&e))?).await.map_err(|e| js::message(&e))?;
        answer = text.as_string().unwrap_or_default();
    }
    match serde_json::from_str::<AccountResponse>(&answer).map_err(|e| e.to_string())? {
        AccountResponse::Error { message } => Err(message),
        answer => Ok(answer),
    }
}
