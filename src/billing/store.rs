//! The account object's SQL: its schema, the book as storage holds it, and
//! the writes each of the book's answers needs. The writes of one message
//! happen in its synchronous step, so the runtime holds the answer until they
//! are durable, and are one transaction (`account_do`): a statement that
//! fails, or a trap, undoes all of them. The ledger row is the change (the
//! balance is the last row's `balance_after`; a credit's idempotency key is its
//! `reference_id`); a reservation row that outlives its ledger row (stored
//! before messages were transactions) is dropped when the book loads.

use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{Result, SqlStorage};

use super::protocol::LedgerEntry;
use crate::domain::account::{About, Book, Held, SPEND_DAYS};
use crate::domain::alerts::Alert;
use crate::domain::end_users::Budget;
use crate::domain::keys::KeyState;
use crate::domain::lease::Lease;
use crate::domain::rates::{self, Admitted, RateLimits, Rates};
use crate::domain::usage::UsageRecord;
use crate::domain::windows::Reset;

const SCHEMA: &str = "
  CREATE TABLE IF NOT EXISTS key_state (
    key_id TEXT PRIMARY KEY, hash TEXT NOT NULL, previous_hash TEXT, previous_until_ms REAL,
    expires_at_ms REAL, disabled INTEGER NOT NULL, deleted INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY CHECK (id = 1), balance REAL NOT NULL, account_id TEXT);
  INSERT OR IGNORE INTO account (id, balance) VALUES (1, 0);
  CREATE TABLE IF NOT EXISTS reservations (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, amount REAL NOT NULL, created_ms REAL NOT NULL);
  CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, amount REAL NOT NULL,
    balance_after REAL NOT NULL, reference_id TEXT, description TEXT, key_id TEXT, created_ms REAL NOT NULL,
    synced INTEGER NOT NULL DEFAULT 0);
  CREATE INDEX IF NOT EXISTS ledger_key ON ledger(key_id, created_ms);
  CREATE INDEX IF NOT EXISTS ledger_unsynced ON ledger(synced) WHERE synced = 0;
  CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, answer TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS usage_outbox (id TEXT PRIMARY KEY, record TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY, key_id TEXT NOT NULL, granted REAL NOT NULL, use_until_ms REAL NOT NULL, expires_ms REAL NOT NULL);
  CREATE TABLE IF NOT EXISTS lease_charges (request_id TEXT PRIMARY KEY, lease_id TEXT NOT NULL, amount REAL NOT NULL);
  CREATE INDEX IF NOT EXISTS lease_charges_lease ON lease_charges(lease_id);
  CREATE TABLE IF NOT EXISTS rate_log (request_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, at_ms REAL NOT NULL, tokens REAL NOT NULL);
  CREATE INDEX IF NOT EXISTS rate_log_key ON rate_log(key_id, at_ms);
  CREATE TABLE IF NOT EXISTS end_users (
    key_id TEXT NOT NULL, end_user TEXT NOT NULL, first_ms REAL NOT NULL,
    own INTEGER NOT NULL DEFAULT 0, own_limit REAL, own_reset TEXT, PRIMARY KEY (key_id, end_user));
  CREATE TABLE IF NOT EXISTS alert_outbox (id TEXT PRIMARY KEY, body TEXT NOT NULL, sent INTEGER NOT NULL DEFAULT 0, created_ms REAL NOT NULL);
  CREATE INDEX IF NOT EXISTS alert_outbox_unsent ON alert_outbox(sent) WHERE sent = 0;";

/// Columns added after the first version of the object, added where missing.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("key_state", "limit_micros", "REAL"),
    ("key_state", "limit_reset", "TEXT"),
    ("key_state", "permissions", "TEXT"),
    ("key_state", "version", "REAL"),
    ("key_state", "rpm_limit", "REAL"),
    ("key_state", "tpm_limit", "REAL"),
    ("key_state", "end_user_limit", "REAL"),
    ("key_state", "end_user_reset", "TEXT"),
    ("reservations", "end_user", "TEXT"),
    ("ledger", "end_user", "TEXT"),
    ("reservations", "evidence", "REAL NOT NULL DEFAULT 0"),
    ("reservations", "expires_ms", "REAL NOT NULL DEFAULT 0"),
    ("ledger", "uncollected", "REAL NOT NULL DEFAULT 0"),
    ("ledger", "upstream_id", "TEXT"),
    ("reservations", "about", "TEXT"),
    ("end_users", "spent", "REAL NOT NULL DEFAULT 0"),
];

