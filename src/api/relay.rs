//! Pipes an upstream SSE stream to the client chunk by chunk, metering as it
//! goes: it notes the usage chunk, keeps the reservation alive with heartbeats,
//! and reports how the stream ended (at its end, or when the client hangs up).

use futures_channel::oneshot;
use futures_util::stream::{self, StreamExt};
use worker::ByteStream;

use super::error::ApiError;
use super::meter::Heartbeat;
use crate::domain::chat::Usage;
use crate::providers::openai_compat::ProviderError;
use crate::providers::sse::{OpenLine, SseRelay, StreamSummary, MAX_LINE_BYTES};
use crate::providers::wire::StreamAdapter;
use crate::timer::IdleLimit;

/// How a stream ended, for its settlement.
pub struct StreamOutcome {
    pub usage: Option<Usage>,
    /// Without `usage`: what a direct provider had reported before the stream ended.
    pub usage_so_far: Option<Usage>,
    pub content_bytes: u64,
    /// The client went away before the end.
    pub cancelled: bool,
    /// The upstream broke or timed out mid-stream.
    pub failed: bool,
    /// The model and id the chunks named.
    pub model: Option<String>,
    pub id: Option<String>,
}

impl StreamOutcome {
    /// The relay was dropped before it could report (the response never started).
    pub fn lost() -> Self {
        Self {
            usage: None,
            usage_so_far: None,
            content_bytes: 0,
            cancelled: true,
            failed: false,
            model: None,
            id: None,
        }
    }
}

pub struct Relay {
    /// The upstream's body; dropping it cancels it (the upstream stops generating).
    pub upstream: Option<ByteStream>,
    /// Translates a direct provider's events into OpenAI's before they are metered and relayed.
    pub adapter: Option<StreamAdapter>,
    pub sse: SseRelay,
    /// The upstream's line so far: one that never ends fails the stream (`sse::MAX_LINE_BYTES`).
    pub line: OpenLine,
    /// The longest wait for the upstream's next chunk.
    pub idle: IdleLimit,
    /// Until then, while no content has come (a model reasoning before its first word: OpenAI's and
    /// Google's own APIs send nothing meanwhile), a wait past `idle` sends the client a keep-alive comment
    /// and waits on, instead of ending the stream.
    pub first_content_by_ms: f64,
    pub request_id: String,
    pub heartbeat: Option<Heartbeat>,
    /// The shape the client reads (chat chunks, or completion chunks).
    pub dialect: super::reply::StreamDialect,
    pub ended: bool,
    /// Told how the stream ended, exactly once (at the end, or on drop).
    pub outcome: Option<oneshot::Sender<StreamOutcome>>,
    /// The key's request log, when it keeps one: what the client got is kept there too.
    pub log: super::request_log::Keeper,
}

impl Relay {
    /// Puts events in the client's shape, and keeps them for the request log.
    fn emit(&mut self, events: Vec<u8>) -> Vec<u8> {
        let out = self.dialect.feed(events);
        super::request_log::keep_response(&self.log, &out);
        out
    }

    fn report(&mut self, cancelled: bool, failed: bool) {
        if let Some(tx) = self.outcome.take() {
            let summary: &StreamSummary = self.sse.summary();
            let usage_so_far = summary.usage.is_none().then(|| self.adapter.as_ref()?.usage_so_far()).flatten();
            let _ = tx.send(StreamOutcome {
                usage: summary.usage.clone(),
                usage_so_far,
                content_bytes: summary.content_bytes,
                cancelled,
                failed,
                model: summary.model.clone(),
                id: summary.id.clone(),
            });
        }
    }

    /// Why the stream may not run on, if it may not: its reservation was closed, or its key stopped.
    fn may_not_go_on(&self) -> Option<ApiError> {
        let heartbeat = self.heartbeat.as_ref()?;
        if heartbeat.lost.get() {
            return Some(ProviderError::Network("the request's reservation was closed".into()).into());
        }
        heartbeat.stopped.get().then(|| {
            ApiError::forbidden("this key was disabled, deleted or expired, or lost `write`, while the request ran")
        })
    }

    /// Keeps the heartbeat's progress current.
    fn progress(&self) {
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.progress.set(self.sse.summary().content_bytes);
        }
    }
}

impl Drop for Relay {
    /// The client hung up mid-stream: stop the upstream; the settlement asks OpenRouter what the
    /// generation used, or bills what was delivered.
    fn drop(&mut self) {
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.running.set(false);
        }
        if !self.ended {
            self.upstream = None;
            self.report(true, false);
        }
    }
}

/// The client's stream. A failure after the first byte ends it with an error event and `[DONE]`.
pub fn relay_stream(relay: Relay) -> impl futures_util::Stream<Item = worker::Result<Vec<u8>>> {
    stream::unfold(relay, |mut s| async move {
        if s.ended {
            return None;
        }
        loop {
            let upstream = s.upstream.as_mut()?;
            let failure = match s.idle.next(upstream.next()).await {
                Some(Some(Ok(chunk))) if !s.line.fits(&chunk) => {
                    s.upstream = None;
                    Some(ProviderError::Malformed(format!("a stream line passed {} bytes", MAX_LINE_BYTES)).into())
                }
                // Its reservation closed or its key stopped: it may not run on (this chunk is neither
                // counted nor sent).
                Some(Some(Ok(_))) if s.may_not_go_on().is_some() => {
                    s.upstream = None;
                    s.may_not_go_on()
                }
                Some(Some(Ok(chunk))) => {
                    let out = match &mut s.adapter {
                        Some(adapter) => {
                            let translated = adapter.feed(&chunk);
                            s.sse.feed(&translated)
                        }
                        None => s.sse.feed(&chunk),
                    };
                    s.progress();
                    if out.is_empty() {
                        continue;
                    }
                    let out = s.emit(out);
                    return Some((Ok(out), s));
                }
                Some(None) => {
                    if let Some(adapter) = &s.adapter {
                        let tail = adapter.end();
                        let out = s.sse.feed(&tail);
                        if !out.is_empty() {
                            s.adapter = None; // its end is sent; the next turn finishes the stream
                            let out = s.emit(out);
                            return Some((Ok(out), s));
                        }
                    }
                    (!s.sse.summary().done).then(|| ProviderError::Network("stream ended before [DONE]".into()).into())
                }
                Some(Some(Err(e))) => Some(ProviderError::Network(format!("stream broke: {e}")).into()),
                None if s.sse.summary().content_bytes == 0 && js_sys::Date::now() < s.first_content_by_ms => {
                    let out = s.emit(b": keep-alive\n\n".to_vec());
                    return Some((Ok(out), s));
                }
                None => {
                    s.upstream = None;
                    Some(ProviderError::Deadline.into())
                }
            };
            s.ended = true;
            if let Some(heartbeat) = &s.heartbeat {
                heartbeat.running.set(false);
            }
            let tail = match &failure {
                Some(err) => s.sse.finish(Some(&err.body(&s.request_id).to_string())),
                None => s.sse.finish(None),
            };
            // An upstream error event followed by `[DONE]` ended the stream as a failure all the same.
            let failed = failure.is_some() || s.sse.summary().upstream_error.is_some();
            s.report(false, failed);
            let tail = s.emit(tail);
            return (!tail.is_empty()).then_some((Ok(tail), s));
        }
    })
}
