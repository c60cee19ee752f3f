// Direct provider routes through the official openai SDK: with OPENAI_API_KEY,
// ANTHROPIC_API_KEY and GOOGLE_API_KEY set, `openai/…`, `anthropic/…` and
// `google/…` models go to (the fakes of) OpenAI's API, Anthropic's Messages API
// and Google's Gemini API, are translated both ways, stream as OpenAI chunks,
// and are billed exactly like OpenRouter traffic. Then: retries, fallbacks
// (across models and to OpenRouter), route pins, and each provider's errors.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import { FAKE_ANTHROPIC_KEY, FAKE_GOOGLE_KEY, FAKE_OPENAI_KEY } from './fake-upstream.mjs';
import { gatewayForFile, generationOf, hangUpOnStream, hangUpsChargedOnce } from './fixture.mjs';
import { FAKE_UPSTREAM_KEY } from './harness.mjs';

const ctx = gatewayForFile({ vars: { OPENAI_API_KEY: FAKE_OPENAI_KEY, ANTHROPIC_API_KEY: FAKE_ANTHROPIC_KEY, GOOGLE_API_KEY: FAKE_GOOGLE_KEY, LOG_LEVEL: 'debug' } });
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
    name: 'openai',
    model: 'openai/gpt-4o-mini',
    price: [150_000, 600_000],
    path: '/openai/v1/chat/completions',
    sent: () => ctx.gw.fake.requests.filter((r) => r.path === '/openai/v1/chat/completions').at(-1),
    checkPlain(sent) {
      assert.equal(sent.body.model, 'gpt-4o-mini', 'the provider prefix is removed');
      assert.equal(sent.headers.authorization, `Bearer ${FAKE_OPENAI_KEY}`);
      assert.equal(sent.headers['x-title'], undefined, "OpenRouter's attribution headers stay OpenRouter's");
    },
    checkHistory(body) {
      assert.deepEqual(body.messages, history, 'OpenAI gets the conversation as the client wrote it');
      assert.equal(body.tools[0].function.name, 'get_weather');
    },
  },
  {
    name: 'anthropic',
    model: 'anthropic/claude-3-5-haiku-20241022',
    price: [800_000, 4_000_000],
    path: '/v1/messages',
    sent: () => ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1),
    checkPlain(sent, price) {
      assert.equal(sent.body.model, 'claude-3-5-haiku-20241022', 'the provider prefix is removed');
      assert.equal(sent.body.max_tokens, price.max_completion_tokens, "Anthropic requires max_tokens: defaulted from the model's limit");
      assert.equal(sent.headers['anthropic-version'], '2023-06-01');
    },
    checkHistory(body) {
      assert.deepEqual(body.system, [{ type: 'text', text: 'Be brief.' }]);
      assert.deepEqual(body.messages.map((m) => m.role), ['user', 'assistant', 'user']);
      assert.deepEqual(body.messages[1].content, [{ type: 'tool_use', id: 'call_1', name: 'get_weather', input: { location: 'Paris' } }]);
      assert.deepEqual(body.messages[2].content, [{ type: 'tool_result', tool_use_id: 'call_1', content: 'sunny and warm' }]);
    },
  },
  {
    name: 'google',
    model: 'google/gemini-2.0-flash-001',
    price: [100_000, 400_000],
    path: '/v1beta/models/gemini-2.0-flash-001:generateContent',
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

describe('what each provider needs kept', () => {
  test('Anthropic direct keeps cache_control on system blocks and content parts (prompt caching)', async () => {
    await setup();
    const system = [{ type: 'text', text: 'A long, stable instruction block.', cache_control: { type: 'ephemeral' } }, { type: 'text', text: 'Be brief.' }];
    const user = [{ type: 'text', text: 'A long document to cache.', cache_control: { type: 'ephemeral' } }, { type: 'text', text: 'Summarise it.' }];
    const res = await client.chat.completions.create({ model: 'anthropic/claude-3-5-haiku-20241022', messages: [{ role: 'system', content: system }, { role: 'user', content: user }] });
    assert.ok(res.choices[0].message.content);
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1).body;
    assert.deepEqual(sent.system, system, 'system stays blocks, each with its breakpoint');
    assert.deepEqual(sent.messages[0].content, user);
  });

  test("one tool call at a time reaches Anthropic as its own setting on the choice", async () => {
    await setup();
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { location: { type: 'string' } } } } }];
    // Answered: the fake refuses a tool_choice field Anthropic does not know, and a `parallel_tool_calls`.
    await client.chat.completions.create({ model: 'anthropic/claude-3-5-haiku-20241022', tools, tool_choice: 'required', parallel_tool_calls: false, messages: [{ role: 'user', content: 'Weather?' }] });
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1).body;
    assert.deepEqual(sent.tool_choice, { type: 'any', disable_parallel_tool_use: true });
    assert.equal(sent.parallel_tool_calls, undefined, "not a field of Anthropic's");
  });

  test('a JSON Schema response format reaches a Google model as its JSON mode, and the answer parses', async () => {
    await setup();
    const schema = { type: 'object', properties: { reply: { type: 'string' } }, required: ['reply'], additionalProperties: false };
    const res = await client.chat.completions.create({
      model: 'google/gemini-2.0-flash-001', messages: [{ role: 'user', content: 'Say hi' }],
      response_format: { type: 'json_schema', json_schema: { name: 'answer', strict: true, schema } },
    });
    assert.match(JSON.parse(res.choices[0].message.content).reply, /Say hi/);
    const sent = ctx.gw.fake.requests.filter((r) => r.path.startsWith('/v1beta/models/')).at(-1).body;
    assert.deepEqual(sent.generationConfig.responseJsonSchema, schema);
    assert.equal(sent.generationConfig.responseMimeType, 'application/json');
  });

  test('a Gemini 3 tool loop: each call\'s thought signature goes back with it, or Google\'s stand-in when the client dropped it', async () => {
    await setup();
    const model = 'google/gemini-3-pro-preview'; // refuses a history whose calls lost their signatures, as Gemini 3 does
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { location: { type: 'string' } } } } }];
    const ask = { role: 'user', content: 'Weather in Paris?' };
    const first = (await client.chat.completions.create({ model, tools, messages: [ask] })).choices[0].message;
    const signature = first.tool_calls[0].extra_content?.google?.thought_signature;
    assert.ok(signature, JSON.stringify(first));
    const sentCall = () => ctx.gw.fake.requests.filter((r) => r.path.startsWith('/v1beta/models/')).at(-1).body.contents[1].parts[0];
    const result = { role: 'tool', tool_call_id: first.tool_calls[0].id, content: 'sunny' };
    // A client that sends the message back as it came (the SDKs' own objects keep the field).
    const kept = await client.chat.completions.create({ model, tools, messages: [ask, first, result] });
    assert.match(kept.choices[0].message.content, /sunny/);
    assert.equal(sentCall().thoughtSignature, signature);
    // One that keeps only the call's id, name and arguments, as most agents do.
    const bare = { role: 'assistant', content: null, tool_calls: first.tool_calls.map(({ id, type, function: f }) => ({ id, type, function: f })) };
    const rebuilt = await client.chat.completions.create({ model, tools, messages: [ask, bare, result] });
    assert.match(rebuilt.choices[0].message.content, /sunny/);
    assert.equal(sentCall().thoughtSignature, 'skip_thought_signature_validator');
    // Streamed, the signature comes with the call, whose id is the answer's own (never another turn's).
    const stream = await client.chat.completions.create({ model, tools, stream: true, messages: [ask] });
    const calls = [];
    for await (const chunk of stream) calls.push(...(chunk.choices[0]?.delta?.tool_calls ?? []));
    assert.ok(calls[0].extra_content?.google?.thought_signature);
    assert.notEqual(calls[0].id, first.tool_calls[0].id);
  });

  test('a strict function tool reaches a Google model as JSON Schema Gemini accepts', async () => {
    await setup();
    const strict = [{ type: 'function', function: { name: 'get_weather', strict: true, parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'], additionalProperties: false } } }];
    const res = await client.chat.completions.create({ model: 'google/gemini-2.0-flash-001', tools: strict, messages: [{ role: 'user', content: 'Weather?' }] });
    assert.equal(res.choices[0].message.tool_calls[0].function.name, 'get_weather');
    const sent = ctx.gw.fake.requests.filter((r) => r.path.startsWith('/v1beta/models/')).at(-1).body;
    assert.equal(sent.tools[0].functionDeclarations[0].parametersJsonSchema.additionalProperties, false);
    assert.equal(sent.tools[0].functionDeclarations[0].parameters, undefined);
  });
});

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
      assert.notEqual(sent.headers.authorization, `Bearer ${FAKE_UPSTREAM_KEY}`, 'the OpenRouter key never goes to a direct provider');
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
        assert.equal(chunk.model, p.model, 'every chunk names the model the client asked for');
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

    test('a client that hangs up mid-stream is charged once, less than the whole answer: in turn and four at once', async () => {
      const own = await ctx.admin.createUser({ name: `Hang-ups ${p.name}` }, { credit: 5 });
      const key = await ctx.admin.createKey(own.id);
      const content = `[slow:150] ${Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ')}`;
      const ask = { model: p.model, messages: [{ role: 'user', content }] };
      const whole = await new OpenAI({ baseURL: `${ctx.gw.url}/v1`, apiKey: key.key, maxRetries: 0 }).chat.completions.create(ask);
      const hangUp = () => hangUpOnStream(ctx.gw.url, '/v1/chat/completions', { authorization: `Bearer ${key.key}` }, { ...ask, stream: true }, 'w1');
      await hangUpsChargedOnce(ctx.admin, own.id, hangUp, micros(whole.usage.cost), 1);
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

const fail = (provider, status, extra = {}) =>
  fetch(`${ctx.gw.fake.url.replace('/api/v1', '')}/__fail`, { method: 'POST', body: JSON.stringify({ provider, status, ...extra }) });
const calls = (path) => ctx.gw.fake.requests.filter((r) => r.path === path).length;
const OPENROUTER = '/api/v1/chat/completions';
const balance = async () => micros((await ctx.admin.call('GET', `/api/balance?user_id=${user.id}`)).body.balance);

test('an Anthropic stream broken off after its start is charged the prompt and cache it reported, and the output delivered', async () => {
  await setup();
  const key = await ctx.admin.createKey(user.id, { name: 'cut anthropic' });
  // The fake Anthropic API closes the stream after two text deltas; its message_start said 5,000 tokens were
  // written to the cache.
  const content = 'please stop early [cut:2] [cache_write:5000]';
  const res = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'anthropic/claude-3-5-haiku-20241022', stream: true, messages: [{ role: 'user', content }] }),
  });
  assert.equal(res.status, 200);
  assert.match(await res.text(), /"error"/, 'the stream ended with an error event');
  const record = await generationOf(ctx.admin, res.headers.get('x-request-id'));
  const input = Math.ceil(content.length / 4) + 3; // the fake's count
  assert.equal(record.tokens_prompt, input + 5_000, 'the prompt and cache write Anthropic reported, not an estimate');
  assert.ok(record.tokens_completion >= 1);
  const atLeast = Math.ceil((input + 5_000) * 800_000 / 1e6);
  assert.ok(micros(record.total_cost) >= atLeast, `${micros(record.total_cost)} >= ${atLeast}`);
});

