// In-flight caps: a key may have at most MAX_IN_FLIGHT_PER_KEY requests running at once.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { gatewayForFile } from './fixture.mjs';

const ctx = gatewayForFile({ vars: { MAX_IN_FLIGHT_PER_KEY: '2' } });

test('a third concurrent request of one key is 429 with retry-after; others keys are unaffected', async () => {
  const user = await ctx.admin.createUser();
  const key = await ctx.admin.createKey(user.id);
  const other = await ctx.admin.createKey(user.id);
  const slow = (token) => fetch(`${ctx.gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], fake_fault: 'slow:800' }),
  });
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
