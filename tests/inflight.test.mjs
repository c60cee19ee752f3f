// In-flight caps: a key may have at most MAX_IN_FLIGHT_PER_KEY requests running at once, an account at most
// MAX_IN_FLIGHT_PER_ACCOUNT (whichever of its keys they come from).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { gatewayForFile } from './fixture.mjs';
import { withGateway } from './harness.mjs';

const ctx = gatewayForFile({ vars: { MAX_IN_FLIGHT_PER_KEY: '2' } });

/** A non-streamed chat the fake answers after `ms` (`signal`: to hang up on it). */
const slowChat = (url, token, ms = 800, signal) => fetch(`${url}/v1/chat/completions`, {
  method: 'POST',
  signal,
  headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
  body: JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], fake_fault: `slow:${ms}` }),
});

test('a third concurrent request of one key is 429 with retry-after; others keys are unaffected', async () => {
  const user = await ctx.admin.createUser();
  const key = await ctx.admin.createKey(user.id);
  const other = await ctx.admin.createKey(user.id);
  const slow = (token) => slowChat(ctx.gw.url, token);
  const running = [slow(key.key), slow(key.key)];
  await new Promise((r) => setTimeout(r, 300));
  const third = await slow(key.key);
  assert.equal(third.status, 429);
  assert.equal(third.headers.get('retry-after'), '1');
  assert.match((await third.json()).error.message, /in flight/);
  const otherKey = await slow(other.key);
  assert.equal(otherKey.status, 200, 'the cap is per key');
  for (const r of await Promise.all(running)) assert.equal(r.status, 200);
  assert.equal((await slow(key.key)).status, 200, 'once they finished, the key runs again');
});

test("an account's cap holds across its keys, and a request whose client hung up keeps its place until it ends", { timeout: 120_000 }, async () => {
  await withGateway({ vars: { MAX_IN_FLIGHT_PER_ACCOUNT: '3' } }, async (gw, admin) => {
    const user = await admin.createUser({}, { credit: 1 });
    const keys = [await admin.createKey(user.id), await admin.createKey(user.id)];
    // Ten at once from two keys: exactly three run.
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => slowChat(gw.url, keys[i % 2].key)));
    const statuses = await Promise.all(results.map(async (r) => (await r.arrayBuffer(), r.status)));
    assert.deepEqual([statuses.filter((s) => s === 200).length, statuses.filter((s) => s === 429).length], [3, 7]);
    // Three whose clients hang up at once: the upstream still works on them, so they keep their places.
    const abort = new AbortController();
    const gone = Array.from({ length: 3 }, (_, i) => slowChat(gw.url, keys[i % 2].key, 1500, abort.signal).catch(() => null));
    await new Promise((r) => setTimeout(r, 300));
    abort.abort();
    await Promise.all(gone);
    const meanwhile = await slowChat(gw.url, keys[1].key, 0);
    assert.equal(meanwhile.status, 429, 'the hung-up requests still run');
    await meanwhile.arrayBuffer();
    // Once they ended (and settled), the account runs again.
    let after = 429;
    for (let i = 0; i < 40 && after === 429; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const res = await slowChat(gw.url, keys[0].key, 0);
      after = res.status;
      await res.arrayBuffer();
    }
    assert.equal(after, 200);
  });
});
