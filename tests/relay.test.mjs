// The relay, end to end: the built Worker under workerd, real local D1/KV/DO,
// the fake OpenRouter over a real socket, and the official `openai` SDK as the client.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { generationOf, SETTLE_WATCH_MS, settledRows } from './fixture.mjs';
import { adminClient, startGateway } from './harness.mjs';

let gw;
let admin;
let user;
let key;
let client;

const MODEL = 'openai/gpt-4o-mini';
const PRICE = [150_000, 600_000]; // the fake's catalogue: micro-USD per million prompt / completion tokens
const hello = [{ role: 'user', content: 'hello there tollgate' }];
/**
 * What a request the upstream had but never answered whole is charged: its prompt, estimated from the
 * prompt's bound (the messages' JSON bytes and 8 a message) at a token per 4 bytes, rounded up.
 */
const promptEstimate = (messages) =>
  Math.ceil((Math.ceil((Buffer.byteLength(JSON.stringify(messages)) + 8 * messages.length) / 4) * PRICE[0]) / 1e6);
/** The fake's tokens for a whole answer: a quarter of the characters and 3 a message; a token per echoed word. */
const fakeTokens = (messages) => ({
  prompt: Math.ceil(messages.reduce((n, m) => n + m.content.length, 0) / 4) + 3 * messages.length,
  completion: 1 + messages.at(-1).content.split(/\s+/).filter(Boolean).length,
});
const costOf = ({ prompt, completion }) => Math.ceil((prompt * PRICE[0] + completion * PRICE[1]) / 1e6);

