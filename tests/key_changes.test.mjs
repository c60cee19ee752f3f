// A key change the account object never heard of. Every change to a key is made in D1, then sent to the
// key's account object (`PutKey`), which decides reservations on the state it holds. Should every try of
// that message fail (`FAULT_FAIL_PUT_KEY=3`: the object fails the next three changes to a key it holds),
// the object still holds the old state (the operator gets an error, to repeat the change). Each reservation
// carries the version of the gateway's view of the key; an object holding an older state decides nothing
// on it, and the gateway sends it the state D1 has first. So a lowered limit binds from the very next request, one after another and many at once, with
// budget leases on and off, and nothing is spent past it; the ledger sums to the balance.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { adminClient, withGateway } from './harness.mjs';

const micros = (usd) => Math.round(usd * 1e6);

function chat(url, key, content = 'a change nobody heard of') {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'openai/gpt-4o', max_tokens: 40, messages: [{ role: 'user', content }] }),
  });
}

/** Asserts an answer's status (its body shown when it differs) and reads the body; answers it parsed. */
async function answered(res, status, why) {
  const text = await res.text();
  assert.equal(res.status, status, `${why ?? 'status'}: ${text.slice(0, 200)}`);
  return text ? JSON.parse(text) : null;
}

async function ledger(admin, userId) {
  const balance = (await admin.call('GET', `/api/balance?user_id=${userId}`)).body;
  const rows = (await admin.call('GET', `/api/balance/transactions?user_id=${userId}&page=1&page_size=100`)).body.data;
  const spent = -rows.filter((r) => r.type === 'usage').reduce((n, r) => n + micros(r.amount), 0);
  return { balance: micros(balance.balance), reserved: micros(balance.reserved), rows, spent };
}

/** The ledger once `charged` requests are charged and nothing is held (settlements trail the answers). */
async function settledLedger(admin, userId, charged) {
  let settled = await ledger(admin, userId);
  for (let i = 0; i < 50 && (settled.reserved !== 0 || settled.rows.filter((r) => r.type === 'usage').length < charged); i++) {
    await new Promise((r) => setTimeout(r, 200));
    settled = await ledger(admin, userId);
  }
  assert.equal(settled.rows.filter((r) => r.type === 'usage').length, charged, 'each answered request charged once');
  return settled;
}

for (const leases of ['on', 'off']) {
  test(`a key change lost on its way to the account object binds all the same (leases ${leases})`, { timeout: 120_000 }, async () => {
    await withGateway({ vars: { FAULT_FAIL_PUT_KEY: '3', BUDGET_LEASES: leases } }, async (gw, admin) => {
      const user = await admin.createUser({ name: 'Lost change' }, { credit: 1 });
      const key = await admin.createKey(user.id, { name: 'lost', limit: 0.5 });
      for (let i = 0; i < 2; i++) {
        await answered(await chat(gw.url, key.key, `before ${i}`), 200);
      }
      const before = await ledger(admin, user.id);
      assert.ok(before.spent > 0);

      // The limit goes down to what was spent; every try to tell the object fails, and the operator is
      // told so (to repeat the change). D1 has it all the same.
      const lowered = await admin.call('PATCH', `/api/keys/${key.id}`, { limit: before.spent / 1e6 });
      assert.equal(lowered.status, 500, 'the object did not confirm the change');
      const logs = await gw.logsOnce(/("job":"put_key_fault"[\s\S]*){3}/);
      assert.equal((logs.match(/"job":"put_key_fault"/g) ?? []).length, 3, 'three tries, all lost');
      const saved = await admin.call('GET', `/api/keys/${key.id}`);
      assert.equal(micros(saved.body.data.limit), before.spent, 'the change is in D1');

      const refused = await answered(await chat(gw.url, key.key, 'after, alone'), 402, 'decided on the lowered limit, not the state the object held');
      assert.equal(refused.error.metadata.limit_source, 'key_limit');
      const burst = await Promise.all(Array.from({ length: 6 }, (_, i) => chat(gw.url, key.key, `after, at once ${i}`)));
      for (const res of burst) {
        await answered(res, 402, 'none of them past the limit');
      }
      const after = await ledger(admin, user.id);
      assert.equal(after.spent, before.spent, 'nothing spent past the lowered limit');

      // Raised again (the fault has struck its three times): the key spends up to the new limit.
      assert.equal((await admin.call('PATCH', `/api/keys/${key.id}`, { limit: 0.5 })).status, 200);
      const served = await Promise.all(Array.from({ length: 4 }, (_, i) => chat(gw.url, key.key, `raised ${i}`)));
      for (const res of served) {
        await answered(res, 200);
      }
      const settled = await settledLedger(admin, user.id, 6);
      assert.ok(settled.spent <= micros(0.5), `spent ${settled.spent} within the key's limit`);
      assert.equal(settled.balance, micros(1) - settled.spent);
      assert.equal(settled.rows.reduce((n, r) => n + micros(r.amount), 0), settled.balance, 'the ledger sums to the balance');
    });
  });
}

