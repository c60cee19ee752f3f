// Per-minute limits per key (issue 18.1), counted in the account's object like
// money: a key with 10 requests a minute gets exactly 10 of 40 simultaneous
// requests, the others 429 with a `retry-after` that is right; tokens a minute
// are held at a request's worst case and corrected to what it used when it
// settles; every answer carries OpenAI's `x-ratelimit-*` headers; the window
// survives a restart of the runtime on the same state.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import { gatewayForFile } from './fixture.mjs';
import { adminClient, startGateway } from './harness.mjs';

const ctx = gatewayForFile();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MODEL = 'openai/gpt-4o-mini';
const MESSAGES = [{ role: 'user', content: 'count the words in this short request' }];

function chat(url, token, body = {}) {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, max_tokens: 20, messages: MESSAGES, ...body }),
  });
}

const header = (res, name) => res.headers.get(name);
const int = (res, name) => Number(header(res, name));

describe('requests per minute', () => {
  test('a key with 10 a minute gets exactly 10 of 40 simultaneous requests; the rest 429 with when to retry', async () => {
    const user = await ctx.admin.createUser();
    const key = await ctx.admin.createKey(user.id, { rpm_limit: 10 });
    assert.equal(key.rpm_limit, 10);
    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 40 }, async () => {
      const res = await chat(ctx.gw.url, key.key);
      return { res, body: await res.json() };
    }));
    const ok = answers.filter((a) => a.res.status === 200);
    const refused = answers.filter((a) => a.res.status === 429);
    assert.equal(ok.length, 10, 'exactly the limit got through');
    assert.equal(refused.length, 30, `the others were refused: ${[...new Set(answers.map((a) => a.res.status))]}`);
    for (const { res } of ok) {
      assert.equal(int(res, 'x-ratelimit-limit-requests'), 10);
      assert.match(header(res, 'x-ratelimit-reset-requests'), /^(\d+(\.\d+)?s|\d+ms|1m0s)$/);
      assert.match(header(res, 'server-timing'), /reserve;desc=account/, 'a key counted per minute runs on no lease');
    }
    const remaining = ok.map(({ res }) => int(res, 'x-ratelimit-remaining-requests')).sort((a, b) => a - b);
    assert.deepEqual(remaining, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'each admission counted once, in order');
    for (const { res, body } of refused) {
      const wait = int(res, 'retry-after');
      // Room comes when the first admitted request leaves the window, 60 s after it was admitted.
      assert.ok(wait >= 1 && wait <= 60 && Date.now() + wait * 1000 >= started + 59_000, `retry-after ${wait}`);
      assert.equal(header(res, 'x-should-retry'), null, 'waiting helps: the SDKs may retry');
      assert.equal(body.error.code, 'rate_limit_error');
      assert.equal(body.error.metadata.limit_source, 'key_rpm');
      assert.equal(int(res, 'x-ratelimit-remaining-requests'), 0);
    }

    // One after another: the eleventh is refused through the SDK too, and the refusal cost nothing.
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 5 }), (e) => {
      assert.equal(e.status, 429);
      assert.ok(Number(e.headers.get('retry-after')) >= 1);
      return true;
    });
    await sleep(300);
    const usage = (await ctx.admin.call('GET', `/api/balance/transactions?user_id=${user.id}&page_size=100`)).body.data;
    assert.equal(usage.filter((r) => r.type === 'usage').length, 10, 'only the admitted requests were charged');
  });

  test('a lowered limit is obeyed on the very next request, and a key may not raise one', async () => {
    const user = await ctx.admin.createUser();
    const key = await ctx.admin.createKey(user.id, { permissions: ['read', 'write'] });
    let res = await chat(ctx.gw.url, key.key);
    assert.equal(res.status, 200);
    assert.equal(header(res, 'x-ratelimit-limit-requests'), null, 'no limit, no headers');
    await res.arrayBuffer();
    assert.equal((await ctx.admin.call('PATCH', `/api/keys/${key.id}`, { rpm_limit: 1 })).status, 200);
    res = await chat(ctx.gw.url, key.key);
    assert.equal(res.status, 200, 'the first under the new limit');
    await res.arrayBuffer();
    res = await chat(ctx.gw.url, key.key);
    assert.equal(res.status, 429, 'the second in the minute');
    await res.arrayBuffer();
    const own = await fetch(`${ctx.gw.url}/api/v1/key`, { headers: { authorization: `Bearer ${key.key}` } });
    assert.equal((await own.json()).data.rpm_limit, 1);
    const raise = await fetch(`${ctx.gw.url}/api/keys/${key.id}`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ rpm_limit: 100 }),
    });
    assert.equal(raise.status, 403, 'a key cannot lift its own limit');
    await raise.arrayBuffer();
    const bad = await ctx.admin.call('PATCH', `/api/keys/${key.id}`, { rpm_limit: 0 });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.param, 'rpm_limit');
  });
});

