// Usage records and stats: every request the tests make is recorded once, and
// every grouping's totals equal the sum of what the clients were told.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { gatewayForFile } from './fixture.mjs';

const ctx = gatewayForFile();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const micros = (usd) => Math.round(usd * 1e6);
const today = () => new Date().toISOString().slice(0, 10);

/** What one client saw of one request. */
const made = [];

async function chatWith(client, who, { model, stream = false, content, fault }) {
  // Each client names itself as the end user (`user`), so the end_user grouping has buckets.
  const body = { model, messages: [{ role: 'user', content }], user: `eu-${who.keyId}`, ...(fault ? { fake_fault: fault } : {}) };
  if (fault) {
    try {
      await client.chat.completions.create(body);
    } catch (e) {
      made.push({ ...who, id: e.headers?.get?.('x-request-id') ?? e.headers?.['x-request-id'], model, status: e.status, prompt: 0, completion: 0, cost: 0, provider: 'openrouter' });
      return;
    }
    assert.fail('the fault should have failed');
  }
  if (!stream) {
    const { data, response } = await client.chat.completions.create(body).withResponse();
    made.push({ ...who, id: response.headers.get('x-request-id'), model, status: 200, streamed: false, prompt: data.usage.prompt_tokens, completion: data.usage.completion_tokens, cost: micros(data.usage.cost), provider: 'openrouter' });
    return;
  }
  const { data: chunks, response } = await client.chat.completions.create({ ...body, stream: true }).withResponse();
  let usage = null;
  for await (const chunk of chunks) if (chunk.usage) usage = chunk.usage;
  made.push({ ...who, id: response.headers.get('x-request-id'), model, status: 200, streamed: true, prompt: usage.prompt_tokens, completion: usage.completion_tokens, cost: micros(usage.cost), provider: 'openrouter' });
}

function sum(rows) {
  return rows.reduce(
    (t, r) => ({ requests: t.requests + 1, prompt_tokens: t.prompt_tokens + r.prompt, completion_tokens: t.completion_tokens + r.completion, cost: t.cost + r.cost }),
    { requests: 0, prompt_tokens: 0, completion_tokens: 0, cost: 0 },
  );
}

/** Groups what the clients saw the way the gateway should. */
function expected(rows, keyOf) {
  const groups = new Map();
  for (const r of rows) groups.set(keyOf(r), [...(groups.get(keyOf(r)) ?? []), r]);
  return [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([bucket, rs]) => ({ bucket, ...sum(rs) }));
}

const asMicros = (data) => data.map((b) => ({ ...b, cost: micros(b.cost) }));

