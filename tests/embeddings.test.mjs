// POST /v1/embeddings with the official OpenAI SDK: a string, a list, token ids,
// the SDK's default base64 encoding; served by OpenAI on the direct route and by
// OpenRouter when pinned there; billed on the input tokens the upstream reported,
// exactly once; refusals in OpenAI's shape.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import { FAKE_OPENAI_KEY } from './fake-upstream.mjs';
import { gatewayForFile, settledRows, usageRows } from './fixture.mjs';

const ctx = gatewayForFile({ vars: { OPENAI_API_KEY: FAKE_OPENAI_KEY } });
const micros = (usd) => Math.round(usd * 1e6);
const MODEL = 'openai/text-embedding-3-small';
// The fake counts a token per 4 characters; the catalogue price is $0.02 per million input tokens.
const tokensOf = (texts) => texts.reduce((n, t) => n + Math.ceil(t.length / 4), 0);
const costOf = (tokens) => Math.ceil((tokens * 20_000) / 1e6);


async function clientFor(credit = 1) {
  const user = await ctx.admin.createUser({}, { credit });
  const key = await ctx.admin.createKey(user.id);
  return { user, key, client: new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 }) };
}

describe('embeddings', () => {
  test('a string, with the SDK\'s default base64 encoding, is charged exactly on its input tokens', async () => {
    const { user, client } = await clientFor();
    const text = 'the quick brown fox jumps over the lazy dog, repeatedly and at length, for billing';
    const { data: res, response } = await client.embeddings.create({ model: MODEL, input: text }).withResponse();
    assert.equal(response.headers.get('x-tollgate-provider'), 'openai');
    assert.equal(res.model, MODEL, 'the answer names the client\'s model id');
    assert.equal(res.data.length, 1);
    assert.equal(res.data[0].embedding.length, 1536, 'the SDK decoded the base64 vector');
    assert.ok(res.data[0].embedding.every((x) => typeof x === 'number' && Number.isFinite(x)));
    const tokens = tokensOf([text]);
    assert.equal(res.usage.prompt_tokens, tokens);
    assert.equal(micros(res.usage.cost), costOf(tokens), 'usage.cost is the charge');
    const [row] = await usageRows(ctx.admin, user.id, 1);
    assert.equal(-micros(row.amount), costOf(tokens));
    assert.equal(row.reference_id, response.headers.get('x-request-id'));
  });

  test('a list of strings and token ids, floats and shorter vectors pass through', async () => {
    const { user, client } = await clientFor();
    const texts = ['first input', 'a second, longer input to embed', 'third'];
    const res = await client.embeddings.create({ model: MODEL, input: texts, encoding_format: 'float', dimensions: 8 });
    assert.deepEqual(res.data.map((d) => d.index), [0, 1, 2]);
    assert.ok(res.data.every((d) => d.embedding.length === 8));
    const ids = await client.embeddings.create({ model: MODEL, input: [[1, 2, 3, 4, 5], [6, 7]], encoding_format: 'float' });
    assert.equal(ids.usage.prompt_tokens, 7);
    const usage = await usageRows(ctx.admin, user.id, 2);
    const charged = -usage.reduce((s, r) => s + micros(r.amount), 0);
    assert.equal(charged, costOf(tokensOf(texts)) + costOf(7));
  });

  test("OpenRouter's own fields do not reach OpenAI on the direct route (it refuses arguments it does not know)", async () => {
    const { client } = await clientFor();
    const { data: res, response } = await client.embeddings
      .create({ model: MODEL, input: 'route me', encoding_format: 'float', provider: { order: ['openai'] }, transforms: [] })
      .withResponse();
    assert.equal(response.headers.get('x-tollgate-provider'), 'openai');
    assert.equal(res.data.length, 1);
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/openai/v1/embeddings').at(-1).body;
    assert.deepEqual(Object.keys(sent).sort(), ['encoding_format', 'input', 'model']);
  });

  test('pinned to OpenRouter, the same request is served there and charged the same way', async () => {
    const pin = await ctx.admin.call('PUT', `/api/admin/routes/${MODEL}`, { provider: 'openrouter' });
    assert.equal(pin.status, 200, JSON.stringify(pin.body));
    try {
      const { user, client } = await clientFor();
      const { data: res, response } = await client.embeddings.create({ model: MODEL, input: 'via openrouter' }).withResponse();
      assert.equal(response.headers.get('x-tollgate-provider'), 'openrouter');
      assert.equal(res.usage.upstream_cost, undefined, 'what the tenant pays upstream stays hidden');
      const [row] = await usageRows(ctx.admin, user.id, 1);
      assert.equal(-micros(row.amount), costOf(tokensOf(['via openrouter'])));
    } finally {
      await ctx.admin.call('DELETE', `/api/admin/routes/${MODEL}`);
    }
  });

  test('an upstream that reports only total_tokens, or no usage, is charged the input: its tokens, else their estimate', async () => {
    const pin = await ctx.admin.call('PUT', `/api/admin/routes/${MODEL}`, { provider: 'openrouter' });
    assert.equal(pin.status, 200, JSON.stringify(pin.body));
    try {
      const { user, key, client } = await clientFor();
      const ids = Array.from({ length: 400 }, (_, i) => i + 1); // 400 tokens, counted exactly
      const generation = async (id) => {
        for (let i = 0; i < 50; i++) {
          const res = await fetch(`${ctx.gw.url}/api/v1/generation?id=${id}`, { headers: { authorization: `Bearer ${key.key}` } });
          if (res.status === 200) return (await res.json()).data;
          await new Promise((r) => setTimeout(r, 200));
        }
        assert.fail(`generation ${id} never found`);
      };
      for (const fault of ['total_only', 'no_usage']) {
        const { data: res, response } = await client.embeddings
          .create({ model: MODEL, input: [ids], encoding_format: 'float', fake_fault: fault })
          .withResponse();
        assert.equal(response.headers.get('x-tollgate-provider'), 'openrouter');
        assert.equal(res.usage.total_tokens, 400, `${fault}: the client is told the tokens`);
        assert.equal(micros(res.usage.cost), costOf(400), `${fault}: and what they cost`);
        const record = await generation(response.headers.get('x-request-id'));
        assert.equal(record.tokens_prompt, 400, `${fault}: 400 input tokens charged, not a quarter of them`);
        assert.equal(record.estimated, fault === 'no_usage');
      }
      assert.equal((await settledRows(ctx.admin, user.id, 2)).length, 2, 'each charged once');
      // An upstream that answers numbers where the SDK asked for base64 (its default): encoded as OpenAI
      // does, so the SDK decodes the right vector, not garbage.
      const asFloats = await client.embeddings.create({ model: MODEL, input: 'same vector', encoding_format: 'float' });
      const viaDefault = await client.embeddings.create({ model: MODEL, input: 'same vector', fake_fault: 'floats' });
      assert.equal(viaDefault.data[0].embedding.length, 1536);
      viaDefault.data[0].embedding.forEach((x, i) => assert.ok(Math.abs(x - asFloats.data[0].embedding[i]) < 1e-6, `component ${i}`));
    } finally {
      await ctx.admin.call('DELETE', `/api/admin/routes/${MODEL}`);
    }
  });

  test('a failing OpenAI is retried, one that keeps failing hands over to OpenRouter, and each request is charged once', async () => {
    const { user, client } = await clientFor();
    const text = 'retry me please';
    const fail = (times) => fetch(`${ctx.gw.fake.url.replace('/api/v1', '')}/__fail`, { method: 'POST', body: JSON.stringify({ provider: 'openai', status: 503, times }) });
    await fail(1);
    const { data: first, response: r1 } = await client.embeddings.create({ model: MODEL, input: text }).withResponse();
    assert.equal(r1.headers.get('x-tollgate-provider'), 'openai', 'the retry on OpenAI served it');
    const calls = () => ctx.gw.fake.requests.filter((r) => r.path === '/openai/v1/embeddings').length;
    const before = calls();
    await fail(3); // the first call and UPSTREAM_RETRIES (2) retries
    const { data: second, response: r2 } = await client.embeddings.create({ model: MODEL, input: text }).withResponse();
    assert.equal(r2.headers.get('x-tollgate-provider'), 'openrouter', 'OpenRouter is the safety net');
    assert.equal(calls() - before, 3, 'OpenAI was tried three times first');
    const rows = await settledRows(ctx.admin, user.id, 2);
    assert.deepEqual(rows.map((r) => -micros(r.amount)), [costOf(tokensOf([text])), costOf(tokensOf([text]))]);
    assert.equal(micros(first.usage.cost) + micros(second.usage.cost), 2 * costOf(tokensOf([text])));
  });

  test('refusals are OpenAI-shaped: bad input, an unpriced model, an empty balance', async () => {
    const { client } = await clientFor();
    const bad = await client.embeddings.create({ model: MODEL, input: [] }).catch((e) => e);
    assert.equal(bad.status, 400);
    assert.equal(bad.error.param, 'input');
    const unknown = await client.embeddings.create({ model: 'nope/none', input: 'x' }).catch((e) => e);
    assert.equal(unknown.status, 404);
    const { client: broke } = await clientFor(0);
    const refused = await broke.embeddings.create({ model: MODEL, input: 'x' }).catch((e) => e);
    assert.equal(refused.status, 402);
    assert.equal(refused.error.code, 'insufficient_credits');
  });
});
