//! Gateway API keys: format, hashing, display prefix, permissions.
//!
//! A key is `sk-tg-v1-` followed by 64 lowercase hex characters (32 random
//! bytes). Only its SHA-256 (hex) is stored. Changing the prefix would revoke
//! every key in existence: never do it.

use super::windows::Reset;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "sk-tg-v1-";
const SECRET_HEX_LEN: usize = 64;
/// Characters of the key text shown for recognition (`sk-tg-v1-3f2`).
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// A freshly minted key. The text exists only until it is shown once.
pub struct NewKey {
    pub text: String,
    pub hash: String,
    pub display_prefix: String,
}

/// Builds a key from 32 random bytes (the caller supplies a CSPRNG's output).
pub fn mint(random: [u8; 32]) -> NewKey {
    let text = format!("{KEY_PREFIX}{}", hex::encode(random));
    NewKey { hash: hash(&text), display_prefix: text[..DISPLAY_PREFIX_LEN].to_string(), text }
}

/// The secret for a rotation made under an `Idempotency-Key`: derived, not
/// random, so a repeat of the same request yields the same secret without the
/// gateway ever storing it. `previous_hash` pins it to one rotation.
pub fn rotation_secret(server_secret: &str, key_id: &str, idempotency_key: &str, previous_hash: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(server_secret.as_bytes()).expect("HMAC takes keys of any length");
    for part in ["tollgate-rotate-v1", key_id, idempotency_key, previous_hash] {
        mac.update(part.as_bytes());
        mac.update(&[0]);
    }
    mac.finalize().into_bytes().into()
}

/// What a key is right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Disabled,
    Expired,
}

impl Status {
    pub fn of(disabled: bool, expires_at_ms: Option<i64>, now_ms: i64) -> Self {
        if disabled {
            Self::Disabled
        } else if expires_at_ms.is_some_and(|at| at <= now_ms) {
            Self::Expired
        } else {
            Self::Active
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Expired => "expired",
        }
    }
}

/// The authoritative state of a key, as the account's Durable Object keeps it,
/// so a change is honoured by the very next request in every isolate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub key_id: String,
    pub hash: String,
    pub previous_hash: Option<String>,
    pub previous_until_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
    pub disabled: bool,
    pub deleted: bool,
    /// Spend limit per window (micro-USD) and its reset; `None` = unlimited / lifetime.
    #[serde(default)]
    pub limit_micros: Option<i64>,
    #[serde(default)]
    pub limit_reset: Option<Reset>,
    /// The key's permissions (stored form); `None` in states sent before they carried them.
    #[serde(default)]
    pub permissions: Option<String>,
    /// When D1 last changed the key (ms): a state older than the one held is ignored, so two
    /// changes that reach the account object in the other order cannot bring back the older.
    #[serde(default)]
    pub version: Option<i64>,
    /// Requests and tokens per minute (`None`: the tenant's default, if any).
    #[serde(default)]
    pub rates: super::rates::RateLimits,
    /// What each of its end users may spend, unless one has a budget of its own.
    #[serde(default)]
    pub end_user_budget: Option<super::end_users::Budget>,
}

/// Why a presented secret is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRefusal {
    Deleted,
    Disabled,
    Expired,
    /// The secret was rotated out and its grace period is over.
    Superseded,
    /// The key is valid but lacks the permission inference needs (`write`).
    NotPermitted,
}

impl KeyRefusal {
    pub fn message(self) -> &'static str {
        match self {
            Self::Deleted => "this key has been deleted",
            Self::Disabled => "this key is disabled",
            Self::Expired => "this key has expired",
            Self::Superseded => "this key's secret was rotated; use the new secret",
            Self::NotPermitted => "this key lacks the `write` permission",
        }
    }
}

impl KeyState {
    /// May `presented_hash` be used at `now_ms`?
    pub fn check(&self, presented_hash: &str, now_ms: i64) -> Result<(), KeyRefusal> {
        self.live(now_ms)?;
        let current = presented_hash == self.hash;
        let in_grace = self.previous_hash.as_deref() == Some(presented_hash)
            && self.previous_until_ms.is_some_and(|until| until > now_ms);
        if !(current || in_grace) {
            return Err(KeyRefusal::Superseded);
        }
        self.permitted()
    }

