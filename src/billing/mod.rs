//! Money authority: one Durable Object per paying account. `protocol` is
//! pure (host-tested); the DO shell and its client need the runtime.

#[cfg(target_arch = "wasm32")]
pub mod account_do;
#[cfg(target_arch = "wasm32")]
pub mod client;
pub mod protocol;
