// Reconciliation fanned out through a Cloudflare Queue (issue 19.3): a run
// walks the users a page at a time and checks every account in a message of
// its own, so a tenant of any size fits one invocation's limits. 2,000
// accounts are reconciled in one run, and the drift planted in D1 (a row
// lost from one account's copy, a row that never happened in another's) is
// found, and only there.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { gatewayForFile } from './fixture.mjs';
import { ROOT, run } from './harness.mjs';

const ctx = gatewayForFile();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ACCOUNTS = 2_000;

async function sql(command) {
  const out = await run(`${ROOT}/scripts/wrangler`, ['d1', 'execute', 'DB', '--local', '--persist-to', ctx.gw.state, '--json', '--command', command], {
    env: { ...process.env, CI: 'true' },
  });
  return JSON.parse(out.slice(out.indexOf('[')))[0].results;
}

test('2,000 accounts are reconciled through the queue in one run, and planted drift is found where it was planted', { timeout: 600_000 }, async () => {
  // Users straight into D1 (the API would take minutes for 2,000; reconciliation reads only their ids).
  const existing = (await sql('SELECT COUNT(*) AS n FROM users'))[0].n;
  const now = new Date().toISOString();
  for (let start = 0; start < ACCOUNTS; start += 400) {
    const values = Array.from({ length: 400 }, (_, i) =>
      `('fan-${String(start + i).padStart(5, '0')}', 'fan${start + i}@example.com', 'Fan ${start + i}', '${now}', '${now}')`).join(', ');
    await sql(`INSERT INTO users (id, email, name, created_at, updated_at) VALUES ${values}`);
  }
  // Three accounts with money; then one loses a row from its D1 copy, another gains one that never happened.
  const lost = await ctx.admin.createUser({ name: 'Lost row' }, { credit: 2 });
  await ctx.admin.credit(lost.id, 0.5);
  const extra = await ctx.admin.createUser({ name: 'Extra row' }, { credit: 1 });
  const fine = await ctx.admin.createUser({ name: 'Fine' }, { credit: 3 });
  // Past 1,000 accounts the synchronous reconciliation hands the work to the queue as well.
  const inlineRes = await ctx.admin.call('GET', '/api/admin/reconcile');
  assert.equal(inlineRes.status, 200, JSON.stringify(inlineRes.body));
  const inline = inlineRes.body.data;
  assert.equal(inline.fanned_out, true);
  await sql(`DELETE FROM balance_transactions WHERE user_id = '${lost.id}' AND amount = 500000`);
  await sql(`INSERT INTO balance_transactions (id, user_id, type, amount, balance_after, created_at) VALUES ('tx-planted', '${extra.id}', 'adjustment', 250000, 1250000, '${now}')`);

  const started = Date.now();
  const start = await ctx.admin.call('POST', '/api/admin/reconcile/runs');
  assert.equal(start.status, 202);
  const runId = start.body.data.run_id;
  let report;
  for (let i = 0; i < 480; i++) {
    report = (await ctx.admin.call('GET', `/api/admin/reconcile/runs/${runId}`)).body.data;
    if (report.done) break;
    await sleep(500);
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`[fanout] ${report.accounts_checked} accounts reconciled through the queue in ${seconds} s`);
  assert.equal(report.done, true, JSON.stringify(report));
  const total = existing + ACCOUNTS + 3;
  assert.equal(report.accounts_checked, total, 'every account, once');
  assert.deepEqual(report.failed, []);
  const drifted = Object.fromEntries(report.drift.map((d) => [d.user_id, d]));
  assert.deepEqual(Object.keys(drifted).sort(), [lost.id, extra.id].sort(), 'drift where it was planted, and only there');
  assert.equal(drifted[lost.id].difference, 0.5, 'the lost row');
  assert.equal(drifted[extra.id].difference, -0.25, 'the row that never happened');
  assert.ok(!drifted[fine.id]);
  const latest = (await ctx.admin.call('GET', '/api/admin/reconcile/runs/latest')).body.data;
  assert.equal(latest.run_id, runId);
});