/// Each end user's spend in all, summed from the ledger in one pass: once, on the first start with the
/// `spent` column (the triggers keep it since). Summing again gives the same, so a start that dies before
/// it is marked done does it again.
const END_USERS_SPENT: &str = "
  UPDATE end_users SET spent = s.spent FROM (SELECT key_id, end_user, -SUM(amount) AS spent FROM ledger
    WHERE type = 'usage' AND key_id IS NOT NULL AND end_user IS NOT NULL GROUP BY key_id, end_user) AS s
    WHERE end_users.key_id = s.key_id AND end_users.end_user = s.end_user;
  INSERT OR REPLACE INTO meta (k, v) VALUES ('end_users_spent', 1);";

pub fn int(n: i64) -> JsValue {
    JsValue::from_f64(n as f64)
}

pub fn text(s: &str) -> JsValue {
    JsValue::from_str(s)
}

fn opt_int(v: Option<i64>) -> JsValue {
    v.map_or(JsValue::NULL, int)
}

fn opt_text(s: Option<&str>) -> JsValue {
    s.map_or(JsValue::NULL, JsValue::from_str)
}

#[derive(Deserialize)]
struct Num {
    n: Option<f64>,
}

/// A single number from a query (`SELECT … AS n`), 0 when NULL.
pub fn scalar(sql: &SqlStorage, query: &str, args: Vec<JsValue>) -> Result<i64> {
    let rows: Vec<Num> = sql.exec_raw(query, args)?.to_array()?;
    Ok(rows.first().and_then(|r| r.n).unwrap_or(0.0) as i64)
}

/// The ledger's running sums, kept by triggers in the very statement that writes a row, so reading them
/// costs the same however long the ledger is; so is each end user's spend in all (`end_users.spent`, by
/// which its list is ordered); and the indexes that find one end user's recent charges and the end users
/// with a budget of their own. Created after the columns they read; the first start with them sums the
/// rows already there.
const LEDGER_SUMS: &str = "
  CREATE TABLE IF NOT EXISTS ledger_sums (id INTEGER PRIMARY KEY CHECK (id = 1), amount REAL NOT NULL,
    uncollected REAL NOT NULL, credits REAL NOT NULL, usage REAL NOT NULL);
  INSERT OR IGNORE INTO ledger_sums (id, amount, uncollected, credits, usage)
    SELECT 1, COALESCE(SUM(amount), 0), COALESCE(SUM(uncollected), 0),
      COALESCE(SUM(CASE WHEN type <> 'usage' THEN amount END), 0), COALESCE(SUM(CASE WHEN type = 'usage' THEN amount END), 0)
    FROM ledger;
  CREATE INDEX IF NOT EXISTS ledger_end_user_time ON ledger(key_id, end_user, created_ms) WHERE end_user IS NOT NULL;
  CREATE INDEX IF NOT EXISTS end_users_spent ON end_users(key_id, spent DESC, end_user);
  CREATE INDEX IF NOT EXISTS end_users_own ON end_users(key_id) WHERE own = 1 AND own_limit IS NOT NULL;
  CREATE TRIGGER IF NOT EXISTS end_user_spent_insert AFTER INSERT ON ledger
    WHEN NEW.type = 'usage' AND NEW.key_id IS NOT NULL AND NEW.end_user IS NOT NULL BEGIN
    INSERT OR IGNORE INTO end_users (key_id, end_user, first_ms) VALUES (NEW.key_id, NEW.end_user, NEW.created_ms);
    UPDATE end_users SET spent = spent - NEW.amount WHERE key_id = NEW.key_id AND end_user = NEW.end_user;
  END;
  CREATE TRIGGER IF NOT EXISTS end_user_spent_update AFTER UPDATE OF amount ON ledger
    WHEN NEW.type = 'usage' AND NEW.key_id IS NOT NULL AND NEW.end_user IS NOT NULL BEGIN
    UPDATE end_users SET spent = spent - NEW.amount + OLD.amount WHERE key_id = NEW.key_id AND end_user = NEW.end_user;
  END;
  CREATE TRIGGER IF NOT EXISTS ledger_sums_insert AFTER INSERT ON ledger BEGIN
    UPDATE ledger_sums SET amount = amount + NEW.amount, uncollected = uncollected + NEW.uncollected,
      credits = credits + CASE WHEN NEW.type <> 'usage' THEN NEW.amount ELSE 0 END,
      usage = usage + CASE WHEN NEW.type = 'usage' THEN NEW.amount ELSE 0 END WHERE id = 1;
  END;
  CREATE TRIGGER IF NOT EXISTS ledger_sums_update AFTER UPDATE OF amount, uncollected ON ledger BEGIN
    UPDATE ledger_sums SET amount = amount + NEW.amount - OLD.amount,
      uncollected = uncollected + NEW.uncollected - OLD.uncollected,
      credits = credits + CASE WHEN NEW.type <> 'usage' THEN NEW.amount - OLD.amount ELSE 0 END,
      usage = usage + CASE WHEN NEW.type = 'usage' THEN NEW.amount - OLD.amount ELSE 0 END WHERE id = 1;
  END;";