describe('routing', () => {
  test('models of providers without a direct key still go to OpenRouter', async () => {
    await setup();
    const { response } = await client.chat.completions.create({ model: 'meta-llama/llama-3.1-8b-instruct', messages: [{ role: 'user', content: 'hi' }] }).withResponse();
    assert.equal(response.headers.get('x-tollgate-provider'), 'openrouter');
  });

  test('/v1/models names the provider that serves each priced model', async () => {
    const { data } = await fetch(`${ctx.gw.url}/v1/models`).then((r) => r.json());
    const owner = (id) => data.find((m) => m.id === id)?.owned_by;
    assert.equal(owner('openai/gpt-4o'), 'openai');
    assert.equal(owner('anthropic/claude-3-5-haiku-20241022'), 'anthropic');
    assert.equal(owner('google/gemini-2.0-flash-001'), 'google');
    assert.equal(owner('meta-llama/llama-3.1-8b-instruct'), 'openrouter');
  });

  test('a pin sends a model to a provider under its native id, from the next request on', async () => {
    await setup();
    const model = 'anthropic/claude-3.5-sonnet';
    const put = await ctx.admin.call('PUT', `/api/admin/routes/${model}`, { provider: 'anthropic', native_model: 'claude-3-5-haiku-20241022', fallback_to_openrouter: false });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.deepEqual(put.body.data, { model, provider: 'anthropic', native_model: 'claude-3-5-haiku-20241022', fallback_to_openrouter: false, pinned: true, updated_at: put.body.data.updated_at });
    const { data, response } = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'pinned' }] }).withResponse();
    assert.equal(response.headers.get('x-tollgate-provider'), 'anthropic');
    assert.equal(data.model, model, 'the client still sees the id it asked for');
    assert.equal(ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1).body.model, 'claude-3-5-haiku-20241022');
    const listed = (await ctx.admin.call('GET', '/api/admin/routes')).body;
    assert.deepEqual(listed.direct_providers, ['openai', 'anthropic', 'google']);
    assert.equal(listed.data.find((r) => r.model === model).pinned, true);
    assert.equal(listed.data.find((r) => r.model === 'openai/gpt-4o').provider, 'openai', 'unpinned models show the default route');

    const del = await ctx.admin.call('DELETE', `/api/admin/routes/${model}`);
    assert.deepEqual(del.body.data, { model, deleted: true });
    assert.equal((await ctx.admin.call('DELETE', `/api/admin/routes/${model}`)).status, 404);
    // Unpinned, the default rule asks Anthropic for `claude-3.5-sonnet`, which it does not know (404): OpenRouter serves.
    const before = calls('/v1/messages');
    const again = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'unpinned' }] }).withResponse();
    assert.equal(again.response.headers.get('x-tollgate-provider'), 'openrouter');
    assert.equal(calls('/v1/messages'), before + 1, 'a 404 is not retried, it falls back');
  });

  test('pins are checked: priced models, known providers with a key', async () => {
    await setup();
    const unpriced = await ctx.admin.call('PUT', '/api/admin/routes/acme/unknown', { provider: 'openai' });
    assert.equal(unpriced.status, 404);
    assert.match(unpriced.body.error.message, /no price configured for acme\/unknown/);
    const azure = await ctx.admin.call('PUT', '/api/admin/routes/openai/gpt-4o', { provider: 'azure' });
    assert.equal(azure.status, 400);
    assert.equal(azure.body.error.param, 'provider');
    const key = await ctx.admin.createKey(user.id, { name: 'not-admin' });
    const denied = await fetch(`${ctx.gw.url}/api/admin/routes`, { headers: { authorization: `Bearer ${key.key}` } });
    assert.equal(denied.status, 403);
  });
});

