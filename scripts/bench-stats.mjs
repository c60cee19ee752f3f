// `npm run bench:stats`: a benchmark, not a test. Seeds a local D1 with N usage
// records (default 200,000: 90 days, 50 users, 200 keys, 10 orgs, 6 models),
// serves the gateway on it and times every stats grouping through the API.
// Options: --rows N, --runs N (timed calls per query, default 20), --skip-build

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { ROOT, applyMigrations, run, startGateway } from '../tests/harness.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const ROWS = arg('rows', 200_000);
const RUNS = arg('runs', 20);
const DAYS = 90;
const MODELS = ['openai/gpt-4o-mini', 'openai/gpt-4o', 'anthropic/claude-3.5-sonnet', 'anthropic/claude-3-5-haiku-20241022', 'google/gemini-2.0-flash-001', 'meta-llama/llama-3.1-8b-instruct'];
const PROVIDERS = ['openrouter', 'openai', 'anthropic', 'google'];

if (!process.argv.includes('--skip-build')) {
  for (const [cmd, args] of [['scripts/setup', []], ['scripts/build', ['release']]]) {
    const r = spawnSync(path.join(ROOT, cmd), args, { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) process.exit(r.status ?? 1);
  }
}

const state = mkdtempSync(path.join(tmpdir(), 'tollgate-stats-'));
await applyMigrations(state);

// Deterministic pseudo-random rows, 500 to a statement.
let seed = 42;
const rand = (n) => {
  // mulberry32
  seed = (seed + 0x6d2b79f5) | 0;
  let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
  return ((x ^ (x >>> 14)) >>> 0) % n;
};
const now = Date.now();
const lines = [];
for (let i = 0; i < ROWS; i += 500) {
  const values = [];
  for (let j = i; j < Math.min(ROWS, i + 500); j++) {
    const key = rand(200);
    const user = key % 50;
    const org = key % 4 === 0 ? `'org-${key % 10}'` : 'NULL';
    const at = new Date(now - rand(DAYS * 86_400_000)).toISOString();
    const prompt = 10 + rand(2000);
    const completion = rand(800);
    values.push(`('gen-${j}','key-${key}','user-${user}',${org},'${MODELS[rand(MODELS.length)]}','${PROVIDERS[rand(PROVIDERS.length)]}',${prompt},${completion},0,0,${prompt * 2 + completion * 8},NULL,${200 + rand(3000)},200,${rand(2)},0,0,'${at}')`);
  }
  lines.push(`INSERT INTO usage_records (id,key_id,user_id,org_id,model,provider,prompt_tokens,completion_tokens,reasoning_tokens,cached_tokens,cost_micros,upstream_cost_micros,latency_ms,status,streamed,cancelled,estimated,created_at) VALUES ${values.join(',')};`);
}
const file = path.join(state, 'seed.sql');
writeFileSync(file, lines.join('\n'));
let t = performance.now();
await run(path.join(ROOT, 'scripts', 'wrangler'), ['d1', 'execute', 'DB', '--local', '--persist-to', state, '--file', file], { env: { ...process.env, CI: 'true' } });
const seedSeconds = (performance.now() - t) / 1000;

const gw = await startGateway({ persistTo: state, syncPrices: false });
const start = new Date(now - (DAYS - 1) * 86_400_000).toISOString().slice(0, 10);
const end = new Date(now).toISOString().slice(0, 10);
const queries = [
  ['global by day', `/api/stats/global?group_by=day&start=${start}&end=${end}`],
  ['global by model', `/api/stats/global?group_by=model&start=${start}&end=${end}`],
  ['global by provider', `/api/stats/global?group_by=provider&start=${start}&end=${end}`],
  ['global by user', `/api/stats/global?group_by=user&start=${start}&end=${end}`],
  ['global by key', `/api/stats/global?group_by=key&start=${start}&end=${end}`],
  ['one user by day', `/api/stats?user_id=user-7&group_by=day&start=${start}&end=${end}`],
  ['one key by model', `/api/stats/keys/key-7?group_by=model&start=${start}&end=${end}`],
  ['one org by day', `/api/stats/orgs/org-4?group_by=day&start=${start}&end=${end}`],
  ['one generation', '/api/v1/generation?id=gen-12345'],
];
const results = [];
try {
  for (const [name, p] of queries) {
    const times = [];
    let total = null;
    for (let i = 0; i < RUNS + 3; i++) {
      t = performance.now();
      const res = await fetch(gw.url + p, { headers: { authorization: `Bearer ${gw.adminToken}` } });
      const body = await res.json();
      if (res.status !== 200) throw new Error(`${p}: ${res.status} ${JSON.stringify(body)}`);
      if (i >= 3) times.push(performance.now() - t);
      total = Array.isArray(body.data) ? body.data.reduce((n, b) => n + b.requests, 0) : 1;
    }
    times.sort((a, b) => a - b);
    results.push({ name, p50: times[times.length >> 1], max: times.at(-1), total });
  }
} finally {
  await gw.stop();
  rmSync(state, { recursive: true, force: true });
}

console.log(`\nStats on ${ROWS.toLocaleString('en')} usage records over ${DAYS} days (seeded in ${seedSeconds.toFixed(1)} s), ${RUNS} calls each, through the API:`);
console.log(`${'query'.padEnd(22)} ${'p50 ms'.padStart(8)} ${'max ms'.padStart(8)} ${'requests'.padStart(10)}`);
for (const r of results) console.log(`${r.name.padEnd(22)} ${r.p50.toFixed(2).padStart(8)} ${r.max.toFixed(2).padStart(8)} ${String(r.total).padStart(10)}`);
