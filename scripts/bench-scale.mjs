// `npm run bench:scale`: a measurement, not a test. Times the reads an operator and a user make, first
// on an almost empty tenant (one real account, made through the API and used for a few chats), then on
// the same tenant seeded with millions of usage records over 400 days for 50,000 users
// (scripts/seed-scale.py writes them in the gateway's own storage format while it is stopped), and
// prints both, their ratio, and whether each interactive read stays under 50 ms and within 2× of empty.
// Also timed: reconciliation of one account, of all of them through the queue, and one retention pass with
// the retention set one day short of the history (USAGE_RETENTION_DAYS = days - 1), so the pass moves the
// oldest day, as each day's pass does in a tenant's steady state; fanned out, it is timed until the queue
// has moved every row past the cutoff.
// Options: --users N (50,000), --records N (5,000,000), --probe-records N (100,000), --days N (400),
//   --runs N (timed calls per read, 20), --wait S (longest wait for the fanned-out run, 1,800), --skip-build

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { ROOT, adminClient, run, startGateway } from '../tests/harness.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const USERS = arg('users', 50_000);
const RECORDS = arg('records', 5_000_000);
const PROBE_RECORDS = arg('probe-records', 100_000);
const DAYS = arg('days', 400);
const RUNS = arg('runs', 20);
const WAIT_S = arg('wait', 1_800);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (!process.argv.includes('--skip-build')) {
  for (const [cmd, args] of [['scripts/setup', []], ['scripts/build', ['release']]]) {
    const r = spawnSync(path.join(ROOT, cmd), args, { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) process.exit(r.status ?? 1);
  }
}

const DAY_MS = 86_400_000;
const day = (ms) => new Date(ms).toISOString().slice(0, 10);
const now = Date.now();
const state = mkdtempSync(path.join(tmpdir(), 'tollgate-scale-'));
const vars = { ADMIN_TOKEN: `tg-admin-bench-scale-${process.pid}-${now}`, USAGE_RETENTION_DAYS: String(DAYS - 1) };

/** One timed call: ms, after checking it answered as expected. */
async function timed(url, token, { method = 'GET', expect = 200 } = {}) {
  const t0 = performance.now();
  const res = await fetch(url, { method, headers: { authorization: `Bearer ${token}` } });
  const body = await res.text();
  const ms = performance.now() - t0;
  if (res.status !== expect) throw new Error(`${method} ${url}: ${res.status} ${body.slice(0, 300)}`);
  return { ms, body };
}

const quantile = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];

/** The interactive reads, each timed RUNS times after two warm-up calls: name → p50 ms. */
async function reads(gw, probe) {
  const today = day(now);
  const user = probe.key;
  const admin = gw.adminToken;
  const list = [
    ['overview (admin)', '/api/admin/overview', admin],
    ['balance', '/api/balance', user],
    ['stats: a day', `/api/stats?start=${today}&end=${today}&group_by=model`, user],
    ['stats: a month', `/api/stats?start=${day(now - 30 * DAY_MS)}&end=${today}&group_by=day`, user],
    ['stats: a year', `/api/stats?start=${day(now - 365 * DAY_MS)}&end=${today}&group_by=day`, user],
    ['global stats: a month', `/api/stats/global?start=${day(now - 30 * DAY_MS)}&end=${today}&group_by=model`, admin],
    ['global stats: a year', `/api/stats/global?start=${day(now - 365 * DAY_MS)}&end=${today}&group_by=day`, admin],
    ['transactions page', '/api/balance/transactions?page=1&page_size=50', user],
    ['reconcile one account', `/api/admin/reconcile?user_id=${probe.userId}`, admin],
  ];
  const out = {};
  for (const [name, p, token] of list) {
    const times = [];
    for (let i = 0; i < RUNS + 2; i++) {
      const { ms } = await timed(gw.url + p, token);
      if (i >= 2) times.push(ms);
    }
    out[name] = { p50: quantile(times, 0.5), p95: quantile(times, 0.95) };
  }
  return out;
}

