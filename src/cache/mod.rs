//! Read caches in front of D1: an in-isolate map for hot entries and KV behind it.

pub mod failures;
pub mod keys;
pub mod orgs;
pub mod prices;
