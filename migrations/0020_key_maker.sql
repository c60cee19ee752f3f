-- Which key made a key (`POST /api/token`, or `POST /api/keys` by a key holder): after a leak, the keys the
-- leaked key made are found (`GET /api/keys?created_by=`) and revoked with it. NULL: made by the operator
-- token, by provisioning, or before this column.
ALTER TABLE api_keys ADD COLUMN created_by_key_id TEXT;
CREATE INDEX idx_api_keys_created_by ON api_keys (created_by_key_id) WHERE created_by_key_id IS NOT NULL;
