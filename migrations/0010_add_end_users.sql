-- End users (issue 18.3): a key's default budget per end user, the end user each usage record was
-- made for, and a daily roll-up per end user for `group_by=end_user`.
ALTER TABLE api_keys ADD COLUMN end_user_limit_micros INTEGER;
ALTER TABLE api_keys ADD COLUMN end_user_limit_reset TEXT;
ALTER TABLE usage_records ADD COLUMN end_user TEXT;

CREATE TABLE usage_daily_end_user (
  day TEXT NOT NULL, key_id TEXT NOT NULL, end_user TEXT NOT NULL, user_id TEXT NOT NULL, org_id TEXT,
  requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL,
  PRIMARY KEY (day, key_id, end_user)
) WITHOUT ROWID;

CREATE TRIGGER usage_records_roll_up_end_user AFTER INSERT ON usage_records WHEN NEW.end_user IS NOT NULL
BEGIN
  INSERT INTO usage_daily_end_user (day, key_id, end_user, user_id, org_id, requests, prompt_tokens, completion_tokens, cost_micros)
  VALUES (substr(NEW.created_at, 1, 10), NEW.key_id, NEW.end_user, NEW.user_id, NEW.org_id, 1,
          NEW.prompt_tokens, NEW.completion_tokens, NEW.cost_micros)
  ON CONFLICT (day, key_id, end_user) DO UPDATE SET
    requests = requests + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens, cost_micros = cost_micros + excluded.cost_micros;
END;
