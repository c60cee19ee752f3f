// Reconciliation fanned out through a Cloudflare Queue (issue 19.3): a run
// walks the users a page at a time and checks every account in a message of
// its own, so a tenant of any size fits one invocation's limits. 2,000
// accounts are reconciled in one run, and the drift planted in D1 (a row
// lost from one account's copy, a row that never happened in another's) is
// found, and only there.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { gatewayForFile } from './fixture.mjs';
import { withGateway } from './harness.mjs';

const ctx = gatewayForFile();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ACCOUNTS = 2_000;

test('2,000 accounts are reconciled through the queue in one run, and planted drift is found where it was planted', { timeout: 600_000 }, async () => {
  // Users straight into D1 (the API would take minutes for 2,000; reconciliation reads only their ids).
  const existing = (await ctx.gw.sql('SELECT COUNT(*) AS n FROM users'))[0].n;
  const now = new Date().toISOString();
  for (let start = 0; start < ACCOUNTS; start += 400) {
    const values = Array.from({ length: 400 }, (_, i) =>
      `('fan-${String(start + i).padStart(5, '0')}', 'fan${start + i}@example.com', 'Fan ${start + i}', '${now}', '${now}')`).join(', ');
    await ctx.gw.sql(`INSERT INTO users (id, email, name, created_at, updated_at) VALUES ${values}`);
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
  await ctx.gw.sql(`DELETE FROM balance_transactions WHERE user_id = '${lost.id}' AND amount = 500000`);
  await ctx.gw.sql(`INSERT INTO balance_transactions (id, user_id, type, amount, balance_after, created_at) VALUES ('tx-planted', '${extra.id}', 'adjustment', 250000, 1250000, '${now}')`);

  // A run of two days ago, with its results: a new run forgets it (runs are kept a day).
  const old = new Date(Date.now() - 2 * 86400_000).toISOString();
  await ctx.gw.sql(`INSERT INTO reconcile_runs (id, started_at, enumerated, walked) VALUES ('rec-old', '${old}', 1, 1)`);
  await ctx.gw.sql(`INSERT INTO reconcile_results (run_id, user_id, agrees, checked_at) VALUES ('rec-old', '${fine.id}', 1, '${old}')`);

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
  assert.equal((await ctx.gw.sql("SELECT COUNT(*) AS n FROM reconcile_results WHERE run_id = 'rec-old'"))[0].n, 0, 'the old run\'s results are gone');
  assert.equal((await ctx.admin.call('GET', '/api/admin/reconcile/runs/rec-old')).status, 404, 'and the run');
});

test('past 1,000 users a retention pass goes through the queue, an account a message, and two passes at once move each account-day once', { timeout: 300_000 }, async () => {
  // Old history planted in D1 for three of the 2,000 accounts (default retention: 90 days): two days
  // each, a ledger row and a usage record on each, and a row of today that stays.
  const day = (daysAgo) => new Date(Date.now() - daysAgo * 86_400_000).toISOString().slice(0, 10);
  const users = ['fan-00007', 'fan-01234', 'fan-01999'];
  const rows = [];
  for (const [u, user] of users.entries()) {
    for (const [d, daysAgo] of [200, 150].entries()) {
      const at = `${day(daysAgo)}T0${u + 1}:00:00.000Z`;
      rows.push({ user, id: `old-${user}-${d}`, amount: 1_000 * (u + 1) + d, at });
    }
  }
  for (const r of rows) {
    await ctx.gw.sql(`INSERT INTO balance_transactions (id, user_id, type, amount, balance_after, created_at) VALUES ('tx-${r.id}', '${r.user}', 'recharge', ${r.amount}, ${r.amount}, '${r.at}')`);
    await ctx.gw.sql(`INSERT INTO usage_records (id, key_id, user_id, model, provider, status, cost_micros, created_at) VALUES ('${r.id}', 'k-${r.user}', '${r.user}', 'openai/gpt-4o-mini', 'openai', 200, 7, '${r.at}')`);
  }
  const now = new Date().toISOString();
  for (const user of users) {
    await ctx.gw.sql(`INSERT INTO balance_transactions (id, user_id, type, amount, balance_after, created_at) VALUES ('tx-new-${user}', '${user}', 'recharge', 5, 5, '${now}')`);
  }
  const list = users.map((u) => `'${u}'`).join(', ');

  // Two passes at once: both fan out, and meet on the same accounts.
  const passes = await Promise.all([0, 1].map(() => ctx.admin.call('POST', '/api/admin/retention/run')));
  for (const p of passes) {
    assert.equal(p.status, 200, JSON.stringify(p.body));
    assert.equal(p.body.data.fanned_out, true);
  }
  let archives = [];
  for (let i = 0; i < 240 && archives.length < rows.length; i++) {
    await sleep(500);
    archives = await ctx.gw.sql(`SELECT * FROM archives WHERE user_id IN (${list})`);
  }
  await sleep(3_000); // both passes' messages have run by now
  archives = await ctx.gw.sql(`SELECT * FROM archives WHERE user_id IN (${list}) ORDER BY user_id, day`);
  assert.equal(archives.length, rows.length, 'an archive per account-day, however many passes met on it');
  assert.equal((await ctx.gw.sql(`SELECT COUNT(*) AS n FROM balance_transactions WHERE user_id IN (${list})`))[0].n, users.length, "only today's rows stay");
  assert.equal((await ctx.gw.sql(`SELECT COUNT(*) AS n FROM usage_records WHERE user_id IN (${list})`))[0].n, 0);
  for (const [u, user] of users.entries()) {
    const [t] = await ctx.gw.sql(`SELECT amount, archived FROM ledger_totals WHERE user_id = '${user}'`);
    assert.deepEqual(t, { amount: 5, archived: 2_000 * (u + 1) + 1 }, `${user}: what left is counted once`);
  }
  // An archive (gzipped in R2) reads back row for row.
  const first = archives[0];
  const res = await fetch(`${ctx.gw.url}/api/admin/archives/${first.id}`, { headers: { authorization: `Bearer ${ctx.gw.adminToken}` } });
  assert.equal(res.status, 200);
  const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l));
  const planted = rows.find((r) => r.user === first.user_id && r.at.startsWith(first.day));
  assert.deepEqual(lines.map((l) => [l.table, l.row.id]), [['balance_transactions', `tx-${planted.id}`], ['usage_records', planted.id]]);
  assert.equal(lines[0].row.amount, planted.amount);
});

