// End users' budgets (issue 18.3): an application names whom each request is
// for (`X-Tollgate-End-User`, else `safety_identifier`, else `user`), and its
// key gives every end user a budget, or one end user a budget of its own. The
// account's object makes an end user's record with its first request, so 40
// simultaneous first requests of a new end user are held to its budget; the
// budget holds one request after another and across a restart of the runtime.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import { gatewayForFile } from './fixture.mjs';
import { adminClient, startGateway } from './harness.mjs';

const ctx = gatewayForFile();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const micros = (usd) => Math.round(usd * 1e6);
const MODEL = 'openai/gpt-4o-mini';
const PRICE = [150_000, 600_000]; // micro-USD per million prompt / completion tokens
const MESSAGES = [{ role: 'user', content: 'one two three four five' }];
const MAX_TOKENS = 500;
/** A request's worst case, as the gateway reserves it: the prompt's bound (its JSON size) and max_tokens. */
const WORST = Math.ceil(((Buffer.byteLength(JSON.stringify(MESSAGES)) + 8 * MESSAGES.length) * PRICE[0] + MAX_TOKENS * PRICE[1]) / 1e6);

function chat(url, token, fields = {}, headers = {}) {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: MODEL, max_tokens: MAX_TOKENS, messages: MESSAGES, ...fields }),
  });
}

async function endUsers(admin, keyId) {
  const res = await admin.call('GET', `/api/keys/${keyId}/end-users`);
  assert.equal(res.status, 200);
  return res.body;
}

async function usageRows(admin, userId) {
  const res = await admin.call('GET', `/api/balance/transactions?user_id=${userId}&page_size=100`);
  return res.body.data.filter((r) => r.type === 'usage');
}

