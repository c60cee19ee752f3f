//! How a message crosses the object boundary: JSON in the `x-tollgate-message`
//! header both ways, with empty bodies (a body costs a stream round trip,
//! ≈1 ms locally: see performance.md); a message too large for a header
//! travels in the body, and the header says `body` (so does one that is not
//! ASCII: header values are Latin-1).

use serde::de::DeserializeOwned;
use serde::Serialize;
use worker::{Headers, Request, Response, Result};

use super::protocol::MESSAGE_HEADER;

/// Larger messages go in the body.
pub const MAX_HEADER_MESSAGE: usize = 4096;
/// Says "the message is in the body".
pub const IN_BODY: &str = "body";

/// The object's side: reads a message.
pub async fn read<T: DeserializeOwned>(mut req: Request) -> std::result::Result<T, String> {
    let header = req.headers().get(MESSAGE_HEADER).map_err(|e| e.to_string())?.unwrap_or_default();
    let text = if header == IN_BODY { req.text().await.map_err(|e| e.to_string())? } else { header };
    serde_json::from_slice(text.as_bytes()).map_err(|e| e.to_string())
}

/// The object's side: sends an answer.
pub fn answer<T: Serialize>(answer: &T) -> Result<Response> {
    let body = serde_json::to_string(answer)?;
    let headers = Headers::new();
    if body.len() > MAX_HEADER_MESSAGE || !body.is_ascii() {
        headers.set(MESSAGE_HEADER, IN_BODY)?;
        return Ok(Response::ok(body)?.with_headers(headers));
    }
    headers.set(MESSAGE_HEADER, &body)?;
    Ok(Response::empty()?.with_headers(headers))
}
