-- Running totals (issue 19.1): kept by triggers in the statement that writes each row, so the
-- overview, reconciliation and the margin report read a row per user or per model, not history.
-- `amount` is the sum of the rows present; whatever moves rows out of D1 on purpose (retention) adds
-- what it moves to `archived` first, so `amount + archived` is the user's balance, and a row lost any
-- other way still shows as drift.
CREATE TABLE ledger_totals (
  user_id                   TEXT PRIMARY KEY,
  amount                    INTEGER NOT NULL,
  archived                  INTEGER NOT NULL DEFAULT 0,
  closed_without_settlement INTEGER NOT NULL    -- usage rows closed by the rule, not by a settlement
) WITHOUT ROWID;
INSERT INTO ledger_totals (user_id, amount, closed_without_settlement)
  SELECT user_id, COALESCE(SUM(amount), 0),
         SUM(CASE WHEN type = 'usage' AND description LIKE 'closed without settlement%' THEN 1 ELSE 0 END)
  FROM balance_transactions GROUP BY user_id;
CREATE TRIGGER balance_transactions_totals AFTER INSERT ON balance_transactions
BEGIN
  INSERT INTO ledger_totals (user_id, amount, closed_without_settlement)
  VALUES (NEW.user_id, NEW.amount,
          CASE WHEN NEW.type = 'usage' AND NEW.description LIKE 'closed without settlement%' THEN 1 ELSE 0 END)
  ON CONFLICT (user_id) DO UPDATE SET amount = amount + excluded.amount,
    closed_without_settlement = closed_without_settlement + excluded.closed_without_settlement;
END;
CREATE TRIGGER balance_transactions_totals_update AFTER UPDATE OF amount ON balance_transactions
BEGIN
  UPDATE ledger_totals SET amount = amount + NEW.amount - OLD.amount WHERE user_id = NEW.user_id;
END;
CREATE TRIGGER balance_transactions_totals_delete AFTER DELETE ON balance_transactions
BEGIN
  UPDATE ledger_totals SET amount = amount - OLD.amount WHERE user_id = OLD.user_id;
END;

CREATE TABLE usage_totals_model (
  model         TEXT PRIMARY KEY,
  requests      INTEGER NOT NULL,
  charged       INTEGER NOT NULL,
  upstream_cost INTEGER NOT NULL,
  below_cost    INTEGER NOT NULL   -- requests charged less than the upstream said they cost
) WITHOUT ROWID;
INSERT INTO usage_totals_model (model, requests, charged, upstream_cost, below_cost)
  SELECT model, COUNT(*), COALESCE(SUM(cost_micros), 0), COALESCE(SUM(upstream_cost_micros), 0),
         SUM(CASE WHEN upstream_cost_micros > cost_micros THEN 1 ELSE 0 END)
  FROM usage_records WHERE key_id <> '' GROUP BY model;
CREATE TRIGGER usage_records_model_totals AFTER INSERT ON usage_records WHEN NEW.key_id <> ''
BEGIN
  INSERT INTO usage_totals_model (model, requests, charged, upstream_cost, below_cost)
  VALUES (NEW.model, 1, NEW.cost_micros, COALESCE(NEW.upstream_cost_micros, 0),
          CASE WHEN NEW.upstream_cost_micros > NEW.cost_micros THEN 1 ELSE 0 END)
  ON CONFLICT (model) DO UPDATE SET requests = requests + 1, charged = charged + excluded.charged,
    upstream_cost = upstream_cost + excluded.upstream_cost, below_cost = below_cost + excluded.below_cost;
END;