describe('retries and fallbacks', () => {
  test('a provider that fails once is retried: two upstream calls, one charge', async () => {
    await setup();
    const p = PROVIDERS.find((x) => x.name === 'anthropic');
    await fail('anthropic', 529);
    const before = { calls: calls('/v1/messages'), balance: await balance() };
    const { data, response } = await client.chat.completions.create({ model: p.model, messages: [{ role: 'user', content: 'retry me' }] }).withResponse();
    assert.equal(response.headers.get('x-tollgate-provider'), 'anthropic');
    assert.equal(calls('/v1/messages'), before.calls + 2);
    const record = await generationOf(ctx.admin, response.headers.get('x-request-id'));
    assert.equal(record.provider, 'anthropic');
    assert.equal(before.balance - (await balance()), micros(data.usage.cost), 'charged once');
    const line = ctx.gw.logs().split('\n').find((l) => l.includes(response.headers.get('x-request-id')) && l.includes('"attempts"'));
    assert.match(line, /"attempts":2/);
    assert.doesNotMatch(ctx.gw.logs(), new RegExp(`${FAKE_ANTHROPIC_KEY}|${FAKE_OPENAI_KEY}|retry me`), 'no secrets or message contents in the log');
  });

  test('a stream is retried before its first byte', async () => {
    await setup();
    await fail('google', 503);
    const before = calls('/v1beta/models/gemini-2.0-flash-001:streamGenerateContent');
    const stream = await client.chat.completions.create({ model: 'google/gemini-2.0-flash-001', stream: true, messages: [{ role: 'user', content: 'stream after retry' }] });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    assert.equal(text, 'Echo: stream after retry');
    assert.equal(calls('/v1beta/models/gemini-2.0-flash-001:streamGenerateContent'), before + 2);
  });

  test('a direct route that keeps failing falls back to OpenRouter for the same model', async () => {
    await setup();
    await fail('openai', 503, { times: 3 }); // the first call and both retries
    const before = { openai: calls('/openai/v1/chat/completions'), openrouter: calls(OPENROUTER), balance: await balance() };
    const { data, response } = await client.chat.completions.create({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'fall back' }] }).withResponse();
    assert.equal(response.headers.get('x-tollgate-provider'), 'openrouter');
    assert.equal(data.model, 'openai/gpt-4o-mini');
    assert.equal(calls('/openai/v1/chat/completions'), before.openai + 3);
    assert.equal(calls(OPENROUTER), before.openrouter + 1);
    assert.equal(ctx.gw.fake.requests.filter((r) => r.path === OPENROUTER).at(-1).body.model, 'openai/gpt-4o-mini');
    const record = await generationOf(ctx.admin, response.headers.get('x-request-id'));
    assert.equal(record.provider, 'openrouter');
    assert.equal(before.balance - (await balance()), micros(data.usage.cost), 'charged once');
  });

  test('the models list: the next model serves when the first fails everywhere, billed at its own price', async () => {
    await setup();
    await fail('anthropic', 529, { times: 3 });
    await fail('openrouter', 502, { times: 3 });
    const before = await balance();
    const { data, response } = await client.chat.completions
      .create({ model: 'anthropic/claude-3-5-haiku-20241022', models: ['google/gemini-2.0-flash-001'], messages: [{ role: 'user', content: 'next model' }] })
      .withResponse();
    assert.equal(response.headers.get('x-tollgate-provider'), 'google');
    assert.equal(data.model, 'google/gemini-2.0-flash-001', 'the answer names the model that served');
    assert.equal(ctx.gw.fake.requests.filter((r) => r.path.startsWith('/v1beta/')).at(-1).body.models, undefined);
    const record = await generationOf(ctx.admin, response.headers.get('x-request-id'));
    assert.deepEqual([record.model, record.provider], ['google/gemini-2.0-flash-001', 'google']);
    const cost = Math.ceil((data.usage.prompt_tokens * 100_000 + data.usage.completion_tokens * 400_000) / 1e6);
    assert.equal(micros(data.usage.cost), cost, "Gemini's price, not the dearer Claude's the request reserved for");
    assert.equal(before - (await balance()), cost);
  });

  for (const stream of [false, true]) {
    test(`on an OpenRouter route the models list goes to OpenRouter, and the model it served sets the price${stream ? ' (streamed)' : ''}`, async () => {
      await setup();
      await fail('openrouter', 503); // the first model fails at OpenRouter, which serves the next
      const before = await balance();
      const request = { model: 'meta-llama/llama-3.1-8b-instruct', models: ['openai/gpt-4o'], messages: [{ role: 'user', content: 'served by the fallback' }] };
      const { data, response } = await client.chat.completions.create({ ...request, stream }).withResponse();
      let usage = data.usage;
      if (stream) for await (const chunk of data) usage = chunk.usage ?? usage;
      assert.equal(response.headers.get('x-tollgate-provider'), 'openrouter');
      assert.deepEqual(ctx.gw.fake.requests.filter((r) => r.path === OPENROUTER).at(-1).body.models, ['openai/gpt-4o'], 'OpenRouter gets the list');
      const cost = Math.ceil((usage.prompt_tokens * 2_500_000 + usage.completion_tokens * 10_000_000) / 1e6);
      assert.equal(micros(usage.cost), cost, "GPT-4o's price, the model OpenRouter served");
      const record = await generationOf(ctx.admin, response.headers.get('x-request-id'));
      assert.equal(record.model, 'openai/gpt-4o');
      assert.equal(before - (await balance()), cost);
    });
  }

  test('a fallback model without a price is refused before any upstream call', async () => {
    await setup();
    const before = calls('/openai/v1/chat/completions') + calls(OPENROUTER);
    const res = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${client.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4o', models: ['acme/free-lunch'], messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(res.status, 404);
    assert.match((await res.json()).error.message, /no price configured for acme\/free-lunch/);
    assert.equal(calls('/openai/v1/chat/completions') + calls(OPENROUTER), before, 'no upstream call');
  });
});

