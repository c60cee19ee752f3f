//! The only provider module that performs `fetch`. Every call is bounded by
//! a deadline and can be aborted.

use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::pin_mut;
use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit, Response};

use super::openai_compat::{classify_error, ProviderError};

/// An upstream answer whose status was 2xx.
pub struct Upstream {
    pub response: Response,
    /// Aborting it cancels the body too.
    pub controller: AbortController,
}

/// Races a future against a timeout.
pub async fn within<T>(ms: u64, fut: impl std::future::Future<Output = T>) -> Option<T> {
    let delay = Delay::from(Duration::from_millis(ms));
    pin_mut!(fut);
    match select(fut, delay).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// Sends a request; a non-2xx answer is read and classified into a `ProviderError`.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout_ms: u64,
) -> Result<Upstream, ProviderError> {
    let h = Headers::new();
    for (name, value) in headers {
        h.set(name, value).map_err(|e| ProviderError::Network(format!("bad header {name}: {e}")))?;
    }
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(h);
    if let Some(body) = body {
        init.with_body(Some(js_sys::Uint8Array::from(body).into()));
    }
    let request = Request::new_with_init(url, &init).map_err(|e| ProviderError::Network(e.to_string()))?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(request);
    let sent = within(timeout_ms, fetch.send_with_signal(&signal)).await;
    let mut response = match sent {
        None => {
            controller.abort();
            return Err(ProviderError::Timeout);
        }
        Some(Err(e)) => return Err(ProviderError::Network(e.to_string())),
        Some(Ok(r)) => r,
    };
    let status = response.status_code();
    if (200..300).contains(&status) {
        return Ok(Upstream { response, controller });
    }
    let retry_after = response.headers().get("retry-after").ok().flatten();
    let body = within(timeout_ms, response.bytes()).await.and_then(Result::ok).unwrap_or_default();
    Err(classify_error(status, retry_after.as_deref(), &body))
}

/// Reads a whole 2xx body within the deadline.
pub async fn read_all(upstream: &mut Upstream, timeout_ms: u64) -> Result<Vec<u8>, ProviderError> {
    match within(timeout_ms, upstream.response.bytes()).await {
        None => {
            std::mem::take(&mut upstream.controller).abort();
            Err(ProviderError::Timeout)
        }
        Some(Err(e)) => Err(ProviderError::Network(format!("reading body: {e}"))),
        Some(Ok(bytes)) => Ok(bytes),
    }
}
