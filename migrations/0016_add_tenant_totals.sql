-- Tenant-wide running totals (issue 19.1): the overview reads one row, not a row per user or key.
-- Kept by triggers on the tables whose rows they count; `balance` follows `ledger_totals`, whose own
-- triggers follow the ledger copy (SQLite fires the nested triggers), so it is amount + archived summed.
CREATE TABLE tenant_totals (
  id          INTEGER PRIMARY KEY CHECK (id = 1),
  balance     INTEGER NOT NULL,   -- Σ ledger_totals.amount + archived
  users       INTEGER NOT NULL,   -- users not deleted
  usable_keys INTEGER NOT NULL    -- keys neither deleted nor disabled (expired ones are subtracted at read)
);
INSERT INTO tenant_totals (id, balance, users, usable_keys) SELECT 1,
  (SELECT COALESCE(SUM(amount + archived), 0) FROM ledger_totals),
  (SELECT COUNT(*) FROM users WHERE deleted_at IS NULL),
  (SELECT COUNT(*) FROM api_keys WHERE deleted_at IS NULL AND disabled = 0);

CREATE TRIGGER ledger_totals_tenant_insert AFTER INSERT ON ledger_totals
BEGIN
  UPDATE tenant_totals SET balance = balance + NEW.amount + NEW.archived WHERE id = 1;
END;
CREATE TRIGGER ledger_totals_tenant_update AFTER UPDATE OF amount, archived ON ledger_totals
BEGIN
  UPDATE tenant_totals SET balance = balance + NEW.amount + NEW.archived - OLD.amount - OLD.archived WHERE id = 1;
END;
CREATE TRIGGER ledger_totals_tenant_delete AFTER DELETE ON ledger_totals
BEGIN
  UPDATE tenant_totals SET balance = balance - OLD.amount - OLD.archived WHERE id = 1;
END;

CREATE TRIGGER users_tenant_insert AFTER INSERT ON users
BEGIN
  UPDATE tenant_totals SET users = users + (NEW.deleted_at IS NULL) WHERE id = 1;
END;
CREATE TRIGGER users_tenant_update AFTER UPDATE OF deleted_at ON users
BEGIN
  UPDATE tenant_totals SET users = users + (NEW.deleted_at IS NULL) - (OLD.deleted_at IS NULL) WHERE id = 1;
END;
CREATE TRIGGER users_tenant_delete AFTER DELETE ON users
BEGIN
  UPDATE tenant_totals SET users = users - (OLD.deleted_at IS NULL) WHERE id = 1;
END;

CREATE TRIGGER api_keys_tenant_insert AFTER INSERT ON api_keys
BEGIN
  UPDATE tenant_totals SET usable_keys = usable_keys + (NEW.deleted_at IS NULL AND NEW.disabled = 0) WHERE id = 1;
END;
CREATE TRIGGER api_keys_tenant_update AFTER UPDATE OF deleted_at, disabled ON api_keys
BEGIN
  UPDATE tenant_totals SET usable_keys = usable_keys + (NEW.deleted_at IS NULL AND NEW.disabled = 0)
    - (OLD.deleted_at IS NULL AND OLD.disabled = 0) WHERE id = 1;
END;
CREATE TRIGGER api_keys_tenant_delete AFTER DELETE ON api_keys
BEGIN
  UPDATE tenant_totals SET usable_keys = usable_keys - (OLD.deleted_at IS NULL AND OLD.disabled = 0) WHERE id = 1;
END;
-- Expired keys are the only ones the counter cannot follow (time passes without a write): the overview
-- subtracts those usable keys whose expiry has passed, found through this index.
CREATE INDEX api_keys_expires ON api_keys(expires_at) WHERE expires_at IS NOT NULL;

-- Stats for one user, key or org read a run of their index and nothing else: the indexes carry the
-- counted columns (and, on a WITHOUT ROWID table, the primary key's day, key, model and provider).
DROP INDEX usage_daily_by_user;
CREATE INDEX usage_daily_by_user ON usage_daily(user_id, day, requests, prompt_tokens, completion_tokens, cost_micros);
DROP INDEX usage_daily_by_key;
CREATE INDEX usage_daily_by_key ON usage_daily(key_id, day, requests, prompt_tokens, completion_tokens, cost_micros);
DROP INDEX usage_daily_by_org;
CREATE INDEX usage_daily_by_org ON usage_daily(org_id, day, requests, prompt_tokens, completion_tokens, cost_micros)
  WHERE org_id IS NOT NULL;
