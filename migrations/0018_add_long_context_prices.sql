-- A model's long-context tier: a request whose prompt has at least `long_from_prompt_tokens` tokens is billed,
-- all of it, at these rates (OpenRouter lists them as prompt-size pricing overrides). NULL: no tier.
ALTER TABLE model_pricing ADD COLUMN long_from_prompt_tokens INTEGER;
ALTER TABLE model_pricing ADD COLUMN long_input_per_mtok INTEGER;
ALTER TABLE model_pricing ADD COLUMN long_output_per_mtok INTEGER;
ALTER TABLE model_pricing ADD COLUMN long_cache_read_per_mtok INTEGER;
ALTER TABLE model_pricing ADD COLUMN long_cache_write_per_mtok INTEGER;
ALTER TABLE model_pricing ADD COLUMN long_reasoning_per_mtok INTEGER;
