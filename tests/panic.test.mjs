// A panic in the Worker (issue 17): the entry module of our own (src/entry.mjs) replaced worker-build's
// panic-recovery Proxy, so this proves the recovery it kept. With panic = "abort" a Rust panic traps and
// poisons the wasm instance; the next call must re-instantiate the module before it runs (the log says
// so), and the account objects in the same isolate must build their Rust side anew (no call may reach a
// stale object or the terminated instance). `FAULT_PANIC_MODEL` makes a chat
// for one model panic after its money is held (on a budget lease, or in the account's object with leases
// off). Then: the panicked request gets an error, never an answer; every request after it, many at once
// and then one after another, is answered and charged exactly; and once the panicked request's hold
// expires, the account's ledger sums to its balance with nothing charged for the request that panicked
// beyond what was held, and reconciliation finds no drift.
//
// A fault inside an account object, between a settlement's writes (after a lease's charge is written,
// before the ledger row), once, while settling a request for one model: a storage statement that fails
// (`FAULT_FAIL_SETTLE`), or a panic (`FAULT_PANIC_SETTLE`). Each message's writes are one transaction, so
// none of the interrupted ones may stay. The failing statement strikes in the first two settlements of the
// model to run (a message's settlements together, or one alone), so the object names one failed, its
// sender sends it again, and every request must be charged exactly once. A panic poisons the whole isolate, and here the Worker's requests
// share it with the object: the task holding that settlement dies with the instance, so its request is
// closed by rule when its hold ends, as after any lost isolate (never more than it cost). Every other
// request is charged exactly what it cost, the ledger sums to the balance, and reconciliation agrees.
//
// A settlement message slow on its way (`FAULT_DELAY_SETTLE`: the object holds it 20 s, then runs it): the
// sender gives the try up after its limit (5 s) and sends the settlements again, so each is charged in time,
// and the late message, when it runs, charges nothing more. A heartbeat slow on its way (`FAULT_DELAY_BEAT`)
// is given up by the next beat's time, so the beats after it keep a long stream's reservation.
//
// A settlement that fails every time (`FAULT_POISON_SETTLE`), sent in the same messages as others: after
// the message's settlements fail together, each is settled in a transaction of its own, so it fails alone. Its batch-mates are
// charged exactly what they cost; it is sent again with a backoff, then given up on, and its request is
// closed by rule (never charged more than it cost).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { usageRows } from './fixture.mjs';
import { adminClient, startGateway } from './harness.mjs';

const PANIC_MODEL = 'openai/gpt-4o';
const FAULTED_MODEL = 'openai/gpt-4o-mini';
const micros = (usd) => Math.round(usd * 1e6);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function chat(url, key, model = 'openai/gpt-4o-mini', content = 'hello there') {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content }] }),
  });
}

for (const leases of ['on', 'off']) {
  test(`after a panic with money held (leases ${leases}), the isolate recovers and the money stays exact`, { timeout: 180_000 }, async () => {
    // Short holds: the panicked request's reservation (or its lease) runs out within seconds.
    const gw = await startGateway({ vars: { FAULT_PANIC_MODEL: PANIC_MODEL, BUDGET_LEASES: leases, REQUEST_TIMEOUT: '2', RESERVATION_GRACE: '3' } });
    try {
      const admin = adminClient(gw.url, gw.adminToken);
      const user = await admin.createUser({ name: 'Panics' }, { credit: 5 });
      const { key } = await admin.createKey(user.id, { name: 'panics' });

      const first = await chat(gw.url, key);
      assert.equal(first.status, 200, await first.text());

      const panicked = await chat(gw.url, key, PANIC_MODEL).catch((e) => e);
      if (!(panicked instanceof Error)) {
        assert.ok(panicked.status >= 500, `the panicked request gets an error, not an answer (${panicked.status})`);
        await panicked.text();
      }

      // Many at once, straight after the panic, then one after another: the module was re-instantiated and
      // serves, and the account object in the same isolate rebuilt its Rust side (no stale object used).
      const answered = [];
      const burst = await Promise.all(Array.from({ length: 12 }, (_, i) => chat(gw.url, key, undefined, `burst ${i}`)));
      for (const res of burst) {
        assert.equal(res.status, 200, await res.clone().text());
        answered.push((await res.json()).id);
      }
      for (let i = 0; i < 5; i++) {
        const res = await chat(gw.url, key, undefined, `after the panic ${i}`);
        assert.equal(res.status, 200, await res.clone().text());
        answered.push((await res.json()).id);
      }
      const logs = await gw.logsOnce(/Reinitializing Wasm application/);
      assert.match(logs, /Rust panic: panicked at/, 'the panic happened');
      assert.match(logs, /Reinitializing Wasm application/, 'the entry re-instantiated the module');
      assert.doesNotMatch(logs, /Invalid stale object|Module terminated/, 'nothing ran on the poisoned instance');

      // Every answered request is charged once; the panicked one never reached the upstream, so its hold
      // (a reservation closed by rule, or the lease's unused part) comes back when it expires.
      const usage = await usageRows(admin, user.id, 1 + answered.length);
      assert.equal(usage.length, 1 + answered.length, 'one usage row per answered request, none for the panic');
      await sleep(8_000);
      const balance = (await admin.call('GET', `/api/balance?user_id=${user.id}`)).body;
      const ledger = (await admin.call('GET', `/api/balance/transactions?user_id=${user.id}&page_size=100`)).body.data;
      assert.equal(ledger.reduce((s, r) => s + micros(r.amount), 0), micros(balance.balance), 'the ledger sums to the balance');
      const charged = usage.reduce((s, r) => s - micros(r.amount), 0);
      assert.equal(micros(balance.balance), micros(5) - charged, 'nothing but the answered requests was charged');
      const report = (await admin.call('GET', `/api/admin/reconcile?user_id=${user.id}`)).body.data;
      assert.deepEqual(report.drift, [], 'no drift between the object, D1 and the balance');
    } finally {
      await gw.stop();
    }
  });
}