/// Creates the schema (once per start of the object).
pub fn migrate(sql: &SqlStorage) -> Result<()> {
    sql.exec(SCHEMA, None)?;
    for (table, column, kind) in ADDED_COLUMNS {
        let present = scalar(
            sql,
            &format!("SELECT COUNT(*) AS n FROM pragma_table_info('{table}') WHERE name = '{column}'"),
            vec![],
        )?;
        if present == 0 {
            sql.exec(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"), None)?;
        }
    }
    sql.exec(LEDGER_SUMS, None)?;
    if scalar(sql, "SELECT COUNT(*) AS n FROM meta WHERE k = 'end_users_spent'", vec![])? == 0 {
        sql.exec(END_USERS_SPENT, None)?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct KeyStateRow {
    key_id: String,
    hash: String,
    previous_hash: Option<String>,
    previous_until_ms: Option<f64>,
    expires_at_ms: Option<f64>,
    disabled: i64,
    deleted: i64,
    limit_micros: Option<f64>,
    limit_reset: Option<String>,
    permissions: Option<String>,
    version: Option<f64>,
    rpm_limit: Option<f64>,
    tpm_limit: Option<f64>,
    end_user_limit: Option<f64>,
    end_user_reset: Option<String>,
}

/// A budget as two columns (no limit: none).
fn budget(limit: Option<f64>, reset: Option<&str>) -> Option<Budget> {
    Some(Budget { limit_micros: limit? as i64, reset: reset.and_then(Reset::parse) })
}

impl From<KeyStateRow> for KeyState {
    fn from(r: KeyStateRow) -> Self {
        Self {
            key_id: r.key_id,
            hash: r.hash,
            previous_hash: r.previous_hash,
            previous_until_ms: r.previous_until_ms.map(|v| v as i64),
            expires_at_ms: r.expires_at_ms.map(|v| v as i64),
            disabled: r.disabled != 0,
            deleted: r.deleted != 0,
            limit_micros: r.limit_micros.map(|v| v as i64),
            limit_reset: r.limit_reset.as_deref().and_then(Reset::parse),
            permissions: r.permissions,
            version: r.version.map(|v| v as i64),
            rates: RateLimits { rpm: r.rpm_limit.map(|v| v as i64), tpm: r.tpm_limit.map(|v| v as i64) },
            end_user_budget: budget(r.end_user_limit, r.end_user_reset.as_deref()),
        }
    }
}

#[derive(Deserialize)]
pub struct LedgerRow {
    pub id: String,
    pub r#type: String,
    pub amount: f64,
    pub balance_after: f64,
    pub reference_id: Option<String>,
    pub description: Option<String>,
    pub key_id: Option<String>,
    pub created_ms: f64,
    #[serde(default)]
    pub upstream_id: Option<String>,
}

impl From<LedgerRow> for LedgerEntry {
    fn from(r: LedgerRow) -> Self {
        Self {
            id: r.id,
            kind: r.r#type,
            amount: r.amount as i64,
            balance_after: r.balance_after as i64,
            reference_id: r.reference_id,
            description: r.description,
            key_id: r.key_id,
            created_ms: r.created_ms as i64,
        }
    }
}

/// The book as storage holds it: balance, open reservations, key states, each
/// key's charges per day for the last `SPEND_DAYS` days (older ones summed),
/// leases, per-minute windows, how many end users of each key have a budget of
/// their own, and the end users of requests in flight (others are brought when
/// a message names them).
pub fn load_book(sql: &SqlStorage, now: i64) -> Result<Book> {
    #[derive(Deserialize)]
    struct HeldRow {
        id: String,
        key_id: String,
        end_user: Option<String>,
        amount: f64,
        evidence: f64,
        created_ms: f64,
        expires_ms: f64,
    }
    #[derive(Deserialize)]
    struct ChargeRow {
        key_id: String,
        day: f64,
        spent: f64,
    }
    // The balance is the last ledger row's (an account with no row yet: the stored 0).
    let has_rows = scalar(sql, "SELECT COUNT(*) AS n FROM (SELECT 1 FROM ledger LIMIT 1)", vec![])? > 0;
    let balance = if has_rows {
        scalar(sql, "SELECT balance_after AS n FROM ledger ORDER BY seq DESC LIMIT 1", vec![])?
    } else {
        scalar(sql, "SELECT balance AS n FROM account WHERE id = 1", vec![])?
    };
    // A reservation whose ledger row exists was settled; only its row's removal failed.
    sql.exec("DELETE FROM reservations WHERE 'tx-' || id IN (SELECT id FROM ledger)", None)?;
    let held: Vec<HeldRow> = sql.exec("SELECT * FROM reservations", None)?.to_array()?;
    let keys: Vec<KeyStateRow> = sql.exec("SELECT * FROM key_state", None)?.to_array()?;
    const DAY: i64 = 86_400_000;
    let horizon = (now.div_euclid(DAY) - SPEND_DAYS) * DAY;
    let charges: Vec<ChargeRow> = sql
        .exec_raw(
            "SELECT key_id, CASE WHEN created_ms < ?1 THEN 0 ELSE CAST(created_ms / 86400000 AS INTEGER) END AS day, \
             -SUM(amount) AS spent FROM ledger WHERE type = 'usage' AND key_id IS NOT NULL GROUP BY key_id, day",
            vec![int(horizon)],
        )?
        .to_array()?;
    let leases = load_leases(sql)?;
    let rates = load_rates(sql, now)?;
    let book = Book::restore(
        balance,
        held.into_iter().map(|h| {
            // Reservations stored before they had an expiry get one lease from now.
            let expires_ms = if h.expires_ms > 0.0 { h.expires_ms as i64 } else { now + 15 * 60 * 1000 };
            let held = Held {
                key_id: h.key_id,
                end_user: h.end_user,
                amount: h.amount as i64,
                evidence: h.evidence as i64,
                created_ms: h.created_ms as i64,
                expires_ms,
            };
            (h.id, held)
        }),
        keys.into_iter().map(KeyState::from),
        charges.into_iter().map(|c| (c.key_id, c.day as i64 * DAY, c.spent as i64)),
    )
    .with_leases(leases)
    .with_rates(rates)
    .with_own_budgets(own_budget_counts(sql)?);
    // The end users of requests in flight: their closes name none the object could bring then.
    let mut book = book;
    for (key_id, end_user) in book.end_users_in_flight() {
        bring_end_user(sql, &mut book, &key_id, &end_user, now)?;
    }
    Ok(book)
}

/// How many end users of each key have a budget of their own.
fn own_budget_counts(sql: &SqlStorage) -> Result<Vec<(String, u64)>> {
    #[derive(Deserialize)]
    struct CountRow {
        key_id: String,
        n: f64,
    }
    let rows: Vec<CountRow> = sql
        .exec(
            "SELECT key_id, COUNT(*) AS n FROM end_users WHERE own = 1 AND own_limit IS NOT NULL GROUP BY key_id",
            None,
        )?
        .to_array()?;
    Ok(rows.into_iter().map(|r| (r.key_id, r.n as u64)).collect())
}

/// Brings one end user into the book as storage holds it: its own budget, its charges per day for the
/// last `SPEND_DAYS` days, and the rest of its spend in all as one older charge (as for keys). Two lookups
/// by index, whatever the end user's history.
pub fn bring_end_user(sql: &SqlStorage, book: &mut Book, key_id: &str, end_user: &str, now: i64) -> Result<()> {
    #[derive(Deserialize)]
    struct UserRow {
        own: i64,
        own_limit: Option<f64>,
        own_reset: Option<String>,
        spent: f64,
    }
    #[derive(Deserialize)]
    struct ChargeRow {
        day: f64,
        spent: f64,
    }
    const DAY: i64 = 86_400_000;
    let horizon = (now.div_euclid(DAY) - SPEND_DAYS) * DAY;
    let named = || vec![text(key_id), text(end_user)];
    let users: Vec<UserRow> = sql
        .exec_raw(
            "SELECT own, own_limit, own_reset, spent FROM end_users WHERE key_id = ?1 AND end_user = ?2",
            named(),
        )?
        .to_array()?;
    let Some(user) = users.first() else {
        book.bring_end_user(key_id, end_user, None, 0, []);
        return Ok(());
    };
    let own = (user.own != 0).then(|| budget(user.own_limit, user.own_reset.as_deref()));
    let mut args = named();
    args.push(int(horizon));
    let recent: Vec<ChargeRow> = sql
        .exec_raw(
            "SELECT CAST(created_ms / 86400000 AS INTEGER) AS day, -SUM(amount) AS spent FROM ledger \
             WHERE key_id = ?1 AND end_user = ?2 AND created_ms >= ?3 AND type = 'usage' GROUP BY day",
            args,
        )?
        .to_array()?;
    let recent = recent.iter().map(|c| (c.day as i64 * DAY, c.spent as i64));
    book.bring_end_user(key_id, end_user, own, user.spent as i64, recent);
    Ok(())
}

/// A page of a key's end users, most spent in all first: `(end user, first seen)`, and how many it has.
pub fn end_users_page(sql: &SqlStorage, key_id: &str, page: u32, page_size: u32) -> Result<(Vec<(String, i64)>, i64)> {
    #[derive(Deserialize)]
    struct Row {
        end_user: String,
        first_ms: f64,
    }
    let offset = i64::from(page.saturating_sub(1)) * i64::from(page_size);
    let rows: Vec<Row> = sql
        .exec_raw(
            "SELECT end_user, first_ms FROM end_users WHERE key_id = ?1 ORDER BY spent DESC, end_user LIMIT ?2 OFFSET ?3",
            vec![text(key_id), int(i64::from(page_size)), int(offset)],
        )?
        .to_array()?;
    let total = scalar(sql, "SELECT COUNT(*) AS n FROM end_users WHERE key_id = ?1", vec![text(key_id)])?;
    Ok((rows.into_iter().map(|r| (r.end_user, r.first_ms as i64)).collect(), total))
}

/// Keeps an alert for its delivery; the same crossing (the same id) is kept once, ever.
pub fn queue_alert(sql: &SqlStorage, alert: &Alert, now: i64) -> Result<()> {
    sql.exec_raw(
        "INSERT OR IGNORE INTO alert_outbox (id, body, created_ms) VALUES (?, ?, ?)",
        vec![text(&alert.id()), text(&alert.payload().to_string()), int(now)],
    )?;
    Ok(())
}

/// Records an end user seen (a repeat changes nothing).
pub fn see_end_user(sql: &SqlStorage, key_id: &str, end_user: &str, now: i64) -> Result<()> {
    sql.exec_raw(
        "INSERT OR IGNORE INTO end_users (key_id, end_user, first_ms) VALUES (?, ?, ?)",
        vec![text(key_id), text(end_user), int(now)],
    )?;
    Ok(())
}

/// An end user's own budget (`Some(None)`: none at all), or back to the key's default (`None`).
pub fn put_end_user_budget(
    sql: &SqlStorage,
    key_id: &str,
    end_user: &str,
    own: Option<Option<Budget>>,
    now: i64,
) -> Result<()> {
    see_end_user(sql, key_id, end_user, now)?;
    let budget = own.flatten();
    sql.exec_raw(
        "UPDATE end_users SET own = ?, own_limit = ?, own_reset = ? WHERE key_id = ? AND end_user = ?",
        vec![
            int(i64::from(own.is_some())),
            opt_int(budget.map(|b| b.limit_micros)),
            opt_text(budget.and_then(|b| b.reset).map(Reset::as_str)),
            text(key_id),
            text(end_user),
        ],
    )?;
    Ok(())
}

/// The requests counted in per-minute windows that are still in them. Every key's rows out of them are
/// forgotten here, when the object loads: `admit` forgets only its own key's, so a key that went quiet
/// would otherwise keep its last minute's rows for good.
fn load_rates(sql: &SqlStorage, now: i64) -> Result<Rates> {
    sql.exec_raw("DELETE FROM rate_log WHERE at_ms <= ?", vec![int(now - rates::WINDOW_MS)])?;
    #[derive(Deserialize)]
    struct RateRow {
        request_id: String,
        key_id: String,
        at_ms: f64,
        tokens: f64,
    }
    let rows: Vec<RateRow> =
        sql.exec_raw("SELECT * FROM rate_log WHERE at_ms > ?", vec![int(now - rates::WINDOW_MS)])?.to_array()?;
    Ok(Rates::restore(
        rows.into_iter()
            .map(|r| (r.key_id, Admitted { request_id: r.request_id, at_ms: r.at_ms as i64, tokens: r.tokens as i64 })),
    ))
}

/// Counts a request in its key's per-minute window, and forgets the key's requests out of it.
pub fn admit(sql: &SqlStorage, key_id: &str, a: &Admitted) -> Result<()> {
    sql.exec_raw(
        "DELETE FROM rate_log WHERE key_id = ? AND at_ms <= ?",
        vec![text(key_id), int(a.at_ms - rates::WINDOW_MS)],
    )?;
    sql.exec_raw(
        "INSERT OR REPLACE INTO rate_log (request_id, key_id, at_ms, tokens) VALUES (?, ?, ?, ?)",
        vec![text(&a.request_id), text(key_id), int(a.at_ms), int(a.tokens)],
    )?;
    Ok(())
}

/// A settled request counts the tokens it used.
pub fn count_tokens(sql: &SqlStorage, request_id: &str, tokens: i64) -> Result<()> {
    sql.exec_raw("UPDATE rate_log SET tokens = ? WHERE request_id = ?", vec![int(tokens), text(request_id)])?;
    Ok(())
}

/// The leases held: each one's grant less what was charged from it or moved out of it.
fn load_leases(sql: &SqlStorage) -> Result<Vec<(String, Lease)>> {
    #[derive(Deserialize)]
    struct LeaseRow {
        id: String,
        key_id: String,
        granted: f64,
        use_until_ms: f64,
        expires_ms: f64,
    }
    #[derive(Deserialize)]
    struct ChargeRow {
        request_id: String,
        lease_id: String,
        amount: f64,
    }
    sql.exec("DELETE FROM lease_charges WHERE lease_id NOT IN (SELECT id FROM leases)", None)?;
    let rows: Vec<LeaseRow> = sql.exec("SELECT * FROM leases", None)?.to_array()?;
    let charges: Vec<ChargeRow> = sql.exec("SELECT * FROM lease_charges", None)?.to_array()?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut lease = Lease {
                key_id: r.key_id,
                amount: r.granted as i64,
                use_until_ms: r.use_until_ms as i64,
                expires_ms: r.expires_ms as i64,
                charged: Default::default(),
            };
            for c in charges.iter().filter(|c| c.lease_id == r.id) {
                lease.amount -= c.amount as i64;
                lease.charged.insert(c.request_id.clone());
            }
            (r.id, lease)
        })
        .collect())
}

