//! Gateway API keys: format, hashing, display prefix, permissions.
//!
//! A key is `sk-tg-v1-` followed by 64 lowercase hex characters (32 random
//! bytes). Only its SHA-256 (hex) is stored. Changing the prefix would revoke
//! every key in existence: never do it.

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

#[cfg(test)]
mod tests {
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
    fn hash_is_sha256_hex() {
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
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
