// Shared set-up for the integration test files (kept out of harness.mjs, which
// npm start and the bench also load).

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import { adminClient, startGateway } from './harness.mjs';

/**
 * One gateway for the whole test file: started before its tests, stopped after.
 * Returns an object whose `gw` and `admin` are set once the gateway is up.
 */
export function gatewayForFile(options) {
  const ctx = { gw: null, admin: null };
  before(async () => {
    ctx.gw = await startGateway(options);
    ctx.admin = adminClient(ctx.gw.url, ctx.gw.adminToken);
  });
  after(async () => {
    await ctx.gw?.stop();
  });
  return ctx;
}

/** A minimal non-streamed chat with `token` (raw fetch, so any status can be inspected). */
export function chatAs(url, token) {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
  });
}

/** The user's usage rows in the ledger, once there are at least `count` (settlements land just after answers). */
export async function usageRows(admin, userId, count) {
  for (let i = 0; i < 100; i++) {
    const rows = (await admin.call('GET', `/api/balance/transactions?user_id=${userId}&page_size=100`)).body.data;
    const usage = rows.filter((r) => r.type === 'usage');
    if (usage.length >= count) return usage;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the ledger never showed ${count} charges`);
}

/**
 * How long a count of charges is watched once reached: a second charge of one request (its settlement sent
 * again after a try that failed, 0.25 s and then 0.5 s later) lands within it.
 */
export const SETTLE_WATCH_MS = 1_000;

/**
 * The user's usage rows once there are `count`, read again `SETTLE_WATCH_MS` later: exactly `count` then (a
 * request charged twice, its second charge landing after the first, fails here).
 */
export async function settledRows(admin, userId, count) {
  await usageRows(admin, userId, count);
  await new Promise((r) => setTimeout(r, SETTLE_WATCH_MS));
  const rows = (await admin.call('GET', `/api/balance/transactions?user_id=${userId}&page_size=100`)).body.data;
  const usage = rows.filter((r) => r.type === 'usage');
  assert.equal(usage.length, count, `exactly ${count} charges, ${SETTLE_WATCH_MS} ms after they landed: ${JSON.stringify(usage)}`);
  return usage;
}

/** The usage record (`GET /api/v1/generation`) of a request by its id or its answer's, once it has been copied to D1. */
export async function generationOf(admin, id) {
  for (let i = 0; i < 50; i++) {
    const g = await admin.call('GET', `/api/v1/generation?id=${encodeURIComponent(id)}`);
    if (g.status === 200) return g.body.data;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no usage record for ${id}`);
}

/**
 * Streams a request (`body` as JSON to `path`, with `headers`) and hangs up once `until` has come in what was
 * read; answers the request id. Fails should the stream end before it.
 */
export async function hangUpOnStream(url, path, headers, body, until) {
  const abort = new AbortController();
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    signal: abort.signal,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const reader = res.body.getReader();
  let seen = '';
  while (!seen.includes(until)) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`the stream ended (${res.status}) before ${until}: ${seen}`);
    seen += new TextDecoder().decode(value);
  }
  abort.abort();
  return res.headers.get('x-request-id');
}

/**
 * Hangs up twice in turn, then four times at once (`hangUp` answers a request id), and checks that each of
 * the six was charged once (and nothing else charged, `SETTLE_WATCH_MS` on), more than nothing and less than
 * `whole` micro-USD (the whole answer's cost). `before`: usage rows the user had already.
 */
export async function hangUpsChargedOnce(admin, userId, hangUp, whole, before = 0) {
  const ids = [await hangUp(), await hangUp()];
  ids.push(...(await Promise.all([hangUp(), hangUp(), hangUp(), hangUp()])));
  const rows = (await settledRows(admin, userId, ids.length + before)).filter((r) => ids.includes(r.reference_id));
  assert.deepEqual(rows.map((r) => r.reference_id).sort(), [...ids].sort(), 'each charged, once');
  for (const row of rows) {
    const charged = -Math.round(row.amount * 1e6);
    assert.ok(charged > 0 && charged < whole, `${charged} against the whole answer's ${whole}`);
  }
}
