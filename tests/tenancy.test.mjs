// Users and keys: management, permissions, rotation and immediate effect.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { AUTHENTICATED_ROUTES, PUBLIC_ROUTES, assertAuthFailures, routeTableAccess, routeTableNames } from './auth-matrix.mjs';
import { chatAs, gatewayForFile } from './fixture.mjs';
import { ROOT, adminClient, startGateway } from './harness.mjs';

const ctx = gatewayForFile();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const chat = (token) => chatAs(ctx.gw.url, token);

const as = (token) => adminClient(ctx.gw.url, token);

describe('every route refuses bad credentials the same way', () => {
  test('the auth matrix covers every non-public route of the route table', () => {
    const table = routeTableNames(readFileSync(path.join(ROOT, 'src', 'routes.rs'), 'utf8'));
    assert.ok(table.length >= 20, `parsed ${table.length} routes`);
    const covered = new Set(AUTHENTICATED_ROUTES.map(([name]) => name));
    const missing = table.filter((name) => !PUBLIC_ROUTES.includes(name) && !covered.has(name));
    assert.deepEqual(missing, [], 'add these routes to tests/auth-matrix.mjs');
    // The matrix checks what the route table says: the permission each route needs comes from it.
    const access = routeTableAccess(readFileSync(path.join(ROOT, 'src', 'routes.rs'), 'utf8'));
    assert.deepEqual(Object.keys(access).sort(), [...table].sort(), 'every route states its access');
    for (const [name, , , needed] of AUTHENTICATED_ROUTES) assert.equal(needed, access[name], name);
    assert.deepEqual(PUBLIC_ROUTES.sort(), Object.keys(access).filter((n) => access[n] === 'public').sort());
  });

  test('401 for missing, unknown, disabled, deleted, expired; 403 for a missing permission', async () => {
    const u = await ctx.admin.createUser();
    const make = (fields) => ctx.admin.createKey(u.id, fields).then((k) => k.key);
    const keys = {
      readOnly: await make({ permissions: ['read'] }),
      writeOnly: await make({ permissions: ['write'] }),
      readWrite: await make({}),
      expired: await make({ expires_at: new Date(Date.now() + 1200).toISOString() }),
    };
    const disabled = await ctx.admin.createKey(u.id);
    await ctx.admin.call('PATCH', `/api/keys/${disabled.id}`, { disabled: true });
    keys.disabled = disabled.key;
    const deleted = await ctx.admin.createKey(u.id);
    await ctx.admin.call('DELETE', `/api/keys/${deleted.id}`);
    keys.deleted = deleted.key;
    await sleep(1300);
    await assertAuthFailures(ctx.gw.url, keys);
  });
});

