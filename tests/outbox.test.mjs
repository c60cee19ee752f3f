// A D1 outage while the account objects copy their outboxes: nothing is lost.
// The outage is real: the local D1 table is renamed away under the running
// gateway (wrangler d1 execute on the same state), then put back.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { gatewayForFile, usageRows } from './fixture.mjs';
import { withGateway } from './harness.mjs';

const ctx = gatewayForFile();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));


describe('ledger and usage outbox', () => {
  test('rows that D1 refused are copied once it is back; the ledger and balance still agree', async () => {
    const user = await ctx.admin.createUser({ name: 'Outage' }, { credit: 3 });
    const key = await ctx.admin.createKey(user.id, { name: 'outage' });
    const before = await ctx.admin.call('GET', '/api/admin/reconcile');
    assert.deepEqual(before.body.data.drift, [], 'the credit reached D1 first');

    await ctx.gw.sql('ALTER TABLE balance_transactions RENAME TO balance_transactions_away');
    let restored = false;
    try {
      const send = async (i, stream) => {
        const res = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'openai/gpt-4o-mini', stream, messages: [{ role: 'user', content: `during the outage ${i}` }] }),
        });
        assert.equal(res.status, 200, 'chat keeps working while D1 refuses writes');
        const text = await res.text();
        if (stream) assert.ok(text.trimEnd().endsWith('data: [DONE]'), 'the stream ends whole');
        return res.headers.get('x-request-id');
      };
      // Two requests one after another, then ten at once, streams among them.
      const ids = [await send(0, false), await send(1, true)];
      ids.push(...(await Promise.all(Array.from({ length: 10 }, (_, i) => send(2 + i, i % 2 === 0)))));
      await sleep(1500); // the object's copy has run and failed by now
      const during = await ctx.admin.call('GET', '/api/admin/reconcile');
      assert.equal(during.status, 200, 'reconciliation goes on past an account it cannot check');
      assert.ok(during.body.data.failed.some((f) => f.user_id === user.id), 'the account whose copy fails is reported');
      const ledger = await ctx.admin.call('GET', `/api/balance/transactions?user_id=${user.id}`);
      assert.equal(ledger.body.data.filter((r) => r.type === 'usage').length, 12, 'the object kept every charge');
      assert.equal((await ctx.gw.sql(`SELECT COUNT(*) AS n FROM usage_records WHERE user_id = '${user.id}'`))[0].n, 0, 'usage waited with the ledger');

      await ctx.gw.sql('ALTER TABLE balance_transactions_away RENAME TO balance_transactions');
      restored = true;
      const after = await ctx.admin.call('GET', '/api/admin/reconcile');
      assert.equal(after.status, 200, JSON.stringify(after.body));
      assert.deepEqual(after.body.data.drift, [], 'D1 caught up: ledger sum equals balance');
      const rows = await ctx.gw.sql(`SELECT reference_id FROM balance_transactions WHERE user_id = '${user.id}' AND type = 'usage'`);
      assert.deepEqual(rows.map((r) => r.reference_id).sort(), [...ids].sort(), 'each charge copied exactly once');
      const usage = await ctx.gw.sql(`SELECT id FROM usage_records WHERE user_id = '${user.id}'`);
      assert.deepEqual(usage.map((r) => r.id).sort(), [...ids].sort(), 'each usage record copied exactly once');
    } finally {
      if (!restored) await ctx.gw.sql('ALTER TABLE balance_transactions_away RENAME TO balance_transactions').catch(() => {});
    }
  });

  test('reconciliation finds a ledger copy that lost a row, and says by how much', async () => {
    const user = await ctx.admin.createUser({ name: 'Drift' }, { credit: 2 });
    await ctx.admin.credit(user.id, 0.5);
    assert.deepEqual((await ctx.admin.call('GET', '/api/admin/reconcile')).body.data.drift, []);
    const [row] = await ctx.gw.sql(`SELECT * FROM balance_transactions WHERE user_id = '${user.id}' AND amount = 500000`);
    await ctx.gw.sql(`DELETE FROM balance_transactions WHERE id = '${row.id}'`);
    try {
      const report = (await ctx.admin.call('GET', '/api/admin/reconcile')).body.data;
      const drift = report.drift.find((d) => d.user_id === user.id);
      assert.ok(drift, JSON.stringify(report.drift));
      assert.equal(drift.difference, 0.5);
      assert.equal(drift.balance, 2.5);
      assert.equal(drift.object_ledger_sum, 2.5, "the object's own ledger still agrees with its balance");
      const one = await ctx.admin.call('GET', `/api/admin/reconcile?user_id=${user.id}`);
      assert.equal(one.status, 200, JSON.stringify(one.body));
      assert.equal(one.body.data.accounts_checked, 1);
      assert.deepEqual(one.body.data.drift, [drift], 'one account checked alone finds the same drift');
      const other = await ctx.admin.createUser({ name: 'Fine' }, { credit: 1 });
      assert.deepEqual((await ctx.admin.call('GET', `/api/admin/reconcile?user_id=${other.id}`)).body.data.drift, []);
      const unknown = await ctx.admin.call('GET', '/api/admin/reconcile?user_id=u-nobody');
      assert.equal(unknown.status, 404);
      assert.equal(unknown.body.error.code, 'not_found', JSON.stringify(unknown.body));
    } finally {
      const cols = Object.keys(row);
      const values = cols.map((c) => (row[c] === null ? 'NULL' : typeof row[c] === 'number' ? row[c] : `'${row[c]}'`));
      await ctx.gw.sql(`INSERT INTO balance_transactions (${cols.join(', ')}) VALUES (${values.join(', ')})`);
    }
    assert.deepEqual((await ctx.admin.call('GET', '/api/admin/reconcile')).body.data.drift, []);
  });

  test('an account charging while it is checked shows no drift, and a lost row still shows', async () => {
    // FAULT_SLOW_RECONCILE_MS: D1 is read 300 ms after the object answers, as over a slow link, so charges
    // land in between on every check.
    await withGateway({ vars: { FAULT_SLOW_RECONCILE_MS: '300' } }, async (gw, admin) => {
      const user = await admin.createUser({ name: 'Busy' }, { credit: 5 });
      await admin.credit(user.id, 0.5);
      const key = await admin.createKey(user.id, { name: 'busy' });
      let running = true;
      let served = 0;
      const client = async (n) => {
        for (let i = 0; running; i++) {
          const res = await fetch(`${gw.url}/v1/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'openai/gpt-4o-mini', max_tokens: 8, messages: [{ role: 'user', content: `busy ${n} ${i}` }] }),
          });
          assert.equal(res.status, 200);
          await res.arrayBuffer();
          served++;
        }
      };
      const load = Promise.all([0, 1, 2, 3].map(client));
      try {
        await sleep(500);
        for (let i = 0; i < 4; i++) {
          const one = await admin.call('GET', `/api/admin/reconcile?user_id=${user.id}`);
          assert.equal(one.status, 200, JSON.stringify(one.body));
          assert.deepEqual(one.body.data.drift, [], `check ${i}, ${served} requests in: charges landing meanwhile are no drift`);
          assert.deepEqual(one.body.data.failed, []);
        }
        // A row lost from D1 under the same load is still found.
        await gw.sql(`DELETE FROM balance_transactions WHERE user_id = '${user.id}' AND amount = 500000`);
        const report = (await admin.call('GET', `/api/admin/reconcile?user_id=${user.id}`)).body.data;
        assert.equal(report.drift.length, 1, JSON.stringify(report));
        assert.equal(report.drift[0].object_ledger_sum, report.drift[0].balance);
      } finally {
        running = false;
        await load;
      }
      assert.ok(served > 50, `${served} requests served while checked`);
    });
  });
});

// The runtime ends a task 30 s after its answer. With the account's object slow or away that long, a
// request's settlement may still wait in this isolate's line then, and its own task is gone; the fault
// leaves settlements so. The next task to settle here, for any account, sends them.
describe('settlements left in line by ended tasks', () => {
  test('are sent by the next task to settle, for another account, and each is charged once', async () => {
    const LEFT = 'meta-llama/llama-3.1-8b-instruct';
    await withGateway({ vars: { FAULT_ABANDON_SETTLE: LEFT } }, async (gw, admin) => {
      const chat = async (token, model, content) => {
        const res = await fetch(`${gw.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model, messages: [{ role: 'user', content }] }),
        });
        assert.equal(res.status, 200);
        return (await res.json()).usage;
      };
      const left = await admin.createUser({ name: 'Left in line' }, { credit: 1 });
      const leftKey = await admin.createKey(left.id);
      const other = await admin.createUser({ name: 'Next to settle' }, { credit: 1 });
      const otherKey = await admin.createKey(other.id);
      // One request, then three at once: every settlement is left in line, none sent.
      const usages = [await chat(leftKey.key, LEFT, 'left 0')];
      usages.push(...(await Promise.all([1, 2, 3].map((i) => chat(leftKey.key, LEFT, `left ${i}`)))));
      await sleep(2500);
      const charged = async (userId) => (await admin.call('GET', `/api/balance/transactions?user_id=${userId}&page_size=100`)).body.data.filter((r) => r.type === 'usage');
      assert.equal((await charged(left.id)).length, 0, 'not sent by anyone yet');
      // Another account's request settles, and sends them.
      await chat(otherKey.key, 'openai/gpt-4o-mini', 'the next task to settle');
      const rows = await usageRows(admin, left.id, 4);
      await sleep(500);
      assert.equal((await charged(left.id)).length, 4, 'each once');
      const micros = (usd) => Math.round(usd * 1e6);
      assert.deepEqual(rows.map((r) => -micros(r.amount)).sort((a, b) => a - b), usages.map((u) => micros(u.cost)).sort((a, b) => a - b), 'each at its cost');
      const spent = usages.reduce((sum, u) => sum + micros(u.cost), 0);
      const balance = micros((await admin.call('GET', `/api/balance?user_id=${left.id}`)).body.balance);
      assert.equal(balance, 1_000_000 - spent, 'the balance moved by exactly the charges');
      const reconciled = await admin.call('GET', `/api/admin/reconcile?user_id=${left.id}`);
      assert.deepEqual(reconciled.body.data.drift, []);
    });
  });
});