    /// May a request of this key already running go on (its secret was checked when it began)? Not once
    /// the key is deleted, disabled, expired or lacks `write`.
    pub fn may_go_on(&self, now_ms: i64) -> Result<(), KeyRefusal> {
        self.live(now_ms)?;
        self.permitted()
    }

    fn live(&self, now_ms: i64) -> Result<(), KeyRefusal> {
        if self.deleted {
            return Err(KeyRefusal::Deleted);
        }
        if self.disabled {
            return Err(KeyRefusal::Disabled);
        }
        if self.expires_at_ms.is_some_and(|at| at <= now_ms) {
            return Err(KeyRefusal::Expired);
        }
        Ok(())
    }

    fn permitted(&self) -> Result<(), KeyRefusal> {
        match &self.permissions {
            Some(p) if !Permissions::from_stored(p).allows(Permission::Write) => Err(KeyRefusal::NotPermitted),
            _ => Ok(()),
        }
    }
}

/// SHA-256 of a credential, lowercase hex.
pub fn hash(credential: &str) -> String {
    hex::encode(Sha256::digest(credential.as_bytes()))
}

/// True when the text has the shape of a gateway key (it may still be unknown).
pub fn looks_like_key(text: &str) -> bool {
    text.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        rest.len() == SECRET_HEX_LEN && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The placeholder `.dev.vars.example` once carried for the operator token.
const EXAMPLE_OPERATOR_TOKEN: &str = "replace-with-a-long-random-token";
/// The shortest operator token accepted: it is compared as it is, with no limit on guesses, so its
/// length is what keeps it from being guessed (`npm start` and `new-tenant` generate longer ones).
pub const MIN_OPERATOR_TOKEN_LEN: usize = 32;

/// Whether `ADMIN_TOKEN` may be used: long enough, and not the example's placeholder. Else the tenant
/// has no operator token (keys with `admin` still work).
pub fn usable_operator_token(token: &str) -> bool {
    let token = token.trim();
    token.len() >= MIN_OPERATOR_TOKEN_LEN && token != EXAMPLE_OPERATOR_TOKEN
}

/// The bucket failed authentications of a client count in: its IPv4 address, or its IPv6 /64 (one
/// network hands out many addresses), whichever way the address is written; anything else as given.
pub fn failure_bucket(ip: &str) -> String {
    match ip.trim().parse::<std::net::Ipv6Addr>() {
        Ok(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => ip.trim().to_string(),
    }
}

/// Constant-time equality of two secrets of any length: compares their digests.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    da.ct_eq(&db).into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
    Admin,
}

impl Permission {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

/// A set of permissions, stored as a comma-separated list (`read,write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions {
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

impl Permissions {
    pub const DEFAULT: Self = Self { read: true, write: true, admin: false };

    pub fn from_list(list: &[Permission]) -> Self {
        let mut p = Self::default();
        for perm in list {
            match perm {
                Permission::Read => p.read = true,
                Permission::Write => p.write = true,
                Permission::Admin => p.admin = true,
            }
        }
        p
    }

    /// Parses the stored form; unknown names are ignored (forward compatible).
    pub fn from_stored(s: &str) -> Self {
        let list: Vec<Permission> = s.split(',').filter_map(|p| Permission::parse(p.trim())).collect();
        Self::from_list(&list)
    }

    pub fn to_list(self) -> Vec<Permission> {
        [(self.read, Permission::Read), (self.write, Permission::Write), (self.admin, Permission::Admin)]
            .into_iter()
            .filter_map(|(has, p)| has.then_some(p))
            .collect()
    }

    pub fn to_stored(self) -> String {
        self.to_list().iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
    }

    /// `admin` implies every other permission.
    pub fn allows(self, needed: Permission) -> bool {
        self.admin
            || match needed {
                Permission::Read => self.read,
                Permission::Write => self.write,
                Permission::Admin => false,
            }
    }
}

impl Permissions {
    /// What a token a key makes for its own user may do: the default permissions, as far as its
    /// maker has them (a write-only key makes write-only tokens; an admin key, default ones).
    pub fn for_token(self) -> Self {
        Self { read: self.allows(Permission::Read), write: self.allows(Permission::Write), admin: false }
    }

    /// Every permission of `self` is also one of `other`'s (`admin` implies the rest).
    pub fn within(self, other: Permissions) -> bool {
        self.to_list().into_iter().all(|p| other.allows(p))
    }
}

/// What a key may do and spend: what a holder without `admin` may give a key it manages
/// only within its own (no climbing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTerms {
    pub permissions: Permissions,
    pub org_id: Option<String>,
    pub limit_micros: Option<i64>,
    pub limit_reset: Option<Reset>,
    pub expires_at_ms: Option<i64>,
    /// The models and providers it may use.
    pub allowed: super::allow::Allowlist,
    /// Its requests and tokens per minute.
    pub rates: super::rates::RateLimits,
}

/// Why a holder without `admin` may not give a key these terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Climb {
    #[error("a key may only manage keys whose permissions are within its own")]
    Permissions,
    #[error("a key may only manage keys of its own organization")]
    Organization,
    #[error(
        "a key may not give a key a higher spend limit (or a reset window not containing the earlier one's) than its own, or than the key had"
    )]
    Limit,
    #[error("a key may not give a key a later expiry than its own, or than the key had")]
    Expiry,
    #[error("a key may only manage keys whose allowed models and providers are within its own, and not widen a key's")]
    Models,
    #[error("a key may not give a key a higher requests or tokens per minute limit than its own, or than the key had")]
    Rate,
}

