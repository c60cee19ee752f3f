// Anthropic's Messages API with the official `@anthropic-ai/sdk` (what Claude Code
// and Anthropic clients send): `x-api-key`, system blocks with cache breakpoints,
// the SDK's stream helper, a tool-use round trip, `count_tokens`, and errors in
// Anthropic's shape; on a direct Anthropic model and on an OpenRouter model.
// Every turn is charged exactly on the usage the upstream reported.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import Anthropic from '@anthropic-ai/sdk';

import { FAKE_ANTHROPIC_KEY } from './fake-upstream.mjs';
import { gatewayForFile, generationOf, hangUpOnStream, hangUpsChargedOnce, usageRows } from './fixture.mjs';

const ctx = gatewayForFile({ vars: { ANTHROPIC_API_KEY: FAKE_ANTHROPIC_KEY } });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const micros = (usd) => Math.round(usd * 1e6);
const DIRECT = 'anthropic/claude-3-5-haiku-20241022'; // served by (the fake of) Anthropic's API
const VIA_OPENROUTER = 'openai/gpt-4o-mini'; // this gateway has no OpenAI key: OpenRouter serves it
const PRICES = { [DIRECT]: [800_000, 4_000_000], [VIA_OPENROUTER]: [150_000, 600_000] };
const costOf = (model, usage) =>
  Math.ceil(((usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens) * PRICES[model][0] + usage.output_tokens * PRICES[model][1]) / 1e6);


async function anthropicFor(credit = 1) {
  const user = await ctx.admin.createUser({}, { credit });
  const key = await ctx.admin.createKey(user.id);
  return { user, key, client: new Anthropic({ apiKey: key.key, baseURL: ctx.gw.url, maxRetries: 0 }) };
}

