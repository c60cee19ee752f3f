// Retention (issue 19.2): usage records and ledger copies past USAGE_RETENTION_DAYS leave D1 for R2
// (the local R2 under wrangler dev is the real one). They are read back from R2 and compared row by
// row; the roll-ups and running totals give the same stats and reconciliation as before; a re-import
// puts them back without counting them twice. Here the retention is a day (the least), and the user's rows
// are moved three days back in D1 after they were written.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { gatewayForFile } from './fixture.mjs';
import { withGateway } from './harness.mjs';

const ctx = gatewayForFile({ vars: { USAGE_RETENTION_DAYS: '1' } });


const byId = (rows) => [...rows].sort((a, b) => a.id.localeCompare(b.id));
const withoutRestored = (rows) => rows.map(({ restored, ...r }) => r);

test('history past retention moves to R2 whole, the totals stay, and a re-import restores it', async () => {
  const user = await ctx.admin.createUser({}, { credit: 3 });
  const key = await ctx.admin.createKey(user.id);
  for (let i = 0; i < 4; i++) {
    const res = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4o-mini', user: 'eve', messages: [{ role: 'user', content: `kept then archived ${i}` }] }),
    });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  }
  // Every copy in D1 (reconciliation flushes each account first), and what must not change after.
  const before = await ctx.admin.call('GET', '/api/admin/reconcile');
  assert.deepEqual(before.body.data.drift, []);
  for (const table of ['balance_transactions', 'usage_records']) {
    await ctx.gw.sql(`UPDATE ${table} SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', created_at, '-3 days') WHERE user_id = '${user.id}'`);
  }
  // One charge as the rule closes a request (its description, and the running count its insert would have made).
  await ctx.gw.sql(`UPDATE balance_transactions SET description = 'closed without settlement: test' WHERE id = (SELECT id FROM balance_transactions WHERE user_id = '${user.id}' AND type = 'usage' LIMIT 1)`);
  await ctx.gw.sql(`UPDATE ledger_totals SET closed_without_settlement = closed_without_settlement + 1 WHERE user_id = '${user.id}'`);
  const closedCount = async () => (await ctx.gw.sql(`SELECT closed_without_settlement AS n FROM ledger_totals WHERE user_id = '${user.id}'`))[0].n;
  assert.equal(await closedCount(), 1);
  const ledger = byId(await ctx.gw.sql(`SELECT * FROM balance_transactions WHERE user_id = '${user.id}'`));
  const usage = byId(await ctx.gw.sql(`SELECT * FROM usage_records WHERE user_id = '${user.id}'`));
  assert.equal(ledger.length, 5, 'a credit and four charges');
  assert.equal(usage.length, 4);
  const stats = async () => (await ctx.admin.call('GET', `/api/stats/keys/${key.id}?group_by=model`)).body.data;
  const statsBefore = await stats();
  const endUsersBefore = (await ctx.admin.call('GET', `/api/stats/keys/${key.id}?group_by=end_user`)).body.data;
  const overviewBefore = (await ctx.admin.call('GET', '/api/admin/overview')).body.data.total_balance;

  const pass = await ctx.admin.call('POST', '/api/admin/retention/run');
  assert.equal(pass.status, 200, JSON.stringify(pass.body));
  assert.ok(pass.body.data.archives >= 1);

  assert.equal((await ctx.gw.sql(`SELECT COUNT(*) AS n FROM balance_transactions WHERE user_id = '${user.id}'`))[0].n, 0, 'gone from D1');
  assert.equal((await ctx.gw.sql(`SELECT COUNT(*) AS n FROM usage_records WHERE user_id = '${user.id}'`))[0].n, 0);
  const archives = (await ctx.admin.call('GET', `/api/admin/archives?user_id=${user.id}`)).body.data;
  assert.equal(archives.length, 1, 'one object for the account-day');
  const text = await (await fetch(`${ctx.gw.url}/api/admin/archives/${archives[0].id}`, { headers: { authorization: `Bearer ${ctx.gw.adminToken}` } })).text();
  const lines = text.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(byId(lines.filter((l) => l.table === 'balance_transactions').map((l) => l.row)), ledger, 'the ledger copy, row by row');
  assert.deepEqual(withoutRestored(byId(lines.filter((l) => l.table === 'usage_records').map((l) => l.row))), withoutRestored(usage), 'the usage records, row by row');

  assert.deepEqual(await stats(), statsBefore, 'the roll-ups still give the same totals');
  assert.deepEqual((await ctx.admin.call('GET', `/api/stats/keys/${key.id}?group_by=end_user`)).body.data, endUsersBefore);
  assert.equal((await ctx.admin.call('GET', '/api/admin/overview')).body.data.total_balance, overviewBefore);
  const after = (await ctx.admin.call('GET', '/api/admin/reconcile')).body.data;
  assert.deepEqual(after.drift, [], 'what left is still counted: the balance agrees');
  assert.deepEqual(after.failed, []);

  // Two restores at once: one puts the rows back, the other changes nothing.
  const both = await Promise.all([0, 1].map(() => ctx.admin.call('POST', `/api/admin/archives/${archives[0].id}/restore`)));
  assert.deepEqual(both.map((r) => r.status).sort(), [200, 409], JSON.stringify(both.map((r) => r.body)));
  const restored = both.find((r) => r.status === 200);
  assert.equal(restored.body.data.rows, 9);
  assert.deepEqual(byId(await ctx.gw.sql(`SELECT * FROM balance_transactions WHERE user_id = '${user.id}'`)), ledger, 'the ledger copy is back');
  assert.deepEqual(withoutRestored(byId(await ctx.gw.sql(`SELECT * FROM usage_records WHERE user_id = '${user.id}'`))), withoutRestored(usage), 'the usage records are back');
  assert.deepEqual(await stats(), statsBefore, 'restored rows are not counted twice');
  assert.equal(await closedCount(), 1, 'nor their closes by the rule');
  assert.deepEqual((await ctx.admin.call('GET', '/api/admin/reconcile')).body.data.drift, [], 'the sum left `archived` once');
  const again = await ctx.admin.call('POST', `/api/admin/archives/${archives[0].id}/restore`);
  assert.equal(again.status, 409, 'once');
});

