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

import { gatewayForFile, settledRows } from './fixture.mjs';
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
/** What the prompt's bound alone costs at most (10 µUSD): a budget that leaves no more buys no output token. */
const PROMPT_BOUND_COST = Math.ceil(((Buffer.byteLength(JSON.stringify(MESSAGES)) + 8 * MESSAGES.length) * PRICE[0]) / 1e6);
/** What one request costs (5 µUSD): the fake counts a quarter of the characters and 3 a message, a token an echoed word. */
const COST = Math.ceil(((Math.ceil(MESSAGES[0].content.length / 4) + 3) * PRICE[0] + (1 + MESSAGES[0].content.split(' ').length) * PRICE[1]) / 1e6);

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

/** The end user's row once its spend is `spent` and nothing is held for it any more (its requests settled). */
async function settledSpend(admin, keyId, who, spent, budget) {
  let row;
  for (let i = 0; i < 50; i++) {
    row = (await endUsers(admin, keyId)).data.find((u) => u.end_user === who);
    if (row && micros(row.usage) === spent && micros(row.limit_remaining) === budget - spent) return row;
    await sleep(100);
  }
  assert.fail(`${who} never settled at ${spent} µUSD spent of ${budget}: ${JSON.stringify(row)}`);
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
    // Each of the five charged once, what it cost; nothing for the refused ones.
    const rows = await settledRows(ctx.admin, user.id, ok.length);
    for (const r of rows) assert.equal(-micros(r.amount), COST, JSON.stringify(r));
    const charged = ok.length * COST;
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
    // Three requests' cost and the prompt bound's: once three have settled, what is left pays a fourth's
    // prompt at most, no output token, and it is refused. (A request runs on what its budget leaves, its
    // output capped to it: the whole worst case need not fit.)
    const budget = 3 * COST + PROMPT_BOUND_COST;
    const key = await ctx.admin.createKey(user.id, { end_user_budget: { limit: budget / 1e6 } });
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    const spend = async (who, send) => {
      for (let ran = 1; ran <= 3; ran++) {
        const answer = await send();
        assert.equal(answer.choices[0].message.content, 'Echo: one two three four five', `${who}'s request ${ran}, whole`);
        // Settled before the next: while it runs, a request holds what it may cost at most.
        await settledSpend(ctx.admin, key.id, who, ran * COST, budget);
      }
      const refused = await send().then(() => null, (e) => e);
      assert.equal(refused?.status, 402, `${who}'s fourth request is refused`);
      assert.equal(refused.error.code, 'insufficient_credits');
      assert.equal(refused.error.metadata.limit_source, 'end_user_limit');
    };
    const body = { model: MODEL, max_tokens: MAX_TOKENS, messages: MESSAGES };
    // Each end user spent to its budget, the next is served all the same.
    await spend('alice', () => client.chat.completions.create({ ...body, safety_identifier: 'alice', user: 'ignored' }));
    await spend('bob', () => client.chat.completions.create({ ...body, user: 'bob' }));
    await spend('carol', () => client.chat.completions.create({ ...body, user: 'not-carol' }, { headers: { 'x-tollgate-end-user': 'carol' } }));
    const listed = await endUsers(ctx.admin, key.id);
    assert.deepEqual(listed.data.map((u) => u.end_user).sort(), ['alice', 'bob', 'carol']);
    for (const row of listed.data) assert.equal(micros(row.usage), 3 * COST, `${row.end_user} spent ${row.usage}`);
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

// The account's object keeps end users in memory only while messages name them (an application may serve
// millions through one key): forgotten after every message here, each is brought back from storage, and
// every budget holds as it does in memory, one request after another and at once. The list is a page at a
// time, most spent first.
test('budgets hold when the object forgets every end user after each message; the list pages', async () => {
  const gw = await startGateway({ vars: { FAULT_FORGET_END_USERS: '1' } });
  try {
    const admin = adminClient(gw.url, gw.adminToken);
    const user = await admin.createUser();
    const budget = 3 * COST + PROMPT_BOUND_COST;
    const key = await admin.createKey(user.id, { end_user_budget: { limit: budget / 1e6 } });
    for (let ran = 1; ran <= 3; ran++) {
      const res = await chat(gw.url, key.key, { user: 'alice' });
      assert.equal(res.status, 200, `alice's request ${ran}`);
      await res.arrayBuffer();
      await settledSpend(admin, key.id, 'alice', ran * COST, budget);
    }
    const refused = await chat(gw.url, key.key, { user: 'alice' });
    assert.equal(refused.status, 402, "alice's spend was brought back from storage");
    assert.equal((await refused.json()).error.metadata.limit_source, 'end_user_limit');
    const bob = await chat(gw.url, key.key, { user: 'bob' });
    assert.equal(bob.status, 200);
    await bob.arrayBuffer();
    await settledSpend(admin, key.id, 'bob', COST, budget);

    // At once: ten slow streams of a new end user, on a budget of two worst cases.
    const wide = await admin.createKey(user.id, { end_user_budget: { limit: (2 * WORST) / 1e6, limit_reset: 'daily' } });
    const statuses = await Promise.all(Array.from({ length: 10 }, async () => {
      // Slow streams (about 3 s): none settles, and frees what it does not use, while the others arrive.
      const res = await chat(gw.url, wide.key, { user: 'zed', stream: true, chunk_delay_ms: 400 });
      await res.arrayBuffer();
      return res.status;
    }));
    assert.deepEqual(statuses.filter((s) => s === 200).length, 2, `exactly two fit: ${statuses}`);
    assert.ok(statuses.every((s) => s === 200 || s === 402), String(statuses));
    await settledSpend(admin, wide.id, 'zed', 2 * COST, 2 * WORST);

    // A page at a time, most spent in all first.
    const first = await admin.call('GET', `/api/keys/${key.id}/end-users?page_size=1`);
    assert.equal(first.status, 200);
    assert.deepEqual([first.body.data.map((u) => u.end_user), first.body.page, first.body.page_size, first.body.total], [['alice'], 1, 1, 2]);
    const second = await admin.call('GET', `/api/keys/${key.id}/end-users?page=2&page_size=1`);
    assert.deepEqual(second.body.data.map((u) => [u.end_user, micros(u.usage), micros(u.limit_remaining)]), [['bob', COST, budget - COST]]);
    const bad = await admin.call('GET', `/api/keys/${key.id}/end-users?page_size=0`);
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.param, 'page_size');
  } finally {
    await gw.stop();
  }
});