describe('users', () => {
  test('list pages and searches; get, patch and delete', async () => {
    const tag = `s${Date.now()}`;
    const made = [];
    for (let i = 0; i < 3; i++) made.push(await ctx.admin.createUser({ email: `${tag}-${i}@example.com`, name: `Searchable ${i}` }));
    const page1 = await ctx.admin.call('GET', `/api/admin/users?search=${tag}&page=1&page_size=2`);
    assert.equal(page1.status, 200);
    assert.equal(page1.body.total, 3);
    assert.equal(page1.body.data.length, 2);
    assert.equal(page1.body.page_size, 2);
    const page2 = await ctx.admin.call('GET', `/api/admin/users?search=${tag}&page=2&page_size=2`);
    assert.equal(page2.body.data.length, 1);
    const ids = [...page1.body.data, ...page2.body.data].map((u) => u.id).sort();
    assert.deepEqual(ids, made.map((u) => u.id).sort());

    // A long search, wildcards and case taken literally: found, never a failed query.
    const long = `${tag}_100%_sure\\${'x'.repeat(60)}@Example.COM`;
    const odd = await ctx.admin.createUser({ email: long.toLowerCase(), name: 'Odd' });
    const found = await ctx.admin.call('GET', `/api/admin/users?search=${encodeURIComponent(long)}`);
    assert.equal(found.status, 200, JSON.stringify(found.body));
    assert.deepEqual(found.body.data.map((u) => u.id), [odd.id]);
    const search = async (text) => (await ctx.admin.call('GET', `/api/admin/users?search=${encodeURIComponent(text)}`)).body.total;
    assert.equal(await search(`${tag}_0`), 0, '`_` is no wildcard');
    assert.equal(await search(`${tag}%`), 0, '`%` is no wildcard');
    assert.equal(await search(`${tag}_100%`), 1);
    const keys = await ctx.admin.call('GET', `/api/keys?search=${encodeURIComponent('_'.repeat(40))}`);
    assert.equal(keys.status, 200, JSON.stringify(keys.body));
    assert.equal(keys.body.total, 0);

    const got = await ctx.admin.call('GET', `/api/admin/users/${made[0].id}`);
    assert.equal(got.body.data.email, `${tag}-0@example.com`);

    const patched = await ctx.admin.call('PATCH', `/api/admin/users/${made[0].id}`, { name: 'Renamed', locale: 'zh', email_verified: true });
    assert.equal(patched.status, 200);
    assert.equal(patched.body.data.name, 'Renamed');
    assert.equal(patched.body.data.locale, 'zh');
    assert.equal(patched.body.data.email_verified, true);

    const clash = await ctx.admin.call('PATCH', `/api/admin/users/${made[0].id}`, { email: `${tag}-1@example.com` });
    assert.equal(clash.status, 409);
    const unknown = await ctx.admin.call('PATCH', `/api/admin/users/${made[0].id}`, { role: 'root' });
    assert.equal(unknown.status, 400);
    assert.match(unknown.body.error.message, /unknown field `role`/);
    const badPage = await ctx.admin.call('GET', '/api/admin/users?page_size=1000');
    assert.equal(badPage.status, 400);
    assert.equal(badPage.body.error.param, 'page_size');
  });

  test('deleting a user disables its keys at once and hides the user', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    assert.equal((await chat(k.key)).status, 200);
    const del = await ctx.admin.call('DELETE', `/api/admin/users/${u.id}`);
    assert.equal(del.status, 200);
    assert.equal(del.body.data.keys_disabled, 1);
    assert.equal((await chat(k.key)).status, 401);
    // Its keys went with it: none can be switched back on (it would spend the deleted user's balance).
    const revive = await ctx.admin.call('PATCH', `/api/keys/${k.id}`, { disabled: false });
    assert.equal(revive.status, 404, JSON.stringify(revive.body));
    assert.equal((await ctx.admin.call('POST', `/api/keys/${k.id}/rotate`, {})).status, 404);
    assert.equal((await chat(k.key)).status, 401, 'still refused');
    const listed = await ctx.admin.call('GET', `/api/keys?user_id=${u.id}`);
    assert.deepEqual(listed.body.data, [], 'nor listed');
    assert.equal((await ctx.admin.call('GET', `/api/admin/users/${u.id}`)).status, 404);
    assert.equal((await ctx.admin.call('DELETE', `/api/admin/users/${u.id}`)).status, 404);
    const again = await ctx.admin.call('POST', '/api/admin/users', { email: u.email, name: 'Back' });
    assert.equal(again.status, 201, 'a deleted user\'s e-mail can be reused');
  });

  test('keys made while their user is deleted are refused or disabled: none is left working', async () => {
    const u = await ctx.admin.createUser({}, { credit: 1 });
    const k = await ctx.admin.createKey(u.id, { permissions: ['read', 'write'] });
    const minting = Array.from({ length: 12 }, (_, i) => as(k.key).call('POST', '/api/keys', { name: `late ${i}` }));
    const [del, ...made] = await Promise.all([ctx.admin.call('DELETE', `/api/admin/users/${u.id}`), ...minting]);
    assert.equal(del.status, 200);
    for (const res of made) assert.ok([201, 401, 404].includes(res.status), JSON.stringify(res.body));
    for (const res of made.filter((r) => r.status === 201)) {
      assert.equal((await chat(res.body.data.key)).status, 401, 'a key written before the delete was disabled with the others');
    }
    const left = await ctx.admin.call('GET', `/api/keys?user_id=${u.id}&status=active`);
    assert.equal(left.body.total, 0, JSON.stringify(left.body.data));
  });
});

