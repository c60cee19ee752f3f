//! Small helpers at the JavaScript boundary.

use wasm_bindgen::{JsCast, JsValue};

/// A thrown JavaScript value's message: an `Error`'s `message`, a thrown string, or its debug form.
pub fn message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}
