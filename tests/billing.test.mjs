// Billing end to end: exact charges, no overspending under concurrency, key
// limits, idempotent credits, streams cut or abandoned, the ledger and its D1 copy.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

import { gatewayForFile, hangUpOnStream, SETTLE_WATCH_MS } from './fixture.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { adminClient, startGateway } from './harness.mjs';

const ctx = gatewayForFile();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The fake's catalogue, in micro-USD per million tokens.
const PRICES = { 'openai/gpt-4o-mini': [150_000, 600_000], 'openai/gpt-4o': [2_500_000, 10_000_000] };

/** The fake's deterministic token counts (tests/fake-upstream.mjs). */
function fakeTokens(messages, maxTokens) {
  const chars = messages.reduce((n, m) => n + m.content.length, 0);
  const prompt = Math.ceil(chars / 4) + 3 * messages.length;
  const words = 1 + messages.at(-1).content.split(/\s+/).filter(Boolean).length;
  return { prompt, completion: maxTokens ? Math.min(words, maxTokens) : words };
}

/** Cost in micro-USD, rounded up once per request. */
const costOf = (model, { prompt, completion }) => Math.ceil((prompt * PRICES[model][0] + completion * PRICES[model][1]) / 1e6);

/** The gateway's worst case for a request: the prompt bound (JSON bytes + 8 per message) and max_tokens. */
function worstCase(model, messages, maxTokens) {
  const bound = Buffer.byteLength(JSON.stringify(messages)) + 8 * messages.length;
  return costOf(model, { prompt: bound, completion: maxTokens });
}

const micros = (usd) => Math.round(usd * 1e6);

async function balanceOf(userId) {
  const res = await ctx.admin.call('GET', `/api/balance?user_id=${userId}`);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return micros(res.body.balance);
}

async function ledgerOf(userId) {
  const rows = [];
  for (let page = 1; ; page++) {
    const res = await ctx.admin.call('GET', `/api/balance/transactions?user_id=${userId}&page=${page}&page_size=100`);
    rows.push(...res.body.data);
    if (rows.length >= res.body.total) return rows;
  }
}

/** Polls until settlements (written after the response) have landed. */
async function settled(userId, predicate, what) {
  for (let i = 0; i < 60; i++) {
    const rows = await ledgerOf(userId);
    if (predicate(rows)) return rows;
    await sleep(100);
  }
  assert.fail(`ledger never showed ${what}`);
}

