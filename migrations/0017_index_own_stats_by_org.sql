-- Own stats for a key without admin cover its user's usage in its own organization only (`org_id IS ?`):
-- the per-user index carries `org_id` after the day, so that read stays one run of the index.
DROP INDEX usage_daily_by_user;
CREATE INDEX usage_daily_by_user ON usage_daily(user_id, day, org_id, requests, prompt_tokens, completion_tokens, cost_micros);
