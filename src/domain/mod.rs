//! Pure logic: no `worker`, no I/O, no clock, no randomness (callers pass them in).

pub mod account;
#[cfg(test)]
mod account_model_tests;
pub mod alerts;
pub mod allow;
pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod end_users;
pub mod ids;
pub mod keys;
pub mod lease;
pub mod ledger;
pub mod money;
#[cfg(test)]
mod org_model_tests;
pub mod orgs;
pub mod paging;
pub mod parsed_size;
pub mod pricing;
pub mod provisioning;
pub mod rates;
pub mod request_log;
pub mod routing;
pub mod spend;
pub mod tagged;
pub mod time;
pub mod usage;
pub mod users;
pub mod windows;

/// A client mistake, reported as a 400 naming the parameter when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidRequest {
    pub message: String,
    pub param: Option<String>,
}

impl InvalidRequest {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), param: None }
    }
    pub fn param(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self { message: message.into(), param: Some(param.into()) }
    }
}
