-- Users and their gateway API keys. Times are ISO-8601 UTC text
-- (YYYY-MM-DDTHH:MM:SS.sssZ), which sorts in time order. Money is integer micro-USD.

CREATE TABLE users (
  id             TEXT PRIMARY KEY,
  email          TEXT NOT NULL,
  name           TEXT NOT NULL,
  email_verified INTEGER NOT NULL DEFAULT 0,
  image          TEXT,
  locale         TEXT NOT NULL DEFAULT 'en',
  utm_source     TEXT,
  ip             TEXT,
  created_at     TEXT NOT NULL,
  updated_at     TEXT NOT NULL,
  deleted_at     TEXT
);
-- An e-mail address is unique among live users; a deleted user's address may be reused.
CREATE UNIQUE INDEX users_email_live ON users(email) WHERE deleted_at IS NULL;
CREATE INDEX users_created ON users(created_at);

CREATE TABLE api_keys (
  id                  TEXT PRIMARY KEY,
  user_id             TEXT NOT NULL REFERENCES users(id),
  org_id              TEXT,
  name                TEXT NOT NULL,
  description         TEXT,
  key_hash            TEXT NOT NULL UNIQUE,        -- SHA-256 hex of the current secret
  key_prefix          TEXT NOT NULL,               -- first 12 characters, for display
  permissions         TEXT NOT NULL DEFAULT 'read,write',
  expires_at          TEXT,
  limit_micros        INTEGER,                     -- spend limit per window; NULL = unlimited
  limit_reset         TEXT,                        -- daily | weekly | monthly | NULL (lifetime)
  disabled            INTEGER NOT NULL DEFAULT 0,
  previous_key_hash   TEXT,                        -- the secret before the last rotation
  previous_expires_at TEXT,                        -- when that secret stops working
  rotated_at          TEXT,
  last_used_at        TEXT,
  created_at          TEXT NOT NULL,
  updated_at          TEXT NOT NULL,
  deleted_at          TEXT
);
CREATE INDEX api_keys_user ON api_keys(user_id, created_at);
CREATE INDEX api_keys_org ON api_keys(org_id) WHERE org_id IS NOT NULL;
CREATE INDEX api_keys_previous_hash ON api_keys(previous_key_hash) WHERE previous_key_hash IS NOT NULL;
