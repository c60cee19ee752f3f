-- Retention (issue 19.2): usage records and ledger copies older than USAGE_RETENTION_DAYS leave D1 for
-- R2 (NDJSON, one object per account per day and pass), listed here; re-imported rows come back marked
-- `restored`, which the roll-up triggers skip (the roll-ups never lost them).
ALTER TABLE usage_records ADD COLUMN restored INTEGER NOT NULL DEFAULT 0;

CREATE TABLE archives (
  id          TEXT PRIMARY KEY,
  r2_key      TEXT NOT NULL,
  user_id     TEXT NOT NULL,
  day         TEXT NOT NULL,
  ledger_rows INTEGER NOT NULL,
  usage_rows  INTEGER NOT NULL,
  ledger_sum  INTEGER NOT NULL,      -- moved from ledger_totals.amount to .archived
  created_at  TEXT NOT NULL,
  restored_at TEXT
);
CREATE INDEX archives_user ON archives(user_id, day);

DROP TRIGGER usage_records_roll_up;
CREATE TRIGGER usage_records_roll_up AFTER INSERT ON usage_records WHEN NEW.restored = 0
BEGIN
  INSERT INTO usage_daily (day, key_id, model, provider, user_id, org_id, requests, prompt_tokens, completion_tokens, cost_micros)
  VALUES (substr(NEW.created_at, 1, 10), NEW.key_id, NEW.model, NEW.provider, NEW.user_id, NEW.org_id, 1,
          NEW.prompt_tokens, NEW.completion_tokens, NEW.cost_micros)
  ON CONFLICT (day, key_id, model, provider) DO UPDATE SET
    requests = requests + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens, cost_micros = cost_micros + excluded.cost_micros;
  INSERT INTO usage_daily_global (day, model, provider, requests, prompt_tokens, completion_tokens, cost_micros)
  VALUES (substr(NEW.created_at, 1, 10), NEW.model, NEW.provider, 1, NEW.prompt_tokens, NEW.completion_tokens, NEW.cost_micros)
  ON CONFLICT (day, model, provider) DO UPDATE SET
    requests = requests + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens, cost_micros = cost_micros + excluded.cost_micros;
  INSERT INTO usage_daily_user (day, user_id, requests, prompt_tokens, completion_tokens, cost_micros)
  VALUES (substr(NEW.created_at, 1, 10), NEW.user_id, 1, NEW.prompt_tokens, NEW.completion_tokens, NEW.cost_micros)
  ON CONFLICT (day, user_id) DO UPDATE SET
    requests = requests + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens, cost_micros = cost_micros + excluded.cost_micros;
  INSERT INTO usage_daily_key (day, key_id, requests, prompt_tokens, completion_tokens, cost_micros)
  VALUES (substr(NEW.created_at, 1, 10), NEW.key_id, 1, NEW.prompt_tokens, NEW.completion_tokens, NEW.cost_micros)
  ON CONFLICT (day, key_id) DO UPDATE SET
    requests = requests + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens, cost_micros = cost_micros + excluded.cost_micros;
END;

DROP TRIGGER usage_records_roll_up_end_user;
CREATE TRIGGER usage_records_roll_up_end_user AFTER INSERT ON usage_records
  WHEN NEW.end_user IS NOT NULL AND NEW.restored = 0
BEGIN
  INSERT INTO usage_daily_end_user (day, key_id, end_user, user_id, org_id, requests, prompt_tokens, completion_tokens, cost_micros)
  VALUES (substr(NEW.created_at, 1, 10), NEW.key_id, NEW.end_user, NEW.user_id, NEW.org_id, 1,
          NEW.prompt_tokens, NEW.completion_tokens, NEW.cost_micros)
  ON CONFLICT (day, key_id, end_user) DO UPDATE SET
    requests = requests + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens, cost_micros = cost_micros + excluded.cost_micros;
END;

DROP TRIGGER usage_records_model_totals;
CREATE TRIGGER usage_records_model_totals AFTER INSERT ON usage_records WHEN NEW.key_id <> '' AND NEW.restored = 0
BEGIN
  INSERT INTO usage_totals_model (model, requests, charged, upstream_cost, below_cost)
  VALUES (NEW.model, 1, NEW.cost_micros, COALESCE(NEW.upstream_cost_micros, 0),
          CASE WHEN NEW.upstream_cost_micros > NEW.cost_micros THEN 1 ELSE 0 END)
  ON CONFLICT (model) DO UPDATE SET requests = requests + 1, charged = charged + excluded.charged,
    upstream_cost = upstream_cost + excluded.upstream_cost, below_cost = below_cost + excluded.below_cost;
END;
