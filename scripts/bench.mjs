// `npm run bench`: a benchmark, not a test. Prints latency and throughput for
// non-streamed chat (concurrency 1 and 16) and streaming time-to-first-chunk, for
//   (a) the fake upstream directly,
//   (b) a one-line JavaScript pass-through Worker under the same `wrangler dev` (the floor),
//   (b2) the same Worker after one call to a trivial Durable Object (Tollgate makes one per request),
//   (r), (r2) the same two in idiomatic workers-rs (scripts/bench-floor-rust: same worker version and
//             release profile), so the toolchain's own cost is told apart from Tollgate's,
//   (c) Tollgate without per-request log lines, spending from budget leases (the default),
//   (c0) the same with leases off (`BUDGET_LEASES=off`: one reservation per request in the account's object),
//   (d) Tollgate with request log lines,
// then Tollgate's own overhead over the workers-rs floor (as differences and a throughput ratio) and the
// wasm size. It measures everything twice: under `wrangler dev` (what `npm start` runs), then with each
// Worker served by Miniflare's API directly (scripts/bench-miniflare.mjs: no dev proxy Worker in a second
// workerd, no wrangler process), so the local harness's own cost is not mistaken for Tollgate's.
// Options: --requests N (default 400 per run), --skip-build,
//   --quick (c=1 and streaming only, without target (d), under `wrangler dev` only: for iterating on the hot path),
//   --harness wrangler|miniflare (only that one),
//   --direct (instead: one gateway, the same chat through OpenRouter's route and through each direct
//             provider's route — OpenAI, Anthropic, Google — against the fakes, c=1 and first chunk)
//   --against DIR (instead: an A/B of two builds: this checkout's Tollgate and the one built in DIR, another
//             checkout (say a `git worktree` of the commit before), both with leases, served by Miniflare,
//             measured in the same interleaved rounds; differences of a tenth of a millisecond need
//             --requests 2400 or more, and a few runs)

import { randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

import { serveMiniflare } from './bench-miniflare.mjs';

import { FAKE_ANTHROPIC_KEY, FAKE_GOOGLE_KEY, FAKE_OPENAI_KEY, startFakeUpstream } from '../tests/fake-upstream.mjs';
import { ROOT, FAKE_UPSTREAM_KEY, adminClient, applyMigrations, freePort, killGroup, run, startGateway } from '../tests/harness.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const REQUESTS = Number(arg('requests', 400));
const WARMUP = 50;
const QUICK = process.argv.includes('--quick') || process.argv.includes('--direct');
const DIRECT = process.argv.includes('--direct');
const AGAINST = arg('against');
if (process.argv.includes('--against') && (!AGAINST || AGAINST.startsWith('--') || QUICK)) {
  console.error('--against takes a directory (another checkout, built), and measures c=16 too: not with --quick or --direct');
  process.exit(2);
}
const HARNESSES = arg('harness') ? [arg('harness')] : QUICK ? ['wrangler'] : ['wrangler', 'miniflare'];

const RUST_FLOOR = path.join(ROOT, 'scripts', 'bench-floor-rust');
if (!process.argv.includes('--skip-build')) {
  for (const [cmd, args] of [['scripts/setup', []], ['scripts/build', ['release']]]) {
    const r = spawnSync(path.join(ROOT, cmd), args, { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) process.exit(r.status ?? 1);
  }
}
if (!DIRECT && !AGAINST && (!process.argv.includes('--skip-build') || !existsSync(path.join(RUST_FLOOR, 'build', 'worker', 'shim.mjs')))) {
  // Shares Tollgate's target directory, so only the floor's own crate compiles.
  const r = spawnSync('bash', ['-c', `source "${ROOT}/scripts/env.sh" && worker-build --release`], {
    cwd: RUST_FLOOR, stdio: 'inherit', env: { ...process.env, CARGO_TARGET_DIR: path.join(ROOT, 'target') },
  });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const chatBody = (model, stream = false) => JSON.stringify({ model, stream, messages: [{ role: 'user', content: 'benchmark hello world' }] });
const body = chatBody('openai/gpt-4o-mini');
const streamBody = chatBody('openai/gpt-4o-mini', true);

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

/** Times `total` requests at `concurrency`; returns the sorted latencies and the wall time. */
async function load(url, key, concurrency, total, payload = body) {
  const times = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next += 1;
        times.push(await once(url, key, payload));
      }
    }),
  );
  return { times, seconds: (performance.now() - started) / 1000 };
}

