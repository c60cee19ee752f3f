// OpenAI's Responses API with the official `openai` SDK (what Codex and
// `client.responses.create` speak), stateless: plain, instructions with items,
// the SDK's stream helper, a function-call round trip with the history resent
// (as Codex does), on an OpenRouter model and on a direct OpenAI model; every
// turn charged exactly on the usage the upstream reported.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import { FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY } from './fake-upstream.mjs';
import { gatewayForFile, generationOf, hangUpOnStream, hangUpsChargedOnce, usageRows } from './fixture.mjs';

const ctx = gatewayForFile({ vars: { OPENAI_API_KEY: FAKE_OPENAI_KEY, ANTHROPIC_API_KEY: FAKE_ANTHROPIC_KEY } });
const micros = (usd) => Math.round(usd * 1e6);
const DIRECT = 'openai/gpt-4o-mini'; // this gateway holds an OpenAI key: served by (the fake of) OpenAI
const ANTHROPIC = 'anthropic/claude-3-5-haiku-20241022'; // served by (the fake of) Anthropic's API
const VIA_OPENROUTER = 'meta-llama/llama-3.1-8b-instruct';
const PRICES = { [DIRECT]: [150_000, 600_000], [VIA_OPENROUTER]: [20_000, 50_000] };
const costOf = (model, usage) => Math.ceil((usage.input_tokens * PRICES[model][0] + usage.output_tokens * PRICES[model][1]) / 1e6);


async function clientFor(credit = 1) {
  const user = await ctx.admin.createUser({}, { credit });
  const key = await ctx.admin.createKey(user.id);
  return { user, key, client: new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 }) };
}

for (const model of [VIA_OPENROUTER, DIRECT]) {
  describe(`responses, ${model === DIRECT ? 'direct OpenAI' : 'OpenRouter'}`, () => {
    test('plain, with usage and its exact charge', async () => {
      const { user, client } = await clientFor();
      const res = await client.responses.create({ model, input: 'hello there' });
      assert.equal(res.object, 'response');
      assert.equal(res.status, 'completed');
      assert.equal(res.output_text, 'Echo: hello there');
      assert.ok(res.usage.input_tokens > 0 && res.usage.output_tokens > 0);
      assert.equal(micros(res.usage.cost), costOf(model, res.usage));
      const [row] = await usageRows(ctx.admin, user.id, 1);
      assert.equal(-micros(row.amount), costOf(model, res.usage));
      // The id the answer carried finds its generation (`resp_…`, made from the chat answer's id).
      assert.equal(micros((await generationOf(ctx.admin, res.id)).total_cost), costOf(model, res.usage));
    });

    test('streamed with the SDK\'s stream helper', async () => {
      const { user, client } = await clientFor();
      const words = Array.from({ length: 10 }, (_, i) => `w${i}`).join(' ');
      const stream = client.responses.stream({ model, instructions: 'Repeat.', input: [{ role: 'user', content: words }] });
      let deltas = 0;
      stream.on('response.output_text.delta', () => (deltas += 1));
      const final = await stream.finalResponse();
      assert.ok(deltas > 3, `${deltas} deltas`);
      assert.equal(final.output_text, `Echo: ${words}`);
      const [row] = await usageRows(ctx.admin, user.id, 1);
      assert.equal(-micros(row.amount), costOf(model, final.usage));
    });

    test('an inline PDF (input_file) reaches the model as a file, and an earlier refusal sent back is taken; each charged exactly', async () => {
      const { user, client } = await clientFor();
      const pdf = { type: 'input_file', filename: 'spec.pdf', file_data: 'data:application/pdf;base64,JVBERi0xLjQK' };
      const res = await client.responses.create({
        model,
        input: [
          { role: 'user', content: 'help me' },
          { type: 'message', role: 'assistant', content: [{ type: 'refusal', refusal: 'I cannot do that.' }] },
          { role: 'user', content: [pdf, { type: 'input_text', text: 'sum it up' }] },
        ],
      });
      assert.equal(res.output_text, 'Echo: sum it up');
      assert.ok(res.usage.input_tokens >= 1500, `the file's tokens are counted (${res.usage.input_tokens})`);
      const sent = ctx.gw.fake.requests.filter((r) => r.path.endsWith('/chat/completions')).at(-1).body;
      assert.deepEqual(sent.messages.at(-1).content[0], { type: 'file', file: { filename: 'spec.pdf', file_data: pdf.file_data } });
      assert.equal(sent.messages[1].role, 'assistant');
      assert.match(JSON.stringify(sent.messages[1].content), /I cannot do that\./);
      const [row] = await usageRows(ctx.admin, user.id, 1);
      assert.equal(-micros(row.amount), costOf(model, res.usage));
      const byId = await client.responses.create({ model, input: [{ role: 'user', content: [{ type: 'input_file', file_id: 'file-abc' }] }] }).catch((e) => e);
      assert.equal(byId.status, 400);
      assert.match(byId.error.message, /input_file/);
    });

    test('a client that hangs up mid-stream is charged once, less than the whole answer: in turn and four at once', async () => {
      const { user, key, client } = await clientFor();
      const input = `[slow:150] ${Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ')}`;
      const whole = await client.responses.create({ model, input });
      const hangUp = () => hangUpOnStream(ctx.gw.url, '/v1/responses', { authorization: `Bearer ${key.key}` }, { model, input, stream: true }, 'w1');
      await hangUpsChargedOnce(ctx.admin, user.id, hangUp, costOf(model, whole.usage), 1);
    });
  });
}