/// Whether every window of `inner` lies inside one window of `outer` (`None`: no reset, one window for
/// ever), so the same amount on `outer` allows no more in any `inner` window. Days lie inside weeks and
/// months; a week can straddle the first of a month, so a monthly limit does not bound a week.
fn window_within(inner: Option<Reset>, outer: Option<Reset>) -> bool {
    match (inner, outer) {
        (_, None) => true,
        (Some(Reset::Daily), Some(_)) => true,
        (Some(i), Some(o)) => i == o,
        (None, Some(_)) => false,
    }
}

/// May a holder without `admin` (its own key's terms: `holder`) manage a key with terms `target`?
/// It must be in the holder's organization and ask for no permission the holder lacks.
pub fn may_manage(holder: &KeyTerms, target: &KeyTerms) -> Result<(), Climb> {
    if target.org_id != holder.org_id {
        return Err(Climb::Organization);
    }
    if !target.permissions.within(holder.permissions) {
        return Err(Climb::Permissions);
    }
    if !target.allowed.within(&holder.allowed) {
        return Err(Climb::Models);
    }
    Ok(())
}

/// May a holder without `admin` give a key the terms `after` (creating it, or changing it from
/// `before`)? Besides `may_manage`, nothing may widen: the limit stays within the holder's own and
/// the key's earlier one (never cleared, never larger, never on a window that does not contain the earlier
/// one's: `window_within`), and so does the expiry. Per-minute limits are compared as they apply: a key
/// that sets none has the tenant's `rate_default`, so it is held to that too.
pub fn within_holder(
    holder: &KeyTerms,
    after: &KeyTerms,
    before: Option<&KeyTerms>,
    rate_default: super::rates::RateLimits,
) -> Result<(), Climb> {
    may_manage(holder, after)?;
    if let Some(before) = before {
        may_manage(holder, before)?;
        if !after.allowed.within(&before.allowed) {
            return Err(Climb::Models);
        }
    }
    for bound in std::iter::once(holder).chain(before) {
        if let Some(cap) = bound.limit_micros {
            let ok =
                after.limit_micros.is_some_and(|l| l <= cap) && window_within(bound.limit_reset, after.limit_reset);
            if !ok {
                return Err(Climb::Limit);
            }
        }
        if let Some(end) = bound.expires_at_ms {
            if after.expires_at_ms.is_none_or(|e| e > end) {
                return Err(Climb::Expiry);
            }
        }
        let within = |cap: Option<i64>, value: Option<i64>| cap.is_none_or(|c| value.is_some_and(|v| v <= c));
        let (cap, rates) = (bound.rates.or(rate_default), after.rates.or(rate_default));
        if !within(cap.rpm, rates.rpm) || !within(cap.tpm, rates.tpm) {
            return Err(Climb::Rate);
        }
    }
    Ok(())
}

