// `npm run bench`: a benchmark, not a test. Prints latency and throughput for
// non-streamed chat (concurrency 1 and 16) and streaming time-to-first-chunk, for
//   (a) the fake upstream directly,
//   (b) a one-line JavaScript pass-through Worker under the same `wrangler dev` (the floor),
//   (b2) the same Worker after one call to a trivial Durable Object (Tollgate makes one per request),
//   (c) Tollgate without per-request log lines, (d) with them,
// then Tollgate's overhead over the floor and the wasm size.
// Options: --requests N (default 400 per run), --skip-build

import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

import { startFakeUpstream } from '../tests/fake-upstream.mjs';
import { ROOT, FAKE_UPSTREAM_KEY, adminClient, freePort, killGroup, startGateway } from '../tests/harness.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const REQUESTS = Number(arg('requests', 400));
const WARMUP = 50;

if (!process.argv.includes('--skip-build')) {
  for (const [cmd, args] of [['scripts/setup', []], ['scripts/build', ['release']]]) {
    const r = spawnSync(path.join(ROOT, cmd), args, { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) process.exit(r.status ?? 1);
  }
}

const body = JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'benchmark hello world' }] });
const streamBody = JSON.stringify({ model: 'openai/gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'benchmark hello world' }] });

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function once(url, key, payload) {
  const t = performance.now();
  const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: payload });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`${url}: status ${res.status}`);
  return performance.now() - t;
}

async function load(url, key, concurrency, total) {
  for (let i = 0; i < WARMUP; i++) await once(url, key, body);
  const times = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next += 1;
        times.push(await once(url, key, body));
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  times.sort((a, b) => a - b);
  return { p50: pct(times, 50), p99: pct(times, 99), rps: total / elapsed };
}

async function firstChunk(url, key, total) {
  const times = [];
  for (let i = 0; i < total + 10; i++) {
    const t = performance.now();
    const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: streamBody });
    const reader = res.body.getReader();
    let first = null;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (first === null && new TextDecoder().decode(value).includes('"content"')) first = performance.now() - t;
    }
    if (i >= 10) times.push(first);
  }
  times.sort((a, b) => a - b);
  return { p50: pct(times, 50), p99: pct(times, 99) };
}

async function measure(name, url, key) {
  const c1 = await load(url, key, 1, REQUESTS);
  const c16 = await load(url, key, 16, REQUESTS * 2);
  const ttfc = await firstChunk(url, key, Math.max(50, REQUESTS / 4));
  return { name, c1, c16, ttfc };
}

async function startFloor(upstreamUrl) {
  const port = await freePort();
  const dir = path.join(ROOT, 'scripts', 'bench-floor');
  const child = spawn(path.join(ROOT, 'scripts', 'wrangler'), [
    'dev', '--config', path.join(dir, 'wrangler.toml'), '--ip', '127.0.0.1', '--port', String(port), '--var', `UPSTREAM:${upstreamUrl}`,
    '--show-interactive-dev-session=false', '--inspector-port', String(await freePort()), '--persist-to', path.join(ROOT, '.wrangler', 'bench-floor'),
  ], { cwd: dir, detached: true, stdio: 'ignore', env: { ...process.env, CI: 'true' } });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    try {
      await fetch(url + '/v1/models');
      return { url, stop: () => killGroup(child) };
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error('floor worker did not start');
}

const f = (ms) => ms.toFixed(2).padStart(7);
const row = (r) => `${r.name.padEnd(26)} ${f(r.c1.p50)} ${f(r.c1.p99)} ${r.c1.rps.toFixed(0).padStart(7)}   ${f(r.c16.p50)} ${f(r.c16.p99)} ${r.c16.rps.toFixed(0).padStart(7)}   ${f(r.ttfc.p50)} ${f(r.ttfc.p99)}`;

const fake = await startFakeUpstream({ apiKey: FAKE_UPSTREAM_KEY });
const results = [];
results.push(await measure('(a) fake upstream', `${fake.url}/chat/completions`, FAKE_UPSTREAM_KEY));

const floor = await startFloor(fake.url);
results.push(await measure('(b) JS pass-through floor', `${floor.url}/v1/chat/completions`, FAKE_UPSTREAM_KEY));
results.push(await measure('(b2) JS floor + 1 DO call', `${floor.url}/do/v1/chat/completions`, FAKE_UPSTREAM_KEY));
await floor.stop();

// wrangler dev carries every console line from workerd to its own process and
// prints it; that costs the local runtime 1-2 ms a line, which production
// does not pay. So Tollgate is measured without request lines (the gateway's
// own overhead), then with them (what `npm start` feels like).
for (const [name, level] of [['(c) Tollgate', 'warn'], ['(d) Tollgate, request logs', 'info']]) {
  const gw = await startGateway({ upstream: false, vars: { AI_GATEWAY_BASE_URL: fake.url, AI_GATEWAY_API_KEY: FAKE_UPSTREAM_KEY, LOG_LEVEL: level } });
  const admin = adminClient(gw.url, gw.adminToken);
  const user = await admin.createUser({ name: 'Bench' });
  const key = await admin.createKey(user.id, { name: 'bench' });
  results.push(await measure(name, `${gw.url}/v1/chat/completions`, key.key));
  await gw.stop();
}
await fake.close();

const wasmFile = readdirSync(path.join(ROOT, 'build')).find((n) => n.endsWith('.wasm'));
const wasm = readFileSync(path.join(ROOT, 'build', wasmFile));
const [, b, b2, c, d] = results;

console.log(`\nTollgate benchmark — ${REQUESTS} requests at c=1, ${REQUESTS * 2} at c=16, non-streamed chat; streaming time to first content chunk`);
console.log(`${''.padEnd(26)} ${'c=1 p50'.padStart(7)} ${'p99'.padStart(7)} ${'req/s'.padStart(7)}   ${'c=16p50'.padStart(7)} ${'p99'.padStart(7)} ${'req/s'.padStart(7)}   ${'ttfc50'.padStart(7)} ${'p99'.padStart(7)}   (ms)`);
for (const r of results) console.log(row(r));
const over = (x) => `p50 c=1 ${(x.c1.p50 - b.c1.p50).toFixed(2)} ms, p50 c=16 ${(x.c16.p50 - b.c16.p50).toFixed(2)} ms, ttfc p50 ${(x.ttfc.p50 - b.ttfc.p50).toFixed(2)} ms`;
console.log(`\nTollgate overhead over the floor: ${over(c)}`);
console.log(`  with request log lines:         ${over(d)}`);
console.log(`One DO round trip costs the JS floor itself: p50 c=1 ${(b2.c1.p50 - b.c1.p50).toFixed(2)} ms`);
console.log(`wasm: ${(wasm.length / 1024).toFixed(0)} KB raw, ${(gzipSync(wasm, { level: 9 }).length / 1024).toFixed(0)} KB gzipped (${statSync(path.join(ROOT, 'build', wasmFile)).size} bytes)`);
