// The kill test (issue 14): during a burst of 40 requests on three accounts
// (half of them long streams), the whole runtime is killed (SIGKILL of the
// `wrangler dev` process group) and started again on the same local state.
// Then, for every account: balance ≥ 0; the object's ledger sums to its
// balance and so does D1's copy; nothing is charged twice; every request whose
// client had its complete answer at least a second before the kill is charged
// exactly once, exactly; new requests cannot spend money still held for the
// streams the kill cut; and once their reservations' leases run out, those are
// closed by the documented rule: charged the evidence their last heartbeat
// reported (the prompt and the content delivered, estimated), never more than
// reserved, once, with a ledger row that says "closed without settlement".
// A key's spend in its limit window survives the kill too. Most requests run on
// budget leases (issue 17), streams among them: a stream started on a lease
// gets a reservation of its own with its first heartbeat, so the kill's rule
// applies to it the same way, and the dead isolate's lease only holds its
// unused part until it expires. An organization's monthly limit and an end
// user's budget hold across such a kill too.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { adminClient, startGateway } from './harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const micros = (usd) => Math.round(usd * 1e6);
const MODEL = 'openai/gpt-4o-mini';
const PRICE = [150_000, 600_000];
function fakeTokens(messages) {
  const chars = messages.reduce((n, m) => n + m.content.length, 0);
  return { prompt: Math.ceil(chars / 4) + 3 * messages.length, completion: 1 + messages.at(-1).content.split(/\s+/).filter(Boolean).length };
}
const costOf = ({ prompt, completion }) => Math.ceil((prompt * PRICE[0] + completion * PRICE[1]) / 1e6);
function worstCase(messages, maxTokens) {
  const bound = Buffer.byteLength(JSON.stringify(messages)) + 8 * messages.length;
  return costOf({ prompt: bound, completion: maxTokens });
}

// Short leases so the test need not wait long: a reservation lives 4 + 15 s without news, and a
// stream beats every 4.75 s while chunks arrive (streams last 10 s; the kill comes at 6 s, after a beat).
const VARS = { REQUEST_TIMEOUT: '4', RESERVATION_GRACE: '15' };
const STREAM_WORDS = Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ');
const STREAM_MAX_TOKENS = 2000;

function send(url, key, body) {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, ...body }),
  });
}

/** Kills the whole runtime (SIGKILL of its process group), as a machine dies, and its fake upstream. */
async function killRuntime(gw) {
  await new Promise((resolve) => {
    gw.child.once('close', resolve);
    process.kill(-gw.child.pid, 'SIGKILL');
  });
  await gw.fake.close();
}

/**
 * A runtime on state of its own, which the test may kill (`kill`) and start again on that state (`restart`);
 * `close` stops it and removes the state.
 */
async function ownRuntime(name, vars) {
  const state = mkdtempSync(path.join(tmpdir(), `tollgate-${name}-`));
  const all = { ...vars, ADMIN_TOKEN: `tg-admin-${randomBytes(24).toString('hex')}` };
  const runtime = {
    gw: await startGateway({ persistTo: state, vars: all }),
    admin: () => adminClient(runtime.gw.url, all.ADMIN_TOKEN),
    kill: () => killRuntime(runtime.gw),
    restart: async () => {
      runtime.gw = await startGateway({ persistTo: state, vars: all, syncPrices: false });
    },
    close: async () => {
      await runtime.gw.stop();
      rmSync(state, { recursive: true, force: true });
    },
  };
  return runtime;
}

/** Reconciliation's report once every reservation is closed (reconciling also makes each object close what is due). */
async function reconciledOnceClosed(admin) {
  let report;
  for (let i = 0; i < 60; i++) {
    report = (await admin.call('GET', '/api/admin/reconcile')).body.data;
    if (report.open_reservations === 0) break;
    await sleep(1_000);
  }
  return report;
}