/// Longest grace period a rotation may give the old secret (30 days).
pub const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

/// An expiry from the wire: ISO-8601, in the future. Returns it normalised.
pub fn validate_expiry(text: &str, now_ms: i64) -> Result<i64, super::InvalidRequest> {
    let at = super::time::parse_iso(text)
        .ok_or_else(|| super::InvalidRequest::param("`expires_at` must be an ISO-8601 date-time", "expires_at"))?;
    if at <= now_ms {
        return Err(super::InvalidRequest::param("`expires_at` must be in the future", "expires_at"));
    }
    Ok(at)
}

/// `daily`, `weekly` or `monthly` (null, checked by the caller, means a lifetime limit).
pub fn validate_limit_reset(text: &str) -> Result<String, super::InvalidRequest> {
    match text {
        "daily" | "weekly" | "monthly" => Ok(text.to_string()),
        other => Err(super::InvalidRequest::param(
            format!("`limit_reset` is `{other}`; expected daily, weekly, monthly or null"),
            "limit_reset",
        )),
    }
}

/// A spend limit in USD from the wire, as micro-USD.
pub fn validate_limit(usd: f64) -> Result<i64, super::InvalidRequest> {
    if usd < 0.0 {
        return Err(super::InvalidRequest::param("`limit` must not be negative", "limit"));
    }
    super::money::usd_to_micros("limit", usd)
}

