-- Prices (integer micro-USD per million tokens) and the D1 copy of every
-- account's ledger. The authoritative ledger lives in each account's Durable
-- Object; rows reach this table through its outbox (never edited here).

CREATE TABLE model_pricing (
  model_name               TEXT PRIMARY KEY,
  display_name             TEXT,
  provider                 TEXT NOT NULL,
  input_per_mtok           INTEGER NOT NULL,
  output_per_mtok          INTEGER NOT NULL,
  cache_read_per_mtok      INTEGER,
  cache_write_per_mtok     INTEGER,
  reasoning_per_mtok       INTEGER,
  upstream_input_per_mtok  INTEGER,          -- the upstream's own price, for margin
  upstream_output_per_mtok INTEGER,
  context_length           INTEGER,
  max_completion_tokens    INTEGER,
  is_active                INTEGER NOT NULL DEFAULT 1,
  edited_by_admin          INTEGER NOT NULL DEFAULT 0, -- sync keeps these rows unless asked to overwrite
  updated_at               TEXT NOT NULL
);
CREATE INDEX model_pricing_provider ON model_pricing(provider);

CREATE TABLE balance_transactions (
  id            TEXT PRIMARY KEY,
  user_id       TEXT NOT NULL,
  type          TEXT NOT NULL,        -- recharge | usage | refund | adjustment
  amount        INTEGER NOT NULL,     -- micro-USD, negative for usage
  balance_after INTEGER NOT NULL,
  reference_id  TEXT,                 -- generation id for usage, Idempotency-Key for credits
  description   TEXT,
  key_id        TEXT,
  created_at    TEXT NOT NULL
);
CREATE INDEX balance_transactions_user ON balance_transactions(user_id, created_at);
