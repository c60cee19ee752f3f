//! The only place binding, var and secret names appear. `Config` is parsed
//! once per isolate.

use std::cell::OnceCell;
use std::rc::Rc;

use worker::{D1Database, Env, KvStore, ObjectNamespace};

use crate::domain::routing::Provider;
use crate::providers::wire::Endpoint;

pub const DB: &str = "DB";
pub const CACHE: &str = "CACHE";
pub const ACCOUNTS: &str = "ACCOUNTS";
pub const ORGS: &str = "ORGS";
pub const ALERTS: &str = "ALERTS";
pub const REQUEST_LOGS: &str = "REQUEST_LOGS";
pub const JOBS: &str = "JOBS";
pub const ARCHIVES: &str = "ARCHIVES";

const DEFAULT_BASE_URL: &str = "https://openrouter.ai/api/v1";

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug)]
pub struct Config {
    /// `AI_GATEWAY_BASE_URL`, without a trailing slash.
    pub upstream_base_url: String,
    /// `AI_GATEWAY_API_KEY`: the tenant's own upstream key.
    pub upstream_api_key: Option<Secret>,
    /// `ADMIN_TOKEN`: operator access; none means no operator access at all.
    pub admin_token: Option<Secret>,
    /// An `ADMIN_TOKEN` refused as too weak (`domain::keys::usable_operator_token`): why is logged; a caller
    /// presenting it gets the ordinary 401 `invalid credential`.
    pub weak_admin_token: Option<Secret>,
    /// `REQUEST_TIMEOUT`, seconds (default 60).
    pub request_timeout_ms: u64,
    /// `RESERVATION_GRACE`, seconds (default 60): how long a reservation outlives its request's
    /// timeout (or its last heartbeat) before the account object closes it by its rule.
    pub reservation_grace_ms: u64,
    /// `UPSTREAM_REFERER` / `UPSTREAM_TITLE`: OpenRouter's app attribution headers.
    pub referer: Option<String>,
    pub title: String,
    /// `MODELS_CACHE_TTL`, seconds (default 300).
    pub models_cache_ttl_secs: u64,
    /// `PRICE_MARKUP_PERCENT`: added to synced upstream prices (default 0).
    pub price_markup_percent: f64,
    /// `MAX_IN_FLIGHT_PER_KEY` / `MAX_IN_FLIGHT_PER_ACCOUNT`: concurrent requests allowed (unset = no cap).
    pub in_flight: crate::domain::ledger::InFlightCaps,
    /// `LOG_LEVEL`: error | warn | info (default) | debug.
    pub log_level: crate::log::Level,
    /// `OPENROUTER_API_BASE`: OpenRouter's key-management API, without a trailing slash.
    pub key_api_base_url: String,
    /// `OPENROUTER_PROVISIONING_KEY`: enables creating upstream keys per user.
    pub provisioning_key: Option<Secret>,
    /// `ANTHROPIC_API_KEY` / `ANTHROPIC_BASE_URL`: a direct route for `anthropic/…` models.
    pub anthropic_api_key: Option<Secret>,
    pub anthropic_base_url: String,
    /// `GOOGLE_API_KEY` / `GOOGLE_BASE_URL`: a direct route for `google/…` models (Gemini API).
    pub google_api_key: Option<Secret>,
    pub google_base_url: String,
    /// `OPENAI_API_KEY` / `OPENAI_BASE_URL`: a direct route for `openai/…` models.
    pub openai_api_key: Option<Secret>,
    pub openai_base_url: String,
    /// `UPSTREAM_RETRIES`: further tries of a failed upstream call on the same route (default 2).
    pub upstream_retries: u32,
    /// `SHOW_UPSTREAM_COST` (`true`/`1`): key holders see what the tenant pays upstream (answers'
    /// `usage.upstream_cost`, the price list's `upstream_pricing_*`). Off by default: a reseller's
    /// margin is the operator's business; admins always see it.
    pub show_upstream_cost: bool,
    /// `AUTH_FAILURE_LIMIT`: unknown keys one client may present a minute before it is refused
    /// for a minute (default 100), counted in each isolate where there is no `AUTH_FAILURES` binding.
    pub auth_failure_limit: u32,
    /// `BUDGET_LEASES` (`off` to disable): isolates spend from budget leases instead of reserving
    /// each request in the account's object (`domain::lease`).
    pub leases: bool,
    /// `DEFAULT_RPM_LIMIT` / `DEFAULT_TPM_LIMIT`: requests and tokens per minute for keys that set none.
    pub rate_default: crate::domain::rates::RateLimits,
    /// Alerts (`domain::alerts`): on only with both `ALERT_WEBHOOK_URL` and `ALERT_WEBHOOK_SECRET`.
    pub alerts: Option<Alerts>,
    /// `USAGE_RETENTION_DAYS` (default 90): usage records and ledger copies older than this leave D1 for R2.
    pub usage_retention_days: i64,
    /// Faults for tests only (`Faults`).
    pub faults: Faults,
}

