// `npm run bench:d1`: a measurement, not a test. Serves the gateway on fresh local state, sends N
// real chat requests through the OpenAI SDK's wire format from a few users and keys, lets the account
// objects copy their outboxes, and reports how many bytes D1's database grew per request, measured on
// its SQLite file (page-rounded, so N should be large), and what that means at 100k and 1M requests a
// day against D1's 10 GB. Options: --requests N (default 5,000), --skip-build

import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

import { ROOT, adminClient, run, startGateway } from '../tests/harness.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const REQUESTS = arg('requests', 5_000);

if (!process.argv.includes('--skip-build')) {
  for (const [cmd, args] of [['scripts/setup', []], ['scripts/build', ['release']]]) {
    const r = spawnSync(path.join(ROOT, cmd), args, { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) process.exit(r.status ?? 1);
  }
}

/** The D1 database's bytes on disk (its SQLite file and write-ahead log), after a checkpoint. */
async function d1Bytes(state) {
  await run(`${ROOT}/scripts/wrangler`, ['d1', 'execute', 'DB', '--local', '--persist-to', state, '--command', 'PRAGMA wal_checkpoint(TRUNCATE)'],
    { env: { ...process.env, CI: 'true' } }).catch(() => {});
  const dir = path.join(state, 'v3', 'd1', 'miniflare-D1DatabaseObject');
  return readdirSync(dir).filter((f) => f.endsWith('.sqlite') || f.endsWith('.sqlite-wal'))
    .reduce((n, f) => n + statSync(path.join(dir, f)).size, 0);
}

const gw = await startGateway({});
try {
  const admin = adminClient(gw.url, gw.adminToken);
  const keys = [];
  for (let u = 0; u < 10; u++) {
    const user = await admin.createUser({}, { credit: 100 });
    for (let k = 0; k < 2; k++) keys.push((await admin.createKey(user.id)).key);
  }
  await new Promise((r) => setTimeout(r, 1_500));
  const before = await d1Bytes(gw.state);
  let sent = 0;
  await Promise.all(Array.from({ length: 8 }, async (_, w) => {
    while (sent < REQUESTS) {
      const i = sent++;
      const res = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${keys[(i + w) % keys.length]}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'openai/gpt-4o-mini', user: `end-user-${i % 50}`, messages: [{ role: 'user', content: `request ${i}: a short question` }] }),
      });
      await res.arrayBuffer();
    }
  }));
  // Every outbox copied to D1 (reconciliation flushes each account first).
  await admin.call('GET', '/api/admin/reconcile');
  const after = await d1Bytes(gw.state);
  const perRequest = (after - before) / REQUESTS;
  const days = (perDay) => (10e9 / (perRequest * perDay)).toFixed(0);
  console.log(`[d1] ${REQUESTS} requests: D1 grew ${(after - before).toLocaleString()} bytes, ${perRequest.toFixed(0)} bytes a request`);
  console.log(`[d1] 10 GB lasts ${days(100_000)} days at 100k requests a day, ${days(1_000_000)} days at 1M a day, without retention`);
} finally {
  await gw.stop();
}
