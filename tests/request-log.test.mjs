// The request log (issue 18.6): a key that opts in (`request_log_days`) keeps
// each request's body and its answer's (in R2, indexed in D1), bounded in
// size, readable by whoever may see the key; a key that does not opt in keeps
// nothing.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import { gatewayForFile } from './fixture.mjs';

const ctx = gatewayForFile();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MODEL = 'openai/gpt-4o-mini';

async function logged(keyId, count) {
  for (let i = 0; i < 100; i++) {
    const res = await ctx.admin.call('GET', `/api/keys/${keyId}/requests`);
    assert.equal(res.status, 200);
    if (res.body.data.length >= count) return res.body;
    await sleep(100);
  }
  throw new Error(`the log never showed ${count} requests`);
}

describe('request log', () => {
  test('a key that opts in keeps its requests and answers, streamed or not, and a failure', async () => {
    const user = await ctx.admin.createUser();
    const key = await ctx.admin.createKey(user.id, { request_log_days: 7 });
    assert.equal(key.request_log_days, 7);
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    const plain = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'remember the word heliotrope' }] });
    const stream = await client.chat.completions.create({ model: MODEL, stream: true, messages: [{ role: 'user', content: 'a streamed answer please' }] });
    let streamed = '';
    for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? '';
    await fetch(`${ctx.gw.fake.url.replace('/api/v1', '')}/__fail`, { method: 'POST', body: JSON.stringify({ provider: 'openrouter', status: 400, message: 'bad thing' }) });
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'this one fails' }] }));

    const list = await logged(key.id, 3);
    assert.equal(list.request_log_days, 7);
    assert.equal(list.total, 3);
    const [failed, second, first] = list.data; // newest first
    assert.equal(first.status, 200);
    assert.equal(first.streamed, 0);
    assert.equal(second.streamed, 1);
    assert.equal(failed.status, 400);

    const one = (await ctx.admin.call('GET', `/api/keys/${key.id}/requests/${first.id}`)).body.data;
    assert.match(one.request, /heliotrope/, 'the request body as sent');
    assert.equal(JSON.parse(one.response).choices[0].message.content, plain.choices[0].message.content, 'the answer as the client got it');
    assert.equal(one.request_truncated, false);
    const two = (await ctx.admin.call('GET', `/api/keys/${key.id}/requests/${second.id}`)).body.data;
    assert.match(two.response, /^data: /m);
    assert.match(two.response, /data: \[DONE\]/);
    assert.ok(streamed.length > 0 && two.response.includes(streamed.split(' ')[0]));
    const three = (await ctx.admin.call('GET', `/api/keys/${key.id}/requests/${failed.id}`)).body.data;
    assert.match(three.response, /bad thing/, 'the error the client got');

    // The key itself may read its log; another user's key may not.
    const own = await fetch(`${ctx.gw.url}/api/keys/${key.id}/requests`, { headers: { authorization: `Bearer ${key.key}` } });
    assert.equal(own.status, 200);
    assert.equal((await own.json()).total, 3);
    const stranger = await ctx.admin.createKey((await ctx.admin.createUser()).id);
    const refused = await fetch(`${ctx.gw.url}/api/keys/${key.id}/requests/${first.id}`, { headers: { authorization: `Bearer ${stranger.key}` } });
    assert.equal(refused.status, 404);
    await refused.arrayBuffer();
  });

  test('bodies are kept up to 64 KiB and say when they were cut', async () => {
    const user = await ctx.admin.createUser();
    const key = await ctx.admin.createKey(user.id, { request_log_days: 1 });
    const res = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, max_tokens: 5, messages: [{ role: 'user', content: 'word '.repeat(20_000) }] }),
    });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    const [row] = (await logged(key.id, 1)).data;
    assert.equal(row.request_bytes, 65_536);
    const entry = (await ctx.admin.call('GET', `/api/keys/${key.id}/requests/${row.id}`)).body.data;
    assert.equal(entry.request_truncated, true);
    assert.equal(entry.response_truncated, false);
  });

  test('a key that does not opt in keeps nothing; the setting is checked', async () => {
    const user = await ctx.admin.createUser();
    const key = await ctx.admin.createKey(user.id);
    const res = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'nothing to keep' }] }),
    });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    await sleep(500);
    const list = (await ctx.admin.call('GET', `/api/keys/${key.id}/requests`)).body;
    assert.deepEqual([list.total, list.request_log_days], [0, null]);
    const bad = await ctx.admin.call('PATCH', `/api/keys/${key.id}`, { request_log_days: 365 });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.param, 'request_log_days');
  });

  test('the cron job deletes every body whose days are over, however many are due', async () => {
    const user = await ctx.admin.createUser();
    const key = await ctx.admin.createKey(user.id, { request_log_days: 1 });
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'forget me later' }] });
    const [kept] = (await logged(key.id, 1)).data;
    // Its day over, and 1,200 more due beside it (a busy key's backlog: more than two batches).
    await ctx.gw.sql(`UPDATE request_logs SET expires_at = '2000-01-01T00:00:00Z' WHERE id = '${kept.id}'`);
    await ctx.gw.sql(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
      INSERT INTO request_logs (id, key_id, user_id, model, status, streamed, request_bytes, response_bytes, created_at, expires_at)
      SELECT 'backlog-' || i, '${key.id}', '${user.id}', '${MODEL}', 200, 0, 1, 1, '2000-01-01T00:00:00Z', '2000-01-02T00:00:00Z' FROM n`);
    const cron = await fetch(`${ctx.gw.url}/__scheduled?cron=${encodeURIComponent('*/15 * * * *')}`);
    assert.equal(cron.status, 200);
    const [{ due }] = await ctx.gw.sql(`SELECT COUNT(*) AS due FROM request_logs WHERE expires_at <= '2001-01-01'`);
    assert.equal(due, 0, 'one run deletes the whole backlog');
    const gone = await ctx.admin.call('GET', `/api/keys/${key.id}/requests/${kept.id}`);
    assert.equal(gone.status, 404);
  });
});
