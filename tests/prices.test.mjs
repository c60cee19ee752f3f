// Prices: public reads, admin edits, sync from the upstream with a markup, and what chat charges.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { gatewayForFile } from './fixture.mjs';

const ctx = gatewayForFile({ vars: { PRICE_MARKUP_PERCENT: '10' } });

describe('prices', () => {
  test('sync pulls the upstream catalogue and adds the markup; reads are public', async () => {
    const list = await fetch(`${ctx.gw.url}/api/models/pricing?provider=openai`).then((r) => r.json());
    assert.ok(list.data.length >= 2);
    assert.ok(list.data.every((p) => p.provider === 'openai'));
    const mini = await fetch(`${ctx.gw.url}/api/models/pricing/openai/gpt-4o-mini`).then((r) => r.json());
    // upstream 0.00000015 / 0.0000006 per token, +10 %
    assert.equal(mini.data.pricing_input, 0.000000165);
    assert.equal(mini.data.pricing_output, 0.00000066);
    // A cache rate listed as "0" is none (cached tokens are priced as input), not free.
    assert.deepEqual([mini.data.pricing_cache_read, mini.data.pricing_cache_write], [null, null]);
    assert.equal(mini.data.upstream_pricing_input, undefined, 'the public list does not show what the tenant pays');
    const asAdmin = await ctx.admin.call('GET', '/api/models/pricing/openai/gpt-4o-mini');
    assert.equal(asAdmin.body.data.upstream_pricing_input, 0.00000015, 'an admin sees it');
    assert.equal(mini.data.context_length, 128000);
    assert.equal(mini.data.is_active, true);
    // A model with a fee per request (which the table cannot hold) comes in inactive, and is not served.
    const sonar = await ctx.admin.call('GET', '/api/models/pricing/perplexity/sonar');
    assert.equal(sonar.body.data.is_active, false, JSON.stringify(sonar.body));
    const user = await ctx.admin.createUser();
    const key = await ctx.admin.createKey(user.id);
    const refused = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'perplexity/sonar', messages: [{ role: 'user', content: 'search me' }] }),
    });
    assert.equal(refused.status, 404);
    const missing = await fetch(`${ctx.gw.url}/api/models/pricing/nope/none`);
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.code, 'model_not_found');
    const models = await fetch(`${ctx.gw.url}/v1/models`).then((r) => r.json());
    assert.deepEqual(models.data.find((m) => m.id === 'openai/gpt-4o-mini').pricing, { prompt: '0.000000165', completion: '0.00000066' }, 'local prices win in /v1/models');
    assert.ok(!models.data.some((m) => m.id === 'perplexity/sonar'), 'an inactive model is not listed');
  });

  test('an operator edit survives a sync unless overwrite is asked for', async () => {
    const put = await ctx.admin.call('PUT', '/api/models/pricing', { model_name: 'openai/gpt-4o', pricing_input: '0.000001', pricing_output: 0.000002, display_name: 'GPT-4o (ours)' });
    assert.equal(put.status, 200);
    assert.equal(put.body.data.edited_by_admin, true);
    await ctx.admin.call('POST', '/api/models/pricing/sync', {});
    const kept = (await ctx.admin.call('GET', '/api/models/pricing/openai/gpt-4o')).body.data;
    assert.equal(kept.pricing_input, 0.000001);
    assert.equal(kept.display_name, 'GPT-4o (ours)');
    const over = await ctx.admin.call('POST', '/api/models/pricing/sync', { overwrite: true });
    assert.equal(over.status, 200);
    const replaced = (await ctx.admin.call('GET', '/api/models/pricing/openai/gpt-4o')).body.data;
    assert.equal(replaced.pricing_input, 0.00000275);
    assert.equal(replaced.edited_by_admin, false);
  });

  test('a new price, and a deactivated one, take effect in chat', async () => {
    const user = await ctx.admin.createUser();
    const key = await ctx.admin.createKey(user.id);
    const chat = (model) => fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'price me' }] }),
    });
    const put = await ctx.admin.call('PUT', '/api/models/pricing', { model_name: 'meta-llama/llama-3.1-8b-instruct', pricing_input: 0.001, pricing_output: 0.002 });
    assert.equal(put.status, 200);
    const res = await chat('meta-llama/llama-3.1-8b-instruct');
    assert.equal(res.status, 200);
    const body = await res.json();
    const expected = Math.ceil((body.usage.prompt_tokens * 1e9 + body.usage.completion_tokens * 2e9) / 1e6);
    assert.equal(Math.round(body.usage.cost * 1e6), expected, 'charged at the price just set');
    await ctx.admin.call('PUT', '/api/models/pricing', { model_name: 'meta-llama/llama-3.1-8b-instruct', pricing_input: 0.001, pricing_output: 0.002, is_active: false });
    assert.equal((await chat('meta-llama/llama-3.1-8b-instruct')).status, 404);
  });

  test('a long-context tier is synced, marked up, and charged to the whole request from its prompt size on', async () => {
    const pro = (await ctx.admin.call('GET', '/api/models/pricing/google/gemini-2.5-pro')).body.data;
    // The upstream lists $1.25/$10 per Mtok, and $2.50/$15 from 200K prompt tokens; +10 %.
    assert.equal(pro.pricing_input, 0.000001375);
    assert.deepEqual(pro.long_context, {
      from_prompt_tokens: 200000, pricing_input: 0.00000275, pricing_output: 0.0000165,
      pricing_cache_read: null, pricing_cache_write: null, pricing_reasoning: null,
    });
    const user = await ctx.admin.createUser({}, { credit: 10 });
    const key = await ctx.admin.createKey(user.id);
    const chat = async (content) => {
      const res = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'google/gemini-2.5-pro', messages: [{ role: 'user', content }] }),
      });
      assert.equal(res.status, 200);
      return (await res.json()).usage;
    };
    // µ$ at the table's rates (µ$ per Mtok), rounded up once.
    const at = (usage, input, output) => Math.ceil((usage.prompt_tokens * input + usage.completion_tokens * output) / 1e6);
    const short = await chat('a short question');
    assert.equal(Math.round(short.cost * 1e6), at(short, 1_375_000, 11_000_000), 'below the tier: the base rates');
    const long = await chat('x'.repeat(4 * 200_000)); // 200,000 tokens and more to the upstream
    assert.ok(long.prompt_tokens >= 200_000);
    assert.equal(Math.round(long.cost * 1e6), at(long, 2_750_000, 16_500_000), 'from the tier on: all of it at its rates');
    // Three at once, one of them short: each at its own rates, and the balance falls by exactly their sum.
    const before = (await ctx.admin.call('GET', `/api/balance?user_id=${user.id}`)).body.balance;
    const burst = await Promise.all(['x'.repeat(4 * 200_000), 'y'.repeat(4 * 210_000), 'short again'].map(chat));
    const charged = burst.map((u) => Math.round(u.cost * 1e6));
    assert.deepEqual(charged, [at(burst[0], 2_750_000, 16_500_000), at(burst[1], 2_750_000, 16_500_000), at(burst[2], 1_375_000, 11_000_000)]);
    let after = before;
    for (let i = 0; i < 50 && Math.round((before - after) * 1e6) < charged.reduce((a, b) => a + b, 0); i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = (await ctx.admin.call('GET', `/api/balance?user_id=${user.id}`)).body.balance;
    }
    assert.equal(Math.round((before - after) * 1e6), charged.reduce((a, b) => a + b, 0), 'the balance fell by exactly what was charged');
    // The worst case of a prompt that can reach the tier is held at the tier's rates: $1.50 covers this
    // prompt's bound (about 800K tokens, a byte each) at the base rate ($1.10) but not at the tier's ($2.20).
    const poor = await ctx.admin.createUser({}, { credit: 1.5 });
    const poorKey = await ctx.admin.createKey(poor.id);
    const refused = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${poorKey.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'google/gemini-2.5-pro', messages: [{ role: 'user', content: 'x'.repeat(4 * 200_000) }] }),
    });
    assert.equal(refused.status, 402, await refused.text());
    // An operator sets (or clears) a tier by hand; a bad one is 400.
    const tier = { from_prompt_tokens: 1000, pricing_input: '0.00001', pricing_output: '0.00002' };
    const put = await ctx.admin.call('PUT', '/api/models/pricing', { model_name: 'x/tiered', pricing_input: 0.000001, pricing_output: 0.000002, long_context: tier });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.equal(put.body.data.long_context.from_prompt_tokens, 1000);
    assert.equal(put.body.data.long_context.pricing_output, 0.00002);
    const bad = await ctx.admin.call('PUT', '/api/models/pricing', { model_name: 'x/tiered', pricing_input: 0, pricing_output: 0, long_context: { ...tier, pricing_input: -1 } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.param, 'long_context.pricing_input');
    const cleared = await ctx.admin.call('PUT', '/api/models/pricing', { model_name: 'x/tiered', pricing_input: 0.000001, pricing_output: 0.000002 });
    assert.equal(cleared.body.data.long_context, null);
  });

  test('bad prices are 400; only admins edit', async () => {
    for (const body of [
      { model_name: 'x/y', pricing_input: -1, pricing_output: 0 },
      { model_name: 'x/y', pricing_input: '1e-6', pricing_output: 0 },
      { model_name: '', pricing_input: 0, pricing_output: 0 },
      { model_name: 'x/y', pricing_input: 0 },
      { model_name: 'x/y', pricing_input: 0, pricing_output: 0, colour: 'red' },
    ]) {
      assert.equal((await ctx.admin.call('PUT', '/api/models/pricing', body)).status, 400, JSON.stringify(body));
    }
    const user = await ctx.admin.createUser();
    const key = await ctx.admin.createKey(user.id);
    const res = await fetch(`${ctx.gw.url}/api/models/pricing`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model_name: 'x/y', pricing_input: 0, pricing_output: 0 }),
    });
    assert.equal(res.status, 403);
  });
});