// Versions are stamped by the clock of the isolate that makes the change. Should one isolate's clock run
// ahead, its change carries a version from the future; the next change, made by an isolate whose clock is
// right, must still be newer, or the account object (which keeps the newest state it is sent) would keep
// deciding on the old terms. Here the change from the future is written straight into D1 (its `PutKey`
// lost, as above) and reaches the object the way such a change does: the next reservation finds the
// object behind D1 and sends it D1's state. Then the limit is lowered to what was spent.
test('a change after one stamped by a clock running ahead binds all the same', { timeout: 120_000 }, async () => {
  await withGateway({ vars: { FAULT_FAIL_PUT_KEY: '3' } }, async (gw, admin) => {
    const user = await admin.createUser({ name: 'Clock ahead' }, { credit: 1 });
    const key = await admin.createKey(user.id, { name: 'ahead', limit: 0.5 });
    await answered(await chat(gw.url, key.key, 'before'), 200);

    const renamed = await admin.call('PATCH', `/api/keys/${key.id}`, { name: 'renamed by a clock an hour ahead' });
    assert.equal(renamed.status, 500, 'the object did not confirm the change');
    const ahead = new Date(Date.now() + 3_600_000).toISOString();
    await gw.sql(`UPDATE api_keys SET updated_at = '${ahead}' WHERE id = '${key.id}'`);
    await answered(await chat(gw.url, key.key, 'the object learns the change from the future'), 200);
    const before = await settledLedger(admin, user.id, 2);

    const lowered = await admin.call('PATCH', `/api/keys/${key.id}`, { limit: before.spent / 1e6 });
    assert.equal(lowered.status, 200, JSON.stringify(lowered.body));
    assert.ok(lowered.body.data.updated_at > ahead, `the new version ${lowered.body.data.updated_at} is after ${ahead}`);
    const refused = await answered(await chat(gw.url, key.key, 'after the lowered limit'), 402, 'decided on the lowered limit, not the state stamped ahead');
    assert.equal(refused.error.metadata.limit_source, 'key_limit');
    const burst = await Promise.all(Array.from({ length: 4 }, (_, i) => chat(gw.url, key.key, `at once ${i}`)));
    for (const res of burst) {
      await answered(res, 402, 'none of them past the limit');
    }
    const after = await settledLedger(admin, user.id, 2);
    assert.equal(after.spent, before.spent, 'nothing spent past the lowered limit');
    assert.equal(after.rows.reduce((n, r) => n + micros(r.amount), 0), after.balance, 'the ledger sums to the balance');
  });
});