/** Runs one request to its end; records its id, when its complete answer arrived, and what it received. */
async function runRequest(url, account, stream) {
  const messages = [{ role: 'user', content: stream ? STREAM_WORDS : `short request ${randomBytes(3).toString('hex')}` }];
  const body = stream ? { messages, stream: true, chunk_delay_ms: 250, max_tokens: STREAM_MAX_TOKENS } : { messages };
  const out = { account, stream, messages, id: null, completeAt: null, error: null };
  try {
    const res = await send(url, account.key, body);
    out.id = res.headers.get('x-request-id');
    out.status = res.status;
    out.leased = /reserve;desc=lease/.test(res.headers.get('server-timing') ?? '');
    const text = await res.text();
    if (res.status === 200 && (!stream || text.trimEnd().endsWith('data: [DONE]'))) out.completeAt = Date.now();
  } catch (e) {
    out.error = e;
  }
  return out;
}

test('a runtime killed mid-burst loses no money and charges nothing twice', { timeout: 180_000 }, async () => {
  const runtime = await ownRuntime('kill', VARS);
  let { gw } = runtime;
  try {
    let admin = runtime.admin();
    const streamWorst = worstCase([{ role: 'user', content: STREAM_WORDS }], STREAM_MAX_TOKENS);
    // What a heartbeat reports a stream has cost at least: its prompt, estimated from its bound (the JSON's
    // bytes and 8 a message) at a token per 4 bytes.
    const streamBound = Buffer.byteLength(JSON.stringify([{ role: 'user', content: STREAM_WORDS }])) + 8;
    const streamPrompt = costOf({ prompt: Math.ceil(streamBound / 4), completion: 0 });
    const accounts = [];
    for (let i = 0; i < 3; i++) {
      // The last account can afford exactly its two streams' worst cases and 50 µUSD more.
      const credit = i === 2 ? (2 * streamWorst + 50) / 1e6 : 1;
      const user = await admin.createUser({}, { credit });
      const key = await admin.createKey(user.id);
      accounts.push({ user, key: key.key, credit: micros(credit) });
    }
    // A key whose monthly limit fits one small request: it spends it before the kill.
    const limitedMessages = [{ role: 'user', content: 'spend before the kill' }];
    const limit = worstCase(limitedMessages, 10);
    const limitedUser = await admin.createUser({}, { credit: 1 });
    const limited = (await admin.createKey(limitedUser.id, { limit: limit / 1e6, limit_reset: 'monthly' })).key;
    const spendRes = await send(gw.url, limited, { messages: limitedMessages, max_tokens: 10 });
    assert.equal(spendRes.status, 200);
    await spendRes.text();
    const spent = costOf(fakeTokens(limitedMessages));
    const usageOf = async () => micros((await adminClient(gw.url, limited).call('GET', '/api/v1/key')).body.data.usage_monthly);
    for (let i = 0; i < 50 && (await usageOf()) !== spent; i++) await sleep(100);
    assert.equal(await usageOf(), spent, 'the small request is counted against the key');
    // 40 requests, half of them streams, on the first two accounts; the tight account gets exactly two streams.
    const plan = [];
    for (let i = 0; i < 40; i++) plan.push({ account: accounts[(i >> 1) % 2], stream: i % 2 === 0 });
    plan[0].account = accounts[2];
    plan[2].account = accounts[2];
    const started = Date.now();
    const running = plan.map(({ account, stream }) => runRequest(gw.url, account, stream));

    // Kill the whole runtime while the streams are mid-way (each has sent a heartbeat by now).
    await sleep(6_000);
    const killAt = Date.now();
    await runtime.kill();
    const results = await Promise.all(running);
    const cut = results.filter((r) => r.stream && r.id && !r.completeAt);
    assert.ok(cut.length >= 10, `the kill cut the streams (${cut.length} cut)`);
    const finished = results.filter((r) => r.completeAt && r.completeAt <= killAt - 1000);
    assert.ok(finished.length >= 15, `the short requests finished before the kill (${finished.length})`);
    const leased = results.filter((r) => r.leased);
    assert.ok(leased.some((r) => r.stream) && leased.some((r) => !r.stream), `requests of both kinds ran on budget leases (${leased.length})`);

    // Start again on the same state.
    await runtime.restart();
    ({ gw } = runtime);
    admin = runtime.admin();

    // Money held for the cut streams is still held: the tight account cannot spend it.
    const tight = accounts[2];
    const held = (await admin.call('GET', `/api/balance?user_id=${tight.user.id}`)).body;
    assert.ok(micros(held.reserved) >= 2 * streamWorst - 2, `the restored reservations hold the money (${held.reserved})`);
    const big = [{ role: 'user', content: 'x'.repeat(2_000) }];
    const refused = await send(gw.url, tight.key, { messages: big, max_tokens: 5 });
    assert.equal(refused.status, 402, 'a new request cannot spend money held for the cut streams');
    await refused.text();

    // The limited key still remembers this month's spend: the same request no longer fits.
    assert.equal(await usageOf(), spent, "the key's monthly spend survived the kill");
    const overLimit = await send(gw.url, limited, { messages: limitedMessages, max_tokens: 10 });
    assert.equal(overLimit.status, 402, 'the key limit holds across the kill');
    assert.equal((await overLimit.json()).error.metadata.limit_source, 'key_limit');

    // Let the leases run out; reconciliation must come clean.
    const report = await reconciledOnceClosed(admin);
    assert.equal(report.open_reservations, 0, 'every cut stream was closed');
    assert.deepEqual(report.drift, [], 'D1 ledger sum = object ledger sum = balance, none negative');
    assert.deepEqual(report.failed, []);
    assert.ok(report.closed_without_settlement >= 1, 'cut streams were closed by the rule');

    const closedCharges = [];
    for (const account of accounts) {
      const ledger = (await admin.call('GET', `/api/balance/transactions?user_id=${account.user.id}&page_size=100`)).body.data;
      const balance = micros((await admin.call('GET', `/api/balance?user_id=${account.user.id}`)).body.balance);
      assert.ok(balance >= 0);
      assert.equal(ledger.reduce((s, r) => s + micros(r.amount), 0), balance, 'the ledger sums to the balance');
      const usage = ledger.filter((r) => r.type === 'usage');
      const refs = usage.map((r) => r.reference_id);
      assert.equal(new Set(refs).size, refs.length, 'nothing is charged twice');
      for (const r of results.filter((x) => x.account === account)) {
        const rows = usage.filter((x) => x.reference_id === r.id);
        assert.ok(rows.length <= 1);
        if (finished.includes(r)) {
          assert.equal(rows.length, 1, `${r.id} (answered before the kill) is charged`);
          assert.equal(-micros(rows[0].amount), costOf(fakeTokens(r.messages)), `${r.id} is charged exactly`);
        }
        if (cut.includes(r) && rows.length === 1) {
          // Charged what its last heartbeat reported (every stream beat before the kill): at least its prompt,
          // estimated (12 µUSD), never more than its reservation.
          const charged = -micros(rows[0].amount);
          assert.ok(charged >= streamPrompt && charged <= streamWorst, `${r.id}: ${charged} µUSD, from its prompt's ${streamPrompt} to its reservation's ${streamWorst}`);
          assert.match(rows[0].description, /^closed without settlement/);
          closedCharges.push(charged);
        }
      }
    }
    assert.equal(closedCharges.length, cut.length, "every cut stream was closed, once");
    // Each has its usage record too (the model it asked, what it was charged, estimated), as a settled one does.
    for (const r of cut) {
      let record;
      for (let i = 0; i < 50 && !record; i++) {
        const res = await fetch(`${gw.url}/api/v1/generation?id=${r.id}`, { headers: { authorization: `Bearer ${r.account.key}` } });
        if (res.status === 200) record = (await res.json()).data;
        else await sleep(200);
      }
      assert.ok(record, `${r.id} has a usage record`);
      assert.equal(record.model, MODEL);
      const ledger = (await admin.call('GET', `/api/balance/transactions?user_id=${r.account.user.id}&page_size=100`)).body.data;
      assert.equal(micros(record.total_cost), -micros(ledger.find((x) => x.reference_id === r.id).amount), 'its cost is its charge');
    }
    console.log(`[kill] ${finished.length} answered before the kill, ${cut.length} cut, ${leased.length} on leases; closed at ${closedCharges.join(', ')} µUSD`);
    assert.ok(Date.now() - started < 170_000);
  } finally {
    await runtime.close();
  }
});

