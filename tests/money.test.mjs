// The money core as a user meets it (issue 14): key limits with a reset hold
// over sequential spending; a bad timestamp is a 400 and leaves a stream beside
// it alone; request ids are the gateway's own; both output-token fields; usage
// is always asked of the upstream; fees the price table cannot bound are
// refused; a client that hangs up is still charged; generations are found by
// the id their answer carried; adjustments cannot overdraw; reconciliation.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import { gatewayForFile } from './fixture.mjs';

const ctx = gatewayForFile();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const micros = (usd) => Math.round(usd * 1e6);
const MODEL = 'openai/gpt-4o-mini';
// The fake's catalogue (micro-USD per million tokens) and token counts (tests/fake-upstream.mjs).
const PRICE = [150_000, 600_000];
function fakeTokens(messages, maxTokens) {
  const chars = messages.reduce((n, m) => n + m.content.length, 0);
  const prompt = Math.ceil(chars / 4) + 3 * messages.length;
  const words = 1 + messages.at(-1).content.split(/\s+/).filter(Boolean).length;
  return { prompt, completion: maxTokens ? Math.min(words, maxTokens) : words };
}
const costOf = ({ prompt, completion }) => Math.ceil((prompt * PRICE[0] + completion * PRICE[1]) / 1e6);

