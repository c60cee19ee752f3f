//! Who is calling: the operator (ADMIN_TOKEN) or the holder of a gateway key.

use super::error::ApiError;
use super::incoming::Incoming;
use super::respond::Call;
use crate::cache::failures;
use crate::cache::keys::{self as key_cache, KeyRecord, Source};
use crate::domain::keys::{self, Permission, Permissions};
use crate::domain::time::to_iso;
use crate::env;
use crate::store;

pub enum Caller {
    Operator,
    Key(KeyRecord),
}

pub struct Authenticated {
    pub caller: Caller,
    /// Where a key was found (`None` for the operator).
    pub source: Option<Source>,
    /// SHA-256 of the presented key (`None` for the operator).
    pub hash: Option<String>,
    /// The secret presented was rotated out and is in its grace period.
    pub rotated_out: bool,
}

impl Caller {
    pub fn permissions(&self) -> Permissions {
        match self {
            Self::Operator => Permissions { read: true, write: true, admin: true },
            Self::Key(k) => Permissions::from_stored(&k.permissions),
        }
    }

    pub fn require(&self, needed: Permission) -> Result<(), ApiError> {
        if self.permissions().allows(needed) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("this key lacks the `{}` permission", needed.as_str())))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.permissions().admin
    }

    /// The user a request is about: `asked` for admins, else the key's own user.
    /// A non-admin asking for another user gets 404 (no existence leak).
    pub fn target_user(&self, asked: Option<String>) -> Result<String, ApiError> {
        match (self, asked) {
            (Self::Operator, Some(id)) => Ok(id),
            (Self::Key(k), Some(id)) if self.is_admin() || id == k.user_id => Ok(id),
            (Self::Key(_), Some(_)) => Err(ApiError::not_found("user not found")),
            (Self::Key(k), None) => Ok(k.user_id.clone()),
            (Self::Operator, None) => {
                Err(crate::domain::InvalidRequest::param("`user_id` is required for the operator", "user_id").into())
            }
        }
    }
}

/// The credential: `Authorization: Bearer …`, or Anthropic's `x-api-key` (what its SDKs and Claude Code send).
/// When both come, the one that is a gateway key: a client may carry a credential of its own in the other
/// (Claude Code, signed in, sends its own token as the bearer beside the `x-api-key` it was given).
pub(super) fn bearer(req: &Incoming) -> Option<String> {
    let from_authorization = req.headers().get("authorization").ok().flatten().and_then(|value| {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string()).filter(|t| !t.is_empty())
    });
    let from_api_key =
        req.headers().get("x-api-key").ok().flatten().map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
    match (from_authorization, from_api_key) {
        (Some(bearer), Some(api_key)) if !keys::looks_like_key(&bearer) && keys::looks_like_key(&api_key) => {
            Some(api_key)
        }
        (bearer, api_key) => bearer.or(api_key),
    }
}

/// For management routes: a key is read from D1 itself, so every change made
/// to it is seen at once, in any isolate.
pub async fn authenticate(req: &Incoming, call: &Call) -> Result<Authenticated, ApiError> {
    authenticate_with(req, call, false).await
}

/// For inference, the hot path: a key comes from the caches (no D1 read).
/// Its authoritative state is checked by the account's Durable Object as
/// part of the reservation (`api::meter`), which every key change updates.
pub async fn authenticate_for_inference(req: &Incoming, call: &Call) -> Result<Authenticated, ApiError> {
    authenticate_with(req, call, true).await
}

async fn authenticate_with(req: &Incoming, call: &Call, cached: bool) -> Result<Authenticated, ApiError> {
    let Some(token) = bearer(req) else {
        return Err(ApiError::unauthenticated("missing credential: send `Authorization: Bearer <key>`"));
    };
    if let Some(admin) = &call.config.admin_token {
        if keys::secrets_equal(&token, admin.expose()) {
            return Ok(Authenticated { caller: Caller::Operator, source: None, hash: None, rotated_out: false });
        }
    }
    if !keys::looks_like_key(&token) {
        // A weak ADMIN_TOKEN is off; the caller is not told it guessed it (the log line says why it is off).
        if call.config.weak_admin_token.as_ref().is_some_and(|weak| keys::secrets_equal(&token, weak.expose())) {
            crate::log::job_error("config", env::WEAK_OPERATOR_TOKEN);
        }
        return Err(ApiError::unauthenticated("invalid credential"));
    }
    let hash = keys::hash(&token);
    let now = call.now_ms();
    let client = client_of(req);
    let (record, source) = if cached {
        lookup(call, &client, &hash, now).await?
    } else {
        refuse_guess_if_blocked(&client, &hash, now)?;
        (from_d1(call, &hash, now).await?, Source::D1)
    };
    let Some(record) = record else {
        note_failure(call, &client, now).await;
        return Err(ApiError::unauthenticated("invalid credential"));
    };
    if record.deleted {
        return Err(ApiError::unauthenticated("this key has been deleted"));
    }
    if record.disabled {
        return Err(ApiError::unauthenticated("this key is disabled"));
    }
    if record.valid_until_ms.is_some_and(|until| until <= now) {
        return Err(ApiError::unauthenticated("this key has expired"));
    }
    let rotated_out = record.presented_previous;
    Ok(Authenticated { caller: Caller::Key(record), source: Some(source), hash: Some(hash), rotated_out })
}