/// Stores a lease as granted (a repeat changes nothing).
pub fn grant_lease(sql: &SqlStorage, lease_id: &str, l: &Lease) -> Result<()> {
    sql.exec_raw(
        "INSERT OR IGNORE INTO leases (id, key_id, granted, use_until_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
        vec![text(lease_id), text(&l.key_id), int(l.amount), int(l.use_until_ms), int(l.expires_ms)],
    )?;
    Ok(())
}

/// No new request starts on the lease after `use_until_ms`.
pub fn end_lease_use(sql: &SqlStorage, lease_id: &str, use_until_ms: i64) -> Result<()> {
    sql.exec_raw("UPDATE leases SET use_until_ms = ? WHERE id = ?", vec![int(use_until_ms), text(lease_id)])?;
    Ok(())
}

/// Records a request charged from a lease (or moved out of it into a reservation). Written before the
/// charge's ledger row: should that fail, the lease holds less and the request is not charged twice.
pub fn lease_charge(sql: &SqlStorage, lease_id: &str, request_id: &str, amount: i64) -> Result<()> {
    sql.exec_raw(
        "INSERT OR IGNORE INTO lease_charges (request_id, lease_id, amount) VALUES (?, ?, ?)",
        vec![text(request_id), text(lease_id), int(amount)],
    )?;
    Ok(())
}