before(async () => {
  gw = await startGateway({ vars: { REQUEST_TIMEOUT: '2' } });
  admin = adminClient(gw.url, gw.adminToken);
  user = await admin.createUser({ name: 'Relay Tester' });
  key = await admin.createKey(user.id, { name: 'relay' });
  client = new OpenAI({ apiKey: key.key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
});

after(async () => {
  await gw?.stop();
});

/** Raw POST to the chat endpoint (for cases the SDK would hide). */
function rawChat(body, { token = key.key, path = '/v1/chat/completions', headers = {} } = {}) {
  return fetch(gw.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

async function expectError(res, status, code) {
  assert.equal(res.status, status, `status (body: ${await res.clone().text()})`);
  const body = await res.json();
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0);
  assert.ok(res.headers.get('x-request-id'), 'x-request-id on errors too');
  return body.error;
}

/** The user's usage rows once there are `n` (settlements land after the answer), or those there are after 5 s. */
async function usageRows(userId, n) {
  let usage = [];
  for (let i = 0; i < 50 && usage.length < n; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 100));
    const rows = (await admin.call('GET', `/api/balance/transactions?user_id=${userId}`)).body.data;
    usage = rows.filter((r) => r.type === 'usage');
  }
  return usage;
}

async function lastUpstreamChat(marker) {
  const res = await fetch(gw.fake.url.replace('/api/v1', '') + '/__requests');
  const { data } = await res.json();
  return data.filter((r) => r.path.endsWith('/chat/completions') && r.body?.marker === marker).at(-1);
}

describe('chat through the OpenAI SDK', () => {
  test('non-streamed chat answers in OpenAI form with usage and cost', async () => {
    const res = await client.chat.completions.create({ model: MODEL, messages: hello });
    assert.equal(res.object, 'chat.completion');
    assert.equal(res.choices[0].message.role, 'assistant');
    assert.equal(res.choices[0].message.content, 'Echo: hello there tollgate');
    assert.equal(res.choices[0].finish_reason, 'stop');
    assert.equal(res.usage.completion_tokens, 4);
    assert.equal(res.usage.total_tokens, res.usage.prompt_tokens + 4);
    assert.equal(typeof res.usage.cost, 'number');
  });

  test('the OpenRouter path /api/v1/chat/completions works too', async () => {
    const or = new OpenAI({ apiKey: key.key, baseURL: `${gw.url}/api/v1`, maxRetries: 0 });
    const res = await or.chat.completions.create({ model: MODEL, messages: hello });
    assert.equal(res.choices[0].message.content, 'Echo: hello there tollgate');
  });

  test('streamed chat arrives chunk by chunk and ends with the usage chunk', async () => {
    const stream = await client.chat.completions.create({ model: MODEL, messages: hello, stream: true });
    let text = '';
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      if (chunk.choices.length) text += chunk.choices[0].delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, 'Echo: hello there tollgate');
    assert.ok(chunks >= 5, `several chunks, got ${chunks}`);
    assert.equal(usage.completion_tokens, 4);
    assert.equal(typeof usage.cost, 'number');
  });

  test('a stream reaches the client incrementally: the first chunk long before the last', async () => {
    const words = Array.from({ length: 10 }, (_, i) => `w${i}`).join(' ');
    const start = Date.now();
    const stream = await client.chat.completions.create({
      model: MODEL,
      stream: true,
      messages: [{ role: 'user', content: words }],
      chunk_delay_ms: 150,
    });
    let first = null;
    for await (const chunk of stream) {
      if (first === null && chunk.choices[0]?.delta?.content) first = Date.now() - start;
    }
    const total = Date.now() - start;
    assert.ok(total >= 1400, `upstream spreads 10 chunks over ≥1.35 s (took ${total} ms)`);
    assert.ok(first < total - 1000, `first chunk at ${first} ms, last at ${total} ms`);
  });

  test('tool calls pass through, streamed and not', async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { location: { type: 'string' } } } } }];
    const res = await client.chat.completions.create({ model: MODEL, messages: hello, tools, fake_fault: 'tools' });
    assert.equal(res.choices[0].finish_reason, 'tool_calls');
    assert.equal(res.choices[0].message.tool_calls[0].function.name, 'get_weather');
    assert.deepEqual(JSON.parse(res.choices[0].message.tool_calls[0].function.arguments), { location: 'Paris', unit: 'celsius' });

    const stream = await client.chat.completions.create({ model: MODEL, messages: hello, tools, stream: true, fake_fault: 'tools' });
    let args = '';
    for await (const chunk of stream) {
      for (const call of chunk.choices[0]?.delta?.tool_calls ?? []) args += call.function?.arguments ?? '';
    }
    assert.deepEqual(JSON.parse(args), { location: 'Paris', unit: 'celsius' });
  });

  test('max_tokens reaches the upstream and truncates the answer', async () => {
    const res = await client.chat.completions.create({ model: MODEL, messages: hello, max_tokens: 2 });
    assert.equal(res.choices[0].finish_reason, 'length');
    assert.equal(res.usage.completion_tokens, 2);
  });
});