test("an organization's limit and an end user's budget hold across a kill mid-burst", { timeout: 180_000 }, async () => {
  // Eight streams at once for an organization whose monthly cost limit fits three worst cases, and eight
  // for one end user whose budget fits three; the runtime dies while the six admitted are mid-way. After
  // the restart, neither limit lets a new request spend what the cut streams held; once their leases run
  // out they are closed by the rule, each once. The organization keeps counting what its holds held
  // (nobody told it less: the safe side), while the end user's budget is charged only the evidence and
  // the rest is free again. Other end users of the same key are not held up at any point.
  const runtime = await ownRuntime('kill-limits', VARS);
  let { gw } = runtime;
  try {
    let admin = runtime.admin();
    const streamMessages = [{ role: 'user', content: STREAM_WORDS }];
    const streamWorst = worstCase(streamMessages, STREAM_MAX_TOKENS);
    const limit = 3 * streamWorst; // exactly three worst cases: a fourth cannot even run capped
    const org = (await admin.call('POST', '/api/orgs', { name: 'Kill', limits: { monthly_cost: limit / 1e6 } })).body.data;
    const member = await admin.createUser({}, { credit: 1 });
    const orgKey = (await admin.call('POST', `/api/orgs/${org.id}/keys`, { name: 'member', user_id: member.id })).body.data.key;
    const appUser = await admin.createUser({}, { credit: 1 });
    const app = await admin.createKey(appUser.id, { end_user_budget: { limit: limit / 1e6, limit_reset: 'monthly' } });
    const stream = { messages: streamMessages, stream: true, chunk_delay_ms: 250, max_tokens: STREAM_MAX_TOKENS };
    const run = async (key, body) => {
      try {
        const res = await send(gw.url, key, body);
        const text = await res.text();
        if (res.status !== 200) return { status: res.status, error: JSON.parse(text).error };
        return { status: !body.stream || text.trimEnd().endsWith('data: [DONE]') ? 200 : 'cut' };
      } catch {
        return { status: 'cut' };
      }
    };
    const running = [
      ...Array.from({ length: 8 }, () => run(orgKey, stream)),
      ...Array.from({ length: 8 }, () => run(app.key, { ...stream, user: 'alice' })),
    ];
    await sleep(6_000);
    await runtime.kill();
    const results = await Promise.all(running);
    const [orgResults, aliceResults] = [results.slice(0, 8), results.slice(8)];
    for (const [who, rs, source] of [['organization', orgResults, 'org_limit'], ['end user', aliceResults, 'end_user_limit']]) {
      assert.equal(rs.filter((r) => r.status === 'cut').length, 3, `the ${who}'s three admitted streams were cut`);
      const refused = rs.filter((r) => r.status === 402);
      assert.equal(refused.length, 5, `the ${who}'s other five were refused`);
      for (const r of refused) assert.equal(r.error.metadata.limit_source, source);
    }

    await runtime.restart();
    ({ gw } = runtime);
    admin = runtime.admin();
    const small = { messages: [{ role: 'user', content: 'after the kill' }], max_tokens: 10 };
    const orgAfter = await run(orgKey, small);
    assert.equal(orgAfter.status, 402, 'the organization cannot spend what the cut streams hold');
    assert.equal(orgAfter.error.metadata.limit_source, 'org_limit');
    const aliceAfter = await run(app.key, { ...stream, user: 'alice' });
    assert.equal(aliceAfter.status, 402, 'nor can the end user');
    assert.equal(aliceAfter.error.metadata.limit_source, 'end_user_limit');
    assert.equal((await run(app.key, { ...small, user: 'bob' })).status, 200, 'another end user of the key is served');

    const report = await reconciledOnceClosed(admin);
    assert.equal(report.open_reservations, 0, 'every cut stream was closed');
    assert.deepEqual(report.drift, [], 'every ledger sums to its balance');

    const usageRows = async (userId) =>
      (await admin.call('GET', `/api/balance/transactions?user_id=${userId}&page_size=100`)).body.data.filter((r) => r.type === 'usage');
    const memberRows = await usageRows(member.id);
    assert.equal(memberRows.length, 3, 'each cut stream of the organization is charged once');
    assert.ok(memberRows.every((r) => /^closed without settlement/.test(r.description)));
    const memberCharged = -memberRows.reduce((n, r) => n + micros(r.amount), 0);
    assert.ok(memberCharged <= limit, `the organization's members were charged ${memberCharged} of its ${limit}`);
    const orgLater = await run(orgKey, small);
    assert.equal(orgLater.status, 402, 'the organization still counts what its untold holds held');

    const aliceRows = (await usageRows(appUser.id)).filter((r) => /^closed without settlement/.test(r.description));
    assert.equal(aliceRows.length, 3, "each of the end user's cut streams is charged once");
    const aliceCharged = -aliceRows.reduce((n, r) => n + micros(r.amount), 0);
    assert.ok(aliceCharged > 0 && aliceCharged < limit, `the end user was charged the evidence, ${aliceCharged} of ${limit}`);
    const listed = (await admin.call('GET', `/api/keys/${app.id}/end-users`)).body.data.find((u) => u.end_user === 'alice');
    assert.equal(micros(listed.usage), aliceCharged, "the end user's spend is what the ledger charged");
    const aliceLater = await run(app.key, { ...small, user: 'alice' });
    assert.equal(aliceLater.status, 200, 'what the end user did not spend is free again');
  } finally {
    await runtime.close();
  }
});

