// Trust boundaries (issue 15): no key climbs above its permissions or leaves its
// organization; a removed permission is refused everywhere at once; a repeated
// DELETE; anonymous callers cost (almost) nothing; bodies are counted as they
// stream in; the contract's body form of PUT /api/admin/routes; names.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';

import { chatAs, gatewayForFile } from './fixture.mjs';
import { ROOT, run } from './harness.mjs';

const FAILURE_LIMIT = 20;
const ctx = gatewayForFile({ vars: { AUTH_FAILURE_LIMIT: String(FAILURE_LIMIT) } });

async function as(token, method, p, body) {
  const res = await fetch(ctx.gw.url + p, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const PERMS = { read: ['read'], 'read,write': ['read', 'write'], admin: ['admin'] };

describe('no key climbs above its permissions or leaves its organization', () => {
  test('the permission table: every key-management route × caller × target × relation', async () => {
    const a = await ctx.admin.createUser({ name: 'A' });
    const b = await ctx.admin.createUser({ name: 'B' });
    const org = (await ctx.admin.call('POST', '/api/orgs', { name: `Org ${a.id}` })).body.data;
    const other = (await ctx.admin.call('POST', '/api/orgs', { name: `Other ${a.id}` })).body.data;
    const key = async (user, perms, orgId) => {
      const res = orgId
        ? await ctx.admin.call('POST', `/api/orgs/${orgId}/keys`, { name: 'k', user_id: user.id, permissions: PERMS[perms] })
        : await ctx.admin.call('POST', '/api/keys', { name: 'k', user_id: user.id, permissions: PERMS[perms] });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.data;
    };
    // Where the target is, seen from a caller of user A (outside any org, or in `org`).
    const relations = {
      'same user': (callerOrg) => [a, callerOrg],
      'other user': (callerOrg) => [b, callerOrg],
      'same org': () => [a, org.id],
      'other org': () => [a, other.id],
    };
    let checked = 0;
    for (const callerPerms of Object.keys(PERMS)) {
      for (const callerOrg of [null, org.id]) {
        const caller = await key(a, callerPerms, callerOrg);
        for (const targetPerms of Object.keys(PERMS)) {
          for (const [relation, where] of Object.entries(relations)) {
            const [owner, targetOrg] = where(callerOrg);
            const target = await key(owner, targetPerms, targetOrg);
            const admin = callerPerms === 'admin';
            const visible = admin || (owner === a && targetOrg === callerOrg);
            const canWrite = callerPerms !== 'read';
            const within = admin || targetPerms !== 'admin';
            // A route the caller's permissions do not open is 403 before anything is looked up;
            // a key it must not see is 404; a key it sees but may not manage is 403.
            const expect = (needsWrite, manages) =>
              needsWrite && !canWrite ? 403 : !visible ? 404 : manages && !within ? 403 : 200;
            const label = `${callerPerms}${callerOrg ? ' (org)' : ''} → ${targetPerms}, ${relation}`;
            assert.equal((await as(caller.key, 'GET', `/api/keys/${target.id}`)).status, expect(false, false), `GET ${label}`);
            assert.equal((await as(caller.key, 'PATCH', `/api/keys/${target.id}`, { name: 'renamed' })).status, expect(true, true), `PATCH ${label}`);
            const rotated = await as(caller.key, 'POST', `/api/keys/${target.id}/rotate`, {});
            assert.equal(rotated.status, expect(true, true), `rotate ${label}`);
            assert.equal((await as(caller.key, 'DELETE', `/api/keys/${target.id}`)).status, expect(true, true), `DELETE ${label}`);
            checked += 4;
          }
        }
      }
    }
    assert.equal(checked, 3 * 2 * 3 * 4 * 4);
  });

  test('a read,write key cannot take over its user\'s admin key, by rotation or a replayed Idempotency-Key', async () => {
    const u = await ctx.admin.createUser();
    const adminKey = await ctx.admin.createKey(u.id, { permissions: ['admin'] });
    const rw = await ctx.admin.createKey(u.id);
    assert.equal((await as(rw.key, 'POST', `/api/keys/${adminKey.id}/rotate`, {})).status, 403);
    // The operator rotates with an idempotency key; the same header replayed by the key gets no secret.
    const first = await ctx.admin.call('POST', `/api/keys/${adminKey.id}/rotate`, {}, { 'idempotency-key': 'rotate-1' });
    assert.equal(first.status, 200);
    const replay = await fetch(`${ctx.gw.url}/api/keys/${adminKey.id}/rotate`, {
      method: 'POST', headers: { authorization: `Bearer ${rw.key}`, 'idempotency-key': 'rotate-1' },
    });
    assert.equal(replay.status, 403);
    assert.equal((await as(first.body.data.key, 'GET', '/api/admin/users')).status, 200, 'the operator still holds the admin secret');
  });

  test('a key may not widen what it creates or changes beyond its own terms, and its keys stay in its org', async () => {
    const u = await ctx.admin.createUser();
    const org = (await ctx.admin.call('POST', '/api/orgs', { name: `Walls ${u.id}` })).body.data;
    const expires = new Date(Date.now() + 86_400_000).toISOString();
    const later = new Date(Date.now() + 2 * 86_400_000).toISOString();
    const orgKey = (await ctx.admin.call('POST', `/api/orgs/${org.id}/keys`, { name: 'org', user_id: u.id, expires_at: expires })).body.data;
    const token = await as(orgKey.key, 'POST', '/api/token', { name: 'mine' });
    assert.equal(token.status, 201, JSON.stringify(token.body));
    assert.equal(token.body.data.org_id, org.id, 'a key made by an org key belongs to the org');
    assert.ok(Date.parse(token.body.data.expires_at) <= Date.parse(expires), 'and expires no later than its maker');
    // Which key made it is kept, so a leaked key's keys are found and revoked with it.
    assert.equal(token.body.data.created_by, orgKey.id);
    assert.equal(orgKey.created_by, null, 'made by the operator');
    const made = await ctx.admin.call('GET', `/api/keys?created_by=${orgKey.id}`);
    assert.deepEqual(made.body.data.map((k) => k.id), [token.body.data.id]);
    assert.equal((await as(orgKey.key, 'POST', '/api/keys', { name: 'late', expires_at: later })).status, 403);
    const out = await as(orgKey.key, 'POST', '/api/keys', { name: 'out', expires_at: expires, org_id: null });
    assert.equal(out.status, 201);
    assert.equal(out.body.data.org_id, org.id, 'org_id: null does not walk out of the org');
    const elsewhere = (await ctx.admin.call('POST', '/api/orgs', { name: `Elsewhere ${u.id}` })).body.data;
    assert.equal((await as(orgKey.key, 'POST', '/api/keys', { name: 'x', expires_at: expires, org_id: elsewhere.id })).status, 403);
    assert.equal((await as(orgKey.key, 'POST', '/api/keys', { name: 'x', expires_at: expires, org_id: 'no-such-org' })).status, 403,
      'a refusal says nothing about whether an organization exists');
    // A holder cannot clear or widen what the operator set on its own key.
    const limited = (await ctx.admin.call('POST', `/api/orgs/${org.id}/keys`, { name: 'limited', user_id: u.id, limit: 1, limit_reset: 'monthly', expires_at: expires })).body.data;
    assert.equal((await as(limited.key, 'POST', '/api/token', { name: 'more' })).status, 403, 'a limited key makes no keys');
    assert.equal((await as(limited.key, 'PATCH', `/api/keys/${limited.id}`, { limit: null })).status, 403);
    assert.equal((await as(limited.key, 'PATCH', `/api/keys/${limited.id}`, { limit: 2 })).status, 403);
    assert.equal((await as(limited.key, 'PATCH', `/api/keys/${limited.id}`, { limit_reset: 'daily' })).status, 403);
    assert.equal((await as(limited.key, 'PATCH', `/api/keys/${limited.id}`, { expires_at: null })).status, 403);
    assert.equal((await as(limited.key, 'PATCH', `/api/keys/${limited.id}`, { limit: 0.25 })).status, 200, 'narrowing is allowed');
    // Nor rotate a sibling with wider terms (that would hand it the sibling's secret).
    assert.equal((await as(limited.key, 'POST', `/api/keys/${orgKey.id}/rotate`, {})).status, 403);
    // Nor disable, narrow or delete it: a key with a limit manages only keys whose terms are within its own.
    const narrowed = { disabled: true, limit: 1, limit_reset: 'monthly', expires_at: expires };
    assert.equal((await as(limited.key, 'PATCH', `/api/keys/${orgKey.id}`, narrowed)).status, 403);
    assert.equal((await as(limited.key, 'PUT', `/api/keys/${orgKey.id}/end-users/alice`, { limit: 0 })).status, 403);
    assert.equal((await as(limited.key, 'DELETE', `/api/keys/${orgKey.id}`)).status, 403);
    const sibling = await ctx.admin.call('GET', `/api/keys/${orgKey.id}`);
    assert.equal(sibling.body.data.disabled, false, 'the wider sibling is untouched');
    assert.equal(sibling.body.data.limit, null);
    // The wider key still manages the narrower one.
    assert.equal((await as(orgKey.key, 'PATCH', `/api/keys/${limited.id}`, { limit: 0.1 })).status, 200);
    // A key that narrowed itself since it made a key still deletes what it made (taking a key away widens
    // nothing), but changes it no more.
    const sooner = new Date(Date.parse(expires) - 3_600_000).toISOString();
    assert.equal((await as(orgKey.key, 'PATCH', `/api/keys/${orgKey.id}`, { expires_at: sooner })).status, 200);
    assert.equal((await as(orgKey.key, 'PATCH', `/api/keys/${token.body.data.id}`, { name: 'renamed' })).status, 403);
    assert.equal((await as(orgKey.key, 'DELETE', `/api/keys/${token.body.data.id}`)).status, 200);
    assert.equal((await as(orgKey.key, 'DELETE', `/api/keys/${limited.id}`)).status, 403, 'a key it did not make, wider than it now');
  });

  test('a secret rotated out manages nothing, and only an admin enables a disabled key', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    const sibling = await ctx.admin.createKey(u.id);
    const rotated = await ctx.admin.call('POST', `/api/keys/${k.id}/rotate`, { grace_seconds: 600 });
    assert.equal(rotated.status, 200);
    assert.equal((await chatAs(ctx.gw.url, k.key)).status, 200, 'the old secret still serves inference in its grace');
    assert.equal((await as(k.key, 'POST', `/api/keys/${k.id}/rotate`, {})).status, 401, 'but cannot take the key back');
    assert.equal((await as(k.key, 'PATCH', `/api/keys/${k.id}`, { name: 'mine now' })).status, 401);
    assert.equal((await as(k.key, 'POST', '/api/token', { name: 'spare' })).status, 401);
    assert.equal((await as(k.key, 'GET', '/api/v1/key')).status, 200, 'reading its own status is fine');
    const count = { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] };
    assert.equal((await as(k.key, 'POST', '/v1/messages/count_tokens', count)).status, 200, 'nor counting tokens');
    assert.equal((await as(rotated.body.data.key, 'PATCH', `/api/keys/${k.id}`, { name: 'renamed' })).status, 200);
    await ctx.admin.call('PATCH', `/api/keys/${sibling.id}`, { disabled: true });
    assert.equal((await as(rotated.body.data.key, 'PATCH', `/api/keys/${sibling.id}`, { disabled: false })).status, 403);
    assert.equal((await ctx.admin.call('PATCH', `/api/keys/${sibling.id}`, { disabled: false })).status, 200);
  });
});