function chat(token, body) {
  return fetch(`${ctx.gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

describe('charging', () => {
  test('a chat moves balance and ledger by exactly the computed cost, and usage.cost says the same', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    const messages = [{ role: 'user', content: 'please say something nice about ledgers' }];
    const { data: res, response } = await client.chat.completions.create({ model: 'openai/gpt-4o', messages }).withResponse();
    const expected = costOf('openai/gpt-4o', fakeTokens(messages));
    assert.equal(micros(res.usage.cost), expected, 'usage.cost is what the gateway charges');
    assert.equal(res.usage.upstream_cost, undefined, 'what the tenant pays upstream is not shown to a key holder');
    assert.equal(res.usage.cost_details, undefined, "nor OpenRouter's breakdown of it");
    assert.equal(res.usage.is_byok, undefined);
    const rows = await settled(user.id, (r) => r.some((x) => x.type === 'usage'), 'the usage row');
    const usage = rows.find((x) => x.type === 'usage');
    assert.equal(micros(usage.amount), -expected);
    assert.equal(usage.reference_id, response.headers.get('x-request-id'));
    assert.equal(await balanceOf(user.id), 1_000_000 - expected);
    assert.equal(micros(usage.balance_after), 1_000_000 - expected);
  });

  test('the balance read right after a chat already shows its charge, and so does /api/v1/key', async () => {
    // Settlements wait briefly in the isolate to ride on the next reservation; a read delivers them first.
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    const messages = [{ role: 'user', content: 'what does this cost' }];
    await client.chat.completions.create({ model: 'openai/gpt-4o', messages });
    const expected = costOf('openai/gpt-4o', fakeTokens(messages));
    assert.equal(await balanceOf(user.id), 1_000_000 - expected, 'no wait needed');
    await client.chat.completions.create({ model: 'openai/gpt-4o', messages });
    const own = await fetch(`${ctx.gw.url}/api/v1/key`, { headers: { authorization: `Bearer ${key.key}` } }).then((r) => r.json());
    assert.equal(micros(own.data.usage), 2 * expected);
  });

  test('a streamed chat is charged from its usage chunk, which reports the charge', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const client = new OpenAI({ apiKey: key.key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0 });
    const messages = [{ role: 'user', content: 'stream me a few words please' }];
    let usage = null;
    for await (const chunk of await client.chat.completions.create({ model: 'openai/gpt-4o', messages, stream: true })) {
      if (chunk.usage) usage = chunk.usage;
    }
    const expected = costOf('openai/gpt-4o', fakeTokens(messages));
    assert.equal(micros(usage.cost), expected);
    await settled(user.id, (r) => r.some((x) => x.type === 'usage'), 'the usage row');
    assert.equal(await balanceOf(user.id), 1_000_000 - expected);
  });

  test('an empty balance is refused with 402 naming the balance', async () => {
    const user = await ctx.admin.createUser({}, { credit: 0 });
    const key = await ctx.admin.createKey(user.id);
    const res = await chat(key.key, { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(res.status, 402);
    const err = (await res.json()).error;
    assert.equal(err.code, 'insufficient_credits');
    assert.equal(err.metadata.limit_source, 'balance');
  });

  test('when only part of the worst case is affordable, max_tokens is capped so it still cannot overspend', async () => {
    const model = 'openai/gpt-4o';
    const messages = [{ role: 'user', content: 'one two three four five six seven eight nine ten eleven twelve' }];
    const worst = worstCase(model, messages, 1000);
    const budget = worstCase(model, messages, 3); // the prompt bound's cost (250 µUSD) and three tokens' (30)
    const user = await ctx.admin.createUser({}, { credit: budget / 1e6 });
    assert.ok(budget < worst);
    // What the budget buys after the prompt bound's cost, a micro-USD kept for rounding: 29 µUSD of output
    // at 10 µUSD a token, two tokens.
    const capped = 2;
    const key = await ctx.admin.createKey(user.id);
    const marker = `clamp-${user.id}`;
    const res = await chat(key.key, { model, messages, max_tokens: 1000, marker });
    assert.equal(res.status, 200);
    const body = await res.json();
    const sent = ctx.gw.fake.requests.filter((r) => r.body?.marker === marker);
    assert.equal(sent.length, 1);
    assert.equal(sent[0].body.max_tokens, capped, 'the upstream was asked for only what the budget covers');
    assert.equal(body.choices[0].finish_reason, 'length', 'the answer stopped at the cap');
    assert.equal(body.usage.completion_tokens, capped);
    await settled(user.id, (r) => r.some((x) => x.type === 'usage'), 'the usage row');
    // The prompt (19 tokens) and the two output tokens: 68 µUSD of the 280.
    assert.equal(await balanceOf(user.id), budget - costOf(model, fakeTokens(messages, capped)));
  });

  test('usage reported past the reservation is charged the reservation; the rest is uncollected, and reconciliation says so', async () => {
    const model = 'openai/gpt-4o-mini';
    const messages = [{ role: 'user', content: 'report more than came' }];
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const res = await chat(key.key, { model, messages, max_tokens: 20, fake_fault: 'over_report' });
    assert.equal(res.status, 200);
    const body = await res.json();
    // Held: the prompt bound and 20 output tokens (21 µUSD). Reported: 10,000 output tokens more than came (6,005).
    const reserved = worstCase(model, messages, 20);
    const { prompt, completion } = fakeTokens(messages);
    const reported = costOf(model, { prompt, completion: completion + 10_000 });
    assert.ok(reported > reserved);
    assert.equal(micros(body.usage.cost), reserved, 'the client is told what it was charged');
    const rows = await settled(user.id, (r) => r.some((x) => x.type === 'usage'), 'the usage row');
    const usage = rows.find((x) => x.type === 'usage');
    assert.equal(-micros(usage.amount), reserved, 'charged the reservation, not what was reported');
    assert.match(usage.description, /uncollected/);
    assert.equal(await balanceOf(user.id), 1_000_000 - reserved);
    const report = await ctx.admin.call('GET', `/api/admin/reconcile?user_id=${user.id}`);
    assert.equal(report.status, 200, JSON.stringify(report.body));
    assert.equal(micros(report.body.data.uncollected), reported - reserved, 'the difference is reported uncollected');
    assert.deepEqual(report.body.data.drift, []);
  });
});

describe('concurrency never overspends', () => {
  test('money for exactly 10 worst cases, 60 requests at once', async () => {
    const model = 'openai/gpt-4o';
    const messages = [{ role: 'user', content: 'count the ways a ledger can balance itself' }];
    const worst = worstCase(model, messages, 200);
    const credit = 10 * worst;
    const user = await ctx.admin.createUser({}, { credit: credit / 1e6 });
    const key = await ctx.admin.createKey(user.id);
    const results = await Promise.all(Array.from({ length: 60 }, () => chat(key.key, { model, messages, max_tokens: 200 })));
    const statuses = results.map((r) => r.status);
    for (const r of results) await r.arrayBuffer();
    const ok = statuses.filter((s) => s === 200).length;
    assert.ok(ok >= 10, `at least the 10 covered requests ran (${ok})`);
    assert.ok(statuses.every((s) => s === 200 || s === 402), `only 200 or 402: ${[...new Set(statuses)]}`);
    const rows = await settled(user.id, (r) => r.filter((x) => x.type === 'usage').length === ok, `${ok} usage rows`);
    const charged = -rows.filter((x) => x.type === 'usage').reduce((n, x) => n + micros(x.amount), 0);
    const balance = await balanceOf(user.id);
    assert.ok(balance >= 0, `balance ${balance} never below zero`);
    assert.ok(charged <= credit, `charged ${charged} ≤ credit ${credit}`);
    assert.equal(rows.reduce((n, x) => n + micros(x.amount), 0), balance, 'the ledger sums to the balance');
    assert.equal(balance, credit - charged);
  });

  // Where each window ends (UTC; a week starts on Monday), as the 402 reports it.
  const windowEnd = {
    daily: (n) => Date.UTC(n.getUTCFullYear(), n.getUTCMonth(), n.getUTCDate() + 1),
    weekly: (n) => Date.UTC(n.getUTCFullYear(), n.getUTCMonth(), n.getUTCDate() + 7 - ((n.getUTCDay() + 6) % 7)),
    monthly: (n) => Date.UTC(n.getUTCFullYear(), n.getUTCMonth() + 1, 1),
  };
  for (const reset of ['daily', 'weekly', 'monthly']) {
    test(`a key's ${reset} limit holds under 30 parallel requests, and 402 says when it resets`, async () => {
      const model = 'openai/gpt-4o';
      const messages = [{ role: 'user', content: `spend within the ${reset} limit` }];
      const worst = worstCase(model, messages, 100);
      const limit = 5 * worst;
      const user = await ctx.admin.createUser({}, { credit: 100 });
      const key = await ctx.admin.createKey(user.id, { limit: limit / 1e6, limit_reset: reset });
      const results = await Promise.all(Array.from({ length: 30 }, () => chat(key.key, { model, messages, max_tokens: 100 })));
      const refused = [];
      for (const r of results) if (r.status === 402) refused.push((await r.json()).error);
      else await r.arrayBuffer();
      const ok = results.filter((r) => r.status === 200).length;
      assert.ok(ok >= 5, `the five covered requests ran (${ok})`);
      assert.equal(ok + refused.length, 30, 'every request answered 200 or 402');
      assert.equal(refused[0].metadata.limit_source, 'key_limit');
      assert.equal(new Date(refused[0].metadata.resets_at).getTime(), windowEnd[reset](new Date()));
      const rows = await settled(user.id, (r) => r.filter((x) => x.type === 'usage').length === ok, `${ok} usage rows`);
      const charged = -rows.filter((x) => x.type === 'usage').reduce((n, x) => n + micros(x.amount), 0);
      const me = await adminClient(ctx.gw.url, key.key).call('GET', '/api/v1/key');
      const used = micros(me.body.data[`usage_${reset}`]);
      assert.equal(used, charged, `the ${reset} usage is what the ledger charged`);
      assert.ok(used <= limit, `${used} µUSD within ${limit}`);
      assert.equal(micros(me.body.data.limit_remaining), limit - used);
    });
  }
});