test('a long non-streamed request whose task dies after its first heartbeat is charged its prompt, not nothing', { timeout: 120_000 }, async () => {
  // A client that hangs up on a non-streamed request has the runtime end the request's task 30 s later,
  // before its settlement; here the whole runtime dies instead, 4.5 s into an answer that takes 8 s. The
  // request's heartbeats (every 2 s here) told its account object what it has cost at least: the prompt.
  const runtime = await ownRuntime('kill-read', { REQUEST_TIMEOUT: '10', RESERVATION_GRACE: '4' });
  let { gw } = runtime;
  try {
    let admin = runtime.admin();
    const user = await admin.createUser({}, { credit: 1 });
    const key = (await admin.createKey(user.id)).key;
    // Two quick requests first, so the account's requests run on a budget lease (as most do).
    for (let i = 0; i < 2; i++) await (await send(gw.url, key, { messages: [{ role: 'user', content: `warm ${i}` }] })).text();
    const messages = [{ role: 'user', content: 'a long think about a long prompt '.repeat(40) }];
    const slow = send(gw.url, key, { messages, max_tokens: 100, fake_fault: 'slow:8000' }).catch((e) => e);
    await sleep(4_500);
    await runtime.kill();
    await slow;
    await runtime.restart();
    ({ gw } = runtime);
    admin = runtime.admin();
    // Its reservation lives 14 s past its last beat; then the object closes it by the rule.
    let closed;
    for (let i = 0; i < 60 && !closed; i++) {
      await sleep(1_000);
      const ledger = (await admin.call('GET', `/api/balance/transactions?user_id=${user.id}&page_size=100`)).body.data;
      closed = ledger.find((r) => r.type === 'usage' && /^closed without settlement/.test(r.description));
    }
    assert.ok(closed, 'the request was closed by the rule');
    const charged = -micros(closed.amount);
    const prompt = Math.ceil((Buffer.byteLength(JSON.stringify(messages)) / 4) * PRICE[0] / 1e6);
    assert.ok(charged > 0, `charged ${charged} µUSD for a prompt the upstream read`);
    assert.ok(charged <= worstCase(messages, 100), `${charged} µUSD is within its reservation`);
    assert.ok(charged >= prompt / 2, `${charged} µUSD is about the prompt's ${prompt}`);
    const report = (await admin.call('GET', `/api/admin/reconcile?user_id=${user.id}`)).body.data;
    assert.deepEqual(report.drift, [], 'the ledger sums to the balance');
  } finally {
    await runtime.close();
  }
});