describe('revocation reaches everything', () => {
  test('a removed write permission is refused on the very next request, whatever a cache still holds', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    assert.equal((await chatAs(ctx.gw.url, k.key)).status, 200, 'caches now hold the key with write');
    assert.equal((await ctx.admin.call('PATCH', `/api/keys/${k.id}`, { permissions: ['read'] })).status, 200);
    // Plant the record as it was, as another isolate's or colo's cache would still hold it.
    const record = JSON.stringify({ id: k.id, user_id: u.id, org_id: null, permissions: 'read,write', valid_until_ms: null, disabled: false, deleted: false });
    await run(path.join(ROOT, 'scripts', 'wrangler'), [
      'kv', 'key', 'put', '--binding', 'CACHE', `key:v2:${createHash('sha256').update(k.key).digest('hex')}`, record, '--local', '--persist-to', ctx.gw.state,
    ]);
    const res = await chatAs(ctx.gw.url, k.key);
    assert.equal(res.status, 403);
    assert.match((await res.json()).error.message, /write/);
  });

  test('a disabled key counts no tokens, whatever a cache still holds', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    const count = { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hello there' }] };
    assert.equal((await as(k.key, 'POST', '/v1/messages/count_tokens', count)).status, 200);
    assert.equal((await ctx.admin.call('PATCH', `/api/keys/${k.id}`, { disabled: true })).status, 200);
    // No account object sees a count: the key's record in a cache elsewhere must not serve it.
    const record = JSON.stringify({ id: k.id, user_id: u.id, org_id: null, permissions: 'read,write', valid_until_ms: null, disabled: false, deleted: false });
    await run(path.join(ROOT, 'scripts', 'wrangler'), [
      'kv', 'key', 'put', '--binding', 'CACHE', `key:v2:${createHash('sha256').update(k.key).digest('hex')}`, record, '--local', '--persist-to', ctx.gw.state,
    ]);
    const res = await as(k.key, 'POST', '/v1/messages/count_tokens', count);
    assert.equal(res.status, 401);
    assert.match(res.body.error.message, /disabled/);
  });

  // During a deploy, isolates of the old version keep writing their own shape of a key's record: a new
  // isolate must not read one with its new fields (here the allowlist) missing.
  test("an older version's cached record of a key is not read", async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id, { allowed_models: ['openai/gpt-4o-mini'] });
    const record = JSON.stringify({ id: k.id, user_id: u.id, org_id: null, permissions: 'read,write', valid_until_ms: null, disabled: false, deleted: false });
    await run(path.join(ROOT, 'scripts', 'wrangler'), [
      'kv', 'key', 'put', '--binding', 'CACHE', `key:${createHash('sha256').update(k.key).digest('hex')}`, record, '--local', '--persist-to', ctx.gw.state,
    ]);
    const res = await as(k.key, 'POST', '/v1/chat/completions', { model: 'anthropic/claude-sonnet-4-6', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(res.status, 403, 'the allowlist binds');
    assert.equal((await chatAs(ctx.gw.url, k.key)).status, 200);
  });

  test('a repeated DELETE answers the same', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    const own = await ctx.admin.createKey(u.id);
    for (let i = 0; i < 2; i++) {
      const res = await ctx.admin.call('DELETE', `/api/keys/${k.id}`);
      assert.equal(res.status, 200, `DELETE #${i + 1}`);
      assert.deepEqual(res.body.data, { id: k.id, deleted: true });
    }
    assert.equal((await chatAs(ctx.gw.url, k.key)).status, 401);
    assert.equal((await as(own.key, 'DELETE', `/api/keys/${own.id}`)).status, 200);
    assert.equal((await as(own.key, 'DELETE', `/api/keys/${own.id}`)).status, 401, 'a deleted key cannot call at all');
  });
});