async function stats(token, path) {
  const res = await fetch(`${ctx.gw.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

describe('usage records and stats', () => {
  const people = {};

  before(async () => {
    const { admin } = ctx;
    const org = await admin.call('POST', '/api/orgs', { name: 'Stats Org' });
    for (const name of ['ann', 'bob']) {
      const user = await admin.createUser({ name, email: `${name}@stats.example` }, { credit: 50 });
      const key = await admin.createKey(user.id, { name: `${name}-main` });
      people[name] = { user, key, client: new OpenAI({ baseURL: `${ctx.gw.url}/v1`, apiKey: key.key, maxRetries: 0 }) };
    }
    const orgKey = await admin.call('POST', `/api/orgs/${org.body.data.id}/keys`, { name: 'ann-org', user_id: people.ann.user.id });
    assert.equal(orgKey.status, 201, JSON.stringify(orgKey.body));
    people.annOrg = { user: people.ann.user, key: orgKey.body.data, org: org.body.data, client: new OpenAI({ baseURL: `${ctx.gw.url}/v1`, apiKey: orgKey.body.data.key, maxRetries: 0 }) };

    const who = (p) => ({ user: p.user.id, keyId: p.key.id, org: p.org?.id ?? null });
    const a = people.ann, b = people.bob, o = people.annOrg;
    await chatWith(a.client, who(a), { model: 'openai/gpt-4o-mini', content: 'one two three' });
    await chatWith(a.client, who(a), { model: 'openai/gpt-4o', content: 'four five', stream: true });
    await chatWith(a.client, who(a), { model: 'openai/gpt-4o-mini', content: 'bad gateway please', fault: '502' });
    await chatWith(o.client, who(o), { model: 'openai/gpt-4o', content: 'org work to do' });
    await chatWith(o.client, who(o), { model: 'openai/gpt-4o-mini', content: 'more org work', stream: true });
    await chatWith(b.client, who(b), { model: 'openai/gpt-4o-mini', content: 'bob says hi' });
    await chatWith(b.client, who(b), { model: 'anthropic/claude-3.5-sonnet', content: 'bob again here' });
    assert.equal(made.length, 7);
    assert.ok(made.every((m) => m.id), 'every answer carried x-request-id');

    // Records travel with the settlement and reach D1 in the object's next batch.
    for (let i = 0; i < 100; i++) {
      const all = await stats(ctx.gw.adminToken, '/api/stats/global?group_by=user');
      if (all.data.reduce((n, b) => n + b.requests, 0) >= made.length) break;
      await sleep(100);
    }
  });

  test('a key holder sees its own usage, grouped by day, model and provider; totals match what it was told', async () => {
    // Ann's key outside any organization sees her keys outside any; her organization's key, that organization's.
    const mine = made.filter((m) => m.user === people.ann.user.id && m.org === null);
    const inOrg = made.filter((m) => m.user === people.ann.user.id && m.org === people.annOrg.org.id);
    assert.ok(mine.length > 0 && inOrg.length > 0);
    for (const group of ['day', 'model', 'end_user']) {
      const seen = await stats(people.annOrg.key.key, `/api/stats?group_by=${group}`);
      const bucket = { day: () => today(), model: (m) => m.model, end_user: (m) => `eu-${m.keyId}` }[group];
      assert.deepEqual(asMicros(seen.data), expected(inOrg, bucket), `group_by=${group}`);
    }
    const byEndUser = await stats(people.ann.key.key, '/api/stats?group_by=end_user');
    assert.deepEqual(asMicros(byEndUser.data), expected(mine, (m) => `eu-${m.keyId}`));
    const day = await stats(people.ann.key.key, '/api/stats');
    assert.equal(day.group_by, 'day');
    assert.equal(day.end, today());
    assert.deepEqual(asMicros(day.data), expected(mine, () => today()));
    const byModel = await stats(people.ann.key.key, `/api/stats?group_by=model&start=${today()}&end=${today()}`);
    assert.deepEqual(asMicros(byModel.data), expected(mine, (m) => m.model));
    const byProvider = await stats(people.ann.key.key, '/api/stats?group_by=provider');
    assert.deepEqual(asMicros(byProvider.data), expected(mine, (m) => m.provider));
  });

  test('per key, per org and global (by day, model, provider, user and key) equal the sums', async () => {
    const admin = ctx.gw.adminToken;
    const key = await stats(admin, `/api/stats/keys/${people.annOrg.key.id}?group_by=model`);
    assert.deepEqual(asMicros(key.data), expected(made.filter((m) => m.keyId === people.annOrg.key.id), (m) => m.model));
    const org = await stats(admin, `/api/stats/orgs/${people.annOrg.org.id}`);
    assert.deepEqual(asMicros(org.data), expected(made.filter((m) => m.org === people.annOrg.org.id), () => today()));
    const byUser = await stats(admin, '/api/stats/global?group_by=user');
    assert.deepEqual(asMicros(byUser.data), expected(made, (m) => m.user));
    const byKey = await stats(admin, '/api/stats/global?group_by=key');
    assert.deepEqual(asMicros(byKey.data), expected(made, (m) => m.keyId));
    const byModel = await stats(admin, '/api/stats/global?group_by=model');
    assert.deepEqual(asMicros(byModel.data), expected(made, (m) => m.model));
    const byDay = await stats(admin, '/api/stats/global');
    assert.deepEqual(asMicros(byDay.data), expected(made, () => today()));
    const byProvider = await stats(admin, '/api/stats/global?group_by=provider');
    assert.deepEqual(asMicros(byProvider.data), expected(made, (m) => m.provider));
    const orgByModel = await stats(admin, `/api/stats/orgs/${people.annOrg.org.id}?group_by=model`);
    assert.deepEqual(asMicros(orgByModel.data), expected(made.filter((m) => m.org === people.annOrg.org.id), (m) => m.model));
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    const empty = await stats(admin, `/api/stats/global?start=${yesterday}&end=${yesterday}`);
    assert.deepEqual(empty.data, [], 'a range without requests is empty');
    assert.equal(empty.total, 0);
    // A page at a time (users, keys and end users may be many): the pages together are the whole.
    const whole = expected(made, (m) => m.keyId);
    assert.equal(byKey.total, whole.length);
    assert.equal(byKey.page_size, 1000, 'a thousand buckets unless asked');
    const paged = [];
    for (let page = 1; page <= whole.length + 1; page++) {
      const one = await stats(admin, `/api/stats/global?group_by=key&page=${page}&page_size=1`);
      assert.equal(one.total, whole.length, `page ${page}`);
      paged.push(...one.data);
    }
    assert.deepEqual(asMicros(paged), whole, 'one bucket a page, in order, none lost or repeated');
    const tooMany = await fetch(`${ctx.gw.url}/api/stats/global?page_size=1001`, { headers: { authorization: `Bearer ${admin}` } });
    assert.equal(tooMany.status, 400);
    assert.equal((await tooMany.json()).error.param, 'page_size');
  });

  test('a key holder may not group by user, see other keys or other users; bad ranges are 400', async () => {
    const call = (token, path) => fetch(`${ctx.gw.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
    const ann = people.ann.key.key;
    let res = await call(ann, '/api/stats?group_by=user');
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.param, 'group_by');
    res = await call(ann, `/api/stats/keys/${people.bob.key.id}`);
    assert.equal(res.status, 404);
    res = await call(ann, `/api/stats?user_id=${people.bob.user.id}`);
    assert.equal(res.status, 404);
    res = await call(ann, '/api/stats?start=2026-02-30');
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.param, 'start');
    res = await call(ann, `/api/stats/keys/${people.annOrg.key.id}`);
    assert.equal(res.status, 404, "a key outside any organization does not see its user's keys inside one");
    const own = await stats(people.annOrg.key.key, `/api/stats/keys/${people.annOrg.key.id}`);
    assert.equal(own.data[0].requests, 2, 'an org key sees its own stats');
  });

  test('each generation is one record with what the client was told, visible to its owner only', async () => {
    for (const m of made) {
      // A generation is seen by its user's keys in the same organization (the org key's by the org key).
      const owner = m.keyId === people.bob.key.id ? people.bob : m.keyId === people.annOrg.key.id ? people.annOrg : people.ann;
      const res = await stats(owner.key.key, `/api/v1/generation?id=${encodeURIComponent(m.id)}`);
      const g = res.data;
      assert.equal(g.id, m.id);
      assert.equal(g.model, m.model);
      assert.equal(g.provider, 'openrouter');
      assert.equal(g.status, m.status);
      assert.equal(g.tokens_prompt, m.prompt);
      assert.equal(g.tokens_completion, m.completion);
      assert.equal(micros(g.total_cost), m.cost);
      assert.equal(g.cancelled, false);
      if (m.status === 200) {
        assert.equal(g.streamed, m.streamed);
        assert.equal(g.upstream_cost, null, "a key holder does not see what the tenant pays upstream");
        const asAdmin = await ctx.admin.call('GET', `/api/v1/generation?id=${encodeURIComponent(m.id)}`);
        assert.ok(asAdmin.body.data.upstream_cost > 0, 'the upstream cost is kept for margin, for the operator');
      }
    }
    const bobs = made.find((m) => m.keyId === people.bob.key.id);
    const res = await fetch(`${ctx.gw.url}/api/v1/generation?id=${bobs.id}`, { headers: { authorization: `Bearer ${people.ann.key.key}` } });
    assert.equal(res.status, 404);
    const missing = await fetch(`${ctx.gw.url}/api/v1/generation`, { headers: { authorization: `Bearer ${people.ann.key.key}` } });
    assert.equal(missing.status, 400);
  });
});

