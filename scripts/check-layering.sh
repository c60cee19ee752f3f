#!/usr/bin/env bash
# Fails when pure code reaches for the runtime: `worker` must not appear in
# src/domain, nor in the provider translation modules (only transport.rs fetches).
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$(grep -rlE '\bworker::|use worker\b|extern crate worker' src/domain src/routes.rs src/api/error.rs \
  src/providers/sse.rs src/providers/openai_compat.rs src/providers/anthropic src/providers/gemini src/providers/translate.rs 2>/dev/null || true)
if [ -n "$bad" ]; then
  echo "layering: these pure modules use the worker runtime:"; echo "$bad"; exit 1
fi
echo "layering: ok"