/** Per provider, how its failures reach the client (the route pinned with no fallback, so the error shows). */
const ERRORS = [
  { name: 'openai', model: 'openai/gpt-4o-mini', path: '/openai/v1/chat/completions', overloaded: 503 },
  { name: 'anthropic', model: 'anthropic/claude-3-5-haiku-20241022', path: '/v1/messages', overloaded: 529 },
  { name: 'google', model: 'google/gemini-2.0-flash-001', path: '/v1beta/models/gemini-2.0-flash-001:generateContent', overloaded: 503 },
];

for (const e of ERRORS) {
  describe(`${e.name} errors in OpenAI's shape`, () => {
    const ask = () =>
      fetch(`${ctx.gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${client.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: e.model, messages: [{ role: 'user', content: 'hi' }] }),
      });

    test('pinned without fallback', async () => {
      await setup();
      const put = await ctx.admin.call('PUT', `/api/admin/routes/${e.model}`, { provider: e.name, fallback_to_openrouter: false });
      assert.equal(put.status, 200);
    });

    test('a 400 keeps the provider’s message and is neither retried nor charged', async () => {
      const before = { calls: calls(e.path), balance: await balance() };
      await fail(e.name, 400, { message: 'messages.0: this request is malformed' });
      const res = await ask();
      const body = await res.json();
      assert.equal(res.status, 400);
      assert.equal(body.error.type, 'invalid_request_error');
      assert.match(body.error.message, /this request is malformed/);
      assert.equal(calls(e.path), before.calls + 1);
      assert.equal(await balance(), before.balance);
    });

    test('a 429 asking for a long wait is passed on with its retry-after', async () => {
      const before = calls(e.path);
      await fail(e.name, 429, { retry_after: 30 });
      const res = await ask();
      assert.equal(res.status, 429);
      assert.equal(res.headers.get('retry-after'), '30');
      assert.equal((await res.json()).error.type, 'rate_limit_error');
      assert.equal(calls(e.path), before + 1, 'longer than the retry cap: not retried');
    });

    test('refused credentials are the operator’s problem: 502, never 401', async () => {
      await fail(e.name, 401);
      const res = await ask();
      const body = await res.json();
      assert.equal(res.status, 502);
      assert.equal(body.error.code, 'upstream_error');
      assert.match(body.error.message, /provider key/);
    });

    test(`an overloaded provider (${e.overloaded}) is retried, then reported as 502`, async () => {
      const before = calls(e.path);
      await fail(e.name, e.overloaded, { times: 3 });
      const res = await ask();
      assert.equal(res.status, 502);
      assert.equal((await res.json()).error.type, 'api_error');
      assert.equal(calls(e.path), before + 3, 'the first call and UPSTREAM_RETRIES=2 retries');
    });

    test('unpinned again', async () => {
      assert.equal((await ctx.admin.call('DELETE', `/api/admin/routes/${e.model}`)).status, 200);
    });
  });
}
