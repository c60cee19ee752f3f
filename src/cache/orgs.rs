//! Organization rows on the hot path: isolate memory (30 s) → D1. Writers
//! call `forget`; limits changed elsewhere apply within 30 s.

use std::cell::RefCell;
use std::collections::HashMap;

use worker::D1Database;

use crate::store::orgs::{self, OrgRow};
use crate::store::StoreError;

const MEMORY_TTL_MS: i64 = 30_000;

thread_local! {
    static MEMORY: RefCell<HashMap<String, (i64, Option<OrgRow>)>> = RefCell::new(HashMap::new());
}

pub async fn get(db: &D1Database, id: &str, now_ms: i64) -> Result<Option<OrgRow>, StoreError> {
    if let Some(hit) = MEMORY.with(|m| m.borrow().get(id).filter(|(until, _)| *until > now_ms).map(|(_, r)| r.clone()))
    {
        return Ok(hit);
    }
    let row = orgs::get_live(db, id).await?;
    MEMORY.with(|m| m.borrow_mut().insert(id.to_string(), (now_ms + MEMORY_TTL_MS, row.clone())));
    Ok(row)
}

pub fn forget(id: &str) {
    MEMORY.with(|m| m.borrow_mut().remove(id));
}
