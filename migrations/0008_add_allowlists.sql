-- Allowlists (issue 18): which models a key, or every key of an organization, may ask for
-- (JSON arrays of exact ids and `vendor/*` patterns), and which providers may serve them
-- (`openrouter`, `openai`, `anthropic`, `google`). NULL: any.
ALTER TABLE api_keys ADD COLUMN allowed_models TEXT;
ALTER TABLE api_keys ADD COLUMN allowed_providers TEXT;
ALTER TABLE organizations ADD COLUMN allowed_models TEXT;
ALTER TABLE organizations ADD COLUMN allowed_providers TEXT;
