//! The Worker's queues (`JOBS`, `ALERTS`): messages travel as JSON text (content type `text`),
//! written and read by serde_json, so no second (JavaScript-value) serializer is in the wasm for
//! them. A message queued as an object (by an earlier version) is read through `JSON.stringify`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::JsValue;
use worker::{Queue, QueueContentType, RawMessage, RawMessageBuilder, Result, SendMessage};

/// A queue takes at most this many messages a batch.
const MAX_BATCH: usize = 100;

fn message<T: Serialize>(value: &T) -> Result<SendMessage<JsValue>> {
    let text = serde_json::to_string(value)?;
    Ok(RawMessageBuilder::new(JsValue::from_str(&text)).build_with_content_type(QueueContentType::Text))
}

/// Sends one message.
pub async fn send<T: Serialize>(queue: &Queue, value: &T) -> Result<()> {
    queue.send_raw(message(value)?).await
}

/// Sends messages, in batches of at most 100.
pub async fn send_all<T: Serialize>(queue: &Queue, values: &[T]) -> Result<()> {
    for chunk in values.chunks(MAX_BATCH) {
        let batch = chunk.iter().map(message).collect::<Result<Vec<_>>>()?;
        queue.send_raw_batch(batch).await?;
    }
    Ok(())
}

/// A message's body.
pub fn read<T: DeserializeOwned>(message: &RawMessage) -> std::result::Result<T, String> {
    let body = message.body();
    let text = match body.as_string() {
        Some(text) => text,
        None => js_sys::JSON::stringify(&body).map(String::from).map_err(|e| crate::js::message(&e))?,
    };
    serde_json::from_slice(text.as_bytes()).map_err(|e| e.to_string())
}