/// Forgets a lease that has ended.
pub fn end_lease(sql: &SqlStorage, lease_id: &str) -> Result<()> {
    // The lease first: charge rows left by a failed second statement are of no lease (dropped on load).
    sql.exec_raw("DELETE FROM leases WHERE id = ?", vec![text(lease_id)])?;
    sql.exec_raw("DELETE FROM lease_charges WHERE lease_id = ?", vec![text(lease_id)])?;
    Ok(())
}

pub fn put_key(sql: &SqlStorage, s: &KeyState) -> Result<()> {
    sql.exec_raw(
        "INSERT OR REPLACE INTO key_state (key_id, hash, previous_hash, previous_until_ms, expires_at_ms, \
         disabled, deleted, limit_micros, limit_reset, permissions, version, rpm_limit, tpm_limit, \
         end_user_limit, end_user_reset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            text(&s.key_id),
            text(&s.hash),
            opt_text(s.previous_hash.as_deref()),
            opt_int(s.previous_until_ms),
            opt_int(s.expires_at_ms),
            int(i64::from(s.disabled)),
            int(i64::from(s.deleted)),
            opt_int(s.limit_micros),
            opt_text(s.limit_reset.map(|r| r.as_str())),
            opt_text(s.permissions.as_deref()),
            opt_int(s.version),
            opt_int(s.rates.rpm),
            opt_int(s.rates.tpm),
            opt_int(s.end_user_budget.map(|b| b.limit_micros)),
            opt_text(s.end_user_budget.and_then(|b| b.reset).map(Reset::as_str)),
        ],
    )?;
    Ok(())
}