describe('responses, what Codex relies on', () => {
  test('a function-call round trip with the whole history resent, each turn charged once', async () => {
    const { user, client } = await clientFor();
    const tools = [{ type: 'function', name: 'get_weather', description: 'Weather', parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] }, strict: false }];
    const input = [{ role: 'user', content: [{ type: 'input_text', text: 'Weather in Paris?' }] }];
    const first = await client.responses.create({ model: DIRECT, instructions: 'You are an agent.', tools, input, store: false });
    const call = first.output.find((o) => o.type === 'function_call');
    assert.ok(call, JSON.stringify(first.output));
    assert.equal(call.name, 'get_weather');
    assert.equal(JSON.parse(call.arguments).location, 'Paris');
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/openai/v1/chat/completions').at(-1).body;
    assert.deepEqual(sent.messages[0], { role: 'system', content: 'You are an agent.' });
    const second = await client.responses.create({
      model: DIRECT, instructions: 'You are an agent.', tools, store: false,
      input: [...input, ...first.output, { type: 'function_call_output', call_id: call.call_id, output: 'sunny' }],
    });
    assert.equal(second.output_text, 'Echo: sunny');
    const rows = await usageRows(ctx.admin, user.id, 2);
    assert.equal(-rows.reduce((s, r) => s + micros(r.amount), 0), costOf(DIRECT, first.usage) + costOf(DIRECT, second.usage));
  });

  test('a custom (freeform) tool like Codex\'s apply_patch: streamed, answered as a custom_tool_call, its output sent back', async () => {
    const { user, client } = await clientFor();
    const tools = [{ type: 'custom', name: 'apply_patch', description: 'Edit files with a patch.', format: { type: 'grammar', syntax: 'lark', definition: 'start: begin_patch hunk+ end_patch' } }];
    const input = [{ role: 'user', content: 'add hello.txt' }];
    const stream = client.responses.stream({ model: DIRECT, instructions: 'You are Codex.', tools, input, store: false });
    let inputDone = null;
    stream.on('response.custom_tool_call_input.done', (e) => (inputDone = e.input));
    const first = await stream.finalResponse();
    const call = first.output.find((o) => o.type === 'custom_tool_call');
    assert.ok(call, JSON.stringify(first.output));
    assert.equal(call.name, 'apply_patch');
    assert.match(call.input, /^\*\*\* Begin Patch\n/);
    assert.equal(inputDone, call.input, 'the streamed input is the item\'s');
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/openai/v1/chat/completions').at(-1).body;
    assert.deepEqual(Object.keys(sent.tools[0].function.parameters.properties), ['input']);
    const second = await client.responses.create({
      model: DIRECT, instructions: 'You are Codex.', tools, store: false,
      input: [...input, ...first.output, { type: 'custom_tool_call_output', call_id: call.call_id, output: 'Done!' }],
    });
    assert.equal(second.output_text, 'Echo: Done!');
    const resent = ctx.gw.fake.requests.filter((r) => r.path === '/openai/v1/chat/completions').at(-1).body;
    assert.equal(JSON.parse(resent.messages[2].tool_calls[0].function.arguments).input, call.input, 'the call goes back as it was made');
    const rows = await usageRows(ctx.admin, user.id, 2);
    assert.equal(-rows.reduce((s, r) => s + micros(r.amount), 0), costOf(DIRECT, first.usage) + costOf(DIRECT, second.usage));
  });

  test('a turn as Codex sends it: its default web search not offered, its cache key and verbosity carried', async () => {
    const { user, client } = await clientFor();
    const tools = [
      { type: 'function', name: 'shell', description: 'Run a command', parameters: { type: 'object', properties: { command: { type: 'string' } } }, strict: false },
      { type: 'web_search', external_web_access: false }, // Codex's cached web search, on by default
    ];
    const ask = { model: DIRECT, instructions: 'You are Codex.', tools, tool_choice: 'auto', parallel_tool_calls: false, store: false,
      prompt_cache_key: 'conv-7', text: { verbosity: 'low' }, input: [{ role: 'user', content: 'list the files' }] };
    const final = await client.responses.stream(ask).finalResponse();
    const call = final.output.find((o) => o.type === 'function_call');
    assert.equal(call?.name, 'shell', JSON.stringify(final.output));
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/openai/v1/chat/completions').at(-1).body;
    assert.deepEqual(sent.tools.map((t) => t.function.name), ['shell'], 'only the tools the gateway can serve are offered');
    assert.equal(sent.prompt_cache_key, 'conv-7');
    assert.equal(sent.verbosity, 'low');
    const [row] = await usageRows(ctx.admin, user.id, 1);
    assert.equal(-micros(row.amount), costOf(DIRECT, final.usage));

    const forced = await client.responses.create({ ...ask, tool_choice: { type: 'web_search' } }).catch((e) => e);
    assert.equal(forced.status, 400);
    assert.equal(forced.error.param, 'tool_choice');
  });

  test('an allowed_tools choice offers the model only the tools it allows, its mode the choice', async () => {
    const { user, client } = await clientFor();
    const fn = (name) => ({ type: 'function', name, parameters: { type: 'object', properties: {} }, strict: false });
    const final = await client.responses.create({
      model: DIRECT, tools: [fn('shell'), fn('read_file'), fn('delete_everything')],
      tool_choice: { type: 'allowed_tools', mode: 'required', tools: [{ type: 'function', name: 'read_file' }] },
      input: [{ role: 'user', content: 'show me the readme' }],
    });
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/openai/v1/chat/completions').at(-1).body;
    assert.deepEqual(sent.tools.map((t) => t.function.name), ['read_file']);
    assert.equal(sent.tool_choice, 'required');
    assert.equal(final.output.find((o) => o.type === 'function_call')?.name, 'read_file', JSON.stringify(final.output));
    const [row] = await usageRows(ctx.admin, user.id, 1);
    assert.equal(-micros(row.amount), costOf(DIRECT, final.usage));
  });

  test('a tool output in parts: its text to the tool result, its image after the results (OpenAI takes text only there)', async () => {
    const { user, client } = await clientFor();
    const tools = [{ type: 'function', name: 'view_image', parameters: { type: 'object', properties: { path: { type: 'string' } } }, strict: false }];
    const input = [{ role: 'user', content: 'what is in chart.png?' }];
    const first = await client.responses.create({ model: DIRECT, tools, input, store: false });
    const call = first.output.find((o) => o.type === 'function_call');
    assert.ok(call, JSON.stringify(first.output));
    const image = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';
    const output = [{ type: 'input_text', text: 'chart.png' }, { type: 'input_image', image_url: image }];
    const second = await client.responses.create({
      model: DIRECT, tools, store: false, input: [...input, ...first.output, { type: 'function_call_output', call_id: call.call_id, output }],
    });
    assert.equal(second.status, 'completed');
    const sent = ctx.gw.fake.requests.filter((r) => r.path === '/openai/v1/chat/completions').at(-1).body;
    const [tool, after] = sent.messages.slice(-2);
    assert.equal(tool.role, 'tool');
    assert.equal(tool.content[0].text, 'chart.png');
    assert.ok(tool.content.every((p) => p.type === 'text'), JSON.stringify(tool));
    assert.deepEqual(after, { role: 'user', content: [{ type: 'image_url', image_url: { url: image } }] });
    const rows = await usageRows(ctx.admin, user.id, 2);
    assert.equal(-rows.reduce((s, r) => s + micros(r.amount), 0), costOf(DIRECT, first.usage) + costOf(DIRECT, second.usage));

    const file = await client.responses.create({
      model: DIRECT, tools, store: false,
      input: [...input, ...first.output, { type: 'function_call_output', call_id: call.call_id, output: [{ type: 'input_file', file_id: 'file-1' }] }],
    }).catch((e) => e);
    assert.equal(file.status, 400);
    assert.match(file.error.param, /output/);
  });

  test('while the model thinks, the stream carries keep-alives and its thinking as a reasoning item, never in the output text', async () => {
    const { user } = await clientFor();
    const key = await ctx.admin.createKey(user.id);
    const res = await fetch(`${ctx.gw.url}/v1/responses`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: VIA_OPENROUTER, input: 'ponder this', reasoning: { effort: 'low' }, stream: true, store: false }),
    });
    assert.equal(res.status, 200);
    const text = await res.text();
    const alive = text.indexOf(': keep-alive\n\n');
    assert.ok(alive >= 0 && alive < text.indexOf('response.output_text.delta'), text.slice(0, 600));
    const events = text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)));
    const summary = events.filter((e) => e.type === 'response.reasoning_summary_text.delta').map((e) => e.delta).join('');
    assert.equal(summary, 'Thinking about: ponder this', 'the thinking, told as a summary');
    const completed = events.at(-1);
    assert.equal(completed.type, 'response.completed');
    const [reasoning, message] = completed.response.output;
    assert.equal(reasoning.type, 'reasoning');
    assert.equal(message.content[0].text, 'Echo: ponder this', 'no thinking text in the output text');
    assert.ok(completed.response.usage.output_tokens_details.reasoning_tokens > 0, 'the thinking was counted');
    const [row] = await usageRows(ctx.admin, user.id, 1);
    assert.equal(-micros(row.amount), costOf(VIA_OPENROUTER, completed.response.usage));
    // Started at the first silence or at the first chunk: one response, one id, and it finds the generation.
    assert.equal(events[0].type, 'response.created');
    assert.equal(events[0].response.id, completed.response.id);
    assert.equal(micros((await generationOf(ctx.admin, completed.response.id)).total_cost), -micros(row.amount));
  });

  test("reasoning given out as an item comes back with the next turn, as the upstream gave it: whole and streamed", async () => {
    const { user, client } = await clientFor();
    const ask = { model: VIA_OPENROUTER, reasoning: { effort: 'low' }, store: false, include: ['reasoning.encrypted_content'] };
    const input = [{ role: 'user', content: 'weigh the options' }];
    const first = await client.responses.create({ ...ask, input });
    const firstThought = ctx.gw.fake.requests.filter((r) => r.path.endsWith('/chat/completions')).at(-1);
    const reasoning = first.output.find((i) => i.type === 'reasoning');
    assert.equal(reasoning.summary[0].text, 'Thinking about: weigh the options');
    assert.ok(reasoning.encrypted_content, 'kept for the next turn');
    const streamed = await client.responses.stream({ ...ask, input: [...input, ...first.output, { role: 'user', content: 'and then?' }] }).finalResponse();
    const sent = ctx.gw.fake.requests.filter((r) => r.path.endsWith('/chat/completions')).at(-1).body;
    assert.notEqual(sent, firstThought.body);
    const assistant = sent.messages.find((m) => m.role === 'assistant');
    assert.deepEqual(assistant.reasoning_details, [{ type: 'reasoning.text', text: 'Thinking about: weigh the options', format: 'unknown', index: 0 }]);
    assert.deepEqual(assistant.content, [{ type: 'text', text: 'Echo: weigh the options' }]);
    // The streamed answer's reasoning item carries its details whole, joined from the stream's pieces.
    const again = streamed.output.find((i) => i.type === 'reasoning');
    assert.equal(again.summary[0].text, 'Thinking about: and then?');
    await client.responses.create({ ...ask, input: [...input, ...first.output, { role: 'user', content: 'and then?' }, ...streamed.output, { role: 'user', content: 'so?' }] });
    const third = ctx.gw.fake.requests.filter((r) => r.path.endsWith('/chat/completions')).at(-1).body;
    const turns = third.messages.filter((m) => m.role === 'assistant');
    assert.deepEqual(turns.map((m) => m.reasoning_details?.[0]?.text), ['Thinking about: weigh the options', 'Thinking about: and then?']);
    const rows = await usageRows(ctx.admin, user.id, 3);
    assert.equal(rows.length, 3, 'each turn charged once');
  });

  test('state is refused with a clear 400: store, previous_response_id, retrieving a response', async () => {
    const { client } = await clientFor();
    for (const [extra, param] of [[{ store: true }, 'store'], [{ previous_response_id: 'resp_1' }, 'previous_response_id']]) {
      const err = await client.responses.create({ model: DIRECT, input: 'x', ...extra }).catch((e) => e);
      assert.equal(err.status, 400);
      assert.equal(err.error.param, param);
      assert.match(err.error.message, /stateless/);
    }
    const retrieve = await client.responses.retrieve('resp_1').catch((e) => e);
    assert.equal(retrieve.status, 400);
    assert.match(retrieve.error.message, /stateless/);
  });

  test('a rule checked once the request is translated names the field as the client wrote it', async () => {
    const { client } = await clientFor();
    // The video is the second part of the third item (the instructions and a reasoning item come before:
    // as a chat, it is the second message's).
    const video = { role: 'user', content: [{ type: 'input_text', text: 'see' }, { type: 'input_image', image_url: 'data:video/mp4;base64,AAAA' }] };
    const input = [{ role: 'user', content: 'hi' }, { type: 'reasoning', summary: [] }, video];
    const err = await client.responses.create({ model: DIRECT, instructions: 'be brief', input }).catch((e) => e);
    assert.equal(err.status, 400);
    assert.equal(err.error.param, 'input[2].content[1]', err.error.message);
    // A call whose arguments are not JSON, found translating for Anthropic: named by its item, in the message too.
    const calls = [
      { type: 'function_call', call_id: 'a', name: 'f', arguments: '{}' },
      { type: 'reasoning', summary: [] },
      { type: 'function_call', call_id: 'b', name: 'f', arguments: '{oops' },
      { type: 'function_call_output', call_id: 'a', output: 'x' },
      { type: 'function_call_output', call_id: 'b', output: 'y' },
    ];
    const tools = [{ type: 'function', name: 'f', parameters: { type: 'object' } }];
    const bad = await client.responses.create({ model: ANTHROPIC, input: [{ role: 'user', content: 'go' }, ...calls], tools }).catch((e) => e);
    assert.equal(bad.status, 400);
    assert.equal(bad.error.param, 'input[3].arguments', bad.error.message);
    assert.equal(bad.error.message, '`input[3].arguments` must be JSON');
    const empty = await client.responses.create({ model: DIRECT, input: [] }).catch((e) => e);
    assert.equal(empty.status, 400);
    assert.equal(empty.error.param, 'input', empty.error.message);
    assert.doesNotMatch(empty.error.message, /messages/);
  });

  test('a GET that is not a WebSocket upgrade is a wrong method, not a bad body', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const res = await fetch(`${ctx.gw.url}/v1/responses`, { headers: { authorization: `Bearer ${key.key}` } });
    assert.equal(res.status, 405);
    const { error } = await res.json();
    assert.equal(error.type, 'invalid_request_error');
    assert.match(error.message, /GET/);
  });
});