for (const model of [DIRECT, VIA_OPENROUTER]) {
  describe(`messages, ${model === DIRECT ? 'direct Anthropic' : 'OpenRouter'}`, () => {
    test('a plain message, its usage and its exact charge', async () => {
      const { user, client } = await anthropicFor();
      const msg = await client.messages.create({ model, max_tokens: 64, messages: [{ role: 'user', content: 'hello there' }] });
      assert.equal(msg.type, 'message');
      assert.equal(msg.role, 'assistant');
      assert.equal(msg.content[0].type, 'text');
      assert.equal(msg.content[0].text, 'Echo: hello there');
      assert.equal(msg.stop_reason, 'end_turn');
      assert.ok(msg.usage.input_tokens > 0 && msg.usage.output_tokens > 0);
      const [row] = await usageRows(ctx.admin, user.id, 1);
      assert.equal(-micros(row.amount), costOf(model, msg.usage));
      assert.equal(micros(msg.usage.cost), costOf(model, msg.usage), 'usage.cost is the charge');
      // The id the answer carried finds its generation (`msg_…`, made from the chat answer's id).
      assert.match(msg.id, /^msg_/);
      assert.equal(micros((await generationOf(ctx.admin, msg.id)).total_cost), costOf(model, msg.usage));
    });

    test('streamed with the SDK\'s stream helper', async () => {
      const { user, client } = await anthropicFor();
      const words = Array.from({ length: 12 }, (_, i) => `w${i}`).join(' ');
      const stream = client.messages.stream({ model, max_tokens: 64, messages: [{ role: 'user', content: words }] });
      let deltas = 0;
      stream.on('text', () => (deltas += 1));
      const final = await stream.finalMessage();
      assert.ok(deltas > 3, `${deltas} text deltas`);
      assert.equal(final.content[0].text, `Echo: ${words}`);
      assert.ok(final.usage.output_tokens > 0);
      const [row] = await usageRows(ctx.admin, user.id, 1);
      assert.equal(-micros(row.amount), costOf(model, final.usage));
    });

    test('a PDF in a turn and in a tool result (as Claude Code reads one) reaches the model, charged exactly; one by URL is refused', async () => {
      const { user, client } = await anthropicFor();
      const pdf = (data) => ({ type: 'document', source: { type: 'base64', media_type: 'application/pdf', data } });
      const sentLast = () => ctx.gw.fake.requests.filter((r) => r.path.endsWith(model === DIRECT ? '/v1/messages' : '/chat/completions')).at(-1).body;
      const read = await client.messages.create({
        model, max_tokens: 64,
        messages: [{ role: 'user', content: [{ ...pdf('JVBERi0xLjQK'), title: 'spec.pdf', cache_control: { type: 'ephemeral' } }, { type: 'text', text: 'sum it up' }] }],
      });
      assert.equal(read.content[0].text, 'Echo: sum it up');
      assert.ok(read.usage.input_tokens >= 1500, `the document's tokens are counted (${read.usage.input_tokens})`);
      const first = sentLast().messages[0].content[0];
      if (model === DIRECT) assert.deepEqual(first, { ...pdf('JVBERi0xLjQK'), cache_control: { type: 'ephemeral' } }, 'a document block, its breakpoint kept');
      else assert.deepEqual(first, { type: 'file', file: { filename: 'spec.pdf', file_data: 'data:application/pdf;base64,JVBERi0xLjQK' }, cache_control: { type: 'ephemeral' } });

      const tools = [{ name: 'Read', description: 'Reads a file', input_schema: { type: 'object', properties: { file_path: { type: 'string' } } } }];
      const use = { type: 'tool_use', id: 'toolu_read_1', name: 'Read', input: { file_path: 'a.pdf' } };
      const answered = await client.messages.create({
        model, max_tokens: 64, tools,
        messages: [
          { role: 'user', content: 'read a.pdf' },
          { role: 'assistant', content: [use] },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: [{ type: 'text', text: 'a.pdf:' }, pdf('JVBERi0yLjAK')] }] },
        ],
      });
      assert.equal(answered.type, 'message');
      assert.ok(answered.usage.input_tokens >= 1500, 'the tool result\'s document is counted');
      const sent = sentLast();
      if (model === DIRECT) {
        const result = sent.messages.at(-1).content[0];
        assert.deepEqual(result.content, [{ type: 'text', text: 'a.pdf:' }, pdf('JVBERi0yLjAK')]);
      } else {
        const result = sent.messages.find((m) => m.role === 'tool');
        assert.deepEqual(result.content[1], { type: 'file', file: { filename: 'document.pdf', file_data: 'data:application/pdf;base64,JVBERi0yLjAK' } });
      }
      const rows = await usageRows(ctx.admin, user.id, 2);
      const charged = -rows.reduce((n, r) => n + micros(r.amount), 0);
      assert.equal(charged, costOf(model, read.usage) + costOf(model, answered.usage), 'each turn charged exactly');

      const byUrl = await client.messages.create({
        model, max_tokens: 8, messages: [{ role: 'user', content: [{ type: 'document', source: { type: 'url', url: 'https://example.com/a.pdf' } }] }],
      }).catch((e) => e);
      assert.equal(byUrl.status, 400);
      assert.match(byUrl.error.error.message, /^messages\.0\.content\.0: a document by `url`/);
      await sleep(300);
      assert.equal((await usageRows(ctx.admin, user.id, 2)).length, 2, 'the refused request charged nothing');
    });

    test('a client that hangs up mid-stream is charged once, less than the whole answer: in turn and four at once', async () => {
      const { user, key, client } = await anthropicFor();
      const content = `[slow:150] ${Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ')}`;
      const whole = await client.messages.create({ model, max_tokens: 64, messages: [{ role: 'user', content }] });
      const hangUp = () => hangUpOnStream(ctx.gw.url, '/v1/messages', { 'x-api-key': key.key, 'anthropic-version': '2023-06-01' },
        { model, max_tokens: 64, stream: true, messages: [{ role: 'user', content }] }, 'w1');
      await hangUpsChargedOnce(ctx.admin, user.id, hangUp, costOf(model, whole.usage), 1);
    });
  });
}

