-- Reconciliation fanned out through the JOBS queue (issue 19.3): a run walks the users a page at a
-- time, one message per page, and checks each account in a message of its own.
CREATE TABLE reconcile_runs (
  id          TEXT PRIMARY KEY,
  started_at  TEXT NOT NULL,
  enumerated  INTEGER NOT NULL DEFAULT 0,   -- accounts handed to the queue so far
  walked      INTEGER NOT NULL DEFAULT 0    -- 1 once every page of users was handed over
);
CREATE TABLE reconcile_results (
  run_id      TEXT NOT NULL,
  user_id     TEXT NOT NULL,
  agrees      INTEGER NOT NULL,
  drift       TEXT,                         -- the disagreement, as JSON
  error       TEXT,                         -- the account could not be checked
  checked_at  TEXT NOT NULL,
  PRIMARY KEY (run_id, user_id)
) WITHOUT ROWID;