describe('what the upstream sees', () => {
  test('the tenant key only, and unknown fields unchanged', async () => {
    const marker = `m-${Date.now()}`;
    const extra = { provider: { order: ['Anthropic', 'OpenAI'], allow_fallbacks: false }, transforms: ['middle-out'], models: [MODEL, 'openai/gpt-4o'], reasoning: { effort: 'low' } };
    await client.chat.completions.create({ model: MODEL, messages: hello, marker, ...extra, temperature: 0.3 });
    const seen = await lastUpstreamChat(marker);
    assert.ok(seen, 'upstream received the request');
    assert.equal(seen.headers.authorization, 'Bearer sk-or-v1-test-upstream-key');
    assert.ok(!JSON.stringify(seen.headers).includes(key.key), 'client key never goes upstream');
    assert.ok(!JSON.stringify(seen.body).includes(key.key));
    for (const [field, value] of Object.entries(extra)) assert.deepEqual(seen.body[field], value, field);
    assert.equal(seen.body.temperature, 0.3);
    assert.equal(seen.headers['x-title'], 'Tollgate');
  });

  test('streams ask the upstream for usage', async () => {
    const marker = `s-${Date.now()}`;
    const stream = await client.chat.completions.create({ model: MODEL, messages: hello, stream: true, marker });
    for await (const _ of stream) { /* drain */ }
    const seen = await lastUpstreamChat(marker);
    assert.deepEqual(seen.body.stream_options, { include_usage: true });
  });

  test("an inline PDF for a model that cannot read it asks for OpenRouter's free parser, not its paid OCR", async () => {
    const pdf = { type: 'file', file: { filename: 'a.pdf', file_data: 'data:application/pdf;base64,JVBERi0xLjQK' } };
    const ask = (model, marker) => client.chat.completions.create({ model, marker, messages: [{ role: 'user', content: [{ type: 'text', text: 'read it' }, pdf] }] });
    const parsed = `p-${Date.now()}`;
    await ask('meta-llama/llama-3.1-8b-instruct', parsed);
    assert.deepEqual((await lastUpstreamChat(parsed)).body.plugins, [{ id: 'file-parser', pdf: { engine: 'cloudflare-ai' } }]);
    const native = `n-${Date.now()}`;
    await ask(MODEL, native);
    assert.equal((await lastUpstreamChat(native)).body.plugins, undefined, 'a model that reads PDFs gets it as it is');
  });
});

