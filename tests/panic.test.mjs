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

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { usageRows } from './fixture.mjs';
import { adminClient, startGateway } from './harness.mjs';

const PANIC_MODEL = 'openai/gpt-4o';
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
      const logs = gw.logs();
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
