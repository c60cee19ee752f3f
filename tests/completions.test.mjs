// POST /v1/completions (legacy `prompt` → `choices[].text`) with the official
// OpenAI SDK, streamed and not: served as a chat with the prompt as its one
// message, answered in completion shapes, billed exactly like chat.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import { gatewayForFile, usageRows } from './fixture.mjs';

const ctx = gatewayForFile();
const micros = (usd) => Math.round(usd * 1e6);
const MODEL = 'openai/gpt-4o-mini';
const PRICE = [150_000, 600_000];
// The fake's token counts (tests/fake-upstream.mjs): it echoes the last message, a token a word, plus one.
function fakeTokens(prompt, maxTokens) {
  const promptTokens = Math.ceil(prompt.length / 4) + 3;
  const words = 1 + prompt.split(/\s+/).filter(Boolean).length;
  return { prompt: promptTokens, completion: Math.min(words, maxTokens) };
}
const costOf = ({ prompt, completion }) => Math.ceil((prompt * PRICE[0] + completion * PRICE[1]) / 1e6);


describe('legacy completions', () => {
  test('a completion answers in text, with usage.cost the exact charge', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    const prompt = 'complete this sentence please';
    const res = await client.completions.create({ model: MODEL, prompt, max_tokens: 40 });
    assert.equal(res.object, 'text_completion');
    assert.equal(res.choices[0].text, 'Echo: complete this sentence please');
    assert.equal(res.model, MODEL);
    const expected = costOf(fakeTokens(prompt, 40));
    assert.equal(micros(res.usage.cost), expected);
    const [row] = await usageRows(ctx.admin, user.id, 1);
    assert.equal(-micros(row.amount), expected);
  });

  test('streamed, chunk by chunk in completion shape, and the legacy default of 16 tokens', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    const prompt = Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ');
    let text = '';
    let chunks = 0;
    let usage = null;
    for await (const chunk of await client.completions.create({ model: MODEL, prompt, stream: true, stream_options: { include_usage: true } })) {
      chunks += 1;
      assert.equal(chunk.object, 'text_completion');
      if (chunk.choices.length) text += chunk.choices[0].text;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.ok(chunks > 5);
    const tokens = fakeTokens(prompt, 16);
    assert.equal(usage.completion_tokens, 16, 'no max_tokens: the legacy default of 16');
    assert.equal(text.split(' ').length, 16);
    const [row] = await usageRows(ctx.admin, user.id, 1);
    assert.equal(-micros(row.amount), costOf(tokens));
    assert.equal(micros(usage.cost), costOf(tokens));
  });

  test('what chat cannot carry is refused by name', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    for (const [extra, param] of [[{ echo: true }, 'echo'], [{ suffix: 'x' }, 'suffix'], [{ prompt: ['a', 'b'] }, 'prompt'], [{ tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools'], [{ messages: [{ role: 'user', content: 'y' }] }, 'messages']]) {
      const err = await client.completions.create({ model: MODEL, prompt: 'x', ...extra }).catch((e) => e);
      assert.equal(err.status, 400);
      assert.equal(err.error.param, param);
    }
  });

  test("the rest of the request reaches the upstream as on chat (OpenRouter's own fields, the client's bound)", async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    const prompt = Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ');
    const res = await client.completions.create({ model: MODEL, prompt, top_k: 3, reasoning: { effort: 'low' }, max_completion_tokens: 24 });
    assert.ok(res.usage.completion_tokens > 16, 'max_completion_tokens bounds the answer, not the legacy 16');
    const sent = ctx.gw.fake.requests.filter((r) => r.path.endsWith('/chat/completions')).at(-1).body;
    assert.equal(sent.max_completion_tokens, 24);
    assert.ok(sent.max_tokens === undefined || sent.max_tokens === 24, JSON.stringify(sent));
    assert.equal(sent.top_k, 3);
    assert.deepEqual(sent.reasoning, { effort: 'low' });
  });
});