describe('credits and the ledger', () => {
  test('the same Idempotency-Key credits once', async () => {
    const user = await ctx.admin.createUser({}, { credit: 0 });
    const idem = `credit-${user.id}`;
    const first = await ctx.admin.credit(user.id, 5, { idempotencyKey: idem, description: 'welcome' });
    const again = await ctx.admin.credit(user.id, 5, { idempotencyKey: idem, description: 'welcome' });
    assert.equal(again.transaction_id, first.transaction_id);
    assert.equal(await balanceOf(user.id), 5_000_000);
    // The key reused for another credit (an edited retry) is refused: neither silently the first, nor a second.
    for (const [amount, type] of [[7, 'recharge'], [5, 'refund']]) {
      const other = await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: user.id, amount, type }, { 'idempotency-key': idem });
      assert.equal(other.status, 409, JSON.stringify(other.body));
      assert.match(other.body.error.message, /another amount or type/);
    }
    assert.equal(await balanceOf(user.id), 5_000_000);
    await ctx.admin.credit(user.id, -1.25, { type: 'adjustment' });
    assert.equal(await balanceOf(user.id), 3_750_000);
    const rows = await ledgerOf(user.id);
    assert.deepEqual(rows.map((r) => r.type), ['adjustment', 'recharge'], 'newest first');
    assert.equal(rows[1].description, 'welcome');
    const credits = await adminClient(ctx.gw.url, (await ctx.admin.createKey(user.id)).key).call('GET', '/api/v1/credits');
    assert.deepEqual(credits.body.data, { total_credits: 3.75, total_usage: 0 });
  });

  test('one Idempotency-Key credits once when sent ten times at once, and once more after the runtime is killed', { timeout: 120_000 }, async () => {
    const state = mkdtempSync(path.join(tmpdir(), 'tollgate-credits-'));
    let gw = await startGateway({ persistTo: state });
    const adminToken = gw.adminToken;
    try {
      let admin = adminClient(gw.url, adminToken);
      const user = await admin.createUser({}, { credit: 0 });
      const idem = `burst-${user.id}`;
      const sent = await Promise.all(Array.from({ length: 10 }, () => admin.credit(user.id, 2, { idempotencyKey: idem })));
      assert.equal(new Set(sent.map((c) => c.transaction_id)).size, 1, 'one credit, answered ten times');
      const balance = async () => micros((await admin.call('GET', `/api/balance?user_id=${user.id}`)).body.balance);
      assert.equal(await balance(), 2_000_000);
      // The whole runtime killed, started again on the same state: the same key still names the one credit.
      await new Promise((resolve) => {
        gw.child.once('close', resolve);
        process.kill(-gw.child.pid, 'SIGKILL');
      });
      await gw.fake.close();
      gw = await startGateway({ persistTo: state, vars: { ADMIN_TOKEN: adminToken }, syncPrices: false });
      admin = adminClient(gw.url, adminToken);
      const again = await admin.credit(user.id, 2, { idempotencyKey: idem });
      assert.equal(again.transaction_id, sent[0].transaction_id);
      assert.equal(await balance(), 2_000_000, 'credited once');
    } finally {
      await gw.stop();
      rmSync(state, { recursive: true, force: true });
    }
  });

  test('an adjustment cannot take money held for a request in flight: 400 naming `amount`; the request is charged as usual', async () => {
    const model = 'openai/gpt-4o-mini';
    const messages = [{ role: 'user', content: 'take your time' }];
    const user = await ctx.admin.createUser({}, { credit: 1 });
    // A key with a per-minute limit runs no request on a budget lease: only the request's own reservation is held.
    const key = await ctx.admin.createKey(user.id, { rpm_limit: 100 });
    let answered = false;
    const running = chat(key.key, { model, messages, max_tokens: 50, fake_fault: 'slow:6000' }).finally(() => {
      answered = true;
    });
    const worst = worstCase(model, messages, 50);
    let reserved = 0;
    for (let i = 0; i < 100 && reserved === 0; i++) {
      await sleep(20);
      reserved = micros((await ctx.admin.call('GET', `/api/balance?user_id=${user.id}`)).body.reserved);
    }
    assert.equal(reserved, worst, 'the request holds its worst case');
    const taken = await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: user.id, amount: -1, type: 'adjustment' });
    assert.equal(answered, false, 'the request was still in flight');
    assert.equal(taken.status, 400, JSON.stringify(taken.body));
    assert.equal(taken.body.error.param, 'amount');
    assert.match(taken.body.error.message, /held for requests in flight/);
    const res = await running;
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    const rows = await settled(user.id, (r) => r.some((x) => x.type === 'usage'), 'the usage row');
    assert.deepEqual(rows.map((r) => r.type).sort(), ['recharge', 'usage'], 'the refused adjustment left no row');
    const cost = costOf(model, fakeTokens(messages));
    assert.equal(-micros(rows.find((r) => r.type === 'usage').amount), cost);
    assert.equal(await balanceOf(user.id), 1_000_000 - cost, 'the balance is the credit less the charge');
  });

  test('bad credits are 400; unknown users 404', async () => {
    const user = await ctx.admin.createUser({}, { credit: 0 });
    for (const body of [
      { user_id: user.id, amount: -5 },
      { user_id: user.id, amount: 5, type: 'gift' },
      { user_id: user.id, amount: 0, type: 'adjustment' },
      { user_id: user.id, amount: 'lots' },
      { user_id: user.id, amount: 5, colour: 'red' },
    ]) {
      assert.equal((await ctx.admin.call('POST', '/api/balance/admin/add', body)).status, 400, JSON.stringify(body));
    }
    const missing = await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: '00000000-0000-4000-8000-000000000000', amount: 1 });
    assert.equal(missing.status, 404);
  });

  test('no credit takes the balance past what the ledger keeps exactly', async () => {
    // 2^53 - 1 micro-USD: a balance past it would be rounded where it is stored, and the ledger would no
    // longer sum to it.
    const user = await ctx.admin.createUser({}, { credit: 0 });
    const first = await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: user.id, amount: 9_007_199_254 });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const past = await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: user.id, amount: 1 });
    assert.equal(past.status, 400, JSON.stringify(past.body));
    assert.equal(past.body.error.param, 'amount');
    assert.match(past.body.error.message, /past 9007199254\.740991 USD.*at most 0\.740991 can be added/);
    assert.equal((await ctx.admin.call('POST', '/api/balance/admin/add', { user_id: user.id, amount: 0.5 })).status, 200);
    assert.equal((await ctx.admin.call('GET', `/api/balance?user_id=${user.id}`)).body.balance, 9_007_199_254.5);
    // 0.240991 left: of two credits of 0.2 at once, one fits.
    const both = await Promise.all([0, 1].map(() => ctx.admin.call('POST', '/api/balance/admin/add', { user_id: user.id, amount: 0.2 })));
    assert.deepEqual(both.map((r) => r.status).sort(), [200, 400], JSON.stringify(both.map((r) => r.body)));
    const audit = await ctx.admin.call('GET', `/api/admin/reconcile?user_id=${user.id}`);
    assert.equal(audit.status, 200, JSON.stringify(audit.body));
    assert.deepEqual(audit.body.data.drift, [], 'the ledger sums to the balance');
  });

  test('a key holder sees its own balance and ledger only', async () => {
    const a = await ctx.admin.createUser({}, { credit: 2 });
    const b = await ctx.admin.createUser({}, { credit: 3 });
    const holder = adminClient(ctx.gw.url, (await ctx.admin.createKey(a.id)).key);
    const mine = await holder.call('GET', '/api/balance');
    assert.deepEqual({ ...mine.body, reserved: undefined }, { user_id: a.id, balance: 2, currency: 'USD', reserved: undefined });
    assert.equal((await holder.call('GET', `/api/balance?user_id=${b.id}`)).status, 404);
    assert.equal((await holder.call('GET', `/api/balance/transactions?user_id=${b.id}`)).status, 404);
  });

  test('reconciliation finds the D1 ledger equal to every balance', async () => {
    const res = await ctx.admin.call('GET', '/api/admin/reconcile');
    assert.equal(res.status, 200);
    assert.ok(res.body.data.accounts_checked >= 5);
    assert.deepEqual(res.body.data.drift, []);
  });
});