/// Stores a reservation (new, or its heartbeat), and what the request is when told (`about`, kept once
/// written: for its usage record should it be closed without settlement).
pub fn hold(sql: &SqlStorage, request_id: &str, h: &Held, about: Option<&About>) -> Result<()> {
    let about = about.map(serde_json::to_string).transpose()?;
    sql.exec_raw(
        "INSERT INTO reservations (id, key_id, amount, created_ms, evidence, expires_ms, end_user, about) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET key_id = excluded.key_id, \
         amount = excluded.amount, created_ms = excluded.created_ms, evidence = excluded.evidence, \
         expires_ms = excluded.expires_ms, end_user = excluded.end_user, \
         about = COALESCE(excluded.about, reservations.about)",
        vec![
            text(request_id),
            text(&h.key_id),
            int(h.amount),
            int(h.created_ms),
            int(h.evidence),
            int(h.expires_ms),
            opt_text(h.end_user.as_deref()),
            opt_text(about.as_deref()),
        ],
    )?;
    Ok(())
}

/// What a held request is (`None`: not held, or held before requests said).
pub fn about(sql: &SqlStorage, request_id: &str) -> Result<Option<About>> {
    #[derive(Deserialize)]
    struct Row {
        about: Option<String>,
    }
    let rows: Vec<Row> =
        sql.exec_raw("SELECT about FROM reservations WHERE id = ?", vec![text(request_id)])?.to_array()?;
    Ok(rows.into_iter().next().and_then(|r| serde_json::from_str(&r.about?).ok()))
}