describe('tokens per minute', () => {
  test('tokens are held at the worst case while requests run and counted as used once they settle', async () => {
    const user = await ctx.admin.createUser();
    // A request's worst case (its prompt's bound plus max_tokens), from a key with room to spare.
    const probe = await ctx.admin.createKey(user.id, { tpm_limit: 1_000_000 });
    const first = await chat(ctx.gw.url, probe.key);
    assert.equal(first.status, 200);
    const worst = 1_000_000 - int(first, 'x-ratelimit-remaining-tokens');
    await first.arrayBuffer();
    assert.ok(worst > 20, `worst case ${worst}`);

    const tpm = 3 * worst + Math.floor(worst / 2);
    const key = await ctx.admin.createKey(user.id, { tpm_limit: tpm });
    // A request larger than the whole limit would be refused however long it waited: the SDKs are told
    // not to retry it (they obey `x-should-retry`).
    const tooLarge = await chat(ctx.gw.url, key.key, { max_tokens: tpm + 1 });
    assert.equal(tooLarge.status, 429);
    assert.equal(header(tooLarge, 'x-should-retry'), 'false');
    assert.match((await tooLarge.json()).error.message, /more tokens than this key's tokens per minute limit/);
    // Slow streams: none settles (and frees the tokens it did not use) while the others arrive.
    const answers = await Promise.all(Array.from({ length: 20 }, async () => {
      const res = await chat(ctx.gw.url, key.key, { stream: true, chunk_delay_ms: 150 });
      const text = await res.text();
      if (res.status !== 200) return { res, body: JSON.parse(text) };
      const usage = text.split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6))).find((e) => e.usage)?.usage;
      return { res, body: { usage } };
    }));
    const ok = answers.filter((a) => a.res.status === 200);
    assert.equal(ok.length, 3, 'three worst cases fit, a fourth does not');
    const refused = answers.filter((a) => a.res.status === 429);
    assert.equal(refused.length, 17);
    for (const { res, body } of refused) {
      assert.equal(body.error.metadata.limit_source, 'key_tpm');
      assert.ok(int(res, 'retry-after') >= 1 && int(res, 'retry-after') <= 60);
    }
    const used = ok.reduce((n, a) => n + a.body.usage.prompt_tokens + a.body.usage.completion_tokens, 0);
    assert.ok(used < 3 * worst);

    // Once the three have settled they count what they used, and the next request fits.
    let next;
    for (let i = 0; i < 50; i++) {
      next = await chat(ctx.gw.url, key.key);
      if (next.status === 200) break;
      await next.arrayBuffer();
      await sleep(100);
    }
    assert.equal(next.status, 200);
    assert.equal(int(next, 'x-ratelimit-remaining-tokens'), tpm - used - worst, 'settled requests count their usage');
    assert.equal(int(next, 'x-ratelimit-limit-tokens'), tpm);
    await next.arrayBuffer();

    // A request that alone could use more than a minute's tokens is told so.
    const huge = await chat(ctx.gw.url, key.key, { max_tokens: tpm + 1 });
    assert.equal(huge.status, 429);
    assert.match((await huge.json()).error.message, /lower max_tokens/);
  });
});

test('the window survives a restart of the runtime on the same state', async () => {
  const state = mkdtempSync(path.join(tmpdir(), 'tollgate-rates-'));
  let gw = await startGateway({ persistTo: state });
  const adminToken = gw.adminToken;
  try {
    let admin = adminClient(gw.url, adminToken);
    const user = await admin.createUser();
    const key = await admin.createKey(user.id, { rpm_limit: 2 });
    for (let i = 0; i < 2; i++) {
      const res = await chat(gw.url, key.key);
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    await gw.stop();
    gw = await startGateway({ persistTo: state, vars: { ADMIN_TOKEN: adminToken }, syncPrices: false });
    admin = adminClient(gw.url, adminToken);
    const res = await chat(gw.url, key.key);
    assert.equal(res.status, 429, 'the two requests before the restart still count');
    assert.ok(int(res, 'retry-after') >= 1);
    await res.arrayBuffer();
  } finally {
    await gw.stop();
    rmSync(state, { recursive: true, force: true });
  }
});

test("a key that sets no per-minute limits is held to the tenant's default, and may not lift itself past it", async () => {
  const gw = await startGateway({ vars: { DEFAULT_RPM_LIMIT: '3' } });
  try {
    const admin = adminClient(gw.url, gw.adminToken);
    const user = await admin.createUser();
    const key = await admin.createKey(user.id, { permissions: ['read', 'write'] });
    const asKey = (method, p, body) => fetch(`${gw.url}${p}`, {
      method,
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    const own = await (await asKey('GET', '/api/v1/key')).json();
    assert.equal(own.data.rpm_limit, 3, 'the limit that applies');
    // Lifting itself, or making keys (each would have the default, together more), would undo the tenant's limit.
    for (const [method, p, body, why] of [
      ['PATCH', `/api/keys/${key.id}`, { rpm_limit: 1_000_000 }, /requests or tokens per minute/],
      ['POST', '/api/keys', { name: 'wider', user_id: user.id, rpm_limit: 1_000_000 }, /rate limit may not create keys/],
      ['POST', '/api/keys', { name: 'another', user_id: user.id }, /rate limit may not create keys/],
      ['POST', '/api/token', { name: 'mine' }, /rate limit may not create keys/],
    ]) {
      const res = await asKey(method, p, body);
      assert.equal(res.status, 403, `${method} ${p}`);
      assert.match((await res.json()).error.message, why);
    }
    const lower = await asKey('PATCH', `/api/keys/${key.id}`, { rpm_limit: 2 });
    assert.equal(lower.status, 200, 'lowering is its own business');
    await lower.arrayBuffer();
    const statuses = [];
    for (let i = 0; i < 3; i++) {
      const res = await chat(gw.url, key.key);
      statuses.push(res.status);
      await res.arrayBuffer();
    }
    assert.deepEqual(statuses, [200, 200, 429]);
    // Many at once, on a key of its own (never leased: its requests are counted by the object): exactly three.
    const fresh = await admin.createKey(user.id);
    const burst = await Promise.all(Array.from({ length: 12 }, () => chat(gw.url, fresh.key)));
    const codes = await Promise.all(burst.map(async (r) => (await r.arrayBuffer(), r.status)));
    assert.deepEqual([codes.filter((c) => c === 200).length, codes.filter((c) => c === 429).length], [3, 9]);
    assert.ok(burst.filter((r) => r.status === 200).every((r) => /reserve;desc=account/.test(r.headers.get('server-timing'))));
  } finally {
    await gw.stop();
  }
});
