// Direct provider routes through the official openai SDK: with ANTHROPIC_API_KEY
// and GOOGLE_API_KEY set, `anthropic/…` and `google/…` models go to (the fakes
// of) Anthropic's Messages API and Google's Gemini API, are translated both
// ways, stream as OpenAI chunks, and are billed exactly like OpenRouter traffic.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import { FAKE_ANTHROPIC_KEY, FAKE_GOOGLE_KEY } from './fake-upstream.mjs';
import { gatewayForFile } from './fixture.mjs';

const ctx = gatewayForFile({ vars: { ANTHROPIC_API_KEY: FAKE_ANTHROPIC_KEY, GOOGLE_API_KEY: FAKE_GOOGLE_KEY } });
const micros = (usd) => Math.round(usd * 1e6);
const weather = [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: { type: 'object', properties: { location: { type: 'string' } } } } }];
const history = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Weather in Paris?' },
  { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } }] },
  { role: 'tool', tool_call_id: 'call_1', content: 'sunny and warm' },
];

/** What differs per provider: the model, its price (µ$ per Mtok, from the fake catalogue) and what the fake must have received. */
const PROVIDERS = [
  {
    name: 'anthropic',
    model: 'anthropic/claude-3-5-haiku-20241022',
    price: [800_000, 4_000_000],
    sent: () => ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1),
    checkPlain(sent, price) {
      assert.equal(sent.body.model, 'claude-3-5-haiku-20241022', 'the provider prefix is removed');
      assert.equal(sent.body.max_tokens, price.max_completion_tokens, "Anthropic requires max_tokens: defaulted from the model's limit");
      assert.equal(sent.headers['anthropic-version'], '2023-06-01');
    },
    checkHistory(body) {
      assert.equal(body.system, 'Be brief.');
      assert.deepEqual(body.messages.map((m) => m.role), ['user', 'assistant', 'user']);
      assert.deepEqual(body.messages[1].content, [{ type: 'tool_use', id: 'call_1', name: 'get_weather', input: { location: 'Paris' } }]);
      assert.deepEqual(body.messages[2].content, [{ type: 'tool_result', tool_use_id: 'call_1', content: 'sunny and warm' }]);
    },
  },
  {
    name: 'google',
    model: 'google/gemini-2.0-flash-001',
    price: [100_000, 400_000],
    sent: () => ctx.gw.fake.requests.filter((r) => r.path.startsWith('/v1beta/models/')).at(-1),
    checkPlain(sent) {
      assert.equal(sent.path, '/v1beta/models/gemini-2.0-flash-001:generateContent', 'the provider prefix is removed');
      assert.equal(sent.headers['x-goog-api-key'], FAKE_GOOGLE_KEY);
    },
    checkHistory(body) {
      assert.deepEqual(body.systemInstruction, { parts: [{ text: 'Be brief.' }] });
      assert.deepEqual(body.contents.map((c) => c.role), ['user', 'model', 'user'], 'assistant is model');
      assert.deepEqual(body.contents[1].parts, [{ functionCall: { name: 'get_weather', args: { location: 'Paris' } } }]);
      assert.deepEqual(body.contents[2].parts, [{ functionResponse: { name: 'get_weather', response: { content: 'sunny and warm' } } }]);
    },
  },
];

let client;
let user;
async function setup() {
  if (client) return;
  user = await ctx.admin.createUser({ name: 'Direct' }, { credit: 5 });
  const key = await ctx.admin.createKey(user.id, { name: 'direct' });
  client = new OpenAI({ baseURL: `${ctx.gw.url}/v1`, apiKey: key.key, maxRetries: 0 });
}