async function firstChunk(url, key, payload = streamBody) {
  const t = performance.now();
  const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: payload });
  const reader = res.body.getReader();
  let first = null;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (first === null && new TextDecoder().decode(value).includes('"content"')) first = performance.now() - t;
  }
  return first;
}

/**
 * Measures every target in interleaved rounds, so drift on a shared machine
 * (other processes, thermal, GC) lands on all targets alike.
 */
async function measureAll(targets, rounds = 8) {
  const acc = targets.map((t) => ({ name: t.name, c1: [], c1s: 0, c16: [], c16s: 0, ttfc: [], cpu: 0, cpuReqs: 0 }));
  for (const t of targets) for (let i = 0; i < WARMUP; i++) await once(t.url, t.key, t.body ?? body);
  for (let r = 0; r < rounds; r++) {
    for (const [i, t] of targets.entries()) {
      const a = await load(t.url, t.key, 1, Math.ceil(REQUESTS / rounds), t.body ?? body);
      acc[i].c1.push(...a.times);
      acc[i].c1s += a.seconds;
      if (!QUICK) {
        const cpuBefore = t.cpuMs?.();
        const b = await load(t.url, t.key, 16, Math.ceil((REQUESTS * 2) / rounds));
        acc[i].c16.push(...b.times);
        acc[i].c16s += b.seconds;
        if (cpuBefore !== undefined) {
          // The work a request leaves behind (settlements, the copy to D1 half a second later) counts too.
          await new Promise((r) => setTimeout(r, 700));
          acc[i].cpu += t.cpuMs() - cpuBefore;
          acc[i].cpuReqs += b.times.length;
        }
      }
      for (let k = 0; k < Math.ceil(REQUESTS / 4 / rounds); k++) acc[i].ttfc.push(await firstChunk(t.url, t.key, t.streamBody ?? streamBody));
    }
  }
  return acc.map((a) => {
    for (const list of [a.c1, a.c16, a.ttfc]) list.sort((x, y) => x - y);
    return {
      name: a.name,
      c1: { p50: pct(a.c1, 50), p99: pct(a.c1, 99), rps: a.c1.length / a.c1s },
      c16: { p50: pct(a.c16, 50), p99: pct(a.c16, 99), rps: a.c16.length / a.c16s },
      ttfc: { p50: pct(a.ttfc, 50), p99: pct(a.ttfc, 99) },
      cpu: a.cpuReqs ? a.cpu / a.cpuReqs : undefined,
    };
  });
}

/** A gateway with `vars` under `harness` (Miniflare's: the checkout in `root`), and the key of a user with $1,000 to spend. */
async function billedGateway(vars, harness = 'wrangler', root = ROOT) {
  const gw = harness === 'miniflare' ? await miniflareGateway(vars, root) : await startGateway({ upstream: false, testScheduled: false, vars });
  const admin = adminClient(gw.url, gw.adminToken);
  const user = await admin.createUser({ name: 'Bench' }, { credit: 1000 });
  const { key } = await admin.createKey(user.id, { name: 'bench' });
  return { gw, key };
}

/**
 * Tollgate served by Miniflare directly, on fresh state migrated by the checkout's own migrations, its prices
 * synced as the test harness does.
 */