// A rotation whose message to the account object was lost answers 500, for the caller to repeat it. The
// repeat (the same Idempotency-Key) derives the same secret and mints nothing; it must also tell the object
// again, else the object keeps the old secret's state while the caller is told all went well.
test('a rotation repeated with its Idempotency-Key tells the account object again', { timeout: 120_000 }, async () => {
  await withGateway({ vars: { FAULT_FAIL_PUT_KEY: '6' } }, async (gw, admin) => {
    const user = await admin.createUser({ name: 'Rotation repeated' }, { credit: 1 });
    const key = await admin.createKey(user.id, { name: 'rotated' });
    const rotate = () => admin.call('POST', `/api/keys/${key.id}/rotate`, { grace_seconds: 0 }, { 'idempotency-key': 'rotate-once' });
    assert.equal((await rotate()).status, 500, 'the object did not confirm the rotation');
    const repeated = await rotate();
    assert.equal(repeated.status, 500, 'the repeat told the object again, and that failed too');
    const logs = await gw.logsOnce(/("job":"put_key_fault"[\s\S]*){6}/);
    assert.equal((logs.match(/"job":"put_key_fault"/g) ?? []).length, 6, 'three tries by the rotation, three by its repeat');
    const confirmed = await rotate();
    assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));
    assert.equal((await rotate()).body.data.key, confirmed.body.data.key, 'one secret, however often repeated');

    await answered(await chat(gw.url, confirmed.body.data.key, 'with the new secret'), 200);
    await answered(await chat(gw.url, key.key, 'with the old secret'), 401, 'the old secret ended with no grace');
  });
});

test("a key holder's change made over an admin's revocation does not undo it", { timeout: 120_000 }, async () => {
  // The holder's change waits 1.5 s between its read of the key and its write (a test fault); the admin
  // disables the key in that time. The holder's write must not put back the state it read.
  await withGateway({ vars: { FAULT_SLOW_KEY_CHANGE_MS: '1500' } }, async (gw, admin) => {
    const user = await admin.createUser({ name: 'Racing changes' }, { credit: 1 });
    const key = await admin.createKey(user.id, { name: 'holder', permissions: ['read', 'write'] });
    await answered(await chat(gw.url, key.key, 'before'), 200);
    const holder = adminClient(gw.url, key.key);
    const renaming = holder.call('PATCH', `/api/keys/${key.id}`, { name: 'renamed by its holder' });
    await new Promise((r) => setTimeout(r, 300));
    const disabled = await admin.call('PATCH', `/api/keys/${key.id}`, { disabled: true });
    assert.equal(disabled.status, 200, JSON.stringify(disabled.body));
    const renamed = await renaming;
    assert.equal(renamed.status, 200, JSON.stringify(renamed.body));
    assert.equal(renamed.body.data.name, 'renamed by its holder');
    assert.equal(renamed.body.data.disabled, true, 'the holder changed the key as the admin left it');
    const shown = (await admin.call('GET', `/api/keys/${key.id}`)).body.data;
    assert.deepEqual([shown.name, shown.disabled], ['renamed by its holder', true]);
    await answered(await chat(gw.url, key.key, 'after'), 401, 'the revoked key stays revoked');
  });
});

test("a key holder's rotation made over an admin's lowered limit keeps the limit", { timeout: 120_000 }, async () => {
  // The rotation waits 1.5 s between its read of the key and its write (a test fault); the admin lowers the
  // key's limit in that time. The rotation must not tell the account object the terms it read.
  await withGateway({ vars: { FAULT_SLOW_KEY_CHANGE_MS: '1500' } }, async (gw, admin) => {
    const user = await admin.createUser({ name: 'Racing rotation' }, { credit: 1 });
    const key = await admin.createKey(user.id, { name: 'rotating', permissions: ['read', 'write'] });
    await answered(await chat(gw.url, key.key, 'before'), 200);
    const spent = (await settledLedger(admin, user.id, 1)).spent;
    const rotating = adminClient(gw.url, key.key).call('POST', `/api/keys/${key.id}/rotate`, {});
    await new Promise((r) => setTimeout(r, 300));
    const lowered = await admin.call('PATCH', `/api/keys/${key.id}`, { limit: spent / 1e6 });
    assert.equal(lowered.status, 200, JSON.stringify(lowered.body));
    const rotated = await rotating;
    assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
    const shown = (await admin.call('GET', `/api/keys/${key.id}`)).body.data;
    assert.equal(micros(shown.limit), spent, 'the limit as the admin left it');
    assert.equal(shown.key_prefix, rotated.body.data.key_prefix, 'and the new secret');
    const refused = await answered(await chat(gw.url, rotated.body.data.key, 'after'), 402, 'the lowered limit binds the new secret');
    assert.equal(refused.error.metadata.limit_source, 'key_limit');
    const after = await ledger(admin, user.id);
    assert.equal(after.spent, spent, 'nothing spent past the lowered limit');
  });
});

