// The operator's starting API: users and keys.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { chatAs, gatewayForFile } from './fixture.mjs';
import { adminClient } from './harness.mjs';

const ctx = gatewayForFile();

const errorCode = (res) => res.body?.error?.code;

describe('POST /api/admin/users', () => {
  test('creates a user with defaults', async () => {
    const res = await ctx.admin.call('POST', '/api/admin/users', { email: 'Ann@Example.com', name: 'Ann', utm_source: 'newsletter' });
    assert.equal(res.status, 201);
    const u = res.body.data;
    assert.match(u.id, /^[0-9a-f-]{36}$/);
    assert.equal(u.email, 'ann@example.com');
    assert.equal(u.locale, 'en');
    assert.equal(u.utm_source, 'newsletter');
    assert.equal(u.email_verified, false);
    assert.ok(u.created_at.endsWith('Z'));
  });

  test('a repeated e-mail is 409', async () => {
    await ctx.admin.createUser({ email: 'dup@example.com' });
    const res = await ctx.admin.call('POST', '/api/admin/users', { email: 'DUP@example.com', name: 'Again' });
    assert.equal(res.status, 409);
    assert.equal(errorCode(res), 'conflict');
  });

  test('bad input is 400 naming the field', async () => {
    const cases = [
      [{ email: 'not-an-email', name: 'X' }, /email/],
      [{ email: 'a@example.com', name: '' }, /name/],
      [{ email: 'b@example.com', name: 'X', role: 'root' }, /unknown field `role`/],
      [{ email: 'c@example.com', name: 'X', locale: 'not a locale' }, /locale/],
      [{ name: 'X' }, /missing field `email`/],
      ['[]', /invalid request body/],
    ];
    for (const [body, pattern] of cases) {
      const res = typeof body === 'string'
        ? await fetch(`${ctx.gw.url}/api/admin/users`, { method: 'POST', headers: { authorization: `Bearer ${ctx.gw.adminToken}` }, body }).then(async (r) => ({ status: r.status, body: await r.json() }))
        : await ctx.admin.call('POST', '/api/admin/users', body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(errorCode(res), 'invalid_request');
      assert.match(res.body.error.message, pattern);
    }
  });

  test('only the operator (or an admin key) may create users', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    const asKey = adminClient(ctx.gw.url, k.key);
    const res = await asKey.call('POST', '/api/admin/users', { email: 'x@example.com', name: 'X' });
    assert.equal(res.status, 403);
    assert.equal(errorCode(res), 'permission_error');
    const wrong = adminClient(ctx.gw.url, 'wrong-admin-token');
    assert.equal((await wrong.call('POST', '/api/admin/users', { email: 'y@example.com', name: 'Y' })).status, 401);
    const adminKey = await ctx.admin.createKey(u.id, { permissions: ['admin'] });
    const res2 = await adminClient(ctx.gw.url, adminKey.key).call('POST', '/api/admin/users', { email: 'z@example.com', name: 'Z' });
    assert.equal(res2.status, 201);
  });
});

