// The cron trigger's jobs, run under workerd through wrangler's scheduled test
// route: price sync, outbox flush with reconciliation, upstream-key mirroring.
// Each logs one JSON line; running them twice changes nothing more.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { gatewayForFile } from './fixture.mjs';

// No price sync at start: the cron job must do it.
const ctx = gatewayForFile({ syncPrices: false });
const CRON = `/__scheduled?cron=${encodeURIComponent('*/15 * * * *')}`;
const cron = async () => assert.equal((await fetch(ctx.gw.url + CRON)).status, 200);
const jobLines = (job) =>
  ctx.gw.logs().split('\n').filter((l) => l.includes(`"job":"${job}"`)).map((l) => JSON.parse(l.slice(l.indexOf('{'))));

describe('cron jobs', () => {
  test('the price sync fills an empty price table, and a second run changes nothing', async () => {
    const before = await (await fetch(`${ctx.gw.url}/api/models/pricing`)).json();
    assert.deepEqual(before.data, []);
    await cron();
    const after = await (await fetch(`${ctx.gw.url}/api/models/pricing`)).json();
    assert.ok(after.data.some((p) => p.model_name === 'openai/gpt-4o-mini'));
    await cron();
    const again = await (await fetch(`${ctx.gw.url}/api/models/pricing`)).json();
    assert.deepEqual(again.data.map((p) => [p.model_name, p.pricing_input, p.pricing_output]), after.data.map((p) => [p.model_name, p.pricing_input, p.pricing_output]));
  });

  test('the outbox flush puts the ledger and usage records in D1 at once, and reconciliation finds no drift', async () => {
    const user = await ctx.admin.createUser({ name: 'Cron' }, { credit: 5 });
    const key = await ctx.admin.createKey(user.id, { name: 'cron' });
    const ids = [];
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: `cron ${i}` }] }),
      });
      assert.equal(res.status, 200);
      ids.push(res.headers.get('x-request-id'));
    }
    await cron();
    // Right after the job, with no waiting: the job flushed every account's outbox before reconciling.
    for (const id of ids) {
      const g = await fetch(`${ctx.gw.url}/api/v1/generation?id=${id}`, { headers: { authorization: `Bearer ${key.key}` } });
      assert.equal(g.status, 200, `generation ${id} is in D1`);
    }
    const lines = jobLines('reconcile');
    const last = lines.at(-1);
    assert.ok(last, 'the reconciliation logged its result');
    assert.ok(last.result.accounts_checked >= 1);
    assert.deepEqual(last.result.drift, []);
    await cron();
    assert.deepEqual(jobLines('reconcile').at(-1).result.drift, [], 'running again is harmless');
  });

  test('every job logs one line per run', async () => {
    const runs = jobLines('sync_prices').length;
    await cron();
    for (const job of ['refresh_models', 'sync_prices', 'reconcile', 'mirror_upstream_keys']) {
      assert.ok(jobLines(job).length >= runs + 1, `${job} logged`);
    }
    assert.equal(jobLines('sync_prices').length, runs + 1);
  });
});