/**
 * Spends through one key around a settle fault for `FAULTED_MODEL`: a chat for another model first (its
 * lease, with leases on, is sized at its larger worst case), then the faulted chat (started on that lease),
 * 12 at once, and 5 in turn.
 */
async function spendAroundFault(gw, leases) {
  const admin = adminClient(gw.url, gw.adminToken);
  const user = await admin.createUser({ name: 'Settle faults' }, { credit: 5 });
  const { key } = await admin.createKey(user.id, { name: 'settle-faults' });
  // The answer leaves before its settlement, so every request is answered.
  const cost = new Map();
  const answer = async (res) => {
    assert.equal(res.status, 200, await res.clone().text());
    const id = res.headers.get('x-request-id');
    cost.set(id, micros((await res.json()).usage.cost));
    return id;
  };
  await answer(await chat(gw.url, key, PANIC_MODEL));
  const first = await chat(gw.url, key, FAULTED_MODEL);
  const heldBy = leases === 'on' ? 'lease' : 'account';
  assert.match(first.headers.get('server-timing') ?? '', new RegExp(`reserve;desc=${heldBy}`), 'where its money is held');
  const faulted = await answer(first);
  const burst = await Promise.all(Array.from({ length: 12 }, (_, i) => chat(gw.url, key, FAULTED_MODEL, `burst ${i}`)));
  for (const res of burst) await answer(res);
  for (let i = 0; i < 5; i++) await answer(await chat(gw.url, key, FAULTED_MODEL, `after the fault ${i}`));
  return { admin, user, cost, faulted };
}

/** Each request is charged once, exactly what it cost, and the books agree. */
async function assertChargedOnce(admin, user, usage, cost) {
  assert.equal(usage.length, cost.size, 'one charge per request');
  for (const row of usage) {
    assert.equal(-micros(row.amount), cost.get(row.reference_id), `charged what it cost: ${row.reference_id}`);
  }
  await assertBooksAgree(admin, user, [...cost.values()].reduce((a, b) => a + b, 0));
}

/** The ledger sums to the balance, the balance fell by what was charged, and reconciliation agrees. */
async function assertBooksAgree(admin, user, charged) {
  const balance = (await admin.call('GET', `/api/balance?user_id=${user.id}`)).body;
  const ledger = (await admin.call('GET', `/api/balance/transactions?user_id=${user.id}&page_size=100`)).body.data;
  assert.equal(ledger.reduce((s, r) => s + micros(r.amount), 0), micros(balance.balance), 'the ledger sums to the balance');
  assert.equal(micros(balance.balance), micros(5) - charged, 'the balance fell by exactly what was charged');
  const report = (await admin.call('GET', `/api/admin/reconcile?user_id=${user.id}`)).body.data;
  assert.deepEqual(report.drift, [], 'no drift between the object, D1 and the balance');
}

