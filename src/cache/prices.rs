//! The price table on the hot path: isolate memory (60 s) → KV (`prices:v2:all`,
//! 300 s) → D1. Writers call `forget`; other isolates see a change within a
//! minute (prices are not a revocation: a minute of the old price is fine).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use worker::{D1Database, KvStore};

use crate::store::prices::{self, PriceRow};
use crate::store::StoreError;

const MEMORY_TTL_MS: i64 = 60_000;
const KV_TTL_SECS: u64 = 300;

pub type PriceTable = Rc<HashMap<String, PriceRow>>;

thread_local! {
    static MEMORY: RefCell<Option<(i64, PriceTable)>> = const { RefCell::new(None) };
}

fn index(rows: Vec<PriceRow>) -> PriceTable {
    Rc::new(rows.into_iter().map(|r| (r.model_name.clone(), r)).collect())
}

/// Every price row, from the nearest cache that has them.
pub async fn table(kv: &KvStore, db: &D1Database, now_ms: i64) -> Result<PriceTable, StoreError> {
    if let Some(t) = MEMORY.with(|m| m.borrow().as_ref().filter(|(until, _)| *until > now_ms).map(|(_, t)| t.clone())) {
        return Ok(t);
    }
    let kv_key = super::kv_name("prices", "all");
    let rows = match kv.get(&kv_key).json::<Vec<PriceRow>>().await.ok().flatten() {
        Some(rows) => rows,
        None => {
            let rows = prices::all(db).await?;
            if let Ok(put) = kv.put(&kv_key, &rows) {
                let _ = put.expiration_ttl(KV_TTL_SECS).execute().await;
            }
            rows
        }
    };
    let t = index(rows);
    MEMORY.with(|m| *m.borrow_mut() = Some((now_ms + MEMORY_TTL_MS, t.clone())));
    Ok(t)
}

/// After a price change: this isolate and KV forget the table.
pub async fn forget(kv: &KvStore) {
    MEMORY.with(|m| *m.borrow_mut() = None);
    for name in super::kv_names("prices", "all") {
        let _ = kv.delete(&name).await;
    }
}
