//! Small helpers at the JavaScript boundary.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// A thrown JavaScript value's message: an `Error`'s `message`, a thrown string, or its debug form.
pub fn message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// The bytes of a promised `ArrayBuffer` (what `arrayBuffer()` on a body gives): one promise for the whole body.
pub async fn bytes(promise: js_sys::Promise) -> Result<Vec<u8>, JsValue> {
    let buffer = JsFuture::from(promise).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}
