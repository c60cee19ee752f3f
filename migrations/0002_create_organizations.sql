-- Organizations group keys under monthly limits (enforced by the billing Durable Object).
CREATE TABLE organizations (
  id                  TEXT PRIMARY KEY,
  name                TEXT NOT NULL,
  description         TEXT,
  admin_user_id       TEXT REFERENCES users(id),
  status              TEXT NOT NULL DEFAULT 'active',   -- active | suspended
  monthly_requests    INTEGER,                          -- NULL = no limit
  monthly_tokens      INTEGER,
  monthly_cost_micros INTEGER,
  created_at          TEXT NOT NULL,
  updated_at          TEXT NOT NULL,
  deleted_at          TEXT
);
CREATE UNIQUE INDEX organizations_name_live ON organizations(name) WHERE deleted_at IS NULL;