/// Faults for tests. Ignored unless `AI_GATEWAY_BASE_URL` is on this machine (`http://127.0.0.1…`,
/// `http://localhost…`), so a deployment cannot be made to fail.
#[derive(Debug, Default)]
pub struct Faults {
    /// `FAULT_PANIC_MODEL`: a chat for this model panics once its money is held, so tests can show that a
    /// panicked isolate recovers and loses no money (tests/panic.test.mjs).
    pub panic_model: Option<String>,
    /// `FAULT_FAIL_SETTLE` or `FAULT_PANIC_SETTLE`.
    pub settle: Option<SettleFault>,
    /// `FAULT_POISON_SETTLE`: every settlement of a request for this model fails between its writes.
    pub poison_settle: Option<String>,
    /// `FAULT_DELAY_SETTLE`: the first message to an account object (in an isolate) settling a request for
    /// this model is held 20 s before it runs, as a message slow on its way (tests/panic.test.mjs).
    pub delay_settle: Option<String>,
    /// `FAULT_DELAY_BEAT`: the first heartbeat message to an account object (in an isolate) is held 20 s
    /// before it runs (tests/panic.test.mjs).
    pub delay_beat: bool,
    /// `FAULT_FAIL_PUT_KEY`: the account object fails this many messages changing a key it holds, in an
    /// isolate, as if they were lost (tests/key_changes.test.mjs).
    pub failed_key_changes: u32,
    /// `FAULT_SLOW_KEY_CHANGE_MS`: a key holder's change or rotation of a key, or a key's change of an
    /// organization, waits this long between its read and its write, so a test can change the row in between
    /// (tests/key_changes.test.mjs, tests/orgs.test.mjs).
    pub slow_key_change_ms: u64,
    /// `FAULT_LOSE_ORG_ANSWER`: the first answer of an organization's object to a reservation, in an isolate,
    /// is taken as lost on its way back (its hold made), as a failed call (tests/orgs.test.mjs).
    pub lose_org_answer: bool,
    /// `FAULT_STALE_ORG_CACHE`: a change of an organization leaves this isolate's cached row as it was, as
    /// another isolate's is left (tests/orgs.test.mjs).
    pub stale_org_cache: bool,
    /// `FAULT_STALE_KEY_ISOLATE`: a key change leaves this isolate's cached record of the key and the use of
    /// its leases as they were, as another isolate's are left (tests/leases.test.mjs).
    pub stale_key_isolate: bool,
    /// `FAULT_REPEAT_JOBS`: every job a fanned-out job hands on is sent twice, as a queue that delivers
    /// at least once may deliver it (tests/fanout.test.mjs).
    pub repeat_jobs: bool,
    /// `FAULT_ABANDON_SETTLE`: the settlement of a request for this model is put in line and left there, as
    /// by a task the runtime ended before its turn came (tests/outbox.test.mjs).
    pub abandon_settle: Option<String>,
    /// `FAULT_ARCHIVE_PART_ROWS`: an archive holds at most this many rows of each table (instead of
    /// `retention::PART_ROWS`), so a test's day takes several (tests/retention.test.mjs).
    pub archive_part_rows: Option<usize>,
    /// `FAULT_FAIL_ALERT_QUEUE`: the objects' hand-over of alerts to the `ALERTS` queue fails
    /// (tests/alerts.test.mjs).
    pub fail_alert_queue: bool,
    /// `FAULT_SLOW_RECONCILE_MS`: reconciliation (in the account object) reads D1 this long after its copy,
    /// as over a slow link to D1, so a busy account charges in between (tests/outbox.test.mjs).
    pub slow_reconcile_ms: u64,
    /// `FAULT_FORGET_END_USERS`: the account object forgets every idle end user after each message, as it
    /// does when it holds many (tests/end-users.test.mjs).
    pub forget_end_users: bool,
}

