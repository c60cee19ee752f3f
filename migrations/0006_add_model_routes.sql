-- Operator pins (/api/admin/routes): which provider serves a model, under
-- which native id, and whether OpenRouter backs the route up. They live on
-- the price row so the hot path reads them from the price cache it already
-- holds (no extra read per request). A price sync never touches them.
ALTER TABLE model_pricing ADD COLUMN route_provider TEXT;          -- openrouter | openai | anthropic | google; NULL: the default rule
ALTER TABLE model_pricing ADD COLUMN route_native_model TEXT;      -- NULL: the id without its provider prefix
ALTER TABLE model_pricing ADD COLUMN route_fallback INTEGER NOT NULL DEFAULT 1;
ALTER TABLE model_pricing ADD COLUMN route_updated_at TEXT;
