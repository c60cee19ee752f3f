//! Upstream providers: wire translation (pure) and the one transport module
//! that performs `fetch`.

pub mod anthropic;
pub mod gemini;
pub mod generation;
#[cfg(target_arch = "wasm32")]
pub mod key_management;
pub mod openai;
pub mod openai_compat;
pub mod reasoning;
pub mod responses;
pub mod sse;
pub mod translate;
#[cfg(target_arch = "wasm32")]
pub mod transport;
pub mod wire;