describe('streams that do not finish', () => {
  test('a cut stream is charged what OpenRouter says it generated, and no more than its reservation', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const messages = [{ role: 'user', content: 'alpha beta gamma delta epsilon zeta eta theta' }];
    const res = await chat(key.key, { model: 'openai/gpt-4o', messages, stream: true, max_tokens: 50, fake_fault: 'cut:4' });
    const text = await res.text();
    assert.ok(text.includes('"error"'));
    const rows = await settled(user.id, (r) => r.some((x) => x.type === 'usage'), 'the usage row');
    const usage = rows.find((x) => x.type === 'usage');
    const charged = -micros(usage.amount);
    // The record counts the prompt and the four chunks sent before the cut (78 µUSD).
    assert.equal(charged, costOf('openai/gpt-4o', fakeTokens(messages, 4)));
    assert.ok(charged <= worstCase('openai/gpt-4o', messages, 50), 'never above the reservation');
    // The record, not the estimate from the text delivered (without a record, the estimate: below).
    assert.doesNotMatch(usage.description, /estimated/);
  });

  test('a stream that ends with an error event and then [DONE] is charged what OpenRouter says it generated', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const messages = [{ role: 'user', content: 'alpha beta gamma delta epsilon zeta eta theta' }];
    const res = await chat(key.key, { model: 'openai/gpt-4o', messages, stream: true, fake_fault: 'error_event_done' });
    const text = await res.text();
    assert.ok(text.includes('Provider disconnected') && text.trimEnd().endsWith('data: [DONE]'));
    const rows = await settled(user.id, (r) => r.some((x) => x.type === 'usage'), 'the usage row');
    const usage = rows.find((x) => x.type === 'usage');
    // The record counts the prompt and the two chunks sent before the error (58 µUSD).
    assert.equal(-micros(usage.amount), costOf('openai/gpt-4o', fakeTokens(messages, 2)));
    // No usage chunk came: the record (hidden reasoning included), not the estimate from the text delivered.
    assert.doesNotMatch(usage.description, /estimated/);
    // And it is recorded as the failure it was, though `[DONE]` followed the error.
    const id = res.headers.get('x-request-id');
    let record;
    for (let i = 0; i < 50 && !record; i++) {
      const gen = await fetch(`${ctx.gw.url}/api/v1/generation?id=${id}`, { headers: { authorization: `Bearer ${key.key}` } });
      if (gen.status === 200) record = (await gen.json()).data;
      else await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(record?.status, 502, JSON.stringify(record));
  });

  /** Streams `messages` to gpt-4o a word every 150 ms, and hangs up once two of its words have come. */
  const hangUpAfterTwoWords = (key, messages) => hangUpOnStream(ctx.gw.url, '/v1/chat/completions', { authorization: `Bearer ${key}` },
    { model: 'openai/gpt-4o', messages, stream: true, chunk_delay_ms: 150 }, 'word1');

  test('a client that hangs up mid-stream is charged for what the upstream generated before it stopped', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const words = Array.from({ length: 30 }, (_, i) => `word${i}`).join(' ');
    const messages = [{ role: 'user', content: words }];
    await hangUpAfterTwoWords(key.key, messages);
    const rows = await settled(user.id, (r) => r.some((x) => x.type === 'usage'), 'the usage row');
    const usage = rows.find((x) => x.type === 'usage');
    const charged = -micros(usage.amount);
    const full = costOf('openai/gpt-4o', fakeTokens(messages));
    assert.ok(charged > 0, 'not zero');
    assert.ok(charged < full, `less than the full answer (${charged} < ${full})`);
    assert.match(usage.description, /cancelled/);
  });

  test("a client that hangs up is charged at least what OpenRouter's record says it billed (the record counts no cache writes)", async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    // A long prompt, most of it written to the cache: OpenRouter bills each write at 1.25 times the prompt price.
    const filler = Array.from({ length: 2000 }, (_, i) => `word${i}`).join(' ');
    const messages = [{ role: 'user', content: filler }];
    const { prompt } = fakeTokens(messages);
    const writes = prompt - 10;
    messages[0].content = `[cache_write:${writes}] ${filler}`;
    await hangUpAfterTwoWords(key.key, messages);
    const rows = await settled(user.id, (r) => r.some((x) => x.type === 'usage'), 'the usage row');
    const charged = -micros(rows.find((x) => x.type === 'usage').amount);
    const promptTokens = fakeTokens(messages).prompt;
    const premium = Math.floor((writes * PRICES['openai/gpt-4o'][0] * 0.25) / 1e6);
    const writesAsInput = costOf('openai/gpt-4o', { prompt: promptTokens, completion: 0 });
    assert.ok(charged >= writesAsInput + premium, `charged ${charged}, the record's bill is at least ${writesAsInput + premium}`);
  });

  // The fake thinks first (`Thinking about: <the first 40 characters>`), one token a word, and with
  // `exclude` sends none of it: the client sees only the answer's words.
  const words = Array.from({ length: 30 }, (_, i) => `word${i}`).join(' ');
  const hidden = { messages: [{ role: 'user', content: words }], thought: `Thinking about: ${words.slice(0, 40)}`.split(' ').length };
  const { prompt: hiddenPrompt } = fakeTokens(hidden.messages);
  /** Streams a hidden-reasoning answer and hangs up once two of its words have come; answers the request id. */
  async function hangUpOnHiddenReasoning(key, extra = {}) {
    const abort = new AbortController();
    const res = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST',
      signal: abort.signal,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'openai/gpt-4o', messages: hidden.messages, stream: true, chunk_delay_ms: 150,
        reasoning: { max_tokens: 500, exclude: true }, ...extra,
      }),
    });
    const reader = res.body.getReader();
    let seen = '';
    while (!seen.includes('word1')) {
      const { done, value } = await reader.read();
      assert.ok(!done, `the stream ended before its second word (${res.status}): ${seen}`);
      seen += new TextDecoder().decode(value);
    }
    assert.doesNotMatch(seen, /Thinking about/, 'the reasoning is hidden');
    abort.abort();
    return res.headers.get('x-request-id');
  }

  /**
   * Waits (longer than `settled`: a settlement may wait out the generation record) for `n` usage rows, then
   * `SETTLE_WATCH_MS` more: exactly `n` then (a second charge of a request, landing later, shows).
   */
  async function usageOf(userId, n) {
    for (let i = 0; i < 150; i++) {
      const rows = (await ledgerOf(userId)).filter((x) => x.type === 'usage');
      if (rows.length >= n) {
        await sleep(SETTLE_WATCH_MS);
        const again = (await ledgerOf(userId)).filter((x) => x.type === 'usage');
        assert.equal(again.length, n, `exactly ${n} usage rows: ${JSON.stringify(again)}`);
        return again;
      }
      await sleep(100);
    }
    assert.fail(`never ${n} usage rows`);
  }

  test('clients that hang up on hidden reasoning are charged the reasoning too, from the generation record: in turn and at once', async () => {
    const user = await ctx.admin.createUser({}, { credit: 10 }); // six worst cases held at once
    const key = await ctx.admin.createKey(user.id);
    const ids = [await hangUpOnHiddenReasoning(key.key), await hangUpOnHiddenReasoning(key.key)];
    ids.push(...(await Promise.all(Array.from({ length: 6 }, () => hangUpOnHiddenReasoning(key.key)))));
    const rows = await usageOf(user.id, ids.length);
    assert.deepEqual(rows.map((r) => r.reference_id).sort(), [...ids].sort(), 'each request charged once');
    const seenOnly = costOf('openai/gpt-4o', { prompt: hiddenPrompt, completion: 3 });
    const atLeast = costOf('openai/gpt-4o', { prompt: hiddenPrompt, completion: hidden.thought + 2 });
    const whole = costOf('openai/gpt-4o', { prompt: hiddenPrompt, completion: hidden.thought + 31 });
    for (const usage of rows) {
      const charged = -micros(usage.amount);
      assert.ok(charged >= atLeast, `the hidden reasoning is charged: ${charged} >= ${atLeast} (the text seen alone: ${seenOnly})`);
      assert.ok(charged < whole, 'not the whole answer');
      assert.doesNotMatch(usage.description, /estimated/);
      assert.match(usage.description, /cancelled/);
    }
    const ledger = await ledgerOf(user.id);
    assert.equal(ledger.reduce((sum, r) => sum + micros(r.amount), 0), await balanceOf(user.id), 'the ledger sums to the balance');
  });

  test('a stream the upstream breaks off is charged from the generation record too, hidden reasoning included', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const res = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'openai/gpt-4o', messages: hidden.messages, stream: true, fake_fault: 'cut:3',
        reasoning: { max_tokens: 500, exclude: true },
      }),
    });
    const text = await res.text();
    assert.match(text, /"error"/, 'the stream ended with an error event');
    const [usage] = await usageOf(user.id, 1);
    assert.equal(usage.reference_id, res.headers.get('x-request-id'));
    const charged = -micros(usage.amount);
    const atLeast = costOf('openai/gpt-4o', { prompt: hiddenPrompt, completion: hidden.thought });
    assert.ok(charged >= atLeast, `the hidden reasoning is charged: ${charged} >= ${atLeast}`);
    assert.doesNotMatch(usage.description, /estimated/);
  });

  test('without a generation record (OpenRouter never has it), a hang-up is charged the estimate after the wait', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const key = await ctx.admin.createKey(user.id);
    const started = Date.now();
    const id = await hangUpOnHiddenReasoning(key.key, { fake_fault: 'no_record' });
    const [usage] = await usageOf(user.id, 1);
    assert.equal(usage.reference_id, id);
    assert.ok(Date.now() - started >= 5_000, 'the settlement waited for the record first');
    assert.ok(-micros(usage.amount) > 0, 'what was delivered is charged');
    assert.match(usage.description, /estimated/, 'from the delivered text');
  });
});

