-- A request is found by the gateway's id (x-request-id) or by the id its answer
-- carried (the upstream's generation id, e.g. OpenRouter's `gen-…`), so an
-- OpenRouter client's `GET /api/v1/generation?id=` works. Ledger copies keep it too.
ALTER TABLE usage_records ADD COLUMN upstream_id TEXT;
CREATE INDEX usage_records_upstream ON usage_records(upstream_id) WHERE upstream_id IS NOT NULL;
ALTER TABLE balance_transactions ADD COLUMN upstream_id TEXT;
