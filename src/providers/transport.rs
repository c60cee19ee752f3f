//! The only provider module that performs `fetch`. Every call is bounded by
//! a deadline. No abort signal goes with it (one on a fetch cost about 0.16 ms
//! of CPU a request): an answer past its deadline is cancelled unread when it
//! comes, and a relayed body is cancelled by dropping its reader.
//!
//! One timer bounds a call: armed when it is sent, raced again while its body
//! is read (`crate::timer`).
//!
//! It talks to the runtime's `fetch`, `Request` and `Response` directly rather
//! than through `worker::Fetch` and `worker::Response`: those copy headers and
//! `cf` into new objects on the way in and read a whole body chunk by chunk,
//! one JavaScript promise per chunk, where `arrayBuffer()` is one promise.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::worker_sys::web_sys;
use worker::{ByteStream, Headers, Method};

use super::openai_compat::{classify_error, ProviderError};
use crate::timer::Timer;

/// An upstream answer whose status was 2xx.
pub struct Upstream {
    response: web_sys::Response,
    /// The call's deadline, still running: reading the body races it (a relayed body has its own limit).
    deadline: Option<Timer>,
}

impl Upstream {
    pub fn header(&self, name: &str) -> Option<String> {
        self.response.headers().get(name).ok().flatten()
    }

    /// The body as a stream of chunks, for relaying (its reader bounds each wait; the deadline is cleared).
    pub fn stream(&mut self) -> Result<ByteStream, ProviderError> {
        self.deadline = None;
        self.response
            .body()
            .map(ByteStream::from)
            .ok_or_else(|| ProviderError::Network("the answer had no body".into()))
    }
}

/// Races a future against a timeout.
pub async fn within<T>(ms: u64, fut: impl std::future::Future<Output = T>) -> Option<T> {
    Timer::after(ms).race(fut).await
}

/// Sends a request, its body to be read within `timeout_ms` of now too; a non-2xx answer is read and
/// classified into a `ProviderError`.
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
    let init = web_sys::RequestInit::new();
    init.set_method(method.as_ref());
    init.set_headers(&h.0);
    // A redirect is not followed: it would carry a provider's key header (`x-api-key`, `x-goog-api-key`; the
    // fetch standard drops only `authorization`) or a signed alert to another origin. It is an error (3xx).
    init.set_redirect(web_sys::RequestRedirect::Manual);
    if let Some(body) = body {
        init.set_body(&js_sys::Uint8Array::from(body));
    }
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let promise = global.fetch_with_str_and_init(url, &init);
    let mut deadline = Timer::after(timeout_ms);
    let response = match deadline.race(JsFuture::from(promise.clone())).await {
        None => {
            cancel_when_answered(&promise);
            return Err(ProviderError::Deadline);
        }
        Some(Err(e)) => return Err(ProviderError::Network(crate::js::message(&e))),
        Some(Ok(r)) => r.unchecked_into::<web_sys::Response>(),
    };
    let status = response.status();
    let mut upstream = Upstream { response, deadline: Some(deadline) };
    if (200..300).contains(&status) {
        return Ok(upstream);
    }
    if (300..400).contains(&status) {
        let to = upstream.header("location").unwrap_or_default();
        let message = format!("redirected to {to:?}: no redirect is followed; set the URL to where it leads");
        return Err(ProviderError::Unavailable { status, message });
    }
    let retry_after = upstream.header("retry-after");
    let body = read_all(&mut upstream).await.unwrap_or_default();
    Err(classify_error(status, retry_after.as_deref(), &body))
}

/// An answer that came too late: its body is cancelled unread should it come while the request's task
/// still runs (what an abort signal did at once, at a cost on every fetch); when the task ends first, the
/// runtime cancels the fetch, and this small task is left waiting on a promise that never settles.
fn cancel_when_answered(promise: &js_sys::Promise) {
    let answer = JsFuture::from(promise.clone());
    wasm_bindgen_futures::spawn_local(async move {
        if let Some(body) = answer.await.ok().and_then(|r| r.dyn_into::<web_sys::Response>().ok()?.body()) {
            // Awaited, so a stream that already failed is no unhandled rejection.
            let _ = JsFuture::from(body.cancel()).await;
        }
    });
}

/// Reads a whole body within the call's deadline.
pub async fn read_all(upstream: &mut Upstream) -> Result<Vec<u8>, ProviderError> {
    let promise = upstream
        .response
        .array_buffer()
        .map_err(|e| ProviderError::Network(format!("reading body: {}", crate::js::message(&e))))?;
    let read = crate::js::bytes(promise);
    // Past the deadline the body (locked to its reading) is left to end; its answer is billed whole anyway.
    let read = match &mut upstream.deadline {
        Some(deadline) => deadline.race(read).await,
        None => Some(read.await),
    };
    match read {
        None => Err(ProviderError::Deadline),
        Some(Err(e)) => Err(ProviderError::Network(format!("reading body: {}", crate::js::message(&e)))),
        Some(Ok(bytes)) => Ok(bytes),
    }
}
