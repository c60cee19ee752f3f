//! The client's request, read only as far as a handler asks.
//!
//! `worker::Request` copies the method, path, headers and the `cf` object when it
//! is built. Reading `cf` makes the runtime materialise a JavaScript object from
//! its JSON on every request, which was the largest single cost in a CPU profile
//! of a chat (see docs/performance.md). No route reads `cf`, so handlers get this
//! thin wrapper around the runtime's request instead.

use worker::worker_sys::web_sys;
use worker::Headers;

pub struct Incoming {
    raw: web_sys::Request,
}

impl Incoming {
    pub fn new(raw: web_sys::Request) -> Self {
        Self { raw }
    }

    /// Upper-cased: the runtime normalises only the standard methods, not `patch`.
    pub fn method(&self) -> String {
        self.raw.method().to_ascii_uppercase()
    }

    /// The URL's path, without query or fragment.
    pub fn path(&self) -> String {
        let url = self.raw.url();
        crate::routes::path_of(&url).to_string()
    }

    /// The URL as the runtime serialised it.
    pub fn url(&self) -> String {
        self.raw.url()
    }

    pub fn headers(&self) -> Headers {
        Headers(self.raw.headers())
    }

    /// The whole body, read once: `Ok(None)` when it is over `limit` bytes, so no upload can fill the
    /// isolate's memory. A declared length over the limit is refused before anything is read; a body of
    /// declared length is read in one promise; any other is counted while it streams in, and refused (the
    /// rest not read) as soon as it passes the limit.
    pub async fn bytes_up_to(&mut self, limit: usize) -> Result<Option<Vec<u8>>, String> {
        let headers = self.headers();
        let declared = headers.get("content-length").ok().flatten().and_then(|v| v.trim().parse::<usize>().ok());
        // A length that a transfer coding overrides (RFC 9112 §6.3) bounds nothing: that body streams in, counted.
        let chunked = headers.get("transfer-encoding").ok().flatten().is_some();
        match declared {
            Some(length) if length > limit => Ok(None),
            // The runtime delivers no more than the declared length: the body is read whole, in one promise
            // (chunk by chunk costs a few crossings of the wasm boundary per chunk).
            Some(_) if !chunked => {
                let promise = self.raw.array_buffer().map_err(|e| crate::js::message(&e))?;
                crate::js::bytes(promise).await.map(Some).map_err(|e| crate::js::message(&e))
            }
            _ => {
                let Some(body) = self.raw.body() else { return Ok(Some(Vec::new())) };
                crate::js::read_up_to(&body, limit).await.map_err(|e| crate::js::message(&e))
            }
        }
    }
}