/// A usage record put in the outbox in place of one waiting there (a late settlement's, which knows more
/// than its close's); one already copied to D1 stays as it was.
pub fn requeue_usage(sql: &SqlStorage, record: &UsageRecord) -> Result<()> {
    sql.exec_raw(
        "UPDATE usage_outbox SET record = ? WHERE id = ?",
        vec![text(&serde_json::to_string(record)?), text(&record.id)],
    )?;
    Ok(())
}

pub fn release(sql: &SqlStorage, request_id: &str) -> Result<()> {
    sql.exec_raw("DELETE FROM reservations WHERE id = ?", vec![text(request_id)])?;
    Ok(())
}

/// Appends a ledger row: one statement, so a change of balance is written whole or
/// not at all. `uncollected`: cost above the reservation, not charged;
/// `upstream_id`: the upstream's id of the generation; `end_user`: whom the request was made for.
pub fn post(
    sql: &SqlStorage,
    entry: &LedgerEntry,
    uncollected: i64,
    upstream_id: Option<&str>,
    end_user: Option<&str>,
) -> Result<()> {
    sql.exec_raw(
        "INSERT INTO ledger (id, type, amount, balance_after, reference_id, description, key_id, created_ms, \
         uncollected, upstream_id, end_user) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            text(&entry.id),
            text(&entry.kind),
            int(entry.amount),
            int(entry.balance_after),
            opt_text(entry.reference_id.as_deref()),
            opt_text(entry.description.as_deref()),
            opt_text(entry.key_id.as_deref()),
            int(entry.created_ms),
            int(uncollected),
            opt_text(upstream_id),
            opt_text(end_user),
        ],
    )?;
    Ok(())
}

/// Records which account this object is (reconciliation and the outbox name it).
pub fn own(sql: &SqlStorage, account_id: &str) -> Result<()> {
    sql.exec_raw("UPDATE account SET account_id = ? WHERE id = 1 AND account_id IS NULL", vec![text(account_id)])?;
    Ok(())
}

/// An earlier credit made with an idempotency key.
pub struct EarlierCredit {
    pub id: String,
    /// The balance after it.
    pub balance: i64,
    pub amount: i64,
    pub kind: String,
}