/** A reconciliation of every account through the queue: seconds until done, and what it found. */
async function reconcileAll(gw) {
  const admin = adminClient(gw.url, gw.adminToken);
  const t0 = performance.now();
  const started = await admin.call('POST', '/api/admin/reconcile/runs');
  if (started.status !== 202) throw new Error(`start run: ${started.status}`);
  const id = started.body.data.run_id;
  for (;;) {
    const r = (await admin.call('GET', `/api/admin/reconcile/runs/${id}`)).body.data;
    const s = (performance.now() - t0) / 1000;
    if (r.done || s > WAIT_S) {
      return { seconds: s, done: r.done, checked: r.accounts_checked, enumerated: r.accounts_enumerated, drift: r.drift.length, failed: r.failed.length, first: r.drift[0] ?? r.failed[0] };
    }
    await sleep(1_000);
  }
}

/** A count from the tenant's D1 (through wrangler, on the running state). */
async function count(query) {
  const out = await run(`${ROOT}/scripts/wrangler`, ['d1', 'execute', 'DB', '--local', '--persist-to', state, '--json', '--command', query],
    { env: { ...process.env, CI: 'true' } });
  return JSON.parse(out.slice(out.indexOf('[')))[0].results[0].n;
}

/** One retention pass: the call's ms and, fanned out, seconds until no row past the cutoff is left in D1. */
async function retentionPass(gw) {
  const t0 = performance.now();
  const { ms, body } = await timed(`${gw.url}/api/admin/retention/run`, gw.adminToken, { method: 'POST' });
  const pass = JSON.parse(body).data;
  const left = () => count(`SELECT (SELECT COUNT(*) FROM usage_records WHERE created_at < '${pass.cutoff}') + \
    (SELECT COUNT(*) FROM balance_transactions WHERE created_at < '${pass.cutoff}') AS n`);
  let remaining = await left();
  while (pass.fanned_out && remaining > 0 && performance.now() - t0 < WAIT_S * 1000) {
    await sleep(5_000);
    remaining = await left();
  }
  const archived = await count(`SELECT COUNT(*) AS n FROM archives`);
  const moved = await count(`SELECT COALESCE(SUM(usage_rows), 0) AS n FROM archives`);
  return { ms, seconds: (performance.now() - t0) / 1000, fanned_out: pass.fanned_out, remaining, archives: archived, usage_rows: moved };
}

function sqliteFile(dir, pick = () => true) {
  const files = readdirSync(dir).filter((f) => f.endsWith('.sqlite')).map((f) => path.join(dir, f));
  return files.filter(pick);
}

const fmt = (ms) => ms.toFixed(1).padStart(7);
const rec = (r) => `${r.checked}/${r.enumerated} accounts in ${r.seconds.toFixed(1)} s${r.done ? '' : ' (not done: stopped waiting)'}, drift ${r.drift}, failed ${r.failed}`;
const ret = (r) => `call ${r.ms.toFixed(0)} ms${r.fanned_out ? `, fanned out: ${r.seconds.toFixed(1)} s until D1 held no row past the cutoff` : ''}` +
  `${r.remaining ? ` (${r.remaining} rows left: stopped waiting)` : ''}; ${r.archives} archives of ${r.usage_rows} usage records in all`;

function printReads() {
  console.log(`\nbench:scale — ${report.seed.records.toLocaleString()} usage records (+${report.seed.ledger_rows.toLocaleString()} ledger rows), ` +
    `${USERS.toLocaleString()} users, ${DAYS} days; D1 file ${(report.seed.d1_bytes / 2 ** 30).toFixed(2)} GiB; seeded in ${report.seed.total_s} s`);
  console.log(`p50 of ${RUNS} calls, ms (p95 in brackets)\n`);
  console.log(`${'read'.padEnd(24)}${'empty'.padStart(16)}${'seeded'.padStart(18)}  ratio  verdict`);
  let ok = true;
  for (const [name, e] of Object.entries(report.empty)) {
    const s = report.seeded[name];
    const ratio = s.p50 / e.p50;
    const pass = s.p50 < 50 && ratio <= 2;
    ok &&= pass;
    console.log(`${name.padEnd(24)}${fmt(e.p50)} (${fmt(e.p95)})${fmt(s.p50)} (${fmt(s.p95)})  ${ratio.toFixed(2).padStart(5)}  ${pass ? 'ok' : 'OVER'}`);
  }
  console.log(`\n${ok ? 'every interactive read under 50 ms and within 2x of empty' : 'some read is over 50 ms or over 2x of empty'}\n`);
  console.log(`reconcile all (queue): empty ${rec(report.emptyReconcileAll)}`);
  console.log(`retention pass: empty ${ret(report.emptyRetention)}`);
}

