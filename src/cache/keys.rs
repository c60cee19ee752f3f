//! Key lookups: isolate memory → KV → D1. Negative answers are cached too,
//! briefly, so a flood of bad keys costs no D1 reads.
//!
//! KV entries are JSON `KeyRecord`s under `key:v2:<sha256>` (`super::FORMAT`); isolate memory
//! entries live at most `MEMORY_TTL_MS`.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use worker::KvStore;

use crate::domain::time::parse_iso;
use crate::store::keys::KeyRow;

const MEMORY_TTL_MS: i64 = 10_000;
const MEMORY_NEGATIVE_TTL_MS: i64 = 5_000;
const MEMORY_MAX_ENTRIES: usize = 10_000;
const KV_TTL_SECS: u64 = 300;

/// What authentication needs to know about a key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub user_id: String,
    pub org_id: Option<String>,
    pub permissions: String,
    /// The earliest of the key's expiry and, for a rotated-out secret, its grace end (ms).
    pub valid_until_ms: Option<i64>,
    pub disabled: bool,
    pub deleted: bool,
    /// Spend limit per window (micro-USD) and its reset, as D1 had them.
    #[serde(default)]
    pub limit_micros: Option<i64>,
    #[serde(default)]
    pub limit_reset: Option<String>,
    /// The secret presented is the previous one of a rotated key (in its grace period).
    #[serde(default)]
    pub presented_previous: bool,
    /// The models and providers the key may use (`domain::allow`; empty: any).
    #[serde(default)]
    pub allowed: crate::domain::allow::Allowlist,
    /// Its own requests and tokens per minute (the tenant's default applies where it sets none).
    #[serde(default)]
    pub rates: crate::domain::rates::RateLimits,
    /// Each end user's budget, as D1 had it.
    #[serde(default)]
    pub end_user_budget: Option<crate::domain::end_users::Budget>,
    /// Days the key keeps its request log; `None`: off.
    #[serde(default)]
    pub request_log_days: Option<i64>,
    /// When D1 last changed the key (`KeyState::version`), sent with its reservations.
    #[serde(default)]
    pub version: Option<i64>,
}

impl KeyRecord {
    /// `hash` says which secret was presented (the current or the previous one).
    pub fn from_row(row: &KeyRow, hash: &str) -> Self {
        let expiry = row.expires_at.as_deref().and_then(parse_iso);
        let grace_end =
            (row.key_hash != hash).then(|| row.previous_expires_at.as_deref().and_then(parse_iso)).flatten();
        let valid_until_ms = match (expiry, grace_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Self {
            id: row.id.clone(),
            user_id: row.user_id.clone(),
            org_id: row.org_id.clone(),
            permissions: row.permissions.clone(),
            valid_until_ms,
            disabled: row.disabled != 0,
            deleted: row.deleted_at.is_some(),
            limit_micros: row.limit_micros,
            limit_reset: row.limit_reset.clone(),
            presented_previous: row.key_hash != hash,
            allowed: row.allowlist(),
            rates: row.rates(),
            end_user_budget: row.end_user_budget(),
            request_log_days: row.request_log_days,
            version: row.version(),
        }
    }
}

/// Where a lookup was answered from (reported in `server-timing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Memory,
    Kv,
    D1,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Kv => "kv",
            Self::D1 => "d1",
        }
    }
}

/// A record (or a known absence), valid until, last used (for least-recently-used eviction).
type Entry = (Option<KeyRecord>, i64, i64);

/// `last_used_at` is written at most this often per key.
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// How long a hash this isolate found to be a key is let past a block on its client (see `known_recently`).
const KNOWN_FOR_MS: i64 = 300_000;

thread_local! {
    static MEMORY: RefCell<HashMap<String, Entry>> = RefCell::new(HashMap::new());
    static TOUCHED: RefCell<HashMap<String, i64>> = RefCell::new(HashMap::new());
    static KNOWN: RefCell<HashMap<String, i64>> = RefCell::new(HashMap::new());
}