function chat(token, body, headers = {}, signal) {
  return fetch(`${ctx.gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: MODEL, ...body }),
    signal,
  });
}

async function ledgerOf(userId) {
  const res = await ctx.admin.call('GET', `/api/balance/transactions?user_id=${userId}&page_size=100`);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.data;
}

async function balanceOf(userId) {
  return micros((await ctx.admin.call('GET', `/api/balance?user_id=${userId}`)).body.balance);
}

/** Polls the ledger until `predicate` holds. */
async function ledgerUntil(userId, predicate, what) {
  for (let i = 0; i < 100; i++) {
    const rows = await ledgerOf(userId);
    if (predicate(rows)) return rows;
    await sleep(100);
  }
  assert.fail(`the ledger never showed ${what}`);
}

async function upstreamRequests(marker) {
  const res = await fetch(ctx.gw.fake.url.replace('/api/v1', '') + '/__requests');
  return (await res.json()).data.filter((r) => r.path.endsWith('/chat/completions') && r.body?.marker === marker);
}

describe('key limits with a reset period', () => {
  for (const reset of ['daily', 'weekly', 'monthly']) {
    test(`sequential spending stops at a ${reset} key limit`, async () => {
      const user = await ctx.admin.createUser({}, { credit: 5 });
      const key = await ctx.admin.createKey(user.id, { limit: 0.00015, limit_reset: reset });
      // About 59 µUSD each (the fake answers one word more than it was sent), as in the report.
      const messages = [{ role: 'user', content: Array.from({ length: 79 }, (_, i) => `w${i}`).join(' ') }];
      const each = costOf(fakeTokens(messages, 100));
      let answered = 0;
      let refused = null;
      for (let i = 0; i < 10; i++) {
        const res = await chat(key.key, { messages, max_tokens: 100 });
        if (res.status === 200) {
          answered += 1;
          await res.json();
        } else {
          refused = { status: res.status, body: await res.json() };
          break;
        }
      }
      assert.ok(refused, `a limit of 150 µUSD stops requests of ${each} µUSD each (${answered} answered)`);
      assert.equal(refused.status, 402);
      assert.equal(refused.body.error.metadata.limit_source, 'key_limit');
      const rows = await ledgerUntil(user.id, (r) => r.filter((x) => x.type === 'usage').length === answered, 'every charge');
      const spent = -rows.filter((x) => x.type === 'usage').reduce((s, x) => s + micros(x.amount), 0);
      assert.ok(spent <= 150, `spent ${spent} µUSD against a 150 µUSD limit`);
      assert.ok(answered >= 2 && spent > 150 - each, `${answered} answered, ${spent} µUSD spent: the limit was used, not skipped`);
      const own = await fetch(`${ctx.gw.url}/api/v1/key`, { headers: { authorization: `Bearer ${key.key}` } }).then((r) => r.json());
      assert.equal(micros(own.data.usage), spent);
      assert.equal(micros(own.data.limit_remaining), 150 - spent);
    });
  }
});

describe('hostile input', () => {
  test('odd timestamps answer 400 while a stream beside them ends with [DONE] and is charged', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const words = Array.from({ length: 12 }, (_, i) => `w${i}`).join(' ');
    const stream = chat(key.key, { messages: [{ role: 'user', content: words }], stream: true, chunk_delay_ms: 40 });
    const odd = ['2026-01-01T00:00+0é00', '2026-01-01T00:00é', '2026-01-01T00:00:00.é', 'é', '2026-01-01T00:00:0é'];
    await sleep(100);
    for (const start of odd) {
      const res = await fetch(`${ctx.gw.url}/api/stats?start=${encodeURIComponent(start)}`, { headers: { authorization: `Bearer ${key.key}` } });
      assert.equal(res.status, 400, start);
      assert.equal((await res.json()).error.param, 'start');
    }
    const created = await ctx.admin.call('POST', '/api/keys', { name: 'odd', user_id: user.id, expires_at: '2027-01-01T00:00+0é00' });
    assert.equal(created.status, 400);
    const text = await (await stream).text();
    assert.ok(text.trimEnd().endsWith('data: [DONE]'), 'the stream ended normally');
    assert.ok(!text.includes('"error"'));
    const expected = costOf(fakeTokens([{ role: 'user', content: words }]));
    await ledgerUntil(user.id, (r) => r.some((x) => x.type === 'usage'), 'the stream charged');
    assert.equal(await balanceOf(user.id), 1_000_000 - expected);
  });

  test('a repeated client id header makes two requests and two charges', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const messages = [{ role: 'user', content: 'same header twice' }];
    const ids = [];
    for (let i = 0; i < 2; i++) {
      const res = await chat(key.key, { messages }, { 'cf-ray': 'abc123-LHR', 'x-request-id': 'client-chosen' });
      assert.equal(res.status, 200);
      ids.push(res.headers.get('x-request-id'));
      await res.json();
    }
    assert.notEqual(ids[0], ids[1]);
    assert.ok(ids.every((id) => !id.includes('abc123') && id !== 'client-chosen'), 'ids are the gateway\'s own');
    const rows = await ledgerUntil(user.id, (r) => r.filter((x) => x.type === 'usage').length === 2, 'two charges');
    assert.equal(await balanceOf(user.id), 1_000_000 - 2 * costOf(fakeTokens(messages)));
    assert.deepEqual(rows.filter((x) => x.type === 'usage').map((x) => x.reference_id).sort(), [...ids].sort());
  });
});

describe('reservations bound every cost', () => {
  test('with both output-token fields, the smaller is reserved and only it is sent', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const marker = `both-${user.id}`;
    const messages = [{ role: 'user', content: 'one two three four five six seven eight nine ten' }];
    const res = await chat(key.key, { messages, max_tokens: 3, max_completion_tokens: 500, marker });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.ok(body.usage.completion_tokens <= 3);
    const [seen] = await upstreamRequests(marker);
    assert.equal(seen.body.max_tokens, 3);
    assert.equal(seen.body.max_completion_tokens, 3);
    await ledgerUntil(user.id, (r) => r.some((x) => x.type === 'usage'), 'the charge');
    assert.equal(await balanceOf(user.id), 1_000_000 - costOf(fakeTokens(messages, 3)));
  });

  test('include_usage:false on the OpenRouter route is billed from the upstream\'s usage, which the client does not see', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const marker = `nousage-${user.id}`;
    const messages = [{ role: 'user', content: 'count the words in this sentence for me' }];
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    let sawUsage = false;
    let text = '';
    const stream = await client.chat.completions.create({ model: MODEL, messages, stream: true, stream_options: { include_usage: false }, marker });
    for await (const chunk of stream) {
      if (chunk.usage) sawUsage = true;
      text += chunk.choices[0]?.delta?.content ?? '';
    }
    assert.ok(text.length > 0);
    assert.equal(sawUsage, false, 'the client asked for no usage chunk');
    const [seen] = await upstreamRequests(marker);
    assert.equal(seen.body.stream_options.include_usage, true, 'the gateway asked the upstream for usage');
    const rows = await ledgerUntil(user.id, (r) => r.some((x) => x.type === 'usage'), 'the charge');
    const usage = rows.find((x) => x.type === 'usage');
    assert.ok(!usage.description.includes('estimated'), usage.description);
    assert.equal(-micros(usage.amount), costOf(fakeTokens(messages)));
  });

  test('fees the price table cannot bound are refused with 400 naming the field, before any reservation', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const messages = [{ role: 'user', content: 'search the web' }];
    for (const [extra, param] of [
      [{ plugins: [{ id: 'web' }] }, 'plugins'],
      [{ web_search_options: { search_context_size: 'high' } }, 'web_search_options'],
      [{ messages: [{ role: 'user', content: [{ type: 'file', file: { filename: 'a.pdf', file_data: 'https://example.com/a.pdf' } }] }] }, 'messages[0].content[0].file'],
    ]) {
      const res = await chat(key.key, { messages, ...extra });
      assert.equal(res.status, 400);
      assert.equal((await res.json()).error.param, param);
    }
    assert.equal((await ledgerOf(user.id)).filter((x) => x.type === 'usage').length, 0);
  });
});

describe('faults', () => {
  test('a non-streamed client that hangs up is charged for what the upstream generated', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const messages = [{ role: 'user', content: 'take your time answering this one' }];
    const abort = new AbortController();
    const pending = chat(key.key, { messages, fake_fault: 'slow:1500' }, {}, abort.signal).catch((e) => e);
    await sleep(400);
    abort.abort();
    assert.equal((await pending).name, 'AbortError');
    const rows = await ledgerUntil(user.id, (r) => r.some((x) => x.type === 'usage'), 'the charge of the abandoned request');
    assert.equal(-micros(rows.find((x) => x.type === 'usage').amount), costOf(fakeTokens(messages)));
    assert.equal(await balanceOf(user.id), 1_000_000 - costOf(fakeTokens(messages)));
  });

  test('a credit described in any language is taken (messages to the account object are not header-bound)', async () => {
    const user = await ctx.admin.createUser({}, { credit: 0 });
    const res = await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: user.id, amount: 2, description: 'Café ☕ 入金' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const [row] = await ledgerOf(user.id);
    assert.equal(row.description, 'Café ☕ 入金');
    assert.equal(await balanceOf(user.id), 2_000_000);
  });

  test('an organization counts a request that failed before any answer as nothing', async () => {
    const member = await ctx.admin.createUser({}, { credit: 1 });
    const org = (await ctx.admin.call('POST', '/api/orgs', { name: `Counted ${member.id}`, limits: { monthly_requests: 2 } })).body.data;
    const key = (await ctx.admin.call('POST', `/api/orgs/${org.id}/keys`, { name: 'org key', user_id: member.id })).body.data;
    const messages = [{ role: 'user', content: 'hi' }];
    const failed = await chat(key.key, { messages, fake_fault: '500' });
    assert.equal(failed.status, 502);
    await failed.text();
    await sleep(300); // its release reaches the organization
    for (let i = 0; i < 2; i++) {
      const ok = await chat(key.key, { messages });
      assert.equal(ok.status, 200, `request ${i + 1} of the month's 2`);
      await ok.text();
    }
    const third = await chat(key.key, { messages });
    assert.equal(third.status, 429);
    assert.match((await third.json()).error.message, /monthly request limit/);
  });

  test('an adjustment cannot take money that is not there', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const res = await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: user.id, amount: -1.5, type: 'adjustment' });
    assert.equal(res.status, 400);
    assert.equal(res.body.error.param, 'amount');
    assert.equal(await balanceOf(user.id), 1_000_000);
    const ok = await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: user.id, amount: -1, type: 'adjustment' });
    assert.equal(ok.status, 200);
    assert.equal(await balanceOf(user.id), 0);
  });
});