for (const leases of ['on', 'off']) {
  test(`a storage failure between a settlement's writes (leases ${leases}) leaves none of them; the retry charges once`, { timeout: 120_000 }, async () => {
    const gw = await startGateway({ vars: { FAULT_FAIL_SETTLE: FAULTED_MODEL, BUDGET_LEASES: leases } });
    try {
      const { admin, user, cost } = await spendAroundFault(gw, leases);
      const usage = await usageRows(admin, user.id, cost.size);
      assert.match(await gw.logsOnce(/FAULT_FAIL_SETTLE: settling/), /FAULT_FAIL_SETTLE: settling/, 'the statement failed');
      // It failed in a transaction of its own too, so the object named it failed and it came back in a resend.
      assert.match(await gw.logsOnce(/"job":"settle_one"/), /"job":"settle_one"/, 'named failed, then sent again');
      await assertChargedOnce(admin, user, usage, cost);
    } finally {
      await gw.stop();
    }
  });

  test(`a panic in the account object between a settlement's writes (leases ${leases}) leaves none of them`, { timeout: 120_000 }, async () => {
    const gw = await startGateway({
      vars: { FAULT_PANIC_SETTLE: FAULTED_MODEL, BUDGET_LEASES: leases, REQUEST_TIMEOUT: '2', RESERVATION_GRACE: '3' },
    });
    try {
      const { admin, user, cost, faulted } = await spendAroundFault(gw, leases);
      const others = new Map([...cost].filter(([id]) => id !== faulted));
      let usage = await usageRows(admin, user.id, others.size);
      const logs = await gw.logsOnce(/Reinitializing Wasm application/);
      assert.match(logs, /FAULT_PANIC_SETTLE: settling/, 'the object panicked');
      assert.match(logs, /Reinitializing Wasm application/, 'the module was re-instantiated');
      await sleep(8_000); // the faulted request's hold (a reservation, or its lease) ends
      usage = await usageRows(admin, user.id, others.size);
      for (const row of usage.filter((r) => r.reference_id !== faulted)) {
        assert.equal(-micros(row.amount), others.get(row.reference_id), `charged what it cost: ${row.reference_id}`);
      }
      assert.equal(usage.filter((r) => r.reference_id !== faulted).length, others.size, 'every other request charged once');
      const rows = usage.filter((r) => r.reference_id === faulted);
      assert.ok(rows.length <= 1, 'the faulted request is charged at most once');
      const faultedCharge = rows.length ? -micros(rows[0].amount) : 0;
      assert.ok([0, cost.get(faulted)].includes(faultedCharge), `closed by rule or settled: ${faultedCharge}`);
      const charged = [...others.values()].reduce((a, b) => a + b, 0) + faultedCharge;
      await assertBooksAgree(admin, user, charged);
    } finally {
      await gw.stop();
    }
  });
}

for (const leases of ['on', 'off']) {
  test(`a settlement message slow on its way (leases ${leases}) is sent again after its try's limit; each request charged once`, { timeout: 120_000 }, async () => {
    // The object holds the first message settling FAULTED_MODEL for 20 s: a sender waiting on it would hold
    // its settlements (and those waiting in line behind it) past the test's wait; a try is given up after
    // 5 s instead, and the next one charges them. Then the held message runs, and must charge nothing more.
    const gw = await startGateway({ vars: { FAULT_DELAY_SETTLE: FAULTED_MODEL, BUDGET_LEASES: leases } });
    try {
      const { admin, user, cost } = await spendAroundFault(gw, leases);
      let usage = await usageRows(admin, user.id, cost.size);
      assert.match(await gw.logsOnce(/FAULT_DELAY_SETTLE: a settlement message is held/), /held/, 'a settlement message was held');
      const gaveUp = /^(?=.*"job":"settle")(?=.*"gave_up":false)(?=.*(timed? ?out|abort)).*$/im;
      assert.match(await gw.logsOnce(gaveUp), gaveUp, 'its try was given up at its limit, and sent again');
      const late = /FAULT_DELAY_SETTLE: a settlement message, held, runs now/;
      assert.match(await gw.logsOnce(late, 30_000), late, 'the held message ran late');
      await sleep(500);
      usage = await usageRows(admin, user.id, cost.size);
      await assertChargedOnce(admin, user, usage, cost);
    } finally {
      await gw.stop();
    }
  });
}