const report = { users: USERS, records: RECORDS, days: DAYS, runs: RUNS };
let gw = await startGateway({ persistTo: state, vars, inherit: false });
let probe;
try {
  // The probe: a real account with a key, used for a few real chats, so its object exists.
  const admin = adminClient(gw.url, gw.adminToken);
  const user = await admin.createUser({ name: 'Probe' }, { credit: 1_000 });
  const key = await admin.createKey(user.id, { name: 'probe' });
  probe = { userId: user.id, keyId: key.id, key: key.key };
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${probe.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: `warm ${i}` }] }),
    });
    if (res.status !== 200) throw new Error(`chat: ${res.status}`);
    await res.arrayBuffer();
  }
  await admin.call('GET', '/api/admin/reconcile'); // every outbox copied
  report.empty = await reads(gw, probe);
  report.emptyReconcileAll = await reconcileAll(gw);
  report.emptyRetention = await retentionPass(gw);
} finally {
  await gw.stop();
}

// Seeded while the runtime is stopped, straight into its SQLite files.
const hasTable = (table) => (f) => spawnSync('python3', ['-c',
  'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM sqlite_master WHERE name = ?", (sys.argv[2],)).fetchone()[0])', f, table],
  { encoding: 'utf8' }).stdout.trim() === '1';
// The tenant's database (the directory also holds wrangler's own migration-tracking files).
const d1 = sqliteFile(path.join(state, 'v3', 'd1', 'miniflare-D1DatabaseObject'), hasTable('usage_records'));
const doDir = readdirSync(path.join(state, 'v3', 'do')).find((d) => d.endsWith('-AccountDo'));
const objects = sqliteFile(path.join(state, 'v3', 'do', doDir));
if (d1.length !== 1) throw new Error(`expected one D1 file, found ${d1.length}`);
const probeObject = objects.filter((f) => {
  const r = spawnSync('python3', ['-c', 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT account_id FROM account").fetchone()[0])', f], { encoding: 'utf8' });
  return r.stdout.trim() === probe.userId;
});
if (probeObject.length !== 1) throw new Error(`expected the probe's object file, found ${probeObject.length}`);
console.error(`[bench:scale] seeding ${RECORDS.toLocaleString()} records for ${USERS.toLocaleString()} users over ${DAYS} days…`);
const seed = spawnSync('python3', [
  path.join(ROOT, 'scripts', 'seed-scale.py'), '--d1', d1[0], '--object', probeObject[0], '--probe-user', probe.userId,
  '--probe-key', probe.keyId, '--users', String(USERS), '--records', String(RECORDS), '--probe-records', String(PROBE_RECORDS),
  '--days', String(DAYS), '--now-ms', String(now),
], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
if (seed.status !== 0) throw new Error('seeding failed');
report.seed = JSON.parse(seed.stdout.trim().split('\n').pop());
report.seed.d1_bytes = statSync(d1[0]).size;

gw = await startGateway({ persistTo: state, vars, syncPrices: false });
try {
  report.seeded = await reads(gw, probe);
  printReads();
  report.seededReconcileAll = await reconcileAll(gw);
  console.log(`reconcile all (queue): seeded ${rec(report.seededReconcileAll)}`);
  report.seededRetention = await retentionPass(gw);
  console.log(`retention pass (the oldest day): seeded ${ret(report.seededRetention)}`);
} finally {
  await gw.stop();
  rmSync(state, { recursive: true, force: true });
}

console.log(JSON.stringify(report));