test('a day of more rows than an archive holds leaves in parts, each whole, and each restores', async () => {
  // FAULT_ARCHIVE_PART_ROWS: an archive holds at most 2 rows of each table (400 in a deployment), so a
  // day of 5 ledger rows and 4 usage records takes three archives.
  await withGateway({ vars: { USAGE_RETENTION_DAYS: '1', FAULT_ARCHIVE_PART_ROWS: '2' } }, async (gw, admin) => {
    const user = await admin.createUser({}, { credit: 3 });
    const key = await admin.createKey(user.id);
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: `a busy day ${i}` }] }),
      });
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    assert.deepEqual((await admin.call('GET', '/api/admin/reconcile')).body.data.drift, []);
    for (const table of ['balance_transactions', 'usage_records']) {
      await gw.sql(`UPDATE ${table} SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', created_at, '-3 days') WHERE user_id = '${user.id}'`);
    }
    const ledger = byId(await gw.sql(`SELECT * FROM balance_transactions WHERE user_id = '${user.id}'`));
    const usage = byId(await gw.sql(`SELECT * FROM usage_records WHERE user_id = '${user.id}'`));
    assert.deepEqual([ledger.length, usage.length], [5, 4]);

    // Two passes at once meet on the same parts: each part leaves once, whichever pass moves it.
    const passes = await Promise.all([0, 1].map(() => admin.call('POST', '/api/admin/retention/run')));
    for (const pass of passes) assert.equal(pass.status, 200, JSON.stringify(pass.body));
    assert.equal(passes.reduce((n, p) => n + p.body.data.archives, 0), 3, JSON.stringify(passes.map((p) => p.body.data)));
    assert.equal((await gw.sql(`SELECT COUNT(*) AS n FROM balance_transactions WHERE user_id = '${user.id}'`))[0].n, 0, 'the whole day left D1');
    assert.equal((await gw.sql(`SELECT COUNT(*) AS n FROM usage_records WHERE user_id = '${user.id}'`))[0].n, 0);
    const archives = (await admin.call('GET', `/api/admin/archives?user_id=${user.id}`)).body.data;
    assert.equal(archives.length, 3);
    assert.equal(new Set(archives.map((a) => a.day)).size, 1, 'all of one day');
    const rows = { balance_transactions: [], usage_records: [] };
    for (const a of archives) {
      const res = await fetch(`${gw.url}/api/admin/archives/${a.id}`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
      const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l));
      for (const table of Object.keys(rows)) {
        const part = lines.filter((l) => l.table === table);
        assert.ok(part.length <= 2, `at most two ${table} rows an archive`);
        rows[table].push(...part.map((l) => l.row));
      }
    }
    assert.deepEqual(byId(rows.balance_transactions), ledger, 'each ledger row in one archive, none lost');
    assert.deepEqual(withoutRestored(byId(rows.usage_records)), withoutRestored(usage));
    const after = (await admin.call('GET', '/api/admin/reconcile')).body.data;
    assert.deepEqual(after.drift, [], 'the three sums left for `archived`, each once');

    for (const a of archives) {
      assert.equal((await admin.call('POST', `/api/admin/archives/${a.id}/restore`)).status, 200);
    }
    assert.deepEqual(byId(await gw.sql(`SELECT * FROM balance_transactions WHERE user_id = '${user.id}'`)), ledger, 'every part back');
    assert.deepEqual((await admin.call('GET', '/api/admin/reconcile')).body.data.drift, []);
  });
});