describe('keys', () => {
  test('a key holder sees only its own keys; another user\'s key is 404', async () => {
    const a = await ctx.admin.createUser();
    const b = await ctx.admin.createUser();
    const ka = await ctx.admin.createKey(a.id, { name: 'alpha one' });
    await ctx.admin.createKey(a.id, { name: 'alpha two' });
    const kb = await ctx.admin.createKey(b.id, { name: 'bravo' });
    const list = await as(ka.key).call('GET', '/api/keys');
    assert.equal(list.status, 200);
    assert.equal(list.body.total, 2);
    assert.ok(list.body.data.every((k) => k.user_id === a.id));
    assert.ok(list.body.data.every((k) => !('key' in k) && !JSON.stringify(k).includes('hash')));
    for (const [method, path, body] of [['GET', `/api/keys/${kb.id}`], ['PATCH', `/api/keys/${kb.id}`, { name: 'x' }], ['DELETE', `/api/keys/${kb.id}`], ['POST', `/api/keys/${kb.id}/rotate`, {}]]) {
      const res = await as(ka.key).call(method, path, body);
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.equal(res.body.error.code, 'not_found');
    }
    assert.equal((await chat(kb.key)).status, 200, "B's key untouched");
    const filtered = await ctx.admin.call('GET', `/api/keys?user_id=${a.id}&search=two`);
    assert.equal(filtered.body.total, 1);
    assert.equal(filtered.body.data[0].name, 'alpha two');
    const byPrefix = await ctx.admin.call('GET', `/api/keys?search=${kb.key_prefix}`);
    assert.ok(byPrefix.body.data.some((k) => k.id === kb.id));
  });

  test('status filter: active, disabled, expired', async () => {
    const u = await ctx.admin.createUser();
    const active = await ctx.admin.createKey(u.id);
    const off = await ctx.admin.createKey(u.id);
    await ctx.admin.call('PATCH', `/api/keys/${off.id}`, { disabled: true });
    const soon = await ctx.admin.createKey(u.id, { expires_at: new Date(Date.now() + 1000).toISOString() });
    await sleep(1100);
    const ids = async (status) => (await ctx.admin.call('GET', `/api/keys?user_id=${u.id}&status=${status}`)).body.data.map((k) => k.id);
    assert.deepEqual(await ids('active'), [active.id]);
    assert.deepEqual(await ids('disabled'), [off.id]);
    assert.deepEqual(await ids('expired'), [soon.id]);
    assert.equal((await ctx.admin.call('GET', `/api/keys/${soon.id}`)).body.data.status, 'expired');
    assert.equal((await ctx.admin.call('GET', '/api/keys?status=gone')).status, 400);
  });

  test('disable, enable and delete take effect on the very next request', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    assert.equal((await chat(k.key)).status, 200);
    assert.equal((await ctx.admin.call('PATCH', `/api/keys/${k.id}`, { disabled: true })).body.data.status, 'disabled');
    const off = await chat(k.key);
    assert.equal(off.status, 401);
    assert.match((await off.json()).error.message, /disabled/);
    await ctx.admin.call('PATCH', `/api/keys/${k.id}`, { disabled: false });
    assert.equal((await chat(k.key)).status, 200);
    assert.equal((await ctx.admin.call('DELETE', `/api/keys/${k.id}`)).status, 200);
    assert.equal((await chat(k.key)).status, 401);
    assert.equal((await ctx.admin.call('GET', `/api/keys/${k.id}`)).status, 404);
  });

  test('PATCH validates and can clear nullable fields', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id, { limit: 5, limit_reset: 'daily', description: 'd' });
    const res = await ctx.admin.call('PATCH', `/api/keys/${k.id}`, { limit: null, limit_reset: null, description: null, name: 'renamed', permissions: ['read'] });
    assert.equal(res.status, 200);
    assert.equal(res.body.data.limit, null);
    assert.equal(res.body.data.limit_reset, null);
    assert.equal(res.body.data.description, null);
    assert.deepEqual(res.body.data.permissions, ['read']);
    assert.equal((await chat(k.key)).status, 403, 'now read-only: the next request is refused');
    for (const body of [{ permissions: ['fly'] }, { expires_at: '2000-01-01T00:00:00Z' }, { limit: -1 }, { limit_reset: 'yearly' }, { name: '' }, { colour: 'red' }]) {
      assert.equal((await ctx.admin.call('PATCH', `/api/keys/${k.id}`, body)).status, 400, JSON.stringify(body));
    }
    const holder = await ctx.admin.createKey(u.id);
    const grant = await as(holder.key).call('PATCH', `/api/keys/${holder.id}`, { permissions: ['admin'] });
    assert.equal(grant.status, 403);
  });

  test('POST /api/token makes a key for the caller and GET /api/v1/key describes the caller', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id, { name: 'main', limit: 7.5, limit_reset: 'weekly' });
    const limited = await as(k.key).call('POST', '/api/token', { name: 'from token' });
    assert.equal(limited.status, 403, 'a key with a spend limit makes no keys (their limits would add up)');
    const free = await ctx.admin.createKey(u.id, { name: 'free' });
    const made = await as(free.key).call('POST', '/api/token', { name: 'from token' });
    assert.equal(made.status, 201);
    assert.equal(made.body.data.user_id, u.id);
    assert.match(made.body.data.key, /^sk-tg-v1-/);
    assert.equal((await chat(made.body.data.key)).status, 200);
    assert.equal((await ctx.admin.call('POST', '/api/token', { name: 'x' })).status, 400, 'the operator has no user');
    const writer = await ctx.admin.createKey(u.id, { name: 'writer', permissions: ['write'] });
    const fromWriter = await as(writer.key).call('POST', '/api/token', { name: 'from a write-only key' });
    assert.equal(fromWriter.status, 201, JSON.stringify(fromWriter.body));
    assert.deepEqual(fromWriter.body.data.permissions, ['write'], 'a token has no more than its maker');

    const me = await as(k.key).call('GET', '/api/v1/key');
    assert.equal(me.status, 200);
    const d = me.body.data;
    assert.equal(d.id, k.id);
    assert.equal(d.label, 'main');
    assert.equal(d.limit, 7.5);
    assert.equal(d.limit_reset, 'weekly');
    assert.equal(d.is_free_tier, false);
    assert.deepEqual(d.permissions, ['read', 'write']);
    for (const f of ['limit_remaining', 'usage', 'usage_daily', 'usage_weekly', 'usage_monthly', 'expires_at']) assert.ok(f in d, f);
  });
});