for (const p of PROVIDERS) {
  const costOf = (prompt, completion) => Math.ceil((prompt * p.price[0] + completion * p.price[1]) / 1e6);

  describe(`${p.name}, direct`, () => {
    test('a plain chat is translated both ways and charged from the provider’s usage', async () => {
      await setup();
      const { data, response } = await client.chat.completions.create({ model: p.model, messages: [{ role: 'user', content: 'hi' }] }).withResponse();
      assert.equal(response.headers.get('x-tollgate-provider'), p.name);
      assert.equal(data.object, 'chat.completion');
      assert.equal(data.model, p.model, 'the answer names the model the client asked for');
      assert.equal(data.choices[0].message.content, 'Echo: hi');
      assert.equal(data.choices[0].finish_reason, 'stop');
      assert.equal(data.usage.prompt_tokens, 4);
      assert.equal(data.usage.completion_tokens, 2);
      assert.equal(micros(data.usage.cost), costOf(4, 2));
      const sent = p.sent();
      assert.equal(sent.headers.authorization, undefined, 'the OpenRouter key never goes to a direct provider');
      p.checkPlain(sent, (await ctx.admin.call('GET', `/api/models/pricing/${p.model}`)).body.data);
    });

    test('a system prompt and a conversation with a tool call and its result', async () => {
      await setup();
      const res = await client.chat.completions.create({ model: p.model, tools: weather, messages: history });
      assert.equal(res.choices[0].message.content, 'Echo: sunny and warm');
      p.checkHistory(p.sent().body);
    });

    test('a tool call comes back in OpenAI form', async () => {
      await setup();
      const res = await client.chat.completions.create({ model: p.model, tools: weather, tool_choice: 'auto', messages: [{ role: 'user', content: 'Weather?' }] });
      const call = res.choices[0].message.tool_calls[0];
      assert.equal(res.choices[0].finish_reason, 'tool_calls');
      assert.equal(call.type, 'function');
      assert.ok(call.id);
      assert.equal(call.function.name, 'get_weather');
      assert.deepEqual(JSON.parse(call.function.arguments), { location: 'Paris', unit: 'celsius' });
    });

    test('a streamed chat arrives as OpenAI chunks, ending with usage and its cost', async () => {
      await setup();
      const stream = await client.chat.completions.create({ model: p.model, stream: true, messages: [{ role: 'user', content: 'hello streaming world' }] });
      let text = '';
      let usage = null;
      let finish = null;
      for await (const chunk of stream) {
        assert.equal(chunk.object, 'chat.completion.chunk');
        if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
        if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
        if (chunk.usage) usage = chunk.usage;
      }
      assert.equal(text, 'Echo: hello streaming world');
      assert.equal(finish, 'stop');
      assert.ok(usage, 'a final usage chunk');
      assert.equal(micros(usage.cost), costOf(usage.prompt_tokens, usage.completion_tokens));
    });

    test('a streamed tool call accumulates in the SDK like OpenAI’s', async () => {
      await setup();
      const stream = await client.chat.completions.create({ model: p.model, stream: true, tools: weather, messages: [{ role: 'user', content: 'Weather?' }] });
      let args = '';
      let name = null;
      let finish = null;
      for await (const chunk of stream) {
        const call = chunk.choices[0]?.delta?.tool_calls?.[0];
        if (call?.function?.name) name = call.function.name;
        if (call?.function?.arguments) args += call.function.arguments;
        if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      }
      assert.equal(name, 'get_weather');
      assert.deepEqual(JSON.parse(args), { location: 'Paris', unit: 'celsius' });
      assert.equal(finish, 'tool_calls');
    });

    test('direct requests are billed like OpenRouter ones and recorded as served by the provider', async () => {
      await setup();
      const before = micros((await ctx.admin.call('GET', `/api/balance?user_id=${user.id}`)).body.balance);
      const { data, response } = await client.chat.completions.create({ model: p.model, messages: [{ role: 'user', content: 'bill me once' }] }).withResponse();
      const id = response.headers.get('x-request-id');
      let generation = null;
      for (let i = 0; i < 50 && !generation; i++) {
        const g = await ctx.admin.call('GET', `/api/v1/generation?id=${id}`);
        if (g.status === 200) generation = g.body.data;
        else await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(generation, 'the usage record arrived');
      assert.equal(generation.provider, p.name);
      assert.equal(micros(generation.total_cost), micros(data.usage.cost));
      const after = micros((await ctx.admin.call('GET', `/api/balance?user_id=${user.id}`)).body.balance);
      assert.equal(before - after, micros(data.usage.cost), 'the balance moved by exactly the reported cost');
    });
  });
}

describe('routing', () => {
  test('models of providers without a direct key still go to OpenRouter', async () => {
    await setup();
    const { response } = await client.chat.completions.create({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }).withResponse();
    assert.equal(response.headers.get('x-tollgate-provider'), 'openrouter');
  });
});