/// A client that presented too many unknown keys gets no lookup for a while (429), but for a key this
/// isolate found lately (no guess: the client has it).
fn refuse_guess_if_blocked(client: &str, hash: &str, now: i64) -> Result<(), ApiError> {
    if key_cache::known_recently(hash, now) {
        return Ok(());
    }
    match failures::blocked_until(client, now) {
        Some(until) => Err(ApiError::LimitReached {
            message: "too many failed authentications from this client; try again later".into(),
            retry_after_secs: ((until - now).max(1000) / 1000) as u64,
            limit_source: "auth_failures",
            lasting: false,
        }),
        None => Ok(()),
    }
}

/// A repeat of a rotation presented with the secret rotated from (`keys::replay_own_rotation`): `false`
/// while the client is blocked for failed authentications, which such a repeat that fails counts as
/// (`note_failed_repeat`), so the header that makes it cannot be guessed faster than a key.
pub(super) fn may_repeat(req: &Incoming, call: &Call) -> bool {
    failures::blocked_until(&client_of(req), call.now_ms()).is_none()
}

pub(super) async fn note_failed_repeat(req: &Incoming, call: &Call) {
    note_failure(call, &client_of(req), call.now_ms()).await;
}

/// Who is calling, for counting failed authentications: the client's address as Cloudflare
/// saw it (one bucket for every caller where there is none, as under `wrangler dev`), an IPv6
/// client by its /64 (`keys::failure_bucket`).
fn client_of(req: &Incoming) -> String {
    let ip = req.headers().get("cf-connecting-ip").ok().flatten().unwrap_or_else(|| "unknown".into());
    crate::domain::keys::failure_bucket(&ip)
}

/// Counts an unknown key against its client: with the Rate Limiting binding where the tenant
/// has one (`AUTH_FAILURES`), else in this isolate (`AUTH_FAILURE_LIMIT` a minute).
async fn note_failure(call: &Call, client: &str, now: i64) {
    match env::auth_failures(&call.env) {
        Some(limiter) => {
            if limiter.limit(client.to_string()).await.is_ok_and(|o| !o.success) {
                failures::block(client, now);
            }
        }
        None => failures::count(client, now, call.config.auth_failure_limit),
    }
}

async fn from_d1(call: &Call, hash: &str, now: i64) -> Result<Option<KeyRecord>, ApiError> {
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    let row = store::keys::find_by_hash(&db, hash, &to_iso(now)).await?;
    Ok(row.map(|r| KeyRecord::from_row(&r, hash)))
}

/// Memory, then KV, then — unless the client is refused for failed authentications — D1.
async fn lookup(call: &Call, client: &str, hash: &str, now: i64) -> Result<(Option<KeyRecord>, Source), ApiError> {
    if let Some(hit) = key_cache::from_memory(hash, now) {
        return Ok((hit, Source::Memory));
    }
    refuse_guess_if_blocked(client, hash, now)?;
    let kv = env::cache(&call.env).map_err(ApiError::internal)?;
    if let Some(hit) = key_cache::from_kv(&kv, hash).await {
        key_cache::remember(hash, hit.clone(), now);
        return Ok((hit, Source::Kv));
    }
    let record = from_d1(call, hash, now).await?;
    key_cache::remember(hash, record.clone(), now);
    if let Some(found) = record.clone() {
        let hash = hash.to_string();
        call.ctx.wait_until(async move { key_cache::store_kv(&kv, &hash, &found).await });
    }
    Ok((record, Source::D1))
}

/// Records `last_used_at` after the response, at most once a minute per key.
pub fn note_key_use(call: &Call, key_id: &str) {
    let now = call.now_ms();
    if !key_cache::due_for_touch(key_id, now) {
        return;
    }
    let Ok(db) = env::db(&call.env) else { return };
    let (id, now_iso, unless_after) = (key_id.to_string(), to_iso(now), to_iso(now - key_cache::TOUCH_EVERY_MS));
    call.ctx.wait_until(async move {
        let _ = store::keys::touch(&db, &id, &now_iso, &unless_after).await;
    });
}