/// A fault for tests: the account object, settling a request for `model`, fails a storage statement
/// (or panics) between the settlement's writes (after a lease's charge, before the ledger row), once
/// per isolate, so tests can show a message's writes are made whole or not at all.
#[derive(Debug)]
pub struct SettleFault {
    pub model: String,
    pub panic: bool,
}

/// Where and how alerts go.
#[derive(Debug)]
pub struct Alerts {
    pub webhook_url: String,
    pub secret: Secret,
    /// `ALERT_THRESHOLDS` (percent, default `50,80,100`) and `ALERT_BALANCE_BELOW` (USD).
    pub rules: crate::domain::alerts::AlertRules,
    /// `ALERT_RETRY_SECONDS`: the first retry's delay, doubling after (default 10).
    pub retry_base_secs: u32,
}

impl Alerts {
    fn from_env(env: &Env) -> Option<Self> {
        use crate::domain::alerts::AlertRules;
        let percents = text(env, "ALERT_THRESHOLDS")
            .map_or_else(|| AlertRules::default().percents, |t| AlertRules::parse_percents(&t));
        let balance_below = text(env, "ALERT_BALANCE_BELOW")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .and_then(crate::domain::money::nearest_micros);
        Some(Self {
            webhook_url: text(env, "ALERT_WEBHOOK_URL")?,
            secret: Secret(text(env, "ALERT_WEBHOOK_SECRET")?),
            rules: AlertRules { percents, balance_below },
            retry_base_secs: number(env, "ALERT_RETRY_SECONDS", 10).clamp(1, 3_600) as u32,
        })
    }
}

fn text(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string()).filter(|v| !v.trim().is_empty())
}

/// A base URL without its trailing slash.
fn base_url(env: &Env, name: &str, default: &str) -> String {
    text(env, name).unwrap_or_else(|| default.into()).trim_end_matches('/').to_string()
}

/// A plain-HTTP URL on the loopback interface.
fn on_this_machine(url: &str) -> bool {
    ["http://127.0.0.1:", "http://127.0.0.1/", "http://localhost:", "http://localhost/", "http://[::1]:"]
        .iter()
        .any(|prefix| url.starts_with(prefix))
}

/// Why a weak `ADMIN_TOKEN` opens nothing (logged; a caller presenting it is told only `invalid credential`).
pub const WEAK_OPERATOR_TOKEN: &str =
    "ADMIN_TOKEN is shorter than 32 characters or the example's placeholder: the operator token is off (set a long random one)";

/// `ADMIN_TOKEN`, when it is usable (`domain::keys::usable_operator_token`); a weak one is off (`Err`, with it).
fn operator_token(env: &Env) -> Result<Secret, Option<Secret>> {
    let token = text(env, "ADMIN_TOKEN").ok_or(None)?.trim().to_string();
    if crate::domain::keys::usable_operator_token(&token) {
        Ok(Secret(token))
    } else {
        Err(Some(Secret(token)))
    }
}