describe('POST /api/keys', () => {
  test('the operator creates a key for a user; the text is shown once, the hash never', async () => {
    const u = await ctx.admin.createUser();
    const res = await ctx.admin.call('POST', '/api/keys', { name: 'ci', user_id: u.id, limit: 12.5, limit_reset: 'monthly', expires_at: '2099-01-01T00:00:00Z' });
    assert.equal(res.status, 201);
    const k = res.body.data;
    assert.match(k.key, /^sk-tg-v1-[0-9a-f]{64}$/);
    assert.equal(k.key_prefix, k.key.slice(0, 12));
    assert.deepEqual(k.permissions, ['read', 'write']);
    assert.equal(k.limit, 12.5);
    assert.equal(k.limit_reset, 'monthly');
    assert.equal(k.expires_at, '2099-01-01T00:00:00.000Z');
    assert.equal(k.status, 'active');
    assert.ok(!JSON.stringify(k).includes('hash'));
    // No cache or proxy on the way keeps an answer with a secret in it, or any other of the gateway's own.
    const raw = await fetch(`${ctx.gw.url}/api/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ctx.gw.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'ci2', user_id: u.id }),
    });
    assert.equal(raw.status, 201);
    assert.equal(raw.headers.get('cache-control'), 'no-store');
    const listed = await fetch(`${ctx.gw.url}/api/keys?user_id=${u.id}`, { headers: { authorization: `Bearer ${ctx.gw.adminToken}` } });
    assert.equal(listed.headers.get('cache-control'), 'no-store');
  });

  test('a key holder creates keys for its own user only', async () => {
    const u = await ctx.admin.createUser();
    const other = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    const holder = adminClient(ctx.gw.url, k.key);
    const own = await holder.call('POST', '/api/keys', { name: 'mine' });
    assert.equal(own.status, 201);
    assert.equal(own.body.data.user_id, u.id);
    const theirs = await holder.call('POST', '/api/keys', { name: 'theirs', user_id: other.id });
    assert.equal(theirs.status, 404);
    const escalate = await holder.call('POST', '/api/keys', { name: 'root', permissions: ['admin'] });
    assert.equal(escalate.status, 403);
  });

  test('bad input is 400; an unknown user is 404', async () => {
    const u = await ctx.admin.createUser();
    const bad = [
      { name: 'x' },
      { name: 'x', user_id: u.id, permissions: ['fly'] },
      { name: 'x', user_id: u.id, permissions: [] },
      { name: 'x', user_id: u.id, expires_at: '2001-01-01T00:00:00Z' },
      { name: 'x', user_id: u.id, expires_at: 'soon' },
      { name: 'x', user_id: u.id, limit: -1 },
      { name: 'x', user_id: u.id, limit_reset: 'hourly' },
      { name: 'x', user_id: u.id, colour: 'red' },
      { name: '', user_id: u.id },
    ];
    for (const body of bad) {
      const res = await ctx.admin.call('POST', '/api/keys', body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(errorCode(res), 'invalid_request');
    }
    const missing = await ctx.admin.call('POST', '/api/keys', { name: 'x', user_id: '00000000-0000-4000-8000-000000000000' });
    assert.equal(missing.status, 404);
    assert.equal(errorCode(missing), 'not_found');
  });

  test('an amount with more than 6 decimals is refused by name, not rounded to another', async () => {
    const u = await ctx.admin.createUser({}, { credit: 0 });
    const limit = await ctx.admin.call('POST', '/api/keys', { name: 'x', user_id: u.id, limit: 0.0000004 });
    assert.equal(limit.status, 400, 'a limit of 0.0000004 USD is not a limit of nothing');
    assert.equal(limit.body.error.param, 'limit');
    const credit = await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: u.id, amount: 1.0000004 });
    assert.equal(credit.status, 400);
    assert.equal(credit.body.error.param, 'amount');
    assert.equal((await ctx.admin.call('GET', `/api/balance?user_id=${u.id}`)).body.balance, 0, 'nothing credited');
    const exact = await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: u.id, amount: 0.1 + 0.2 });
    assert.equal(exact.status, 200, 'float noise is not a decimal');
    assert.equal((await ctx.admin.call('GET', `/api/balance?user_id=${u.id}`)).body.balance, 0.3);
  });

  test('an expired key stops working', async () => {
    const u = await ctx.admin.createUser();
    const soon = new Date(Date.now() + 1500).toISOString();
    const k = await ctx.admin.createKey(u.id, { expires_at: soon });
    const chat = () => fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal((await chat()).status, 200);
    await new Promise((r) => setTimeout(r, 1700));
    const res = await chat();
    assert.equal(res.status, 401);
    assert.match((await res.json()).error.message, /expired/);
  });
});

describe('GET /api/admin/overview', () => {
  test('counts users, usable keys and every balance from running totals that follow each change', async () => {
    const overview = async () => {
      await ctx.admin.call('GET', '/api/admin/reconcile'); // every ledger copy in D1 first
      return (await ctx.admin.call('GET', '/api/admin/overview')).body.data;
    };
    const before = await overview();
    const a = await ctx.admin.createUser({ name: 'Counted A' }, { credit: 2 });
    const b = await ctx.admin.createUser({ name: 'Counted B' }, { credit: 0.5 });
    await ctx.admin.createKey(a.id);
    const off = await ctx.admin.createKey(a.id);
    await ctx.admin.createKey(b.id, { expires_at: new Date(Date.now() + 1_500).toISOString() });
    await ctx.admin.call('PATCH', `/api/keys/${off.id}`, { disabled: true });
    const made = await overview();
    assert.equal(made.users, before.users + 2);
    assert.equal(made.active_keys, before.active_keys + 2, 'the disabled key is not counted');
    assert.equal(Math.round((made.total_balance - before.total_balance) * 1e6), 2_500_000);

    await new Promise((r) => setTimeout(r, 1_600));
    assert.equal((await overview()).active_keys, before.active_keys + 1, 'an expired key stops counting by itself');
    await ctx.admin.call('PATCH', `/api/keys/${off.id}`, { disabled: false });
    assert.equal((await ctx.admin.call('DELETE', `/api/admin/users/${b.id}`)).status, 200);
    const after = await overview();
    assert.equal(after.users, before.users + 1, 'the deleted user');
    assert.equal(after.active_keys, before.active_keys + 2, 'the enabled key again');
  });
});

describe('reads naming what does not exist', () => {
  test('a user, key or organization never made is 404, not an empty account; a deleted user stays readable', async () => {
    const nobody = '00000000-0000-4000-8000-00000000dead';
    const reads = [
      `/api/balance?user_id=${nobody}`,
      `/api/v1/credits?user_id=${nobody}`,
      `/api/balance/transactions?user_id=${nobody}`,
      `/api/stats?user_id=${nobody}`,
      `/api/stats/keys/${nobody}`,
      `/api/stats/orgs/${nobody}`,
    ];
    for (const path of reads) {
      const res = await ctx.admin.call('GET', path);
      assert.equal(res.status, 404, path);
      assert.equal(errorCode(res), 'not_found', path);
    }
    const gone = await ctx.admin.createUser({}, { credit: 3 });
    assert.equal((await ctx.admin.call('DELETE', `/api/admin/users/${gone.id}`)).status, 200);
    const balance = await ctx.admin.call('GET', `/api/balance?user_id=${gone.id}`);
    assert.equal(balance.status, 200, 'a deleted user keeps its money, and it is shown');
    assert.equal(balance.body.balance, 3);
  });
});