describe('bodies and names', () => {
  test('a 20 MB chunked body gets 413 long before it has all been sent', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    const chunk = new Uint8Array(256 * 1024).fill(0x20);
    let sent = 0;
    const body = new ReadableStream({
      async pull(controller) {
        if (sent >= 20 * 1024 * 1024) return controller.close();
        sent += chunk.length;
        controller.enqueue(chunk);
        await new Promise((r) => setTimeout(r, 5));
      },
    });
    const res = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST', body, duplex: 'half',
      headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json' },
    }).catch((e) => e);
    if (res instanceof Error) {
      // The gateway may close the connection as it answers; what matters is how much it took.
      assert.ok(sent < 20 * 1024 * 1024, `the upload was cut short (${sent} bytes sent): ${res.message}`);
    } else {
      assert.equal(res.status, 413);
      assert.ok(sent < 20 * 1024 * 1024, `answered after ${sent} bytes`);
      // The body may be cut as the gateway closes the upload; when it arrives, it says why.
      const text = await res.text().catch(() => '');
      if (text) assert.match(JSON.parse(text).error.message, /larger than 8388608 bytes/);
    }
  });

  // HTTP lets a transfer coding override a declared length. The runtime in front of the Worker drops the length
  // before the Worker sees the request, so this body streams in and is counted; `Incoming::bytes_up_to`
  // would stream it too if a runtime passed both headers on.
  test('a small Content-Length beside a chunked 160 MB body does not make the gateway read it all', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    const { port } = new URL(ctx.gw.url);
    const chunk = Buffer.alloc(256 * 1024, 0x20);
    // Far past the 8 MB the gateway reads: the refusal has to arrive before the client is done writing,
    // and a fast local socket pushes 20 MB in about the time the answer takes.
    const whole = 160 * 1024 * 1024;
    const upload = await new Promise((resolve) => {
      let sent = 0;
      let answer = '';
      const socket = net.connect(Number(port), '127.0.0.1', async () => {
        socket.write(
          `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${k.key}\r\n` +
            'Content-Type: application/json\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n',
        );
        while (sent < whole && !socket.destroyed && !answer) {
          const ok = socket.write(`${chunk.length.toString(16)}\r\n`) && socket.write(chunk) && socket.write('\r\n');
          sent += chunk.length;
          if (!ok) await new Promise((r) => socket.once('drain', r).once('close', r));
        }
        if (!socket.destroyed) socket.end('0\r\n\r\n');
      });
      socket.on('data', (d) => (answer += d));
      socket.on('error', () => {});
      socket.on('close', () => resolve({ sent, answer }));
      setTimeout(() => socket.destroy(), 30_000);
    });
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(upload.answer)?.[1] ?? 0);
    // Refused (413 from the gateway; locally the dev proxy may report the upload it could not finish as 500).
    assert.ok(status === 0 || status >= 400, `refused, not served (${upload.answer.slice(0, 80)})`);
    assert.ok(upload.sent < whole, `the upload was cut short, not read whole (${upload.sent} bytes sent)`);
  });

  test('a body of millions of JSON values is refused before it is parsed, in each endpoint\'s own shape', async () => {
    // 8 MiB of zeros would take hundreds of MB parsed, past the isolate's memory: refused by counting first.
    const u = await ctx.admin.createUser({}, { credit: 1 });
    const k = await ctx.admin.createKey(u.id);
    const zeros = Array(4_000_000).fill(0);
    const wide = [
      ['/v1/embeddings', { model: 'openai/text-embedding-3-small', input: zeros }, (b) => b.error.message],
      ['/v1/completions', { model: 'openai/gpt-4o-mini', prompt: zeros }, (b) => b.error.message],
      ['/v1/chat/completions', { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], metadata: { z: Array(200_000).fill({ a: 0 }) } }, (b) => b.error.message],
      ['/v1/messages', { model: 'anthropic/claude-3-5-haiku', max_tokens: 5, messages: [{ role: 'user', content: 'x' }], metadata: { z: zeros } }, (b) => b.type === 'error' && b.error.message],
    ];
    for (const [route, body, message] of wide) {
      const res = await fetch(`${ctx.gw.url}${route}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      assert.equal(res.status, 400, `${route}: ${text.slice(0, 200)}`);
      assert.match(message(JSON.parse(text)), /JSON values or objects/, route);
    }
    assert.equal((await chatAs(ctx.gw.url, k.key)).status, 200, 'and the gateway goes on serving');
  });

  test('names refuse control and bidirectional characters', async () => {
    const u = await ctx.admin.createUser();
    for (const name of ['evil\u202Egnp.exe', 'bell\u0007', '\u2066x']) {
      const res = await ctx.admin.call('POST', '/api/keys', { name, user_id: u.id });
      assert.equal(res.status, 400, JSON.stringify(name));
      assert.equal(res.body.error.param, 'name');
    }
    const user = await ctx.admin.call('POST', '/api/admin/users', { email: `bidi-${u.id}@example.com`, name: 'A\u202EB' });
    assert.equal(user.status, 400);
  });

  test('PUT /api/admin/routes takes the model in the body too', async () => {
    const res = await ctx.admin.call('PUT', '/api/admin/routes', { model: 'openai/gpt-4o', provider: 'openrouter' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.data.model, 'openai/gpt-4o');
    assert.equal(res.body.data.pinned, true);
    const missing = await ctx.admin.call('PUT', '/api/admin/routes', { provider: 'openrouter' });
    assert.equal(missing.status, 400);
    assert.equal(missing.body.error.param, 'model');
    await ctx.admin.call('DELETE', '/api/admin/routes/openai/gpt-4o');
  });
});

// Last: it leaves this client refused for failed authentications for a minute.
describe('anonymous callers cost almost nothing', () => {
  test('after a few unknown keys a client is refused without lookups, while a key in use goes on working', async () => {
    const u = await ctx.admin.createUser();
    const k = await ctx.admin.createKey(u.id);
    assert.equal((await chatAs(ctx.gw.url, k.key)).status, 200);
    const statuses = {};
    for (let i = 0; i < 1000; i++) {
      const random = `sk-tg-v1-${createHash('sha256').update(`random ${i} ${Date.now()}`).digest('hex')}`;
      const res = await fetch(`${ctx.gw.url}/api/v1/key`, { headers: { authorization: `Bearer ${random}` } });
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      if (res.status === 429) assert.ok(Number(res.headers.get('retry-after')) > 0);
      await res.arrayBuffer();
    }
    assert.ok(statuses[401] <= FAILURE_LIMIT + 1, JSON.stringify(statuses));
    assert.ok(statuses[429] >= 1000 - FAILURE_LIMIT - 1, `only the first ${FAILURE_LIMIT} were looked up: ${JSON.stringify(statuses)}`);
    assert.equal((await chatAs(ctx.gw.url, k.key)).status, 200, 'a key this isolate knows is not refused');
    const count = { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] };
    assert.equal((await as(k.key, 'POST', '/v1/messages/count_tokens', count)).status, 200, 'nor read from D1 for it');
    assert.equal((await as(k.key, 'GET', '/api/v1/key')).status, 200);
  });

  test('the public price list and plain health answer without a key', async () => {
    assert.equal((await fetch(`${ctx.gw.url}/health`)).status, 200);
    const list = await fetch(`${ctx.gw.url}/api/models/pricing`).then((r) => r.json());
    assert.ok(list.data.length > 0);
    assert.ok(list.data.every((p) => !('upstream_pricing_input' in p)));
  });
});
