-- The request log (issue 18.6): a key may keep its requests' and answers' bodies for a number of days
-- (NULL: off, the default). The bodies are R2 objects (binding REQUEST_LOGS); this is their index.
ALTER TABLE api_keys ADD COLUMN request_log_days INTEGER;

CREATE TABLE request_logs (
  id             TEXT PRIMARY KEY,      -- the request id (x-request-id)
  key_id         TEXT NOT NULL,
  user_id        TEXT NOT NULL,
  model          TEXT NOT NULL,
  status         INTEGER NOT NULL,
  streamed       INTEGER NOT NULL DEFAULT 0,
  request_bytes  INTEGER NOT NULL,
  response_bytes INTEGER NOT NULL,
  created_at     TEXT NOT NULL,
  expires_at     TEXT NOT NULL          -- the cron job deletes the row and its object after this
);
CREATE INDEX request_logs_key ON request_logs(key_id, created_at);
CREATE INDEX request_logs_expires ON request_logs(expires_at);