describe('ids and reconciliation', () => {
  test('a generation is found by the id its answer carried and by x-request-id', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/api/v1`, maxRetries: 0 });
    const { data: answer, response } = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: 'user', content: 'find me later' }] })
      .withResponse();
    assert.match(answer.id, /^gen-/);
    const requestId = response.headers.get('x-request-id');
    const lookup = async (id) => {
      for (let i = 0; i < 60; i++) {
        const res = await fetch(`${ctx.gw.url}/api/v1/generation?id=${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${key.key}` } });
        if (res.status === 200) return (await res.json()).data;
        await sleep(200);
      }
      assert.fail(`generation ${id} never found`);
    };
    const byAnswer = await lookup(answer.id);
    assert.equal(byAnswer.id, requestId);
    assert.equal(byAnswer.upstream_id, answer.id);
    assert.equal(micros(byAnswer.total_cost), micros(answer.usage.cost));
    assert.equal((await lookup(requestId)).upstream_id, answer.id);
  });

  test('reconciliation finds no drift and reports uncollected cost and margin per model', async () => {
    const res = await ctx.admin.call('GET', '/api/admin/reconcile');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body.data.drift, []);
    assert.deepEqual(res.body.data.failed, []);
    assert.equal(res.body.data.uncollected, 0);
    const mini = res.body.data.margin_by_model.find((m) => m.model === MODEL);
    assert.ok(mini.requests > 0 && mini.charged > 0);
  });
});