describe('organization monthly limits', () => {
  test("an org's monthly cost limit holds across its members under 30 parallel requests", async () => {
    const model = 'openai/gpt-4o';
    const messages = [{ role: 'user', content: 'organizational spending' }];
    const worst = worstCase(model, messages, 100);
    const limit = 4 * worst;
    const org = (await ctx.admin.call('POST', '/api/orgs', { name: `Cost ${Date.now()}`, limits: { monthly_cost: limit / 1e6 } })).body.data;
    const members = [await ctx.admin.createUser({}, { credit: 50 }), await ctx.admin.createUser({}, { credit: 50 })];
    const keys = [];
    for (const m of members) keys.push((await ctx.admin.call('POST', `/api/orgs/${org.id}/keys`, { name: 'member', user_id: m.id })).body.data.key);
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => chat(keys[i % 2], { model, messages, max_tokens: 100 })));
    const refusals = [];
    for (const r of results) if (r.status === 402) refusals.push((await r.json()).error);
    else await r.arrayBuffer();
    const ok = results.filter((r) => r.status === 200).length;
    assert.ok(ok >= 1 && refusals.length > 0, `${ok} ran, ${refusals.length} refused`);
    assert.equal(refusals[0].metadata.limit_source, 'org_limit');
    assert.ok(refusals[0].metadata.resets_at);
    let charged = 0;
    let usageRows = 0;
    for (let i = 0; i < 60 && usageRows < ok; i++) {
      charged = 0;
      usageRows = 0;
      for (const m of members) {
        const rows = (await ledgerOf(m.id)).filter((x) => x.type === 'usage');
        usageRows += rows.length;
        charged -= rows.reduce((n, x) => n + micros(x.amount), 0);
      }
      if (usageRows < ok) await sleep(100);
    }
    assert.equal(usageRows, ok);
    assert.ok(charged <= limit, `members charged ${charged} ≤ org limit ${limit}`);
  });

  test("an org's monthly token limit holds across its members: 20 at once, then one after another", async () => {
    const messages = [{ role: 'user', content: 'tokens for the organization' }];
    const maxTokens = 50;
    // What a request holds: its prompt's bound (the JSON's bytes and 8 a message) and its output bound.
    const held = Buffer.byteLength(JSON.stringify(messages)) + 8 * messages.length + maxTokens;
    const limit = Math.floor(3.5 * held);
    const org = (await ctx.admin.call('POST', '/api/orgs', { name: `Tokens ${Date.now()}`, limits: { monthly_tokens: limit } })).body.data;
    const members = [await ctx.admin.createUser({}, { credit: 5 }), await ctx.admin.createUser({}, { credit: 5 })];
    const keys = [];
    for (const m of members) keys.push((await ctx.admin.call('POST', `/api/orgs/${org.id}/keys`, { name: 'member', user_id: m.id })).body.data.key);
    const body = { model: 'openai/gpt-4o-mini', messages, max_tokens: maxTokens, stream: true, chunk_delay_ms: 100 };
    // At once, every request holds its whole bound: exactly three fit.
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => chat(keys[i % 2], body)));
    let made = results.length;
    let tokens = 0;
    let served = 0;
    for (const r of results) {
      if (r.status !== 200) {
        assert.equal((await r.json()).error.metadata.limit_source, 'org_tokens');
        continue;
      }
      served += 1;
      const usage = (await r.text()).split('\n').filter((l) => l.includes('"usage":{')).map((l) => JSON.parse(l.slice(6)).usage).at(-1);
      tokens += usage.prompt_tokens + usage.completion_tokens;
    }
    assert.equal(served, 3, 'three bounds fit in three and a half');
    const settled = async (n) => {
      for (let i = 0; i < 100; i++) {
        const rows = [];
        for (const m of members) rows.push(...(await ledgerOf(m.id)).filter((x) => x.type === 'usage'));
        if (rows.length >= n) return;
        await sleep(100);
      }
      assert.fail(`never ${n} charges`);
    };
    await settled(served);
    // Settled, the month counts what they used (less than held): one after another, more fit, until it is full.
    for (let i = 0; i < 20; i++) {
      const res = await chat(keys[i % 2], { ...body, stream: false, chunk_delay_ms: 0 });
      made += 1;
      if (res.status !== 200) {
        assert.equal(res.status, 429);
        assert.equal((await res.json()).error.metadata.limit_source, 'org_tokens');
        break;
      }
      const { usage } = await res.json();
      tokens += usage.prompt_tokens + usage.completion_tokens;
      served += 1;
      await settled(served);
    }
    assert.ok(served > 3, `${served} served in all`);
    assert.ok(tokens <= limit, `the month's ${tokens} tokens stay within its ${limit}`);
    // The organization's stats count every request of its keys, those it refused included (recorded without
    // it, a key's refused first request of the day took the day's row out of the organization's stats).
    let counted = 0;
    for (let i = 0; i < 100 && counted < made; i++) {
      if (i) await sleep(100);
      counted = (await ctx.admin.call('GET', `/api/stats/orgs/${org.id}`)).body.data.reduce((n, d) => n + d.requests, 0);
    }
    assert.equal(counted, made);
  });

  test("a request reported past its hold counts its hold in the org's month: one after another, then at once", async () => {
    const messages = [{ role: 'user', content: 'tokens past the cap' }];
    const maxTokens = 20;
    const held = Buffer.byteLength(JSON.stringify(messages)) + 8 * messages.length + maxTokens;
    const body = { model: 'openai/gpt-4o-mini', messages, max_tokens: maxTokens, fake_fault: 'over_report' };
    const orgWithKey = async (name) => {
      const org = (await ctx.admin.call('POST', '/api/orgs', { name: `${name} ${Date.now()}`, limits: { monthly_tokens: Math.floor(2.5 * held) } })).body.data;
      const member = await ctx.admin.createUser({}, { credit: 5 });
      const key = (await ctx.admin.call('POST', `/api/orgs/${org.id}/keys`, { name: 'member', user_id: member.id })).body.data.key;
      return { member, key };
    };
    const settled = async (userId, n) => {
      for (let i = 0; i < 100; i++) {
        if ((await ledgerOf(userId)).filter((x) => x.type === 'usage').length >= n) return;
        await sleep(100);
      }
      assert.fail(`never ${n} charges`);
    };
    // Each reports some 10,000 tokens, far past its hold: counted so, the first would fill the month alone.
    const one = await orgWithKey('Past cap');
    const statuses = [];
    for (let i = 0; i < 3; i++) {
      const res = await chat(one.key, body);
      statuses.push(res.status);
      await res.arrayBuffer();
      if (res.status === 200) await settled(one.member.id, statuses.filter((s) => s === 200).length);
    }
    assert.deepEqual(statuses, [200, 200, 429], 'two holds fit in two and a half, each counted at its hold');
    // At once: two fit; settled, they leave the month as full as their holds.
    const many = await orgWithKey('Past cap at once');
    const results = await Promise.all(Array.from({ length: 8 }, () => chat(many.key, body)));
    for (const r of results) await r.arrayBuffer();
    assert.equal(results.filter((r) => r.status === 200).length, 2);
    await settled(many.member.id, 2);
    const after = await chat(many.key, body);
    await after.arrayBuffer();
    assert.equal(after.status, 429);
  });

  test("an org's monthly request limit answers 429 with retry-after", async () => {
    const org = (await ctx.admin.call('POST', '/api/orgs', { name: `Req ${Date.now()}`, limits: { monthly_requests: 2 } })).body.data;
    const user = await ctx.admin.createUser();
    const key = (await ctx.admin.call('POST', `/api/orgs/${org.id}/keys`, { name: 'm', user_id: user.id })).body.data.key;
    const body = { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] };
    assert.equal((await chat(key, body)).status, 200);
    assert.equal((await chat(key, body)).status, 200);
    const third = await chat(key, body);
    assert.equal(third.status, 429);
    assert.ok(Number(third.headers.get('retry-after')) > 0);
    assert.match((await third.json()).error.message, /monthly request limit/);
    await ctx.admin.call('PATCH', `/api/orgs/${org.id}`, { status: 'suspended' });
    assert.equal((await chat(key, body)).status, 403, 'a suspended organization');
  });
});