test('a reconciliation run whose pages the queue delivers twice counts each account once and is done', { timeout: 300_000 }, async () => {
  // FAULT_REPEAT_JOBS: every page and account message is sent twice, as an at-least-once queue may deliver it.
  await withGateway({ vars: { FAULT_REPEAT_JOBS: '1' } }, async (gw, admin) => {
    const now = new Date().toISOString();
    const values = Array.from({ length: 250 }, (_, i) =>
      `('twice-${String(i).padStart(4, '0')}', 'twice${i}@example.com', 'Twice ${i}', '${now}', '${now}')`).join(', ');
    await gw.sql(`INSERT INTO users (id, email, name, created_at, updated_at) VALUES ${values}`);
    const total = (await gw.sql('SELECT COUNT(*) AS n FROM users'))[0].n;
    assert.ok(total > 200, 'three pages, the last delivered four times');
    const start = await admin.call('POST', '/api/admin/reconcile/runs');
    assert.equal(start.status, 202);
    let report;
    for (let i = 0; i < 240; i++) {
      report = (await admin.call('GET', `/api/admin/reconcile/runs/${start.body.data.run_id}`)).body.data;
      if (report.done) break;
      await sleep(500);
    }
    assert.equal(report.done, true, JSON.stringify(report));
    assert.equal(report.accounts_enumerated, total, 'each account counted once, however often its page came');
    assert.equal(report.accounts_checked, total);
    assert.deepEqual(report.drift, []);
  });
});
