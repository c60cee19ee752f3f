//! Money authority: one Durable Object per paying account.

pub mod account_do;
