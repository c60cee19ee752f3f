-- A request of an organization's key that the organization refused (its monthly limit, its suspension) was
-- recorded without the organization; when it was a key's first request of the day for its model, the day's
-- rollup row took that empty organization, and the organization's stats left the key's whole day out. The
-- records now always name the key's organization (a key never changes organization); rows written before
-- are given theirs.
UPDATE usage_records SET org_id = (SELECT k.org_id FROM api_keys k WHERE k.id = usage_records.key_id)
  WHERE org_id IS NULL AND key_id IN (SELECT id FROM api_keys WHERE org_id IS NOT NULL);
UPDATE usage_daily SET org_id = (SELECT k.org_id FROM api_keys k WHERE k.id = usage_daily.key_id)
  WHERE org_id IS NULL AND key_id IN (SELECT id FROM api_keys WHERE org_id IS NOT NULL);
UPDATE usage_daily_end_user SET org_id = (SELECT k.org_id FROM api_keys k WHERE k.id = usage_daily_end_user.key_id)
  WHERE org_id IS NULL AND key_id IN (SELECT id FROM api_keys WHERE org_id IS NOT NULL);