/// The earlier credit made with this idempotency key, if any.
pub fn earlier_credit(sql: &SqlStorage, key: &str) -> Result<Option<EarlierCredit>> {
    #[derive(Deserialize)]
    struct Row {
        id: String,
        balance_after: f64,
        amount: f64,
        #[serde(rename = "type")]
        kind: String,
    }
    let rows: Vec<Row> = sql
        .exec_raw(
            "SELECT id, balance_after, amount, type FROM ledger WHERE reference_id = ? AND type <> 'usage' LIMIT 1",
            vec![text(key)],
        )?
        .to_array()?;
    Ok(rows.into_iter().next().map(|r| EarlierCredit {
        id: r.id,
        balance: r.balance_after as i64,
        amount: r.amount as i64,
        kind: r.kind,
    }))
}

/// The request has a ledger row (charged, or closed).
pub fn has_ledger_row(sql: &SqlStorage, request_id: &str) -> Result<bool> {
    let n = scalar(sql, "SELECT COUNT(*) AS n FROM ledger WHERE id = ?", vec![text(&format!("tx-{request_id}"))])?;
    Ok(n > 0)
}

/// A request the object closed without its settlement: (its ledger id, what the close charged).
pub fn closed_charge(sql: &SqlStorage, request_id: &str) -> Result<Option<(String, i64)>> {
    #[derive(Deserialize)]
    struct Row {
        id: String,
        amount: f64,
    }
    let rows: Vec<Row> = sql
        .exec_raw(
            "SELECT id, amount FROM ledger WHERE id = ? AND description LIKE 'closed without settlement%'",
            vec![text(&format!("tx-{request_id}"))],
        )?
        .to_array()?;
    Ok(rows.into_iter().next().map(|r| (r.id, -(r.amount as i64))))
}

/// Records on a closed request's row what its late settlement said it cost above the charge.
pub fn note_uncollected(sql: &SqlStorage, ledger_id: &str, uncollected: i64) -> Result<()> {
    sql.exec_raw("UPDATE ledger SET uncollected = ? WHERE id = ?", vec![int(uncollected), text(ledger_id)])?;
    Ok(())
}

/// The usage record waits in the outbox with the ledger row, for the next copy to D1.
pub fn queue_usage(sql: &SqlStorage, record: &UsageRecord) -> Result<()> {
    sql.exec_raw(
        "INSERT OR IGNORE INTO usage_outbox (id, record) VALUES (?, ?)",
        vec![text(&record.id), text(&serde_json::to_string(record)?)],
    )?;
    Ok(())
}

pub fn account_id(sql: &SqlStorage) -> Result<Option<String>> {
    #[derive(Deserialize)]
    struct Owner {
        account_id: Option<String>,
    }
    let owner: Vec<Owner> = sql.exec("SELECT account_id FROM account WHERE id = 1", None)?.to_array()?;
    Ok(owner.into_iter().next().and_then(|o| o.account_id))
}

/// The ledger's own sums, for reconciliation: (sum of amounts, uncollected).
pub fn ledger_totals(sql: &SqlStorage) -> Result<(i64, i64)> {
    Ok((
        scalar(sql, "SELECT amount AS n FROM ledger_sums WHERE id = 1", vec![])?,
        scalar(sql, "SELECT uncollected AS n FROM ledger_sums WHERE id = 1", vec![])?,
    ))
}

/// An answer saved by an earlier version of the object (credits now keep their key on the ledger row).
pub fn saved_answer(sql: &SqlStorage, key: &str) -> Result<Option<String>> {
    #[derive(Deserialize)]
    struct Saved {
        answer: String,
    }
    let saved: Vec<Saved> =
        sql.exec_raw("SELECT answer FROM idempotency WHERE key = ?", vec![text(key)])?.to_array()?;
    Ok(saved.into_iter().next().map(|s| s.answer))
}

pub fn transactions(sql: &SqlStorage, page: u32, page_size: u32) -> Result<(Vec<LedgerEntry>, i64)> {
    let total = scalar(sql, "SELECT COUNT(*) AS n FROM ledger", vec![])?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(page_size);
    let rows: Vec<LedgerRow> = sql
        .exec_raw(
            "SELECT * FROM ledger ORDER BY seq DESC LIMIT ? OFFSET ?",
            vec![int(i64::from(page_size)), int(offset)],
        )?
        .to_array()?;
    Ok((rows.into_iter().map(Into::into).collect(), total))
}

/// (credits, usage) in all, from the ledger.
pub fn totals(sql: &SqlStorage) -> Result<(i64, i64)> {
    Ok((
        scalar(sql, "SELECT credits AS n FROM ledger_sums WHERE id = 1", vec![])?,
        -scalar(sql, "SELECT usage AS n FROM ledger_sums WHERE id = 1", vec![])?,
    ))
}
