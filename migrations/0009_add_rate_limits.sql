-- Per-minute limits per key (issue 18): requests and tokens a key may use in any 60 s. NULL: the
-- tenant's default (`DEFAULT_RPM_LIMIT` / `DEFAULT_TPM_LIMIT`), or none.
ALTER TABLE api_keys ADD COLUMN rpm_limit INTEGER;
ALTER TABLE api_keys ADD COLUMN tpm_limit INTEGER;