describe('rotation', () => {
  test('with a grace period both secrets work inside it, only the new one after', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    assert.equal((await chat(k.key)).status, 200, 'old secret cached before rotation');
    const res = await ctx.admin.call('POST', `/api/keys/${k.id}/rotate`, { grace_seconds: 2 });
    assert.equal(res.status, 200);
    const r = res.body.data;
    assert.equal(r.id, k.id);
    assert.notEqual(r.key, k.key);
    assert.equal(r.key_prefix, r.key.slice(0, 12));
    assert.ok(Date.parse(r.previous_expires_at) > Date.parse(r.rotated_at));
    assert.equal((await chat(k.key)).status, 200, 'old works inside the grace');
    assert.equal((await chat(r.key)).status, 200, 'new works');
    await sleep(2200);
    assert.equal((await chat(k.key)).status, 401, 'old refused after the grace');
    assert.equal((await chat(r.key)).status, 200, 'new still works');
    const same = await ctx.admin.call('GET', `/api/keys/${k.id}`);
    assert.equal(same.body.data.key_prefix, r.key_prefix, 'same key id, new prefix');
  });

  test('without grace the old secret stops at once', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    assert.equal((await chat(k.key)).status, 200);
    const r = (await as(k.key).call('POST', `/api/keys/${k.id}/rotate`)).body.data;
    assert.equal((await chat(k.key)).status, 401);
    assert.equal((await chat(r.key)).status, 200);
  });

  test('the same Idempotency-Key returns the same new secret; a new one rotates again', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    const headers = { 'idempotency-key': `rot-${Date.now()}` };
    const first = await ctx.admin.call('POST', `/api/keys/${k.id}/rotate`, { grace_seconds: 60 }, headers);
    const again = await ctx.admin.call('POST', `/api/keys/${k.id}/rotate`, { grace_seconds: 60 }, headers);
    assert.equal(first.status, 200);
    assert.equal(again.status, 200);
    assert.equal(again.body.data.key, first.body.data.key);
    assert.equal(again.body.data.previous_expires_at, first.body.data.previous_expires_at);
    assert.equal((await chat(first.body.data.key)).status, 200);
    const other = await ctx.admin.call('POST', `/api/keys/${k.id}/rotate`, {}, { 'idempotency-key': `rot-other-${Date.now()}` });
    assert.notEqual(other.body.data.key, first.body.data.key);
    assert.equal((await chat(other.body.data.key)).status, 200);
    assert.equal((await chat(first.body.data.key)).status, 401, 'the superseded secret had no grace');
  });

  // A key that rotates itself and loses the answer repeats with the secret it rotated from, which no longer
  // signs it in (no grace) or may change nothing (in its grace): the repeat still gets the same new secret.
  for (const grace of [0, 60]) {
    test(`a key that rotated itself gets the same secret on a repeat with its old one (grace ${grace} s)`, async () => {
      const u = await ctx.admin.createUser();
      const k = await ctx.admin.createKey(u.id);
      const idem = { 'idempotency-key': `own-${grace}-${k.id}` };
      const rotate = (secret, headers = idem) => as(secret).call('POST', `/api/keys/${k.id}/rotate`, { grace_seconds: grace }, headers);
      const first = await rotate(k.key);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      const again = await rotate(k.key);
      assert.equal(again.status, 200, JSON.stringify(again.body));
      assert.equal(again.body.data.key, first.body.data.key, 'the same new secret');
      assert.equal((await chat(again.body.data.key)).status, 200);
      const other = await rotate(k.key, { 'idempotency-key': `not-${k.id}` });
      assert.equal(other.status, 401, 'the old secret rotates nothing new');
      assert.equal((await rotate(k.key, {})).status, 401, 'nor without the header');
      // Rotated again with the new secret: the first rotation is over, and its repeat gets nothing.
      const next = await rotate(first.body.data.key, { 'idempotency-key': `next-${k.id}` });
      assert.equal(next.status, 200);
      assert.equal((await rotate(k.key)).status, 401, 'a secret two rotations old gets nothing');
      assert.equal((await chat(first.body.data.key)).status, grace ? 200 : 401);
      // A header short enough to guess makes no repeat with the old secret.
      const other2 = await ctx.admin.createKey(u.id);
      const short = { 'idempotency-key': `r-${grace}` };
      const once = await as(other2.key).call('POST', `/api/keys/${other2.id}/rotate`, { grace_seconds: grace }, short);
      assert.equal(once.status, 200);
      assert.equal((await as(other2.key).call('POST', `/api/keys/${other2.id}/rotate`, { grace_seconds: grace }, short)).status, 401);
    });
  }

  test('without a usable ADMIN_TOKEN a rotation with an Idempotency-Key still repeats (the console sends one)', async () => {
    const state = mkdtempSync(path.join(os.tmpdir(), 'no-operator-'));
    let gw = await startGateway({ persistTo: state, syncPrices: false });
    try {
      const admin = adminClient(gw.url, gw.adminToken);
      const u = await admin.createUser();
      const adminKey = (await admin.call('POST', '/api/keys', { user_id: u.id, name: 'admin', permissions: ['read', 'write', 'admin'] })).body.data;
      const k = await admin.createKey(u.id);
      await gw.stop();
      gw = await startGateway({ persistTo: state, vars: { ADMIN_TOKEN: 'short-operator-token' }, syncPrices: false });
      const rotate = () => adminClient(gw.url, adminKey.key).call('POST', `/api/keys/${k.id}/rotate`, {}, { 'idempotency-key': 'console-1' });
      const first = await rotate();
      assert.equal(first.status, 200, JSON.stringify(first.body));
      assert.equal((await rotate()).body.data.key, first.body.data.key);
    } finally {
      await gw.stop();
      rmSync(state, { recursive: true, force: true });
    }
  });

  test('bad rotation input is 400', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    assert.equal((await ctx.admin.call('POST', `/api/keys/${k.id}/rotate`, { grace_seconds: -1 })).status, 400);
    assert.equal((await ctx.admin.call('POST', `/api/keys/${k.id}/rotate`, { grace_seconds: 99999999 })).status, 400);
    assert.equal((await ctx.admin.call('POST', `/api/keys/${k.id}/rotate`, { grace: 5 })).status, 400);
  });
});
