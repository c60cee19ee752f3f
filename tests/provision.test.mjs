// Upstream-key provisioning against the fake OpenRouter key-management API:
// POST /api/admin/provision, /api/admin/openrouter-keys, failures that leave
// nothing half made, and the cron job that mirrors usage from OpenRouter.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import { gatewayForFile } from './fixture.mjs';

const ctx = gatewayForFile();

/** The fake's own view of the keys it holds. */
const upstreamKeys = () => [...ctx.gw.fake.keys.values()].map((k) => k.data);
const fakeControl = (path, body) =>
  fetch(`${ctx.gw.fake.url.replace('/api/v1', '')}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
const provision = (body) => ctx.admin.call('POST', '/api/admin/provision', body);
const usersNamed = async (email) => (await ctx.admin.call('GET', `/api/admin/users?search=${encodeURIComponent(email)}`)).body.data;

describe('provisioning', () => {
  test('makes a user, a working gateway key and an upstream key with the limit in cents, secrets shown once', async () => {
    const res = await provision({ email: 'prov-a@example.com', name: 'Prov A', utm_source: 'ads', locale: 'zh' });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const { user, key, openrouter_key: up } = res.body.data;
    assert.equal(user.email, 'prov-a@example.com');
    assert.equal(user.locale, 'zh');
    assert.equal(user.utm_source, 'ads');
    assert.match(key.key, /^sk-tg-v1-[0-9a-f]{64}$/);
    assert.match(up.key, /^sk-or-v1-[0-9a-f]{64}$/);
    assert.equal(up.limit, 1000, 'default limit: 1000 cents');
    assert.equal(up.limit_reset, 'monthly');
    const made = upstreamKeys().find((k) => k.hash === up.upstream_hash);
    assert.equal(made.limit, 10, 'OpenRouter got USD');
    assert.equal(made.limit_reset, 'monthly');

    const listed = await ctx.admin.call('GET', `/api/admin/openrouter-keys?user_id=${user.id}`);
    assert.equal(listed.status, 200);
    assert.equal(listed.body.data.length, 1);
    assert.equal(listed.body.data[0].key_prefix, up.key.slice(0, 12));
    assert.ok(!JSON.stringify(listed.body).includes(up.key), 'the upstream key text is never shown again');
    assert.ok(!JSON.stringify(listed.body).includes(up.key.slice(12)), 'nor any of its secret part');

    await ctx.admin.credit(user.id, 1);
    const client = new OpenAI({ baseURL: `${ctx.gw.url}/v1`, apiKey: key.key, maxRetries: 0 });
    const answer = await client.chat.completions.create({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(answer.choices[0].message.content, 'Echo: hi');
  });

  test('limit and reset are passed on; bad input is a clear 400 and makes nothing', async () => {
    const res = await provision({ email: 'prov-b@example.com', name: 'Prov B', limit: 250, limit_reset: 'daily' });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const made = upstreamKeys().find((k) => k.hash === res.body.data.openrouter_key.upstream_hash);
    assert.equal(made.limit, 2.5);
    assert.equal(made.limit_reset, 'daily');

    const before = upstreamKeys().length;
    for (const [body, param] of [
      [{ name: 'No Email' }, null],
      [{ email: 'x@example.com', name: 'X', limit: -5 }, 'limit'],
      [{ email: 'x@example.com', name: 'X', limit: 1.5 }, null],
      [{ email: 'x@example.com', name: 'X', limit_reset: 'yearly' }, 'limit_reset'],
      [{ email: 'x@example.com', name: 'X', colour: 'red' }, null],
      [{ email: 'not-an-email', name: 'X' }, 'email'],
    ]) {
      const bad = await provision(body);
      assert.equal(bad.status, 400, JSON.stringify(body));
      assert.equal(bad.body.error.code, 'invalid_request');
      if (param) assert.equal(bad.body.error.param, param);
    }
    const dup = await provision({ email: 'prov-b@example.com', name: 'Again' });
    assert.equal(dup.status, 409);
    assert.equal(upstreamKeys().length, before, 'no upstream key was made for refused requests');
  });

  test('OpenRouter failing to create the key is a 502 that says so, and no user is left behind', async () => {
    const before = upstreamKeys().length;
    await fakeControl('/__keys/fail', { status: 500 });
    const res = await provision({ email: 'prov-c@example.com', name: 'Prov C' });
    assert.equal(res.status, 502);
    assert.equal(res.body.error.code, 'upstream_error');
    assert.match(res.body.error.message, /OpenRouter could not create the upstream key/);
    assert.deepEqual(await usersNamed('prov-c@example.com'), []);
    assert.equal(upstreamKeys().length, before);
    const retry = await provision({ email: 'prov-c@example.com', name: 'Prov C' });
    assert.equal(retry.status, 201, 'a retry works once OpenRouter does');
  });

  test('when the records cannot be written after the upstream key was made, that key is deleted again', async () => {
    // Both requests pass the email check while OpenRouter is slow; one loses the race in D1.
    const before = upstreamKeys().length;
    await fakeControl('/__keys/delay', { ms: 400 });
    const results = await Promise.all([0, 1].map(() => provision({ email: 'prov-race@example.com', name: 'Race' })));
    await fakeControl('/__keys/delay', { ms: 0 });
    assert.deepEqual(results.map((r) => r.status).sort(), [201, 409]);
    const winner = results.find((r) => r.status === 201).body.data;
    assert.equal((await usersNamed('prov-race@example.com')).length, 1);
    assert.equal(upstreamKeys().length, before + 1, 'the loser\u2019s upstream key was cleaned up');
    assert.ok(upstreamKeys().some((k) => k.hash === winner.openrouter_key.upstream_hash));
  });

  test('PATCH and DELETE are mirrored to OpenRouter; an OpenRouter failure changes nothing', async () => {
    const res = await provision({ email: 'prov-d@example.com', name: 'Prov D', limit: 100 });
    const id = res.body.data.openrouter_key.id;
    const hash = res.body.data.openrouter_key.upstream_hash;
    const patched = await ctx.admin.call('PATCH', `/api/admin/openrouter-keys/${id}`, { limit: 2000, limit_reset: 'weekly' });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    assert.equal(patched.body.data.limit, 2000);
    assert.equal(patched.body.data.limit_reset, 'weekly');
    assert.equal(ctx.gw.fake.keys.get(hash).data.limit, 20);

    await fakeControl('/__keys/fail', { status: 503 });
    const failed = await ctx.admin.call('PATCH', `/api/admin/openrouter-keys/${id}`, { disabled: true });
    assert.equal(failed.status, 502);
    const still = (await ctx.admin.call('GET', '/api/admin/openrouter-keys')).body.data.find((k) => k.id === id);
    assert.equal(still.disabled, false, 'the record follows OpenRouter, never runs ahead of it');
    assert.equal(ctx.gw.fake.keys.get(hash).data.disabled, false);

    const disabled = await ctx.admin.call('PATCH', `/api/admin/openrouter-keys/${id}`, { disabled: true });
    assert.equal(disabled.body.data.disabled, true);
    assert.equal(ctx.gw.fake.keys.get(hash).data.disabled, true);
    assert.equal((await ctx.admin.call('PATCH', `/api/admin/openrouter-keys/${id}`, {})).status, 400);
    assert.equal((await ctx.admin.call('PATCH', `/api/admin/openrouter-keys/${id}`, { limit: -1 })).status, 400);

    const deleted = await ctx.admin.call('DELETE', `/api/admin/openrouter-keys/${id}`);
    assert.equal(deleted.status, 200);
    assert.equal(ctx.gw.fake.keys.has(hash), false);
    assert.equal((await ctx.admin.call('DELETE', `/api/admin/openrouter-keys/${id}`)).status, 404);
  });

  test("deleting a user disables its upstream keys at OpenRouter first; should OpenRouter refuse, nothing is deleted", async () => {
    // The key was handed to the user: left live, it would go on spending the tenant's OpenRouter credits.
    const res = await provision({ email: 'prov-gone@example.com', name: 'Prov Gone' });
    const { user, openrouter_key: up } = res.body.data;
    await fakeControl('/__keys/fail', { status: 503 });
    const refused = await ctx.admin.call('DELETE', `/api/admin/users/${user.id}`);
    assert.equal(refused.status, 502, JSON.stringify(refused.body));
    assert.equal((await ctx.admin.call('GET', `/api/admin/users/${user.id}`)).status, 200, 'the user is still there');
    assert.equal(ctx.gw.fake.keys.get(up.upstream_hash).data.disabled, false);

    const deleted = await ctx.admin.call('DELETE', `/api/admin/users/${user.id}`);
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    assert.equal(deleted.body.data.upstream_keys_disabled, 1);
    assert.equal(ctx.gw.fake.keys.get(up.upstream_hash).data.disabled, true, 'OpenRouter stops the key');
    const record = (await ctx.admin.call('GET', `/api/admin/openrouter-keys?user_id=${user.id}`)).body.data[0];
    assert.equal(record.disabled, true);
    assert.equal((await ctx.admin.call('GET', `/api/admin/users/${user.id}`)).status, 404);

    // Each key is disabled whatever its record says (enabled again at OpenRouter since), and one
    // OpenRouter no longer has is forgotten: neither blocks the delete.
    const two = (await provision({ email: 'prov-gone-2@example.com', name: 'Prov Gone 2' })).body.data;
    const three = (await provision({ email: 'prov-gone-3@example.com', name: 'Prov Gone 3' })).body.data;
    await ctx.admin.call('PATCH', `/api/admin/openrouter-keys/${two.openrouter_key.id}`, { disabled: true });
    ctx.gw.fake.keys.get(two.openrouter_key.upstream_hash).data.disabled = false; // enabled at OpenRouter
    assert.equal((await ctx.admin.call('DELETE', `/api/admin/users/${two.user.id}`)).status, 200);
    assert.equal(ctx.gw.fake.keys.get(two.openrouter_key.upstream_hash).data.disabled, true);
    ctx.gw.fake.keys.delete(three.openrouter_key.upstream_hash); // deleted at OpenRouter
    const gone = await ctx.admin.call('DELETE', `/api/admin/users/${three.user.id}`);
    assert.equal(gone.status, 200, JSON.stringify(gone.body));
    assert.equal((await ctx.admin.call('GET', `/api/admin/openrouter-keys?user_id=${three.user.id}`)).body.data.length, 0);
  });

  test('the cron job mirrors usage, limits and state from OpenRouter', async () => {
    const res = await provision({ email: 'prov-e@example.com', name: 'Prov E', limit: 500 });
    const { id, upstream_hash: hash } = res.body.data.openrouter_key;
    await fakeControl(`/__keys/${hash}/usage`, { usage: 1.25 });
    ctx.gw.fake.keys.get(hash).data.limit = 7.5; // changed on OpenRouter's side
    ctx.gw.fake.keys.get(hash).data.disabled = true; // OpenRouter lists it only when asked for disabled keys too
    const cron = await fetch(`${ctx.gw.url}/__scheduled?cron=${encodeURIComponent('*/15 * * * *')}`);
    assert.equal(cron.status, 200);
    const row = (await ctx.admin.call('GET', '/api/admin/openrouter-keys')).body.data.find((k) => k.id === id);
    assert.equal(row.usage, 1.25);
    assert.equal(row.limit, 750);
    assert.equal(row.disabled, true, 'disabled on its side');
    assert.ok(row.synced_at, 'the mirror time is recorded');
  });

  test('past a page of OpenRouter keys the mirror goes on through the queue, a page a message', async () => {
    // 230 upstream keys (three pages of OpenRouter's list), planted on both sides: in the fake and in D1.
    const user = await ctx.admin.createUser({ name: 'Many keys' }, { credit: 0 });
    const now = new Date().toISOString();
    const hashes = Array.from({ length: 230 }, (_, i) => createHash('sha256').update(`many-${i}`).digest('hex'));
    hashes.forEach((hash, i) => ctx.gw.fake.keys.set(hash, {
      data: { hash, name: `many ${i}`, label: 'sk-or-v1-ab...xyz', disabled: i % 7 === 0, limit: i + 1, limit_reset: null, usage: i / 100, created_at: now, updated_at: null },
    }));
    for (let start = 0; start < hashes.length; start += 50) {
      const values = hashes.slice(start, start + 50).map((h, j) =>
        `('ork-many-${start + j}', '${user.id}', '${h}', '${'0'.repeat(64)}', 'sk-or-v1-ab', 'many ${start + j}', NULL, NULL, 0, 0, '${now}', '${now}')`);
      await ctx.gw.sql(`INSERT INTO openrouter_keys (id, user_id, upstream_hash, key_hash, key_prefix, name, limit_cents, limit_reset, disabled, usage_micros, created_at, updated_at) VALUES ${values.join(', ')}`);
    }
    const cron = await fetch(`${ctx.gw.url}/__scheduled?cron=${encodeURIComponent('*/15 * * * *')}`);
    assert.equal(cron.status, 200);
    let rows = [];
    for (let i = 0; i < 120; i++) {
      rows = (await ctx.admin.call('GET', `/api/admin/openrouter-keys?user_id=${user.id}`)).body.data;
      if (rows.every((r) => r.synced_at)) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(rows.length, hashes.length);
    for (const row of rows) {
      const i = Number(row.name.split(' ')[1]);
      assert.ok(row.synced_at, `key ${i} mirrored`);
      assert.equal(row.usage, i / 100, `key ${i}: usage`);
      assert.equal(row.limit, (i + 1) * 100, `key ${i}: limit in cents`);
      assert.equal(row.disabled, i % 7 === 0, `key ${i}: state`);
    }
  });
});
