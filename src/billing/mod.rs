//! Money authority: one Durable Object per paying account (`account_do`) and
//! one per organization (`org_do`). `protocol` is pure (host-tested); the
//! rules are `domain::account`; the objects, their SQL (`store`), the copy to
//! D1 (`outbox`), the typed client (`client`) and the settlement line (`batch`)
//! need the runtime; this isolate's budget leases (`leases`) are host-tested.

#[cfg(target_arch = "wasm32")]
mod account;
#[cfg(target_arch = "wasm32")]
pub mod account_do;
#[cfg(target_arch = "wasm32")]
pub mod batch;
#[cfg(target_arch = "wasm32")]
pub mod client;
pub mod leases;
#[cfg(target_arch = "wasm32")]
mod message;
#[cfg(target_arch = "wasm32")]
pub mod org_do;
#[cfg(target_arch = "wasm32")]
pub mod outbox;
pub mod protocol;
#[cfg(target_arch = "wasm32")]
mod store;