describe('errors are OpenAI-shaped', () => {
  test('bad JSON and invalid bodies are 400 naming the parameter', async () => {
    await expectError(await rawChat('{"model": '), 400, 'invalid_request');
    const e = await expectError(await rawChat({ model: MODEL, messages: [{ role: 'wizard', content: 'x' }] }), 400, 'invalid_request');
    assert.equal(e.param, 'messages[0].role');
    const m = await expectError(await rawChat({ messages: hello }), 400, 'invalid_request');
    assert.equal(m.param, 'model');
  });

  test('a tool the upstream runs itself (billed per use) is 400 naming it, and never sent', async () => {
    // OpenRouter runs its server tools (web search, web fetch…) as often as the model likes, each use
    // billed on top of the tokens: no reservation could bound that.
    const marker = `server-tool-${Date.now()}`;
    await assert.rejects(
      client.chat.completions.create({
        model: MODEL, messages: hello, marker, tool_choice: 'required',
        tools: [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object' } } }, { type: 'openrouter:web_search' }],
      }),
      (err) => err.status === 400 && err.param === 'tools[1]' && /per-use fees/.test(err.message),
    );
    assert.equal(await lastUpstreamChat(marker), undefined, 'nothing reached the upstream');
  });

  test('the SDK surfaces a 400 as BadRequestError', async () => {
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: [] }), (err) => {
      assert.equal(err.status, 400);
      assert.equal(err.code, 'invalid_request');
      return true;
    });
  });

  test('a body over the limit is 413', async () => {
    const big = 'x'.repeat(9 * 1024 * 1024);
    await expectError(await rawChat({ model: MODEL, messages: [{ role: 'user', content: big }] }), 413, 'invalid_request');
  });

  test('missing, malformed and unknown keys are 401', async () => {
    await expectError(await rawChat({ model: MODEL, messages: hello }, { token: null }), 401, 'authentication_error');
    await expectError(await rawChat({ model: MODEL, messages: hello }, { token: 'not-a-key' }), 401, 'authentication_error');
    await expectError(await rawChat({ model: MODEL, messages: hello }, { token: `sk-tg-v1-${'0'.repeat(64)}` }), 401, 'authentication_error');
    const bad = new OpenAI({ apiKey: `sk-tg-v1-${'f'.repeat(64)}`, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    await assert.rejects(bad.chat.completions.create({ model: MODEL, messages: hello }), (err) => err.status === 401);
  });

  test('a read-only key cannot chat (403)', async () => {
    const readOnly = await admin.createKey(user.id, { name: 'reader', permissions: ['read'] });
    await expectError(await rawChat({ model: MODEL, messages: hello }, { token: readOnly.key }), 403, 'permission_error');
  });

  test('a model without a price is 404 model_not_found, before any upstream call', async () => {
    const e = await expectError(await rawChat({ model: 'nope/nothing', messages: hello }), 404, 'model_not_found');
    assert.match(e.message, /no price configured for nope\/nothing/);
  });

  test('upstream 5xx is 502 upstream_error', async () => {
    for (const fault of ['500', '503']) {
      const e = await expectError(await rawChat({ model: MODEL, messages: hello, fake_fault: fault }), 502, 'upstream_error');
      assert.match(e.message, /req-/, 'names the request id');
    }
  });

  test('upstream 429 is 429 with retry-after', async () => {
    const res = await rawChat({ model: MODEL, messages: hello, fake_fault: '429' });
    assert.equal(res.headers.get('retry-after'), '7');
    await expectError(res, 429, 'rate_limit_error');
  });

  test('upstream 401 (the tenant key is bad) is 502, never 401', async () => {
    const e = await expectError(await rawChat({ model: MODEL, messages: hello, fake_fault: '401' }), 502, 'upstream_error');
    assert.match(e.message, /upstream credentials/);
  });

  test("an input the provider's moderation flagged is the client's 403 naming why, not the operator's 502", async () => {
    const before = gw.fake.requests.length;
    const e = await expectError(await rawChat({ model: MODEL, messages: hello, fake_fault: 'flagged' }), 403, 'invalid_request');
    assert.match(e.message, /flagged for "harassment"/);
    assert.doesNotMatch(e.message, /credentials/);
    assert.equal(gw.fake.requests.length - before, 1, 'not tried again: the same input is flagged again');
  });

  test('a non-JSON upstream answer is 502', async () => {
    await expectError(await rawChat({ model: MODEL, messages: hello, fake_fault: 'non_json' }), 502, 'upstream_error');
  });

  test('an upstream slower than REQUEST_TIMEOUT is 504, and the prompt it had is charged, once per request', async () => {
    // The upstream had the request and goes on generating (OpenRouter bills a non-streamed answer in
    // full): not charging it would serve it free. Its output is unknown; its prompt is charged, estimated.
    // One request, then three at once.
    const payer = await admin.createUser({ name: 'Timed out' }, { credit: 1 });
    const payerKey = await admin.createKey(payer.id, { name: 'slow' });
    const slow = () => rawChat({ model: MODEL, messages: hello, fake_fault: 'slow:4000' }, { token: payerKey.key });
    const started = Date.now();
    const first = await slow();
    // Charged, and as slow again: the SDKs are told not to retry it (they retry a 504 twice otherwise).
    assert.equal(first.headers.get('x-should-retry'), 'false');
    await expectError(first, 504, 'timeout_error');
    assert.ok(Date.now() - started < 3800, 'answered at the timeout, not when upstream finished');
    for (const res of await Promise.all([slow(), slow(), slow()])) await expectError(res, 504, 'timeout_error');
    const usage = await settledRows(admin, payer.id, 4);
    assert.equal(new Set(usage.map((r) => r.reference_id)).size, 4, 'each charged once');
    for (const row of usage) {
      // The prompt alone (3 µUSD), far below the reservation (which holds the model's whole output bound too).
      assert.equal(-Math.round(row.amount * 1e6), promptEstimate(hello), JSON.stringify(row));
      assert.match(row.description, /answer not received whole: prompt estimated/);
    }
    const balance = (await admin.call('GET', `/api/balance?user_id=${payer.id}`)).body.balance;
    assert.equal(Math.round(balance * 1e6), 1_000_000 + 4 * Math.round(usage[0].amount * 1e6), 'the ledger and the balance agree');
  });

  test('an answer whose body stops coming is 504 at REQUEST_TIMEOUT, counted from the start', async () => {
    // The headers come at once and half the body; the rest would come after the deadline.
    const payer = await admin.createUser({ name: 'Slow body' }, { credit: 1 });
    const payerKey = await admin.createKey(payer.id, { name: 'slow body' });
    const started = Date.now();
    const res = await rawChat({ model: MODEL, messages: hello, fake_fault: 'slow_body:4000' }, { token: payerKey.key });
    assert.equal(res.headers.get('x-should-retry'), 'false');
    await expectError(res, 504, 'timeout_error');
    const took = Date.now() - started;
    assert.ok(took >= 1900 && took < 3800, `answered at the deadline, not when the body ended (${took} ms)`);
    const usage = await settledRows(admin, payer.id, 1);
    assert.equal(-Math.round(usage[0].amount * 1e6), promptEstimate(hello), 'charged the prompt, once: the upstream had it');
    assert.match(usage[0].description, /answer not received whole: prompt estimated/);
  });

  test("an upstream's own 408, 504 or 524 is the client's 504, and charged nothing: an error the upstream does not bill", async () => {
    const payer = await admin.createUser({ name: 'Upstream timeouts' }, { credit: 1 });
    const payerKey = await admin.createKey(payer.id, { name: 'upstream timeouts' });
    const ids = [];
    for (const status of [408, 504, 524]) {
      const queued = await fetch(`${gw.fake.url.replace('/api/v1', '')}/__fail`, { method: 'POST', body: JSON.stringify({ provider: 'openrouter', status }) });
      assert.equal(queued.status, 200);
      const res = await rawChat({ model: MODEL, messages: hello }, { token: payerKey.key });
      ids.push(res.headers.get('x-request-id'));
      await expectError(res, 504, 'timeout_error');
    }
    // Each settled (its usage record written, at nothing) before the ledger is read.
    for (const id of ids) {
      const record = await generationOf(admin, id);
      assert.equal(record.status, 504, JSON.stringify(record));
      assert.equal(record.total_cost, 0, JSON.stringify(record));
    }
    await new Promise((r) => setTimeout(r, SETTLE_WATCH_MS));
    const rows = (await admin.call('GET', `/api/balance/transactions?user_id=${payer.id}&page_size=100`)).body.data;
    assert.deepEqual(rows.map((r) => r.type), ['recharge'], `no charge: ${JSON.stringify(rows)}`);
    assert.equal((await admin.call('GET', `/api/balance?user_id=${payer.id}`)).body.balance, 1);
  });

  // An error body names its generation: what the upstream's record says was used is charged, not an estimate.
  // A body that broke off names none: its prompt is charged, estimated (3 µUSD); the record says the whole
  // answer (8 prompt tokens and 4 output tokens: 4 µUSD).
  for (const [fault, what, note, expected] of [
    ['cut:1', 'whose body breaks off', /prompt estimated/, promptEstimate(hello)],
    ['error_event', 'that is an error under 200 (the model had started)', /charged from the upstream's record/, costOf(fakeTokens(hello))],
  ]) {
    test(`an answer ${what} is 502, and charged what the upstream had: ${note.source}`, async () => {
      const payer = await admin.createUser({ name: `Broken ${fault}` }, { credit: 1 });
      const payerKey = await admin.createKey(payer.id, { name: 'broken body' });
      // One request, then three at once.
      const broken = () => rawChat({ model: MODEL, messages: hello, fake_fault: fault }, { token: payerKey.key });
      await expectError(await broken(), 502, 'upstream_error');
      for (const res of await Promise.all([broken(), broken(), broken()])) await expectError(res, 502, 'upstream_error');
      const usage = await settledRows(admin, payer.id, 4);
      assert.equal(new Set(usage.map((r) => r.reference_id)).size, 4, 'each charged once, none served free');
      for (const row of usage) {
        assert.equal(-Math.round(row.amount * 1e6), expected, JSON.stringify(row));
        assert.match(row.description, note);
      }
      const balance = (await admin.call('GET', `/api/balance?user_id=${payer.id}`)).body.balance;
      assert.equal(Math.round(balance * 1e6), 1_000_000 + 4 * Math.round(usage[0].amount * 1e6), 'the ledger and the balance agree');
    });
  }

  test('an upstream redirect is not followed: the request fails as the upstream\'s error, nothing sent elsewhere', async () => {
    const res = await rawChat({ model: MODEL, messages: hello, fake_fault: 'redirect' });
    await expectError(res, 502, 'upstream_error');
    assert.ok(!gw.fake.requests.some((r) => r.path.startsWith('/__redirected')), 'the key went to no other place');
  });

  test("a usage that counts nothing is no report: the answer is charged from OpenRouter's record, a stream keeps its real usage", async () => {
    const payer = await admin.createUser({ name: 'Empty usage' }, { credit: 1 });
    const payerKey = await admin.createKey(payer.id, { name: 'empty usage' });
    const ask = (extra) => rawChat({ model: MODEL, messages: hello, ...extra }, { token: payerKey.key });
    assert.equal((await ask({})).status, 200);
    const [plain] = await usageRows(payer.id, 1);
    assert.equal((await ask({ fake_fault: 'empty_usage' })).status, 200);
    const [recorded] = await usageRows(payer.id, 2);
    assert.ok(recorded.amount < 0 && recorded.amount === plain.amount, `charged what it used: ${JSON.stringify(recorded)}`);
    // Three at once: each charged what it used, none free.
    await Promise.all([1, 2, 3].map(async () => (await ask({ fake_fault: 'empty_usage' })).text()));
    const five = (await usageRows(payer.id, 5)).slice(0, 5);
    assert.ok(five.every((r) => r.amount === plain.amount), JSON.stringify(five));
    // A stream: the real usage chunk, then an empty one, not shown; charged as a plain stream of the same words is.
    await (await ask({ stream: true })).text();
    const shown = await (await ask({ stream: true, fake_fault: 'empty_usage' })).text();
    assert.ok(!shown.includes('"usage":{}'), 'the empty report is not shown as one');
    const [last, plainStream] = await usageRows(payer.id, 7);
    assert.ok(last.amount < 0 && last.amount === plainStream.amount, `${JSON.stringify(last)} against ${JSON.stringify(plainStream)}`);
    assert.doesNotMatch(last.description, /estimated/);
  });

  test('a stream line that never ends is cut at its bound (not held in memory until the timeout), and charged', async () => {
    const payer = await admin.createUser({ name: 'Endless line' }, { credit: 1 });
    const payerKey = await admin.createKey(payer.id, { name: 'endless line' });
    const res = await rawChat({ model: MODEL, stream: true, messages: hello, fake_fault: 'endless_line' }, { token: payerKey.key });
    const text = await res.text();
    assert.match(text, /could not be read/, text.slice(-300));
    assert.ok(text.trimEnd().endsWith('data: [DONE]'));
    const [row] = await usageRows(payer.id, 1);
    assert.ok(row.amount < 0, `charged: ${JSON.stringify(row)}`);
  });

  test('a stream longer than REQUEST_TIMEOUT runs on while chunks keep coming; one that stalls for it ends with a timeout event', async () => {
    // REQUEST_TIMEOUT (2 s) bounds each wait for a chunk, not the stream: 16 chunks 150 ms apart take 2.4 s.
    const words = Array.from({ length: 16 }, (_, i) => `w${i}`).join(' ');
    const started = Date.now();
    const steady = await rawChat({ model: MODEL, stream: true, messages: [{ role: 'user', content: words }], chunk_delay_ms: 150 });
    const text = await steady.text();
    assert.ok(Date.now() - started > 2000, 'the stream outlived the timeout');
    const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
    assert.equal(events.at(-1), 'data: [DONE]');
    assert.ok(!text.includes('timeout_error'), text.slice(-300));
    const content = events.slice(0, -1).map((e) => JSON.parse(e.slice(6))).map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
    assert.equal(content, `Echo: ${words}`);
    // A wait of 2.5 s for the second chunk passes the limit: an error event, then [DONE], at about 2 s.
    const stalled = Date.now();
    const res = await rawChat({ model: MODEL, stream: true, messages: [{ role: 'user', content: 'one two three' }], chunk_delay_ms: 2500 });
    const cut = await res.text();
    const took = Date.now() - stalled;
    assert.ok(took >= 1900 && took < 2450, `ended at the limit (${took} ms)`);
    const tail = cut.split('\n\n').filter((e) => e.startsWith('data: '));
    assert.equal(tail.at(-1), 'data: [DONE]');
    assert.equal(JSON.parse(tail.at(-2).slice(6)).error.code, 'timeout_error');
  });

  test('a model that works in silence past REQUEST_TIMEOUT before its first word: the client is kept alive, and gets the answer', async () => {
    // As OpenAI's and Google's own APIs do while a model reasons: nothing at all for 4.5 s, twice the limit.
    const started = Date.now();
    const res = await rawChat({ model: MODEL, stream: true, messages: [{ role: 'user', content: '[silent:4500] hello' }] });
    const text = await res.text();
    assert.ok(Date.now() - started >= 4500, 'it waited for the first word');
    assert.equal((text.match(/^: keep-alive$/gm) ?? []).length, 2, 'a comment each time the limit passed');
    assert.ok(!text.includes('timeout_error'), text.slice(-300));
    const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
    assert.equal(events.at(-1), 'data: [DONE]');
    const content = events.slice(0, -1).map((e) => JSON.parse(e.slice(6))).map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
    assert.equal(content, 'Echo: [silent:4500] hello');
  });

  test('a stream cut mid-way ends with an error event, then [DONE]', async () => {
    const res = await rawChat({ model: MODEL, stream: true, messages: [{ role: 'user', content: 'one two three four five six' }], fake_fault: 'cut:3' });
    assert.equal(res.status, 200);
    const text = await res.text();
    const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
    assert.equal(events.at(-1), 'data: [DONE]');
    const last = JSON.parse(events.at(-2).slice(6));
    assert.equal(last.error.code, 'upstream_error');
    assert.ok(!text.includes('"choi\n'), 'no half event reaches the client');
    const content = events.slice(0, -2).map((e) => JSON.parse(e.slice(6))).map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
    assert.equal(content, 'Echo: one two', 'what was delivered before the cut');
  });

  test('the SDK raises on a cut stream instead of ending cleanly', async () => {
    const stream = await client.chat.completions.create({ model: MODEL, stream: true, messages: [{ role: 'user', content: 'a b c d e' }], fake_fault: 'cut:2' });
    await assert.rejects(async () => {
      for await (const _ of stream) { /* drain */ }
    });
  });

  test('an upstream error event mid-stream is relayed and the stream still ends with [DONE]', async () => {
    const res = await rawChat({ model: MODEL, stream: true, messages: [{ role: 'user', content: 'a b c d e' }], fake_fault: 'error_event' });
    const text = await res.text();
    assert.ok(text.includes('Provider disconnected'));
    assert.ok(text.trimEnd().endsWith('data: [DONE]'));
  });

  test('unknown routes are 404 and wrong methods 405, both OpenAI-shaped', async () => {
    await expectError(await fetch(`${gw.url}/v1/nothing`), 404, 'not_found');
    await expectError(await fetch(`${gw.url}/v1/chat/completions`), 405, 'invalid_request');
  });
});

describe('models, health, cron', () => {
  test('before its prices are synced a tenant lists no model (it serves none: each is unpriced)', async () => {
    const fresh = await startGateway({ syncPrices: false });
    try {
      const body = await (await fetch(`${fresh.url}/v1/models`)).json();
      assert.deepEqual(body.data, []);
      const admin = adminClient(fresh.url, fresh.adminToken);
      assert.equal((await admin.call('POST', '/api/models/pricing/sync')).status, 200);
      // The list is remembered a moment in the isolate; the synced prices then list it.
      let listed = [];
      for (let i = 0; i < 40 && !listed.some((m) => m.id === MODEL); i++) {
        listed = (await (await fetch(`${fresh.url}/v1/models`)).json()).data;
        if (!listed.some((m) => m.id === MODEL)) await new Promise((r) => setTimeout(r, 250));
      }
      assert.ok(listed.some((m) => m.id === MODEL), 'listed once priced');
    } finally {
      await fresh.stop();
    }
  });

  test('GET /v1/models lists upstream models in OpenAI shape with OpenRouter price strings', async () => {
    for (const path of ['/v1/models', '/api/v1/models']) {
      const res = await fetch(gw.url + path);
      assert.equal(res.status, 200);
      const body = await res.json();
      assert.equal(body.object, 'list');
      const m = body.data.find((x) => x.id === MODEL);
      assert.equal(m.object, 'model');
      assert.equal(m.owned_by, 'openrouter', 'no direct key: OpenRouter serves it');
      assert.deepEqual(m.pricing, { prompt: '0.00000015', completion: '0.0000006' });
      assert.equal(m.context_length, 128000);
    }
    const sdkList = await client.models.list();
    assert.ok(sdkList.data.some((m) => m.id === 'anthropic/claude-3.5-sonnet'));
  });

  test("the OpenAI SDK's models.retrieve reads one model, and an unknown one is 404 model_not_found", async () => {
    const one = await client.models.retrieve(MODEL);
    assert.equal(one.id, MODEL);
    assert.equal(one.object, 'model');
    assert.equal(one.owned_by, 'openrouter');
    assert.deepEqual(one.pricing, { prompt: '0.00000015', completion: '0.0000006' });
    const encoded = await fetch(`${gw.url}/api/v1/models/${encodeURIComponent(MODEL)}`);
    assert.equal((await encoded.json()).id, MODEL, 'the id may come percent-encoded, slash and all');
    await assert.rejects(client.models.retrieve('nobody/no-such-model'), (e) => e.status === 404 && e.code === 'model_not_found');
  });

  test('deep health proves D1, KV and the Durable Object answer, for admins only (it costs reads)', async () => {
    assert.equal((await fetch(`${gw.url}/health`)).status, 200, 'plain health is public');
    assert.equal((await fetch(`${gw.url}/health?deep=1`)).status, 401, 'an anonymous caller may not make the tenant pay for reads');
    const res = await fetch(`${gw.url}/health?deep=1`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.d1, 'ok');
    assert.equal(body.kv, 'ok');
    assert.ok(body.durable_object.pings >= 1);
  });

  test('the cron trigger refreshes the models cache from upstream', async () => {
    const base = gw.fake.url.replace('/api/v1', '');
    await fetch(`${base}/__requests`, { method: 'DELETE' });
    const res = await fetch(`${gw.url}/__scheduled?cron=${encodeURIComponent('*/15 * * * *')}`);
    assert.equal(res.status, 200);
    const { data } = await (await fetch(`${base}/__requests`)).json();
    assert.ok(data.some((r) => r.method === 'GET' && r.path.endsWith('/models')), 'the job asked upstream for /models');
  });
});

describe('key lookups are cached', () => {
  test('a key is read from D1 once, then from the isolate cache', async () => {
    const fresh = await admin.createKey(user.id, { name: 'cache' });
    const first = await rawChat({ model: MODEL, messages: hello }, { token: fresh.key });
    assert.equal(first.status, 200);
    assert.match(first.headers.get('server-timing'), /auth;desc=d1/);
    const second = await rawChat({ model: MODEL, messages: hello }, { token: fresh.key });
    assert.match(second.headers.get('server-timing'), /auth;desc=memory/);
  });
});