fn number(env: &Env, name: &str, default: u64) -> u64 {
    text(env, name).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

impl Config {
    fn from_env(env: &Env) -> Self {
        let upstream_base_url = base_url(env, "AI_GATEWAY_BASE_URL", DEFAULT_BASE_URL);
        let (admin_token, weak_admin_token) = match operator_token(env) {
            Ok(token) => (Some(token), None),
            Err(weak) => (None, weak),
        };
        if weak_admin_token.is_some() {
            crate::log::job_error("config", WEAK_OPERATOR_TOKEN);
        }
        // Honoured only against an upstream on this machine (a test's fake), so a deployment cannot panic.
        let fault = |name: &str| text(env, name).filter(|_| on_this_machine(&upstream_base_url));
        let faults = Faults {
            panic_model: fault("FAULT_PANIC_MODEL"),
            settle: fault("FAULT_PANIC_SETTLE")
                .map(|model| SettleFault { model, panic: true })
                .or_else(|| fault("FAULT_FAIL_SETTLE").map(|model| SettleFault { model, panic: false })),
            poison_settle: fault("FAULT_POISON_SETTLE"),
            delay_settle: fault("FAULT_DELAY_SETTLE"),
            delay_beat: fault("FAULT_DELAY_BEAT").is_some(),
            failed_key_changes: fault("FAULT_FAIL_PUT_KEY").and_then(|n| n.trim().parse().ok()).unwrap_or(0),
            slow_key_change_ms: fault("FAULT_SLOW_KEY_CHANGE_MS").and_then(|n| n.trim().parse().ok()).unwrap_or(0),
            lose_org_answer: fault("FAULT_LOSE_ORG_ANSWER").is_some(),
            stale_org_cache: fault("FAULT_STALE_ORG_CACHE").is_some(),
            stale_key_isolate: fault("FAULT_STALE_KEY_ISOLATE").is_some(),
            repeat_jobs: fault("FAULT_REPEAT_JOBS").is_some(),
            abandon_settle: fault("FAULT_ABANDON_SETTLE"),
            fail_alert_queue: fault("FAULT_FAIL_ALERT_QUEUE").is_some(),
            slow_reconcile_ms: fault("FAULT_SLOW_RECONCILE_MS").and_then(|n| n.trim().parse().ok()).unwrap_or(0),
            forget_end_users: fault("FAULT_FORGET_END_USERS").is_some(),
            archive_part_rows: fault("FAULT_ARCHIVE_PART_ROWS").and_then(|n| n.trim().parse().ok()).filter(|n| *n > 0),
        };
        Self {
            upstream_base_url,
            upstream_api_key: text(env, "AI_GATEWAY_API_KEY").map(Secret),
            admin_token,
            weak_admin_token,
            request_timeout_ms: number(env, "REQUEST_TIMEOUT", 60).clamp(1, 3600) * 1000,
            reservation_grace_ms: number(env, "RESERVATION_GRACE", 60).clamp(2, 3600) * 1000,
            referer: text(env, "UPSTREAM_REFERER"),
            title: text(env, "UPSTREAM_TITLE").unwrap_or_else(|| "Tollgate".into()),
            models_cache_ttl_secs: number(env, "MODELS_CACHE_TTL", 300).max(60),
            price_markup_percent: text(env, "PRICE_MARKUP_PERCENT")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|p| p.is_finite() && (0.0..=1000.0).contains(p))
                .unwrap_or(0.0),
            in_flight: crate::domain::ledger::InFlightCaps {
                per_key: text(env, "MAX_IN_FLIGHT_PER_KEY").and_then(|v| v.trim().parse().ok()).filter(|n| *n > 0),
                per_account: text(env, "MAX_IN_FLIGHT_PER_ACCOUNT")
                    .and_then(|v| v.trim().parse().ok())
                    .filter(|n| *n > 0),
            },
            log_level: crate::log::Level::parse(&text(env, "LOG_LEVEL").unwrap_or_default()),
            key_api_base_url: base_url(env, "OPENROUTER_API_BASE", DEFAULT_BASE_URL),
            provisioning_key: text(env, "OPENROUTER_PROVISIONING_KEY").map(Secret),
            anthropic_api_key: text(env, "ANTHROPIC_API_KEY").map(Secret),
            anthropic_base_url: base_url(env, "ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
            google_api_key: text(env, "GOOGLE_API_KEY").map(Secret),
            google_base_url: base_url(env, "GOOGLE_BASE_URL", "https://generativelanguage.googleapis.com"),
            openai_api_key: text(env, "OPENAI_API_KEY").map(Secret),
            openai_base_url: base_url(env, "OPENAI_BASE_URL", "https://api.openai.com/v1"),
            upstream_retries: number(env, "UPSTREAM_RETRIES", 2).min(10) as u32,
            auth_failure_limit: number(env, "AUTH_FAILURE_LIMIT", 100).clamp(1, 100_000) as u32,
            leases: !text(env, "BUDGET_LEASES")
                .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "off" | "false" | "no")),
            rate_default: crate::domain::rates::RateLimits {
                rpm: text(env, "DEFAULT_RPM_LIMIT").and_then(|v| v.trim().parse().ok()).filter(|n| *n > 0),
                tpm: text(env, "DEFAULT_TPM_LIMIT").and_then(|v| v.trim().parse().ok()).filter(|n| *n > 0),
            },
            alerts: Alerts::from_env(env),
            // At least a day: a ledger row re-copied by its object after it was archived would count twice.
            usage_retention_days: number(env, "USAGE_RETENTION_DAYS", 90).clamp(1, 36_500) as i64,
            show_upstream_cost: text(env, "SHOW_UPSTREAM_COST")
                .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes")),
            faults,
        }
    }

    /// How long a reservation lives without a heartbeat or settlement: the request's
    /// timeout plus the grace (a settlement is retried for about 30 s within it).
    pub fn reservation_lease_ms(&self) -> i64 {
        (self.request_timeout_ms + self.reservation_grace_ms) as i64
    }

    /// How often a stream tells its account object it still runs: well inside the grace, so a
    /// reservation never runs out while its stream lives (even one paused by its reader).
    pub fn heartbeat_every_ms(&self) -> u64 {
        (self.reservation_lease_ms() as u64 / 4).min(self.reservation_grace_ms / 2).max(500)
    }

    /// The providers this tenant can reach directly (it holds their keys).
    pub fn direct_providers(&self) -> Vec<Provider> {
        [Provider::OpenAi, Provider::Anthropic, Provider::Google]
            .into_iter()
            .filter(|p| self.endpoint(*p).is_some())
            .collect()
    }

    /// Where a provider is reached and with which key; `None` when the tenant has no key for it.
    pub fn endpoint(&self, provider: Provider) -> Option<Endpoint<'_>> {
        let (key, base_url) = match provider {
            Provider::OpenRouter => (&self.upstream_api_key, &self.upstream_base_url),
            Provider::OpenAi => (&self.openai_api_key, &self.openai_base_url),
            Provider::Anthropic => (&self.anthropic_api_key, &self.anthropic_base_url),
            Provider::Google => (&self.google_api_key, &self.google_base_url),
        };
        key.as_ref().map(|key| Endpoint { base_url, key: key.expose() })
    }

    pub fn get(env: &Env) -> Rc<Config> {
        thread_local!(static CONFIG: OnceCell<Rc<Config>> = const { OnceCell::new() });
        CONFIG.with(|c| c.get_or_init(|| Rc::new(Config::from_env(env))).clone())
    }
}