/// Was this hash found to be a key in this isolate in the last `KNOWN_FOR_MS`? A client refused for
/// presenting unknown keys (one address shared by an attacker and real users) still gets lookups for
/// keys known to be real, after their 10 s in memory has passed.
pub fn known_recently(hash: &str, now_ms: i64) -> bool {
    KNOWN.with(|k| k.borrow().get(hash).is_some_and(|at| now_ms - at < KNOWN_FOR_MS))
}

/// True (and remembered) when this isolate has not recorded a use of the key in the last minute.
pub fn due_for_touch(key_id: &str, now_ms: i64) -> bool {
    TOUCHED.with(|t| {
        let mut t = t.borrow_mut();
        if t.get(key_id).is_some_and(|at| now_ms - at < TOUCH_EVERY_MS) {
            return false;
        }
        if t.len() >= MEMORY_MAX_ENTRIES {
            t.clear();
        }
        t.insert(key_id.to_string(), now_ms);
        true
    })
}

fn kv_name(hash: &str) -> String {
    super::kv_name("key", hash)
}

pub fn from_memory(hash: &str, now_ms: i64) -> Option<Option<KeyRecord>> {
    MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        let entry = m.get_mut(hash).filter(|(_, until, _)| *until > now_ms)?;
        entry.2 = now_ms;
        Some(entry.0.clone())
    })
}

/// Remembers a lookup's answer. When the cache is full, expired entries go first, then the
/// least recently used tenth: a flood of unknown keys cannot push the real ones out all at once.
pub fn remember(hash: &str, record: Option<KeyRecord>, now_ms: i64) {
    let ttl = if record.is_some() { MEMORY_TTL_MS } else { MEMORY_NEGATIVE_TTL_MS };
    MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= MEMORY_MAX_ENTRIES {
            m.retain(|_, (_, until, _)| *until > now_ms);
        }
        if m.len() >= MEMORY_MAX_ENTRIES {
            let mut used: Vec<i64> = m.values().map(|(_, _, used)| *used).collect();
            let cut = MEMORY_MAX_ENTRIES / 10;
            used.select_nth_unstable(cut);
            let oldest = used[cut];
            m.retain(|_, (_, _, used)| *used > oldest);
        }
        if record.is_some() {
            KNOWN.with(|k| {
                let mut k = k.borrow_mut();
                if k.len() >= MEMORY_MAX_ENTRIES {
                    k.retain(|_, at| now_ms - *at < KNOWN_FOR_MS);
                }
                if k.len() < MEMORY_MAX_ENTRIES {
                    k.insert(hash.to_string(), now_ms);
                }
            });
        }
        m.insert(hash.to_string(), (record, now_ms + ttl, now_ms));
    });
}

/// `Some(answer)` when KV knows; `None` when it has nothing (or failed: D1 decides).
pub async fn from_kv(kv: &KvStore, hash: &str) -> Option<Option<KeyRecord>> {
    kv.get(&kv_name(hash)).json::<Option<KeyRecord>>().await.ok().flatten()
}

/// Stores a found record in KV. Absences stay in isolate memory only: a KV write per
/// unknown key would let anyone make the tenant pay for writes.
pub async fn store_kv(kv: &KvStore, hash: &str, record: &KeyRecord) {
    if let Ok(put) = kv.put(&kv_name(hash), Some(record)) {
        let _ = put.expiration_ttl(KV_TTL_SECS).execute().await;
    }
}

/// Drops hashes from this isolate's memory and from KV, so the next lookup reads D1.
pub async fn forget(kv: &KvStore, hashes: &[&str]) {
    for hash in hashes {
        MEMORY.with(|m| m.borrow_mut().remove(*hash));
    }
    forget_in_kv(kv, hashes).await;
}

/// Drops the keys' KV copies only (this isolate's memory keeps its own, as another isolate's does).
pub async fn forget_in_kv(kv: &KvStore, hashes: &[&str]) {
    for name in hashes.iter().flat_map(|hash| super::kv_names("key", hash)) {
        let _ = kv.delete(&name).await;
    }
}
