-- One row per inference request (generation id = the request id), written
-- off the response path: the account's Durable Object keeps it in its outbox
-- with the ledger row of the same settlement and copies both to D1 in batches.
-- Money is integer micro-USD; times ISO-8601 UTC text.

CREATE TABLE usage_records (
  id                TEXT PRIMARY KEY,       -- the generation id (x-request-id)
  key_id            TEXT NOT NULL,          -- '' for the operator's own requests
  user_id           TEXT NOT NULL,          -- '' for the operator's own requests
  org_id            TEXT,
  model             TEXT NOT NULL,          -- the id the client asked for
  provider          TEXT NOT NULL,          -- who served it
  prompt_tokens     INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  reasoning_tokens  INTEGER NOT NULL DEFAULT 0,
  cached_tokens     INTEGER NOT NULL DEFAULT 0,
  cost_micros       INTEGER NOT NULL DEFAULT 0, -- charged by the gateway
  upstream_cost_micros INTEGER,               -- what the upstream said it cost, when it said
  latency_ms        INTEGER NOT NULL DEFAULT 0,
  status            INTEGER NOT NULL,       -- HTTP status the client got (a stream that broke: 502)
  streamed          INTEGER NOT NULL DEFAULT 0,
  cancelled         INTEGER NOT NULL DEFAULT 0, -- the client hung up mid-stream
  estimated         INTEGER NOT NULL DEFAULT 0, -- tokens estimated from content (no usage report)
  created_at        TEXT NOT NULL
);
CREATE INDEX usage_records_user ON usage_records(user_id, created_at);
CREATE INDEX usage_records_key ON usage_records(key_id, created_at);
CREATE INDEX usage_records_org ON usage_records(org_id, created_at) WHERE org_id IS NOT NULL;
CREATE INDEX usage_records_created ON usage_records(created_at);

-- Stats read daily roll-ups, kept by a trigger in the same transaction as each
-- insert (an ignored duplicate fires nothing), so a stats query touches
-- days × groups rows instead of every request:
--   usage_daily         day × key × model × provider, for one user's, key's or org's stats
--   usage_daily_global  day × model × provider, for the global view by day, model or provider
--   usage_daily_user    day × user, for the global view by user
--   usage_daily_key     day × key, for the global view by key
-- WITHOUT ROWID: each table is clustered on its key, so a range of days is one scan.
CREATE TABLE usage_daily (
  day               TEXT NOT NULL,          -- YYYY-MM-DD (UTC)
  key_id            TEXT NOT NULL,
  model             TEXT NOT NULL,
  provider          TEXT NOT NULL,
  user_id           TEXT NOT NULL,
  org_id            TEXT,
  requests          INTEGER NOT NULL,
  prompt_tokens     INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  cost_micros       INTEGER NOT NULL,
  PRIMARY KEY (day, key_id, model, provider)
) WITHOUT ROWID;
CREATE INDEX usage_daily_by_user ON usage_daily(user_id, day);
CREATE INDEX usage_daily_by_key ON usage_daily(key_id, day);
CREATE INDEX usage_daily_by_org ON usage_daily(org_id, day) WHERE org_id IS NOT NULL;

CREATE TABLE usage_daily_global (
  day TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL,
  requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL,
  PRIMARY KEY (day, model, provider)
) WITHOUT ROWID;

CREATE TABLE usage_daily_user (
  day TEXT NOT NULL, user_id TEXT NOT NULL,
  requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL,
  PRIMARY KEY (day, user_id)
) WITHOUT ROWID;

CREATE TABLE usage_daily_key (
  day TEXT NOT NULL, key_id TEXT NOT NULL,
  requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL,
  PRIMARY KEY (day, key_id)
) WITHOUT ROWID;

CREATE TRIGGER usage_records_roll_up AFTER INSERT ON usage_records
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
