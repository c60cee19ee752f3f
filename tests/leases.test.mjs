// Budget leases (domain::lease): requests started on money the account's object
// holds for this isolate, without a round trip each. Money stays exact: eight
// clients at once spend an account down to what no request fits in, with no
// overspend and the ledger equal to the balance; what leases held goes back;
// a key's change and a credit are seen at once by the isolate that makes them
// (trust.test's revocation test covers a permission removed).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { gatewayForFile } from './fixture.mjs';
import { withGateway } from './harness.mjs';

const ctx = gatewayForFile();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const micros = (usd) => Math.round(usd * 1e6);
const MODEL = 'openai/gpt-4o';

function chat(token, content = 'spend it all on many small words', maxTokens = 40) {
  return fetch(`${ctx.gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, max_tokens: maxTokens, messages: [{ role: 'user', content }] }),
  });
}

async function account(userId) {
  const balance = (await ctx.admin.call('GET', `/api/balance?user_id=${userId}`)).body;
  const rows = [];
  for (let page = 1; ; page++) {
    const res = await ctx.admin.call('GET', `/api/balance/transactions?user_id=${userId}&page=${page}&page_size=100`);
    rows.push(...res.body.data);
    if (res.body.data.length < 100) break;
  }
  return { balance: micros(balance.balance), reserved: micros(balance.reserved), rows };
}

/** Waits until the account holds nothing (leases given back, reservations settled). */
async function settledAccount(userId) {
  for (let i = 0; i < 60; i++) {
    const a = await account(userId);
    if (a.reserved === 0) return a;
    await sleep(100);
  }
  throw new Error('money was still held after 6 s');
}

describe('budget leases', () => {
  test('requests after the first are started on a lease, and what it held goes back when it is done', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const held = [];
    for (let i = 0; i < 4; i++) {
      const res = await chat(key.key);
      assert.equal(res.status, 200);
      held.push(res.headers.get('server-timing').match(/reserve;desc=(\w+)/)[1]);
      await res.arrayBuffer();
    }
    assert.equal(held[0], 'account', 'the first request reserves in the object and gets a lease');
    assert.deepEqual(held.slice(1), ['lease', 'lease', 'lease'], 'the next ones need no round trip');
    const a = await settledAccount(user.id);
    assert.equal(a.rows.filter((r) => r.type === 'usage').length, 4, 'each request charged once');
    assert.equal(a.rows.reduce((n, r) => n + micros(r.amount), 0), a.balance, 'the ledger sums to the balance');
  });

  test('eight clients at once spend an account down through leases: no overspend, the ledger equals the balance', async () => {
    const credit = 40_000; // micro-USD: a few dozen requests' worth at gpt-4o
    const user = await ctx.admin.createUser({}, { credit: credit / 1e6 });
    const key = await ctx.admin.createKey(user.id);
    const statuses = [];
    const leased = [];
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (;;) {
        const res = await chat(key.key, 'a long answer please, one word after another after another', 30);
        statuses.push(res.status);
        if (res.status === 200) leased.push(/reserve;desc=lease/.test(res.headers.get('server-timing')));
        await res.arrayBuffer();
        if (res.status !== 200) return;
      }
    }));
    assert.ok(statuses.every((s) => s === 200 || s === 402), `only 200 or 402: ${[...new Set(statuses)]}`);
    assert.ok(leased.filter(Boolean).length > leased.length / 2, `most ran on leases (${leased.filter(Boolean).length} of ${leased.length})`);
    // A client stops at its first 402; money held then (in flight, in leases) may come back after. Spend it.
    for (let i = 0; i < 100; i++) {
      const res = await chat(key.key, 'a long answer please, one word after another after another', 30);
      statuses.push(res.status);
      await res.arrayBuffer();
      if (res.status === 402) break;
    }
    assert.equal(statuses.at(-1), 402, 'spent down to what no request fits in');
    const ok = statuses.filter((s) => s === 200).length;
    assert.ok(ok >= 10, `${ok} requests ran`);
    const a = await settledAccount(user.id);
    const usage = a.rows.filter((r) => r.type === 'usage');
    assert.equal(usage.length, ok, 'every request that ran is charged, once');
    const charged = -usage.reduce((n, r) => n + micros(r.amount), 0);
    assert.ok(charged <= credit, `charged ${charged} ≤ credit ${credit}`);
    assert.ok(a.balance >= 0, `balance ${a.balance}`);
    assert.equal(a.balance, credit - charged);
    assert.equal(a.rows.reduce((n, r) => n + micros(r.amount), 0), a.balance, 'the ledger sums to the balance');
  });

  test('a key limit lowered here is obeyed on the very next request, though the key\'s lease still holds money', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id, { limit: 0.5 });
    for (let i = 0; i < 2; i++) {
      const res = await chat(key.key);
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    const spent = -(await account(user.id)).rows.filter((r) => r.type === 'usage').reduce((n, r) => n + micros(r.amount), 0);
    assert.equal((await ctx.admin.call('PATCH', `/api/keys/${key.id}`, { limit: spent / 1e6 })).status, 200);
    const refused = await chat(key.key);
    assert.equal(refused.status, 402, 'not started on the lease the key had');
    assert.equal((await refused.json()).error.metadata.limit_source, 'key_limit');
  });

  test('a credit is seen at once: a request the lease cannot cover asks the object', async () => {
    const user = await ctx.admin.createUser({}, { credit: 0.003 });
    const key = await ctx.admin.createKey(user.id);
    let status = 200;
    while (status === 200) {
      const res = await chat(key.key);
      status = res.status;
      await res.arrayBuffer();
    }
    assert.equal(status, 402);
    await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: user.id, amount: 1 });
    const res = await chat(key.key);
    assert.equal(res.status, 200, 'the credit is there for the very next request');
    await res.arrayBuffer();
  });
});

describe('a key changed while another isolate holds its lease', () => {
  test('the isolate still holding a lease of a disabled key serves on it for at most its second, then is refused', { timeout: 120_000 }, async () => {
    // The change leaves this isolate's view of the key and its lease as they were (a test fault), as every
    // other isolate's are left: only the lease's second bounds them.
    await withGateway({ vars: { FAULT_STALE_KEY_ISOLATE: '1' } }, async (gw, admin) => {
      const user = await admin.createUser({}, { credit: 1 });
      const key = await admin.createKey(user.id);
      const ask = () => fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: MODEL, max_tokens: 40, messages: [{ role: 'user', content: 'a few words' }] }),
      });
      let leased = false;
      for (let i = 0; i < 5 && !leased; i++) {
        const res = await ask();
        leased = /reserve;desc=lease/.test(res.headers.get('server-timing'));
        await res.arrayBuffer();
      }
      assert.ok(leased, 'a request ran on a lease');
      assert.equal((await admin.call('PATCH', `/api/keys/${key.id}`, { disabled: true })).status, 200);
      const changedAt = Date.now();
      const after = [];
      while (Date.now() - changedAt < 2_500) {
        const started = Date.now();
        const res = await ask();
        after.push({ started: started - changedAt, status: res.status, timing: res.headers.get('server-timing') ?? '' });
        await res.arrayBuffer();
      }
      const served = after.filter((r) => r.status === 200);
      assert.ok(served.length > 0, 'the stale isolate served on its lease a while');
      assert.ok(served.every((r) => /reserve;desc=lease/.test(r.timing) && r.started < 1_000), JSON.stringify(served.at(-1)));
      const late = after.filter((r) => r.started > 1_300);
      assert.ok(late.length > 0 && late.every((r) => r.status === 401), JSON.stringify(late.find((r) => r.status !== 401)));
      // What it served is charged; the ledger equals the balance once the lease is given back or ends.
      let a;
      for (let i = 0; i < 60; i++) {
        const balance = (await admin.call('GET', `/api/balance?user_id=${user.id}`)).body;
        const rows = (await admin.call('GET', `/api/balance/transactions?user_id=${user.id}&page_size=100`)).body.data;
        a = { balance: micros(balance.balance), reserved: micros(balance.reserved), rows };
        if (a.reserved === 0 && a.rows.filter((r) => r.type === 'usage').length >= served.length) break;
        await sleep(100);
      }
      assert.equal(a.rows.reduce((n, r) => n + micros(r.amount), 0), a.balance, 'the ledger equals the balance');
      assert.ok(a.balance >= 0);
    });
  });
});