describe('messages, what agents rely on', () => {
  test('a Claude-Code-like turn: system blocks with cache breakpoints, tools, a tool round trip', async () => {
    const { user, client } = await anthropicFor();
    const system = [{ type: 'text', text: 'You are a coding agent.', cache_control: { type: 'ephemeral' } }];
    const tools = [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] } }];
    const first = await client.messages.create({ model: DIRECT, max_tokens: 256, system, tools, messages: [{ role: 'user', content: 'Weather in Paris?' }] });
    assert.equal(first.stop_reason, 'tool_use');
    const use = first.content.find((b) => b.type === 'tool_use');
    assert.equal(use.name, 'get_weather');
    assert.equal(use.input.location, 'Paris');
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1).body;
    assert.deepEqual(sent.system, system, 'the cache breakpoint reaches Anthropic');
    const second = await client.messages.create({
      model: DIRECT, max_tokens: 256, system, tools,
      messages: [
        { role: 'user', content: 'Weather in Paris?' },
        { role: 'assistant', content: first.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny', cache_control: { type: 'ephemeral' } }] },
      ],
    });
    assert.equal(second.content[0].text, 'Echo: sunny');
    const resent = ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1).body;
    const result = resent.messages.at(-1).content[0];
    assert.equal(result.type, 'tool_result');
    assert.deepEqual(result.content, [{ type: 'text', text: 'sunny', cache_control: { type: 'ephemeral' } }], 'the moving cache breakpoint on a tool result reaches Anthropic');
    const rows = await usageRows(ctx.admin, user.id, 2);
    const charged = -rows.reduce((s, r) => s + micros(r.amount), 0);
    assert.equal(charged, costOf(DIRECT, first.usage) + costOf(DIRECT, second.usage), 'each turn charged exactly once');
  });

  test('extended thinking on the direct Anthropic route: signed thinking kept across a tool round trip, the beta header passed on', async () => {
    const { user, client } = await anthropicFor();
    const tools = [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object', properties: { location: { type: 'string' } } } }];
    const betas = ['interleaved-thinking-2025-05-14'];
    const thinking = { type: 'enabled', budget_tokens: 2048 };
    const ask = { role: 'user', content: 'Weather in Paris?' };
    // Claude Code's way: the beta API (`/v1/messages?beta=true`), streamed.
    const first = await client.beta.messages.stream({ model: DIRECT, max_tokens: 4096, thinking, tools, betas, messages: [ask] }).finalMessage();
    assert.deepEqual(first.content.map((b) => b.type), ['thinking', 'tool_use']);
    assert.ok(first.content[0].thinking.startsWith('Thinking about'));
    assert.ok(first.content[0].signature.length > 20, 'the signature arrives whole');
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1);
    assert.equal(sent.headers['anthropic-beta'], betas[0]);
    assert.deepEqual(sent.body.thinking, thinking);
    const use = first.content[1];
    const answer = { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny' }] };
    // The fake refuses the turn unless the earlier thinking comes back first, signature intact.
    const second = await client.beta.messages.create({ model: DIRECT, max_tokens: 4096, thinking, tools, betas, messages: [ask, { role: 'assistant', content: first.content }, answer] });
    assert.deepEqual(second.content.map((b) => b.type), ['thinking', 'text']);
    const rows = await usageRows(ctx.admin, user.id, 2);
    assert.equal(-rows.reduce((s, r) => s + micros(r.amount), 0), costOf(DIRECT, first.usage) + costOf(DIRECT, second.usage), 'thinking tokens are output tokens, charged once');

    const tampered = [{ ...first.content[0], thinking: 'something else' }, use];
    const refused = await client.messages.create({ model: DIRECT, max_tokens: 4096, thinking, tools, messages: [ask, { role: 'assistant', content: tampered }, answer] }).catch((e) => e);
    assert.equal(refused.status, 400);
    assert.equal(refused.error.error.type, 'invalid_request_error');
    assert.match(refused.error.error.message, /signature/);
  });

  test('an hour-long cache life is served as five minutes (charged exactly); the 1M-context beta is refused before anything is held', async () => {
    const { user, client } = await anthropicFor();
    // An hour-long cache write costs twice the input price, which the table does not hold: the cache lives five minutes.
    const ask = { role: 'user', content: [{ type: 'text', text: 'a long document', cache_control: { type: 'ephemeral', ttl: '1h' } }] };
    const system = [{ type: 'text', text: 'be brief', cache_control: { type: 'ephemeral', ttl: '1h' } }];
    const hour = await client.messages.create({ model: DIRECT, max_tokens: 50, system, messages: [ask] });
    assert.equal(hour.type, 'message');
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1);
    assert.deepEqual(sent.body.messages[0].content[0].cache_control, { type: 'ephemeral' });
    assert.deepEqual(sent.body.system[0].cache_control, { type: 'ephemeral' });
    const rows = await usageRows(ctx.admin, user.id, 1);
    assert.equal(rows.length, 1);
    assert.equal(-micros(rows[0].amount), costOf(DIRECT, hour.usage), 'charged what it cost, at five minutes\' rates');
    // The 1M-context beta bills long prompts at long-context rates.
    const before = ctx.gw.fake.requests.length;
    const million = await client.beta.messages.create({ model: DIRECT, max_tokens: 50, betas: ['context-1m-2025-08-07'], messages: [{ role: 'user', content: 'hi' }] }).catch((e) => e);
    assert.equal(million.status, 400);
    assert.equal(million.error.type, 'error');
    assert.match(million.error.error.message, /context-1m-2025-08-07/);
    assert.equal(ctx.gw.fake.requests.length, before, 'nothing reached the upstream');
  });

  test('extended thinking on the OpenRouter route travels as reasoning, and no Anthropic header goes there', async () => {
    const { client } = await anthropicFor();
    const thinking = { type: 'enabled', budget_tokens: 2048 };
    const ask = { role: 'user', content: 'think it over' };
    const first = await client.messages.create({ model: VIA_OPENROUTER, max_tokens: 4096, thinking, messages: [ask] }, { headers: { 'anthropic-beta': 'interleaved-thinking-2025-05-14' } });
    assert.deepEqual(first.content.map((b) => b.type), ['thinking', 'text']);
    const sent = ctx.gw.fake.requests.filter((r) => r.path.endsWith('/chat/completions')).at(-1);
    assert.deepEqual(sent.body.reasoning, { max_tokens: 2048 });
    assert.equal(sent.headers['anthropic-beta'], undefined);
    await client.messages.stream({ model: VIA_OPENROUTER, max_tokens: 4096, thinking, messages: [ask, { role: 'assistant', content: first.content }, { role: 'user', content: 'go on' }] }).finalMessage();
    const resent = ctx.gw.fake.requests.filter((r) => r.path.endsWith('/chat/completions')).at(-1);
    assert.equal(resent.body.messages[1].reasoning_details[0].text, first.content[0].thinking, 'the thinking goes back to OpenRouter');
  });

  test('a thinking budget above what the key may still spend comes down with the output, or thinking is off (direct Anthropic)', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const thinking = { type: 'enabled', budget_tokens: 7000 };
    const ask = { model: DIRECT, max_tokens: 8000, thinking, messages: [{ role: 'user', content: 'think it over' }] };
    // $0.02 leaves room for about 5,000 output tokens at $4/M; $0.004 for under 1,024.
    for (const [limit, thinks] of [[0.02, true], [0.004, false]]) {
      const key = await ctx.admin.createKey(user.id, { limit });
      const client = new Anthropic({ apiKey: key.key, baseURL: ctx.gw.url, maxRetries: 0 });
      const answer = await client.messages.create(ask);
      const sent = ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1).body;
      assert.ok(sent.max_tokens < 8000, `capped to what is left: ${sent.max_tokens}`);
      if (thinks) {
        assert.equal(sent.thinking.budget_tokens, sent.max_tokens - 1, 'the budget under the cap');
        assert.deepEqual(answer.content.map((b) => b.type), ['thinking', 'text']);
      } else {
        assert.equal(sent.thinking, undefined, 'too little left to think in');
        assert.deepEqual(answer.content.map((b) => b.type), ['text']);
      }
    }
  });

  test('a structured output (output_config.format) is carried on every route, and an older Claude refuses it', async () => {
    const { client } = await anthropicFor();
    const schema = { type: 'object', properties: { reply: { type: 'string' } }, required: ['reply'], additionalProperties: false };
    const ask = (model) => ({ model, max_tokens: 64, output_config: { format: { type: 'json_schema', schema } }, messages: [{ role: 'user', content: 'Say hi' }] });
    const direct = await client.messages.create(ask('anthropic/claude-sonnet-4-6'));
    assert.match(JSON.parse(direct.content[0].text).reply, /Say hi/);
    assert.deepEqual(ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1).body.output_config, { format: { type: 'json_schema', schema } });
    // The beta's top-level spelling, to a model OpenRouter serves: the chat's response format (not strict:
    // OpenAI's strict mode refuses schemas Anthropic takes).
    const { output_config: format, ...beta } = ask(VIA_OPENROUTER);
    await client.messages.create({ ...beta, output_format: format.format });
    const sent = ctx.gw.fake.requests.filter((r) => r.path.endsWith('/chat/completions')).at(-1).body;
    assert.deepEqual(sent.response_format, { type: 'json_schema', json_schema: { name: 'output', schema } });
    const older = await client.messages.create(ask(DIRECT)).catch((e) => e);
    assert.equal(older.status, 400, "Anthropic's own answer, not prose where JSON was asked");
    assert.match(older.error.error.message, /output_config\.format/);
  });

  test('adaptive thinking and an effort reach a direct Anthropic route as Anthropic takes them; an older model refuses them there', async () => {
    const { user, client } = await anthropicFor();
    const model = 'anthropic/claude-sonnet-4-6'; // a Claude 4.6, served by (the fake of) Anthropic's API
    const ask = { role: 'user', content: 'Weather in Paris?' };
    const tools = [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object', properties: { location: { type: 'string' } } } }];
    const first = await client.messages.stream({ model, max_tokens: 8192, thinking: { type: 'adaptive' }, output_config: { effort: 'medium' }, tools, messages: [ask] }).finalMessage();
    assert.deepEqual(first.content.map((b) => b.type), ['thinking', 'tool_use']);
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1);
    assert.equal(sent.body.model, 'claude-sonnet-4-6');
    assert.deepEqual(sent.body.thinking, { type: 'adaptive' });
    assert.deepEqual(sent.body.output_config, { effort: 'medium' });
    // The thinking goes back with the tool's result, as Anthropic requires with thinking on.
    const result = { role: 'user', content: [{ type: 'tool_result', tool_use_id: first.content[1].id, content: 'sunny' }] };
    // Asked to show its thinking summarized (Opus 4.7 and later omit it unless asked), as the client said.
    const second = await client.messages.create({ model, max_tokens: 8192, thinking: { type: 'adaptive', display: 'summarized' }, tools, messages: [ask, { role: 'assistant', content: first.content }, result] });
    assert.deepEqual(second.content.map((b) => b.type), ['thinking', 'text']);
    assert.deepEqual(ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1).body.thinking, { type: 'adaptive', display: 'summarized' });
    const rows = await usageRows(ctx.admin, user.id, 2);
    const cost = (u) => Math.ceil((u.input_tokens * 3_000_000 + u.output_tokens * 15_000_000) / 1e6);
    assert.equal(-rows.reduce((s, r) => s + micros(r.amount), 0), cost(first.usage) + cost(second.usage), 'thinking tokens are output tokens, charged once');
    const older = await client.messages.create({ model: DIRECT, max_tokens: 1024, thinking: { type: 'adaptive' }, messages: [ask] }).catch((e) => e);
    assert.equal(older.status, 400, 'Anthropic says why, in its own shape');
    assert.match(older.error.error.message, /adaptive/);
  });

  test('adaptive thinking and an effort, as Claude Code asks Claude 4.6 and later, travel to OpenRouter as reasoning and verbosity', async () => {
    const { user, client } = await anthropicFor();
    // A Claude model Anthropic's API does not know by this id: OpenRouter serves it (the direct route's 404 moves on).
    const model = 'anthropic/claude-3.5-sonnet';
    const ask = { model, max_tokens: 4096, thinking: { type: 'adaptive', display: 'summarized' }, output_config: { effort: 'high' }, messages: [{ role: 'user', content: 'think it over' }] };
    const answer = await client.messages.create(ask);
    assert.deepEqual(answer.content.map((b) => b.type), ['thinking', 'text']);
    const sent = ctx.gw.fake.requests.filter((r) => r.path.endsWith('/chat/completions')).at(-1);
    assert.equal(sent.body.model, model);
    assert.deepEqual(sent.body.reasoning, { enabled: true }, "OpenRouter's adaptive thinking (the display is Anthropic's own)");
    assert.equal(sent.body.verbosity, 'high', "OpenRouter's output_config.effort");
    assert.equal(sent.body.max_tokens, 4096, 'thinking stays within what was reserved');
    const [row] = await usageRows(ctx.admin, user.id, 1);
    const { input_tokens, output_tokens } = answer.usage;
    assert.equal(-micros(row.amount), Math.ceil((input_tokens * 3_000_000 + output_tokens * 15_000_000) / 1e6), 'the thinking is charged as output');
  });

  test('an answer that ends at a stop sequence says so and names it, whole and streamed, on both routes to Claude', async () => {
    const { client } = await anthropicFor();
    const ask = (model) => ({ model, max_tokens: 64, stop_sequences: ['END'], messages: [{ role: 'user', content: 'alpha beta END gamma' }] });
    // Direct, Anthropic names the sequence; through OpenRouter (this id is not Anthropic's) it says only that
    // a stop sequence ended it, and the client's one sequence is named.
    for (const model of [DIRECT, 'anthropic/claude-3.5-sonnet']) {
      const whole = await client.messages.create(ask(model));
      assert.equal(whole.content[0].text, 'Echo: alpha beta');
      assert.deepEqual([whole.stop_reason, whole.stop_sequence], ['stop_sequence', 'END'], model);
      const streamed = await client.messages.stream(ask(model)).finalMessage();
      assert.deepEqual([streamed.stop_reason, streamed.stop_sequence], ['stop_sequence', 'END'], `${model}, streamed`);
    }
    // An answer that ended on its own says so.
    const plain = await client.messages.create({ ...ask(DIRECT), stop_sequences: ['NEVER'] });
    assert.deepEqual([plain.stop_reason, plain.stop_sequence], ['end_turn', null]);
  });

  // Claude Code with no model set sends Anthropic's own ids (its main model and a Haiku for background
  // work); the price table names them `anthropic/…`, as OpenRouter writes them.
  test("Anthropic's own model ids, as Claude Code sends them, are served as the price table's; an unknown one is Anthropic's 404", async () => {
    const { user, client } = await anthropicFor();
    const dated = await client.messages.create({ model: 'claude-3-5-haiku-20241022', max_tokens: 32, messages: [{ role: 'user', content: 'by its own id' }] });
    assert.equal(dated.content[0].text, 'Echo: by its own id');
    const [row] = await usageRows(ctx.admin, user.id, 1);
    assert.equal(-micros(row.amount), costOf(DIRECT, dated.usage), "charged at the table's price for it");
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages').at(-1);
    assert.equal(sent.body.model, 'claude-3-5-haiku-20241022', 'Anthropic is asked for its own id');
    const counted = await client.messages.countTokens({ model: 'claude-3-5-haiku-20241022', messages: [{ role: 'user', content: 'count me' }] });
    assert.ok(counted.input_tokens > 0);
    // An id the table writes as OpenRouter does (`anthropic/claude-3.5-sonnet`), which Anthropic does not know:
    // Anthropic is sent the client's own id, and the answer is charged at the table's price.
    const before = ctx.gw.fake.requests.length;
    const sonnet = await client.messages.create({ model: 'claude-3-5-sonnet-20241022', max_tokens: 32, messages: [{ role: 'user', content: 'dotted in the table' }] });
    assert.equal(sonnet.content[0].text, 'Echo: dotted in the table');
    const calls = ctx.gw.fake.requests.slice(before).filter((r) => r.method === 'POST').map((r) => [r.path, r.body?.model]);
    assert.deepEqual(calls, [['/v1/messages', 'claude-3-5-sonnet-20241022']], 'Anthropic at once, under its own id; OpenRouter not asked');
    const rows = await usageRows(ctx.admin, user.id, 2);
    const charge = Math.ceil((sonnet.usage.input_tokens * 3_000_000 + sonnet.usage.output_tokens * 15_000_000) / 1e6);
    assert.ok(rows.some((r) => -micros(r.amount) === charge), 'at the price of anthropic/claude-3.5-sonnet');
    const sonnetCount = ctx.gw.fake.requests.length;
    await client.messages.countTokens({ model: 'claude-3-5-sonnet-20241022', messages: [{ role: 'user', content: 'count me' }] });
    assert.ok(ctx.gw.fake.requests.slice(sonnetCount).some((r) => r.path === '/v1/messages/count_tokens' && r.body.model === 'claude-3-5-sonnet-20241022'), 'Anthropic counts it');
    await assert.rejects(
      client.messages.create({ model: 'claude-nope-9', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] }),
      (e) => e.status === 404 && e.error?.type === 'error' && /claude-nope-9/.test(e.message),
    );
  });

  test('a bearer token of the client\'s own beside the x-api-key it was given: the gateway key is the one used', async () => {
    const { user, key } = await anthropicFor();
    const res = await fetch(`${ctx.gw.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': key.key, authorization: 'Bearer sk-ant-oat01-the-clients-own-sign-in', 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify({ model: VIA_OPENROUTER, max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    await res.json();
    assert.equal((await usageRows(ctx.admin, user.id, 1)).length, 1, 'charged to the key');
  });

  test('while the model works before its first word, the stream stays alive (the upstream\'s keep-alive comes through)', async () => {
    const { key, client } = await anthropicFor();
    const ask = { model: VIA_OPENROUTER, max_tokens: 64, stream: true, messages: [{ role: 'user', content: '[think:400] hello' }] };
    const res = await fetch(`${ctx.gw.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': key.key, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify(ask),
    });
    const reader = res.body.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    assert.match(first, /^: keep-alive\n\n/, 'a comment, which every SSE reader skips, before the model has said anything');
    while (!(await reader.read()).done) { /* drain */ }
    const { stream: _, ...plain } = ask;
    const message = await client.messages.stream(plain).finalMessage();
    assert.equal(message.content[0].text, 'Echo: [think:400] hello', 'the SDK reads past it');
  });

  test('the model list answers in Anthropic\'s shape to an Anthropic client', async () => {
    const { client } = await anthropicFor();
    const page = await client.models.list();
    const ids = page.data.map((m) => m.id);
    assert.ok(ids.includes(DIRECT), ids.join(', '));
    assert.ok(page.data.every((m) => m.type === 'model' && m.display_name && m.created_at));
    // The upstream's display name, as Anthropic shows one (not the id again).
    const listed = Object.fromEntries(page.data.map((m) => [m.id, m.display_name]));
    assert.equal(listed['anthropic/claude-3.5-sonnet'], 'Anthropic: Claude 3.5 Sonnet');
  });

  test("the SDK's models.retrieve reads one model in Anthropic's shape; an unknown one is Anthropic's 404", async () => {
    const { client } = await anthropicFor();
    const one = await client.models.retrieve('anthropic/claude-3.5-sonnet');
    assert.equal(one.type, 'model');
    assert.equal(one.id, 'anthropic/claude-3.5-sonnet');
    assert.equal(one.display_name, 'Anthropic: Claude 3.5 Sonnet');
    // Anthropic's own id, as /v1/messages reads it (Claude Code asks for the model it was given).
    const own = await client.models.retrieve('claude-3-5-sonnet-20241022');
    assert.equal(own.id, 'claude-3-5-sonnet-20241022');
    assert.equal(own.display_name, 'Anthropic: Claude 3.5 Sonnet');
    await assert.rejects(client.models.retrieve('nobody/no-such-model'), (e) => e.status === 404 && e.error?.error?.type === 'not_found_error');
  });

  test('a streamed multi-turn agent session is charged exactly for every turn', async () => {
    const { user, client } = await anthropicFor();
    const system = [{ type: 'text', text: 'You are a coding agent.', cache_control: { type: 'ephemeral' } }];
    const history = [];
    const usages = [];
    for (const turn of ['open the file', 'now edit it', 'and run the tests']) {
      history.push({ role: 'user', content: turn });
      const final = await client.messages.stream({ model: DIRECT, max_tokens: 128, system, messages: history }).finalMessage();
      history.push({ role: 'assistant', content: final.content });
      usages.push(final.usage);
    }
    const rows = await usageRows(ctx.admin, user.id, 3);
    assert.equal(-rows.reduce((s, r) => s + micros(r.amount), 0), usages.reduce((s, u) => s + costOf(DIRECT, u), 0));
  });

  test('count_tokens is Anthropic\'s own count for a direct Anthropic model, an estimate elsewhere, and charges nothing', async () => {
    const { user, client } = await anthropicFor();
    const messages = [{ role: 'user', content: 'how many tokens is this?' }];
    const count = await client.messages.countTokens({ model: DIRECT, messages });
    // The fake counts as it bills: ceil(24 characters / 4) + 3 per message.
    assert.equal(count.input_tokens, 9);
    const asked = ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages/count_tokens').at(-1);
    assert.equal(asked.body.model, 'claude-3-5-haiku-20241022');
    assert.equal(asked.body.max_tokens, undefined);
    const estimate = await client.messages.countTokens({ model: VIA_OPENROUTER, messages });
    assert.ok(estimate.input_tokens > 0);
    // A PDF is counted as a typical page, not as its base64 (nor as the allowance money is held for).
    const pdf = { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: 'A'.repeat(200_000) } };
    const withPdf = await client.messages.countTokens({ model: VIA_OPENROUTER, messages: [{ role: 'user', content: [pdf, { type: 'text', text: 'sum it up' }] }] });
    assert.ok(withPdf.input_tokens > 1_000 && withPdf.input_tokens < 10_000, `${withPdf.input_tokens} tokens for one PDF`);
    await sleep(300);
    const rows = (await ctx.admin.call('GET', `/api/balance/transactions?user_id=${user.id}`)).body.data;
    assert.equal(rows.filter((r) => r.type === 'usage').length, 0);
  });

  test('count_tokens does not ask Anthropic for a key that may not use it', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = (await ctx.admin.call('POST', '/api/keys', { name: 'or-only', user_id: user.id, allowed_providers: ['openrouter'] })).body.data;
    const client = new Anthropic({ apiKey: key.key, baseURL: ctx.gw.url, maxRetries: 0 });
    const asked = () => ctx.gw.fake.requests.filter((r) => r.path === '/v1/messages/count_tokens').length;
    const before = asked();
    const count = await client.messages.countTokens({ model: DIRECT, messages: [{ role: 'user', content: 'count me' }] });
    assert.ok(count.input_tokens > 0, 'the estimate');
    assert.equal(asked(), before, 'Anthropic was not asked');
  });

  test('errors come in Anthropic\'s shape: a bad key, a bad request, an empty balance', async () => {
    const bad = new Anthropic({ apiKey: `sk-tg-v1-${'0'.repeat(64)}`, baseURL: ctx.gw.url, maxRetries: 0 });
    const unauthorized = await bad.messages.create({ model: DIRECT, max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    assert.equal(unauthorized.status, 401);
    assert.equal(unauthorized.error.type, 'error');
    assert.equal(unauthorized.error.error.type, 'authentication_error');
    const { client } = await anthropicFor();
    const invalid = await client.messages.create({ model: DIRECT, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    assert.equal(invalid.status, 400);
    assert.equal(invalid.error.error.type, 'invalid_request_error');
    assert.match(invalid.error.error.message, /max_tokens/);
    // A rule checked after translation names the block as the client wrote it, as Anthropic's own errors
    // lead with it: the system prompt and the tool result are chat messages of their own, not its numbering.
    const pdf = { type: 'image', source: { type: 'base64', media_type: 'application/pdf', data: 'AAAA' } };
    const named = await client.messages.create({
      model: DIRECT, max_tokens: 8, system: 'Be brief.', tools: [{ name: 'f', input_schema: { type: 'object' } }],
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'f', input: {} }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'done' }, { type: 'text', text: 'look' }, pdf] },
      ],
    }).catch((e) => e);
    assert.equal(named.status, 400);
    assert.match(named.error.error.message, /^messages\.2\.content\.2: an image part/);
    const { client: broke } = await anthropicFor(0);
    const refused = await broke.messages.create({ model: DIRECT, max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    assert.equal(refused.status, 402);
    assert.equal(refused.error.error.type, 'billing_error');
    // An upstream overloaded past the gateway's tries is 529 overloaded_error, as Claude Code's own
    // overload handling expects (not a 502 api_error).
    // (The first try and UPSTREAM_RETRIES' two more.)
    await fetch(`${ctx.gw.fake.url.replace('/api/v1', '')}/__fail`, { method: 'POST', body: JSON.stringify({ provider: 'openrouter', status: 503, times: 3 }) });
    const overloaded = await client.messages.create({ model: VIA_OPENROUTER, max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    assert.equal(overloaded.status, 529, JSON.stringify(overloaded.error));
    assert.equal(overloaded.error.error.type, 'overloaded_error');
  });
});
