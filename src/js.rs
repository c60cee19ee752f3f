//! Small helpers at the JavaScript boundary.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// A thrown JavaScript value's message: an `Error`'s `message`, a thrown string, or its debug form.
pub fn message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

#[wasm_bindgen]
extern "C" {
    /// A Durable Object's `ctx.storage`, for its `transactionSync` (which `worker` does not expose).
    type ObjectStorage;
    #[wasm_bindgen(method, catch, js_name = transactionSync)]
    fn transaction_sync(
        this: &ObjectStorage,
        body: &mut dyn FnMut() -> Result<(), JsValue>,
    ) -> Result<JsValue, JsValue>;
}

/// Runs `body` as one transaction of the object's storage: when it fails, or traps, none of its writes
/// stay (storage rolls them back; without it, the statements before a failure would be kept).
pub fn atomically<T>(state: &worker::State, body: impl FnOnce() -> worker::Result<T>) -> worker::Result<T> {
    let storage: ObjectStorage = state.as_raw().storage()?.unchecked_into();
    let (mut body, mut out) = (Some(body), None);
    let result = storage.transaction_sync(&mut || {
        body.take().map_or(Ok(()), |body| match body() {
            Ok(value) => {
                out = Some(Ok(value));
                Ok(())
            }
            Err(e) => {
                let rollback = JsValue::from_str(&e.to_string());
                out = Some(Err(e));
                Err(rollback)
            }
        })
    });
    match (result, out) {
        (Ok(_), Some(Ok(value))) => Ok(value),
        (Err(_), Some(Err(e))) => Err(e),
        // A trap inside: the instance is poisoned, so the call must not go on (the entry re-instantiates).
        (Err(e), _) if e.is_instance_of::<js_sys::WebAssembly::RuntimeError>() => wasm_bindgen::throw_val(e),
        (Err(e), _) => Err(e.into()),
        (Ok(_), _) => Err(worker::Error::RustError("the storage transaction did not run its body".into())),
    }
}

/// True the first time it is asked about `flag` in this isolate (the flag lives on the global object,
/// so a re-instantiated module still sees it). For test-only faults that must strike once.
pub fn first_time(flag: &str) -> bool {
    let (global, key) = (js_sys::global(), JsValue::from_str(&format!("__tollgate_{flag}")));
    let seen = js_sys::Reflect::has(&global, &key).unwrap_or(true);
    !seen && js_sys::Reflect::set(&global, &key, &JsValue::TRUE).unwrap_or(false)
}

/// True the first `times` times it is asked about `flag` in this isolate (as `first_time`).
pub fn first_times(flag: &str, times: u32) -> bool {
    (0..times).any(|n| first_time(&format!("{flag}_{n}")))
}

/// The bytes of a promised `ArrayBuffer` (what `arrayBuffer()` on a body gives): one promise for the whole body.
pub async fn bytes(promise: js_sys::Promise) -> Result<Vec<u8>, JsValue> {
    let buffer = JsFuture::from(promise).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Reads a `ReadableStream` of bytes chunk by chunk; `Ok(None)` (and the stream cancelled) as soon
/// as more than `limit` bytes have come.
pub async fn read_up_to(stream: &JsValue, limit: usize) -> Result<Option<Vec<u8>>, JsValue> {
    use js_sys::{Function, Reflect};
    let call = |target: &JsValue, name: &str| -> Result<JsValue, JsValue> {
        Reflect::get(target, &JsValue::from_str(name))?.dyn_into::<Function>()?.call0(target)
    };
    let reader = call(stream, "getReader")?;
    let mut out = Vec::new();
    loop {
        let step = JsFuture::from(call(&reader, "read")?.dyn_into::<js_sys::Promise>()?).await?;
        if Reflect::get(&step, &JsValue::from_str("done"))?.as_bool().unwrap_or(true) {
            return Ok(Some(out));
        }
        let chunk = js_sys::Uint8Array::new(&Reflect::get(&step, &JsValue::from_str("value"))?);
        if out.len() + chunk.length() as usize > limit {
            let _ = call(&reader, "cancel");
            return Ok(None);
        }
        out.extend(chunk.to_vec());
    }
}

/// Bytes through the runtime's own gzip codec (`CompressionStream` / `DecompressionStream`): no codec in the wasm.
pub async fn gzip(input: &[u8], compress: bool) -> Result<Vec<u8>, JsValue> {
    use js_sys::{Array, Function, Reflect};
    let global = js_sys::global();
    let class =
        |name: &str| -> Result<Function, JsValue> { Reflect::get(&global, &JsValue::from_str(name))?.dyn_into() };
    let method = |target: &JsValue, name: &str| -> Result<Function, JsValue> {
        Reflect::get(target, &JsValue::from_str(name))?.dyn_into()
    };
    let codec = class(if compress { "CompressionStream" } else { "DecompressionStream" })?;
    let codec = Reflect::construct(&codec, &Array::of1(&JsValue::from_str("gzip")))?;
    let response = class("Response")?;
    let source = Reflect::construct(&response, &Array::of1(&js_sys::Uint8Array::from(input)))?;
    let body = Reflect::get(&source, &JsValue::from_str("body"))?;
    let piped = method(&body, "pipeThrough")?.call1(&body, &codec)?;
    let result = Reflect::construct(&response, &Array::of1(&piped))?;
    bytes(method(&result, "arrayBuffer")?.call0(&result)?.dyn_into()?).await
}