test('two rotations of a key at once: one gives out the new secret, the other gets 409, and both secrets work', { timeout: 120_000 }, async () => {
  // Each rotation waits 1.5 s between its read and its write (a test fault); the second starts while the
  // first waits. It must not rotate over the first: the secret the first gave out must work, and the one
  // rotated from keep its grace.
  await withGateway({ vars: { FAULT_SLOW_KEY_CHANGE_MS: '1500' } }, async (gw, admin) => {
    const user = await admin.createUser({ name: 'Two rotations' }, { credit: 1 });
    const key = await admin.createKey(user.id, { name: 'twice', permissions: ['read', 'write'] });
    const holder = adminClient(gw.url, key.key);
    const rotate = () => holder.call('POST', `/api/keys/${key.id}/rotate`, { grace_seconds: 60 });
    const first = rotate();
    await new Promise((r) => setTimeout(r, 300));
    const answers = await Promise.all([first, rotate()]);
    assert.deepEqual(answers.map((a) => a.status).sort(), [200, 409], JSON.stringify(answers.map((a) => a.body)));
    const won = answers.find((a) => a.status === 200).body.data;
    await answered(await chat(gw.url, won.key, 'with the secret given out'), 200);
    await answered(await chat(gw.url, key.key, 'with the secret rotated from, in its grace'), 200);
  });
});

for (const change of [{ disabled: true }, { permissions: ['read'] }]) {
  test(`a key changed mid-stream (${Object.keys(change)[0]}) stops its streams within a heartbeat; each charged once for what it delivered`, { timeout: 120_000 }, async () => {
    // Reservations live 5 s here (REQUEST_TIMEOUT 2 + RESERVATION_GRACE 3), beaten every 1.25 s; the streams
    // would take 10 s. The key changes 2.5 s in: the next beat is told the request may not go on.
    await withGateway({ vars: { REQUEST_TIMEOUT: '2', RESERVATION_GRACE: '3' } }, async (gw, admin) => {
      const user = await admin.createUser({ name: 'Stopped mid-stream' }, { credit: 1 });
      const key = await admin.createKey(user.id, { name: 'stopped' });
      const words = Array.from({ length: 40 }, (_, i) => `w${i}`).join(' ');
      const stream = async () => {
        const started = Date.now();
        const res = await fetch(`${gw.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'openai/gpt-4o-mini', stream: true, chunk_delay_ms: 250, max_tokens: 200, messages: [{ role: 'user', content: words }] }),
        });
        assert.equal(res.status, 200);
        const text = await res.text();
        return { text, ms: Date.now() - started };
      };
      const running = [stream(), stream()];
      await new Promise((r) => setTimeout(r, 2_500));
      assert.equal((await admin.call('PATCH', `/api/keys/${key.id}`, change)).status, 200);
      for (const { text, ms } of await Promise.all(running)) {
        assert.match(text, /"error".*this key was disabled, deleted or expired, or lost `write`/, 'the stream ends with an error event saying why');
        assert.ok(text.trimEnd().endsWith('data: [DONE]'));
        assert.ok(!text.includes('w39'), 'it did not run to its end');
        assert.ok(ms < 7_000, `stopped ${ms} ms in, within a beat or two of the change`);
      }
      const settled = await settledLedger(admin, user.id, 2);
      for (const row of settled.rows.filter((r) => r.type === 'usage')) {
        assert.ok(-micros(row.amount) > 0, 'what it delivered is charged');
        assert.doesNotMatch(row.description ?? '', /closed without settlement/, 'settled, not closed by rule');
      }
      assert.equal(settled.balance, 1_000_000 - settled.spent, 'the ledger sums to the balance');
    });
  });
}
