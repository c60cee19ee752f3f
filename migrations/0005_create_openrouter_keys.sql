-- Upstream (OpenRouter) keys made per user through OpenRouter's key-management
-- API. Never the key text: only its SHA-256, a display prefix, and OpenRouter's
-- own id for the key (`upstream_hash`, what its API calls `hash`).

CREATE TABLE openrouter_keys (
  id            TEXT PRIMARY KEY,
  user_id       TEXT NOT NULL REFERENCES users(id),
  upstream_hash TEXT NOT NULL UNIQUE,
  key_hash      TEXT NOT NULL,          -- SHA-256 hex of the key text
  key_prefix    TEXT NOT NULL,          -- first 12 characters, for display
  name          TEXT NOT NULL,
  limit_cents   INTEGER,                -- NULL = unlimited
  limit_reset   TEXT,                   -- daily | weekly | monthly | NULL (never)
  disabled      INTEGER NOT NULL DEFAULT 0,
  usage_micros  INTEGER NOT NULL DEFAULT 0, -- mirrored from OpenRouter by the cron job
  synced_at     TEXT,
  created_at    TEXT NOT NULL,
  updated_at    TEXT NOT NULL
);
CREATE INDEX openrouter_keys_user ON openrouter_keys(user_id, created_at);