test('a heartbeat slow on its way is given up by the next one\'s time: a stream outliving its first reservation is charged exactly', { timeout: 120_000 }, async () => {
  // Reservations live 5 s here (REQUEST_TIMEOUT 2 + RESERVATION_GRACE 3), beaten every 1.25 s; the object
  // holds the first beat 20 s; the stream takes about 8 s. Awaited for ever, that beat stopped the ones
  // after it: the request stayed on its lease, which ended under it, and it was charged nothing.
  const gw = await startGateway({ vars: { FAULT_DELAY_BEAT: '1', REQUEST_TIMEOUT: '2', RESERVATION_GRACE: '3' } });
  try {
    const admin = adminClient(gw.url, gw.adminToken);
    const user = await admin.createUser({ name: 'Held beat' }, { credit: 5 });
    const { key } = await admin.createKey(user.id, { name: 'beat' });
    const words = Array.from({ length: 40 }, (_, i) => `w${i}`).join(' ');
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: FAULTED_MODEL, stream: true, chunk_delay_ms: 200, messages: [{ role: 'user', content: words }] }),
    });
    assert.equal(res.status, 200);
    const chunks = (await res.text()).split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)));
    const usage = chunks.find((c) => c.usage)?.usage;
    assert.ok(usage?.cost > 0, 'the stream ended with its usage');
    assert.match(await gw.logsOnce(/FAULT_DELAY_BEAT: a heartbeat is held/), /held/, 'a beat was held');
    const [row] = await usageRows(admin, user.id, 1);
    assert.equal(-micros(row.amount), micros(usage.cost), 'charged what it cost');
    assert.doesNotMatch(row.description ?? '', /closed without settlement/);
    await assertBooksAgree(admin, user, micros(usage.cost));
  } finally {
    await gw.stop();
  }
});

for (const leases of ['on', 'off']) {
  test(`a settlement that always fails (leases ${leases}) fails alone: the others sent with it are charged exactly`, { timeout: 120_000 }, async () => {
    const gw = await startGateway({
      vars: { FAULT_POISON_SETTLE: PANIC_MODEL, BUDGET_LEASES: leases, REQUEST_TIMEOUT: '2', RESERVATION_GRACE: '3' },
    });
    try {
      const admin = adminClient(gw.url, gw.adminToken);
      const user = await admin.createUser({ name: 'Poisoned settlement' }, { credit: 5 });
      const { key } = await admin.createKey(user.id, { name: 'poison' });
      const cost = new Map();
      const poisoned = new Set();
      const answer = async (res, model) => {
        assert.equal(res.status, 200, await res.clone().text());
        const id = res.headers.get('x-request-id');
        cost.set(id, micros((await res.json()).usage.cost));
        if (model === PANIC_MODEL) poisoned.add(id);
      };
      await answer(await chat(gw.url, key, FAULTED_MODEL), FAULTED_MODEL);
      // Many at once, a third of them poisoned: their settlements wait in line and go together.
      const models = Array.from({ length: 12 }, (_, i) => (i % 3 === 0 ? PANIC_MODEL : FAULTED_MODEL));
      const burst = await Promise.all(models.map((model, i) => chat(gw.url, key, model, `burst ${i}`)));
      for (const [i, res] of burst.entries()) await answer(res, models[i]);
      for (let i = 0; i < 5; i++) await answer(await chat(gw.url, key, FAULTED_MODEL, `one after another ${i}`), FAULTED_MODEL);
      const others = new Map([...cost].filter(([id]) => !poisoned.has(id)));

      await usageRows(admin, user.id, others.size);
      await sleep(8_000); // the poisoned requests are given up on, and their holds end
      assert.match(await gw.logsOnce(/FAULT_POISON_SETTLE: settling/), /FAULT_POISON_SETTLE: settling/, 'the poisoned settlements failed');
      const usage = await usageRows(admin, user.id, others.size);
      for (const [id, c] of others) {
        const rows = usage.filter((r) => r.reference_id === id);
        assert.equal(rows.length, 1, `charged once: ${id}`);
        assert.equal(-micros(rows[0].amount), c, `charged what it cost: ${id}`);
      }
      let charged = [...others.values()].reduce((a, b) => a + b, 0);
      for (const id of poisoned) {
        const rows = usage.filter((r) => r.reference_id === id);
        assert.ok(rows.length <= 1, `closed at most once: ${id}`);
        const closed = rows.length ? -micros(rows[0].amount) : 0;
        assert.ok(closed <= cost.get(id), `closed by rule, never above its cost: ${closed}`);
        charged += closed;
      }
      await assertBooksAgree(admin, user, charged);
    } finally {
      await gw.stop();
    }
  });
}