describe('end-user budgets', () => {
  test('40 simultaneous first requests of a new end user are held to its budget', async () => {
    const user = await ctx.admin.createUser();
    const budget = 5 * WORST; // five worst cases
    const key = await ctx.admin.createKey(user.id, { end_user_budget: { limit: budget / 1e6, limit_reset: 'daily' } });
    assert.deepEqual(key.end_user_budget, { limit: budget / 1e6, limit_reset: 'daily' });
    const who = `user-${randomBytes(4).toString('hex')}`;
    // Slow streams: none settles (and frees what it does not use) while the others arrive.
    const answers = await Promise.all(Array.from({ length: 40 }, async () => {
      const res = await chat(ctx.gw.url, key.key, { user: who, stream: true, chunk_delay_ms: 150 });
      const text = await res.text();
      return { res, body: res.status === 200 ? null : JSON.parse(text) };
    }));
    const ok = answers.filter((a) => a.res.status === 200);
    const refused = answers.filter((a) => a.res.status === 402);
    assert.equal(ok.length + refused.length, 40, `only 200 or 402: ${[...new Set(answers.map((a) => a.res.status))]}`);
    assert.equal(ok.length, 5, 'exactly the requests the budget covers at their worst case ran');
    for (const { body } of refused) {
      assert.equal(body.error.code, 'insufficient_credits');
      assert.equal(body.error.metadata.limit_source, 'end_user_limit');
      assert.match(body.error.metadata.resets_at, /T00:00:00\.000Z$/, 'a daily budget resets at midnight UTC');
    }
    await sleep(500);
    const charged = (await usageRows(ctx.admin, user.id)).reduce((n, r) => n - micros(r.amount), 0);
    assert.ok(charged > 0 && charged <= budget, `charged ${charged} of ${budget}`);
    const listed = await endUsers(ctx.admin, key.id);
    const row = listed.data.find((u) => u.end_user === who);
    assert.ok(row, 'the end user is listed');
    assert.equal(micros(row.usage), charged);
    assert.equal(micros(row.limit), budget);
    assert.equal(micros(row.limit_remaining), budget - charged);
    assert.equal(row.own_budget, false);
    assert.equal(listed.data.length, 1, 'the refused requests made no other end user');
  });

  test('one request after another: each end user named by the header, safety_identifier or user has its own budget', async () => {
    const user = await ctx.admin.createUser();
    const budget = 3 * WORST + Math.floor(WORST / 3);
    const key = await ctx.admin.createKey(user.id, { end_user_budget: { limit: budget / 1e6 } });
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    const spend = async (send) => {
      let ran = 0;
      for (let i = 0; i < 10; i++) {
        try {
          await send();
          ran++;
        } catch (e) {
          assert.equal(e.status, 402);
          assert.equal(e.error.metadata.limit_source, 'end_user_limit');
          return ran;
        }
      }
      return ran;
    };
    const body = { model: MODEL, max_tokens: MAX_TOKENS, messages: MESSAGES };
    const bySafety = await spend(() => client.chat.completions.create({ ...body, safety_identifier: 'alice', user: 'ignored' }));
    const byUser = await spend(() => client.chat.completions.create({ ...body, user: 'bob' }));
    const byHeader = await spend(() => client.chat.completions.create({ ...body, user: 'not-carol' }, { headers: { 'x-tollgate-end-user': 'carol' } }));
    // Actual costs are far below the worst case, so more requests fit than three; never more than the budget.
    for (const ran of [bySafety, byUser, byHeader]) assert.ok(ran >= 3, `ran ${ran}`);
    await sleep(500);
    const listed = await endUsers(ctx.admin, key.id);
    assert.deepEqual(listed.data.map((u) => u.end_user).sort(), ['alice', 'bob', 'carol']);
    for (const row of listed.data) assert.ok(micros(row.usage) <= budget, `${row.end_user} spent ${row.usage}`);
    // Without a name the key's own limits apply, not an end user's budget.
    const anonymous = await chat(ctx.gw.url, key.key);
    assert.equal(anonymous.status, 200);
    await anonymous.arrayBuffer();
  });

  test('an end user gets a budget of its own, none, or back the key default; stats group by end user', async () => {
    const user = await ctx.admin.createUser();
    const key = await ctx.admin.createKey(user.id, { end_user_budget: { limit: 0 } });
    let res = await chat(ctx.gw.url, key.key, { user: 'dave' });
    assert.equal(res.status, 402, 'a default budget of nothing');
    await res.arrayBuffer();
    let put = await ctx.admin.call('PUT', `/api/keys/${key.id}/end-users/dave`, { limit: null });
    assert.equal(put.status, 200);
    assert.equal(put.body.data.own_budget, true);
    res = await chat(ctx.gw.url, key.key, { user: 'dave' });
    assert.equal(res.status, 200, 'no budget of its own: the key default no longer binds dave');
    await res.arrayBuffer();
    put = await ctx.admin.call('PUT', `/api/keys/${key.id}/end-users/${encodeURIComponent('erin@example.com')}`, { limit: 1, limit_reset: 'monthly' });
    assert.equal(put.status, 200);
    assert.equal(put.body.data.end_user, 'erin@example.com');
    res = await chat(ctx.gw.url, key.key, { user: 'erin@example.com' });
    assert.equal(res.status, 200, 'a budget of its own above the default');
    await res.arrayBuffer();
    assert.equal((await ctx.admin.call('DELETE', `/api/keys/${key.id}/end-users/dave`)).status, 200);
    res = await chat(ctx.gw.url, key.key, { user: 'dave' });
    assert.equal(res.status, 402, 'back to the key default');
    await res.arrayBuffer();
    // A body that leaves the limit out lifts no budget: it is refused, naming what is missing.
    for (const [body, param] of [[{ limit: -1 }, 'budget'], [{}, 'limit'], [{ limit_reset: 'daily' }, 'limit'], [{ limit: null, limit_reset: 'daily' }, 'limit_reset']]) {
      const bad = await ctx.admin.call('PUT', `/api/keys/${key.id}/end-users/dave`, body);
      assert.equal(bad.status, 400, JSON.stringify(body));
      assert.match(bad.body.error.param ?? '', new RegExp(param), JSON.stringify(bad.body));
    }
    res = await chat(ctx.gw.url, key.key, { user: 'dave' });
    assert.equal(res.status, 402, 'still the key default');
    await res.arrayBuffer();
    // A dot segment cannot be named in a URL (a browser resolves `..` away, onto the key itself): refused.
    for (const dots of ['%20..', '%20.', '.%2E%20']) {
      const bad = await ctx.admin.call('PUT', `/api/keys/${key.id}/end-users/${dots}`, { limit: 1 });
      assert.equal(bad.status, 400, dots);
      assert.match(bad.body.error.message, /not `\.` or `\.\.`/);
    }

    // The usage copies reach D1 after the answers; stats group them per end user.
    let buckets = [];
    for (let i = 0; i < 50 && buckets.length < 2; i++) {
      await sleep(200);
      buckets = (await ctx.admin.call('GET', `/api/stats/keys/${key.id}?group_by=end_user`)).body.data;
    }
    assert.deepEqual(buckets.map((b) => b.bucket), ['dave', 'erin@example.com']);
    assert.ok(buckets.every((b) => b.requests === 1 && b.cost > 0));
  });
});

test('an end user spent to its budget stays there across a restart of the runtime', async () => {
  const state = mkdtempSync(path.join(tmpdir(), 'tollgate-end-users-'));
  let gw = await startGateway({ persistTo: state });
  const adminToken = gw.adminToken;
  try {
    let admin = adminClient(gw.url, adminToken);
    const user = await admin.createUser();
    const key = await admin.createKey(user.id, { end_user_budget: { limit: (2 * WORST) / 1e6, limit_reset: 'monthly' } });
    let ran = 0;
    for (;;) {
      const res = await chat(gw.url, key.key, { user: 'frank' });
      await res.arrayBuffer();
      if (res.status !== 200) break;
      ran++;
    }
    assert.ok(ran >= 2);
    await sleep(300);
    const before = (await endUsers(admin, key.id)).data[0];
    await gw.stop();
    gw = await startGateway({ persistTo: state, vars: { ADMIN_TOKEN: adminToken }, syncPrices: false });
    admin = adminClient(gw.url, adminToken);
    const after = (await endUsers(admin, key.id)).data[0];
    assert.equal(after.usage, before.usage, "the end user's spend survived the restart");
    const res = await chat(gw.url, key.key, { user: 'frank' });
    assert.equal(res.status, 402, 'and still binds');
    await res.arrayBuffer();
  } finally {
    await gw.stop();
    rmSync(state, { recursive: true, force: true });
  }
});