async function miniflareGateway(vars, root = ROOT) {
  const state = mkdtempSync(path.join(tmpdir(), 'tollgate-bench-'));
  if (root === ROOT) await applyMigrations(state);
  else await run(path.join(ROOT, 'scripts', 'wrangler'), ['d1', 'migrations', 'apply', 'DB', '--local', '--persist-to', state], { cwd: root, env: { ...process.env, CI: 'true' } });
  const adminToken = `tg-admin-${randomBytes(24).toString('hex')}`;
  const served = await serveMiniflare(path.join(root, 'wrangler.toml'), {
    vars: { ADMIN_TOKEN: adminToken, REQUEST_TIMEOUT: '60', ...vars }, state, port: await freePort(),
  });
  const stop = async () => {
    await served.stop();
    rmSync(state, { recursive: true, force: true });
  };
  const res = await adminClient(served.url, adminToken).call('POST', '/api/models/pricing/sync', {});
  if (res.status !== 200) {
    await stop();
    throw new Error(`price sync failed: ${res.status} ${JSON.stringify(res.body)}`);
  }
  return { url: served.url, adminToken, stop, cpuMs: served.cpuMs };
}

async function startFloor(upstreamUrl, dir = path.join(ROOT, 'scripts', 'bench-floor'), harness = 'wrangler') {
  const persistTo = path.join(ROOT, '.wrangler', path.basename(dir));
  if (harness === 'miniflare') {
    return serveMiniflare(path.join(dir, 'wrangler.toml'), { vars: { UPSTREAM: upstreamUrl }, state: persistTo, port: await freePort() });
  }
  const port = await freePort();
  const child = spawn(path.join(ROOT, 'scripts', 'wrangler'), [
    'dev', '--config', path.join(dir, 'wrangler.toml'), '--ip', '127.0.0.1', '--port', String(port), '--var', `UPSTREAM:${upstreamUrl}`,
    '--show-interactive-dev-session=false', '--inspector-port', String(await freePort()), '--persist-to', persistTo,
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

const f = (ms) => (ms === undefined ? "-" : ms.toFixed(2)).padStart(7);
const HEADER = `${''.padEnd(26)} ${'c=1 p50'.padStart(7)} ${'p99'.padStart(7)} ${'req/s'.padStart(7)}   ${'c=16p50'.padStart(7)} ${'p99'.padStart(7)} ${'req/s'.padStart(7)}   ${'ttfc50'.padStart(7)} ${'p99'.padStart(7)}   ${'cpu/req'.padStart(7)}  (ms)`;
const row = (r) => `${r.name.padEnd(26)} ${f(r.c1.p50)} ${f(r.c1.p99)} ${r.c1.rps.toFixed(0).padStart(7)}   ${f(r.c16.p50)} ${f(r.c16.p99)} ${(r.c16.rps ? r.c16.rps.toFixed(0) : "-").padStart(7)}   ${f(r.ttfc.p50)} ${f(r.ttfc.p99)}   ${f(r.cpu)}`;

const fake = await startFakeUpstream({ apiKey: FAKE_UPSTREAM_KEY });
if (DIRECT) await directRoutes(fake);
if (AGAINST) await againstBuild(fake, path.resolve(AGAINST));
const runs = [];
try {
  for (const harness of HARNESSES) runs.push({ harness, results: await measureHarness(harness) });
} finally {
  await fake.close();
}

const wasmFile = readdirSync(path.join(ROOT, 'build')).find((n) => n.endsWith('.wasm'));
const wasm = readFileSync(path.join(ROOT, 'build', wasmFile));
for (const { harness, results } of runs) report(harness, results);
console.log(`\nwasm: ${(wasm.length / 1024).toFixed(0)} KB raw, ${(gzipSync(wasm, { level: 9 }).length / 1024).toFixed(0)} KB gzipped (${statSync(path.join(ROOT, 'build', wasmFile)).size} bytes)`);

/** Starts every target under `harness` (`wrangler`: `wrangler dev`; `miniflare`: Miniflare's API) and measures them. */
async function measureHarness(harness) {
  const floor = await startFloor(fake.url, undefined, harness);
  const rustFloor = await startFloor(fake.url, RUST_FLOOR, harness);
  const targets = [
    { name: '(a) fake upstream', url: `${fake.url}/chat/completions`, key: FAKE_UPSTREAM_KEY },
    { name: '(b) JS pass-through floor', url: `${floor.url}/v1/chat/completions`, key: FAKE_UPSTREAM_KEY, cpuMs: floor.cpuMs },
    { name: '(b2) JS floor + 1 DO call', url: `${floor.url}/do/v1/chat/completions`, key: FAKE_UPSTREAM_KEY, cpuMs: floor.cpuMs },
    { name: '(r) workers-rs floor', url: `${rustFloor.url}/v1/chat/completions`, key: FAKE_UPSTREAM_KEY, cpuMs: rustFloor.cpuMs },
    { name: '(r2) workers-rs + 1 DO call', url: `${rustFloor.url}/do/v1/chat/completions`, key: FAKE_UPSTREAM_KEY, cpuMs: rustFloor.cpuMs },
  ];
  // wrangler dev carries every console line from workerd to its own process and
  // prints it; that costs the local runtime 1-2 ms a line, which production
  // does not pay. So Tollgate is measured without request lines (the gateway's
  // own overhead), then with them (what `npm start` feels like).
  const gateways = [];
  const variants = [
    ['(c) Tollgate, leases', { LOG_LEVEL: 'warn' }],
    ['(c0) Tollgate, no leases', { LOG_LEVEL: 'warn', BUDGET_LEASES: 'off' }],
    ['(d) Tollgate, request logs', { LOG_LEVEL: 'info' }],
  ];
  try {
    for (const [name, vars] of QUICK ? variants.slice(0, 2) : variants) {
      const { gw, key } = await billedGateway({ AI_GATEWAY_BASE_URL: fake.url, AI_GATEWAY_API_KEY: FAKE_UPSTREAM_KEY, ...vars }, harness);
      gateways.push(gw);
      targets.push({ name, url: `${gw.url}/v1/chat/completions`, key, cpuMs: gw.cpuMs });
    }
    return await measureAll(targets);
  } finally {
    await floor.stop();
    await rustFloor.stop();
    for (const gw of gateways) await gw.stop();
  }
}

function report(harness, results) {
  const [, b, b2, rs, rs2, c, c0, d] = results;
  const how = harness === 'miniflare' ? 'each Worker served by Miniflare directly' : 'under wrangler dev';
  console.log(`\nTollgate benchmark, ${how} — ${REQUESTS} requests at c=1, ${REQUESTS * 2} at c=16, non-streamed chat; streaming time to first content chunk`);
  console.log(HEADER);
  for (const r of results) console.log(row(r));
  const over = (x, base = b) => {
    const c16 = QUICK ? '' : `, p50 c=16 ${(x.c16.p50 - base.c16.p50).toFixed(2)} ms`;
    return `p50 c=1 ${(x.c1.p50 - base.c1.p50).toFixed(2)} ms${c16}, ttfc p50 ${(x.ttfc.p50 - base.ttfc.p50).toFixed(2)} ms`;
  };
  console.log(`\nTollgate overhead over the floor: ${over(c)}`);
  if (d) console.log(`  with request log lines:         ${over(d)}`);
  console.log(`One DO round trip costs the JS floor itself: p50 c=1 ${(b2.c1.p50 - b.c1.p50).toFixed(2)} ms`);
  console.log(`The workers-rs floor over the JS floor: ${over(rs)}`);
  console.log(`  with one DO call, over the JS floor: ${over(rs2)}`);
  console.log(`Tollgate over the workers-rs floor with one DO call: ${over(c, rs2)}`);
  const share = (x, base) => (QUICK ? '' : `, c=16 throughput ${((100 * x.c16.rps) / base.c16.rps).toFixed(0)} % of the floor's`);
  console.log(`\nOwn overhead over the workers-rs floor (r), ${how}:`);
  console.log(`  with leases:    ${over(c, rs)}${share(c, rs)}`);
  console.log(`  without leases: ${over(c0, rs)}${share(c0, rs)}`);
  if (c.cpu !== undefined) {
    const cpu = (x) => `${x.cpu.toFixed(2)} ms (${(x.cpu - rs.cpu >= 0 ? '+' : '')}${(x.cpu - rs.cpu).toFixed(2)} over r)`;
    console.log(`workerd CPU per request at c=16 (cpu/req: the runtime process's user + system time, background work included):`);
    console.log(`  workers-rs floor ${rs.cpu.toFixed(2)} ms; Tollgate with leases ${cpu(c)}, without ${cpu(c0)}`);
  }
}

/** `--against DIR`: this checkout's build against the one in `dir`, both with leases, served by Miniflare, interleaved. */
async function againstBuild(fake, dir) {
  if (!existsSync(path.join(dir, 'build', 'index_bg.wasm'))) throw new Error(`${dir}: no build (run scripts/build release there)`);
  const vars = { AI_GATEWAY_BASE_URL: fake.url, AI_GATEWAY_API_KEY: FAKE_UPSTREAM_KEY, LOG_LEVEL: 'warn' };
  const gateways = [];
  let results;
  try {
    for (const root of [ROOT, dir]) gateways.push(await billedGateway(vars, 'miniflare', root));
    const names = ['this checkout', path.basename(dir)];
    results = await measureAll(gateways.map(({ gw, key }, i) => ({ name: names[i], url: `${gw.url}/v1/chat/completions`, key, cpuMs: gw.cpuMs })));
  } finally {
    for (const { gw } of gateways) await gw.stop();
    await fake.close();
  }
  const [mine, theirs] = results;
  console.log(`
A/B, leases on, each served by Miniflare — ${REQUESTS} requests at c=1, ${REQUESTS * 2} at c=16, first chunks; rounds interleaved`);
  console.log(HEADER);
  for (const r of results) console.log(row(r));
  const diff = (a, b) => `${a - b >= 0 ? '+' : ''}${(a - b).toFixed(2)} ms`;
  console.log(`
this checkout against ${dir}: c=1 p50 ${diff(mine.c1.p50, theirs.c1.p50)}, ` +
    `c=16 throughput ${((100 * mine.c16.rps) / theirs.c16.rps).toFixed(0)} %, first chunk p50 ${diff(mine.ttfc.p50, theirs.ttfc.p50)}` +
    (mine.cpu === undefined ? '' : `, CPU a request ${diff(mine.cpu, theirs.cpu)} (${mine.cpu.toFixed(2)} against ${theirs.cpu.toFixed(2)})`));
  process.exit(0);
}

/** `--direct`: what a direct route costs against OpenRouter's, on one gateway, interleaved. */
async function directRoutes(fake) {
  const root = fake.url.replace('/api/v1', '');
  const { gw, key } = await billedGateway({
    AI_GATEWAY_BASE_URL: fake.url, AI_GATEWAY_API_KEY: FAKE_UPSTREAM_KEY, LOG_LEVEL: 'warn',
    OPENAI_API_KEY: FAKE_OPENAI_KEY, OPENAI_BASE_URL: `${root}/openai/v1`,
    ANTHROPIC_API_KEY: FAKE_ANTHROPIC_KEY, ANTHROPIC_BASE_URL: root, GOOGLE_API_KEY: FAKE_GOOGLE_KEY, GOOGLE_BASE_URL: root,
  });
  const url = `${gw.url}/v1/chat/completions`;
  const target = (name, model) => ({ name, url, key, body: chatBody(model), streamBody: chatBody(model, true) });
  const targets = [
    target('OpenRouter route', 'meta-llama/llama-3.1-8b-instruct'),
    target('OpenAI direct', 'openai/gpt-4o-mini'),
    target('Anthropic direct', 'anthropic/claude-3-5-haiku-20241022'),
    target('Google direct', 'google/gemini-2.0-flash-001'),
  ];
  let results;
  try {
    results = await measureAll(targets);
  } finally {
    await gw.stop();
    await fake.close();
  }
  const [base] = results;
  console.log(`\nDirect routes — ${REQUESTS} non-streamed requests each at c=1, and streaming time to first content chunk (ms)`);
  for (const r of results) {
    const vs = r === base ? '' : `   vs OpenRouter route: p50 ${(r.c1.p50 - base.c1.p50).toFixed(2)}, ttfc ${(r.ttfc.p50 - base.ttfc.p50).toFixed(2)}`;
    console.log(`${r.name.padEnd(18)} c=1 p50 ${f(r.c1.p50)} p99 ${f(r.c1.p99)}   ttfc p50 ${f(r.ttfc.p50)} p99 ${f(r.ttfc.p99)}${vs}`);
  }
  process.exit(0);
}