/// The secret that holds a provider's key.
pub fn key_var(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenRouter => "AI_GATEWAY_API_KEY",
        Provider::OpenAi => "OPENAI_API_KEY",
        Provider::Anthropic => "ANTHROPIC_API_KEY",
        Provider::Google => "GOOGLE_API_KEY",
    }
}

pub fn db(env: &Env) -> worker::Result<D1Database> {
    env.d1(DB)
}

pub fn cache(env: &Env) -> worker::Result<KvStore> {
    env.kv(CACHE)
}

/// The bucket of the request log's bodies (`api::request_log`).
pub fn request_logs(env: &Env) -> worker::Result<worker::Bucket> {
    env.bucket(REQUEST_LOGS)
}

/// The bucket retention moves history into (`retention`).
pub fn archives(env: &Env) -> worker::Result<worker::Bucket> {
    env.bucket(ARCHIVES)
}

/// The queue per-account work is fanned out through (`fan_out`).
pub fn jobs_queue(env: &Env) -> worker::Result<worker::Queue> {
    env.queue(JOBS)
}

/// The queue alerts travel through to the webhook (`webhooks`).
pub fn alerts_queue(env: &Env) -> worker::Result<worker::Queue> {
    env.queue(ALERTS)
}

pub fn accounts(env: &Env) -> worker::Result<ObjectNamespace> {
    env.durable_object(ACCOUNTS)
}

pub fn orgs(env: &Env) -> worker::Result<ObjectNamespace> {
    env.durable_object(ORGS)
}

/// The Rate Limiting binding for failed authentications, where the tenant has one.
pub fn auth_failures(env: &Env) -> Option<worker::RateLimiter> {
    env.rate_limiter("AUTH_FAILURES").ok()
}
