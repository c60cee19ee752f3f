-- Alerts (issue 18.4): each alert the account objects found, and how its delivery to the tenant's
-- ALERT_WEBHOOK_URL went. Written by the queue consumer; read by GET /api/admin/alerts.
CREATE TABLE alert_deliveries (
  id           TEXT PRIMARY KEY,        -- names the crossing: never delivered twice
  type         TEXT NOT NULL,           -- key_limit.threshold | end_user_budget.threshold | balance.below
  body         TEXT NOT NULL,           -- the webhook's body, as signed
  status       TEXT NOT NULL,           -- pending | delivered | failed
  attempts     INTEGER NOT NULL DEFAULT 0,
  last_status  INTEGER,                 -- the receiver's last HTTP status (NULL: no answer)
  last_error   TEXT,
  created_at   TEXT NOT NULL,
  updated_at   TEXT NOT NULL,
  delivered_at TEXT
);
CREATE INDEX alert_deliveries_created ON alert_deliveries(created_at);