/// A non-empty list of known permission names.
pub fn parse_permissions(list: &[String]) -> Result<Permissions, super::InvalidRequest> {
    if list.is_empty() {
        return Err(super::InvalidRequest::param(
            "`permissions` must name at least one of read, write, admin",
            "permissions",
        ));
    }
    let parsed = list
        .iter()
        .map(|p| {
            Permission::parse(p).ok_or_else(|| {
                super::InvalidRequest::param(
                    format!("unknown permission `{p}`; expected read, write or admin"),
                    "permissions",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Permissions::from_list(&parsed))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_holder_moves_a_limit_only_to_a_window_that_contains_its_windows() {
        use super::{within_holder, Climb, KeyTerms, Permissions, Reset};
        let terms = |reset: Option<Reset>| KeyTerms {
            permissions: Permissions::DEFAULT,
            org_id: None,
            limit_micros: Some(10_000_000),
            limit_reset: reset,
            expires_at_ms: None,
            allowed: Default::default(),
            rates: Default::default(),
        };
        let (day, week, month) = (Some(Reset::Daily), Some(Reset::Weekly), Some(Reset::Monthly));
        let moves = |from: Option<Reset>, to: Option<Reset>| {
            within_holder(&terms(from), &terms(to), Some(&terms(from)), Default::default())
        };
        for (from, to) in
            [(day, day), (day, week), (day, month), (day, None), (week, None), (month, None), (week, week)]
        {
            assert_eq!(moves(from, to), Ok(()), "{from:?} -> {to:?}");
        }
        // A week straddling the first of a month: $10 spent in its first days, and a monthly $10 starting
        // on the first would allow $10 more in the same week.
        for (from, to) in [(week, month), (month, week), (week, day), (month, day), (None, day), (None, month)] {
            assert_eq!(moves(from, to), Err(Climb::Limit), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn a_holder_without_rate_limits_of_its_own_is_held_to_the_tenant_default() {
        use super::super::rates::RateLimits;
        use super::{within_holder, Climb, KeyTerms, Permissions};
        let terms = |rpm: Option<i64>| KeyTerms {
            permissions: Permissions::DEFAULT,
            org_id: None,
            limit_micros: None,
            limit_reset: None,
            expires_at_ms: None,
            allowed: Default::default(),
            rates: RateLimits { rpm, tpm: None },
        };
        let default = RateLimits { rpm: Some(60), tpm: None };
        // A key with no limits of its own raising itself (or a key it makes) past the default.
        assert_eq!(within_holder(&terms(None), &terms(Some(1_000_000)), Some(&terms(None)), default), Err(Climb::Rate));
        assert_eq!(within_holder(&terms(None), &terms(Some(1_000_000)), None, default), Err(Climb::Rate));
        // Within it, or left to it, or lowered: allowed.
        assert_eq!(within_holder(&terms(None), &terms(Some(60)), Some(&terms(None)), default), Ok(()));
        assert_eq!(within_holder(&terms(None), &terms(None), None, default), Ok(()));
        assert_eq!(within_holder(&terms(Some(100)), &terms(Some(30)), Some(&terms(None)), default), Ok(()));
        // A key whose own limit is above the default (an admin gave it) may keep it when changing itself.
        assert_eq!(within_holder(&terms(Some(100)), &terms(Some(100)), Some(&terms(Some(100))), default), Ok(()));
        // With no default, a key without limits bounds nothing.
        assert_eq!(within_holder(&terms(None), &terms(None), None, RateLimits::default()), Ok(()));
    }

    #[test]
    fn a_token_has_the_default_permissions_its_maker_has() {
        use super::Permissions;
        let all = Permissions { read: true, write: true, admin: true };
        assert_eq!(all.for_token(), Permissions::DEFAULT);
        let write = Permissions { read: false, write: true, admin: false };
        assert_eq!(write.for_token(), write);
        assert!(write.for_token().within(write));
    }

    #[test]
    fn failures_count_per_ipv6_network_however_it_is_written() {
        use super::failure_bucket;
        let bucket = "2001:db8:0:0::/64";
        for ip in ["2001:db8::a:b:c:d", "2001:db8:0:0:1::", "2001:0db8:0000:0000:ffff:ffff:ffff:ffff", "2001:db8::"] {
            assert_eq!(failure_bucket(ip), bucket, "{ip}");
        }
        assert_eq!(failure_bucket("2001:db8:1::5"), "2001:db8:1:0::/64", "another network, its own bucket");
        assert_ne!(failure_bucket("2001:db8:1::5"), failure_bucket("2001:db8:0:1::5"));
        assert_eq!(failure_bucket("203.0.113.9"), "203.0.113.9");
        assert_eq!(failure_bucket("::ffff:203.0.113.9"), "203.0.113.9", "an IPv4 address written as IPv6");
        assert_eq!(failure_bucket("unknown"), "unknown");
    }

    #[test]
    fn key_state_decides_like_the_rules_say() {
        let state = KeyState {
            key_id: "k".into(),
            hash: "new".into(),
            previous_hash: Some("old".into()),
            previous_until_ms: Some(100),
            expires_at_ms: Some(1000),
            disabled: false,
            deleted: false,
            limit_micros: None,
            limit_reset: None,
            permissions: None,
            version: None,
            rates: Default::default(),
            end_user_budget: None,
        };
        assert_eq!(state.check("new", 50), Ok(()));
        assert_eq!(state.check("old", 99), Ok(()), "inside the grace");
        assert_eq!(state.check("old", 100), Err(KeyRefusal::Superseded), "grace over");
        assert_eq!(state.check("other", 50), Err(KeyRefusal::Superseded));
        assert_eq!(state.check("new", 1000), Err(KeyRefusal::Expired));
        assert_eq!(KeyState { disabled: true, ..state.clone() }.check("new", 50), Err(KeyRefusal::Disabled));
        assert_eq!(KeyState { deleted: true, disabled: true, ..state }.check("new", 50), Err(KeyRefusal::Deleted));
    }

    #[test]
    fn wire_validators() {
        let now = 1_000_000;
        assert!(validate_expiry("2099-01-01T00:00:00Z", now).is_ok());
        assert!(validate_expiry("1970-01-01T00:00:00Z", now).is_err());
        assert!(validate_expiry("later", now).is_err());
        assert_eq!(validate_limit_reset("weekly").expect("ok"), "weekly");
        assert!(validate_limit_reset("hourly").is_err());
        assert_eq!(validate_limit(1.5).expect("ok"), 1_500_000);
        assert!(validate_limit(-0.01).is_err());
        assert_eq!(parse_permissions(&["read".into()]).expect("ok").to_stored(), "read");
        assert!(parse_permissions(&[]).is_err());
        assert!(parse_permissions(&["fly".into()]).is_err());
    }

    use super::*;

    #[test]
    fn minted_key_has_the_documented_shape() {
        let key = mint([0xab; 32]);
        assert_eq!(key.text.len(), KEY_PREFIX.len() + 64);
        assert!(key.text.starts_with("sk-tg-v1-abab"));
        assert!(looks_like_key(&key.text));
        assert_eq!(key.display_prefix, "sk-tg-v1-aba");
        assert_eq!(key.hash, hash(&key.text));
        assert_ne!(key.hash, key.text);
    }

    #[test]
    fn rotation_secrets_repeat_for_the_same_request_only() {
        let a = rotation_secret("srv", "key-1", "idem-1", "hash-0");
        assert_eq!(a, rotation_secret("srv", "key-1", "idem-1", "hash-0"));
        assert_ne!(a, rotation_secret("srv", "key-1", "idem-2", "hash-0"));
        assert_ne!(a, rotation_secret("srv", "key-2", "idem-1", "hash-0"));
        assert_ne!(a, rotation_secret("srv", "key-1", "idem-1", "hash-1"));
        assert_ne!(a, rotation_secret("other", "key-1", "idem-1", "hash-0"));
        // field boundaries matter: ("ab","c") is not ("a","bc")
        assert_ne!(rotation_secret("s", "ab", "c", "h"), rotation_secret("s", "a", "bc", "h"));
    }

    #[test]
    fn status_prefers_disabled_then_expiry() {
        assert_eq!(Status::of(false, None, 10), Status::Active);
        assert_eq!(Status::of(false, Some(11), 10), Status::Active);
        assert_eq!(Status::of(false, Some(10), 10), Status::Expired);
        assert_eq!(Status::of(true, Some(5), 10), Status::Disabled);
        assert_eq!(Status::parse("expired"), Some(Status::Expired));
        assert_eq!(Status::parse("gone"), None);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn an_operator_token_must_be_long_and_not_the_example() {
        use super::usable_operator_token;
        assert!(usable_operator_token(&format!("tg-admin-{}", "0a".repeat(24))));
        assert!(usable_operator_token(&"x".repeat(32)));
        for weak in
            ["", "secret", &"x".repeat(31), "replace-with-a-long-random-token", " replace-with-a-long-random-token "]
        {
            assert!(!usable_operator_token(weak), "{weak:?}");
        }
    }

    #[test]
    fn looks_like_key_rejects_near_misses() {
        let good = format!("sk-tg-v1-{}", "0".repeat(64));
        assert!(looks_like_key(&good));
        for bad in [
            format!("sk-tg-v2-{}", "0".repeat(64)),
            format!("sk-tg-v1-{}", "0".repeat(63)),
            format!("sk-tg-v1-{}", "0".repeat(65)),
            format!("sk-tg-v1-{}", "G".repeat(64)),
            format!("sk-tg-v1-{}", "A".repeat(64)),
            String::new(),
        ] {
            assert!(!looks_like_key(&bad), "{bad}");
        }
    }

    #[test]
    fn secrets_equal_compares_whole_values() {
        assert!(secrets_equal("token-1", "token-1"));
        assert!(!secrets_equal("token-1", "token-2"));
        assert!(!secrets_equal("token-1", "token-10"));
        assert!(!secrets_equal("", "x"));
    }

    #[test]
    fn permissions_round_trip_and_admin_implies_all() {
        let p = Permissions::from_stored("read, write,bogus");
        assert_eq!(p, Permissions::DEFAULT);
        assert_eq!(p.to_stored(), "read,write");
        assert!(!p.allows(Permission::Admin));
        let admin = Permissions::from_stored("admin");
        assert!(admin.allows(Permission::Write) && admin.allows(Permission::Read));
        let read_only = Permissions::from_stored("read");
        assert!(!read_only.allows(Permission::Write));
    }
}
