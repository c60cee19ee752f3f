//! Tollgate: a multi-tenant LLM gateway on Cloudflare Workers.
//!
//! This file only wires the runtime's entry points to the route table; see
//! `docs/architecture.md` for the layers.

pub mod domain;
#[cfg(test)]
mod never_panics;
#[cfg(not(target_arch = "wasm32"))]
pub mod openapi;
pub mod providers;
pub mod routes;

pub mod api;
pub mod billing;
#[cfg(target_arch = "wasm32")]
mod cache;
#[cfg(target_arch = "wasm32")]
mod env;
#[cfg(target_arch = "wasm32")]
mod fan_out;
#[cfg(target_arch = "wasm32")]
mod jobs;
#[cfg(target_arch = "wasm32")]
mod js;
#[cfg(target_arch = "wasm32")]
mod log;
#[cfg(target_arch = "wasm32")]
mod queues;
#[cfg(target_arch = "wasm32")]
mod retention;
#[cfg(target_arch = "wasm32")]
mod store;
#[cfg(target_arch = "wasm32")]
mod timer;
#[cfg(target_arch = "wasm32")]
mod webhooks;

#[cfg(target_arch = "wasm32")]
pub use billing::account_do::AccountDo;
#[cfg(target_arch = "wasm32")]
pub use billing::org_do::OrgDo;

#[cfg(target_arch = "wasm32")]
mod entry {
    use worker::worker_sys::web_sys;
    use worker::{event, Context, Env, MessageBatch, Response, Result, ScheduleContext, ScheduledEvent};

    /// A call into the module that does nothing: `src/entry.mjs` makes it before it uses an object's Rust
    /// side, so that a new instance owed after a trap is made first. (worker's own start function installs
    /// the panic hook that logs a panic and marks the module crashed; replacing it would lose the mark.)
    #[event(start)]
    fn start() {}

    /// Takes the runtime's request as is: see `api::incoming` for why not `worker::Request`.
    #[event(fetch)]
    async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> Result<Response> {
        Ok(crate::api::handle(crate::api::Incoming::new(req), env, ctx).await)
    }

    /// The queues this Worker consumes: alerts on their way to the tenant's webhook (`…alerts`), and
    /// work fanned out per account (`…jobs`).
    #[event(queue)]
    async fn queue(batch: MessageBatch<serde_json::Value>, env: Env, _ctx: Context) -> Result<()> {
        if batch.queue().ends_with("alerts") {
            crate::webhooks::consume(batch, env).await
        } else {
            crate::fan_out::consume(batch, env).await
        }
    }

    #[event(scheduled)]
    async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
        crate::jobs::run(event.cron(), env).await;
    }
}
