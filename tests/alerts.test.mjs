// Alerts (issue 18.4): spend crossing a share of a key's limit, or the balance
// falling below an amount, sends one signed webhook per crossing to the
// tenant's ALERT_WEBHOOK_URL through a Cloudflare Queue (local under wrangler
// dev), retried with a doubling delay until the receiver answers 2xx. The
// receiver here is a tiny HTTP server on a real socket that fails its first
// two deliveries.

import assert from 'node:assert/strict';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { after, describe, test } from 'node:test';

import { gatewayForFile } from './fixture.mjs';
import { withGateway } from './harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const micros = (usd) => Math.round(usd * 1e6);
const SECRET = `whsec_${randomBytes(16).toString('hex')}`;

// The receiver: records every delivery; answers 500 to the first two; redirects a POST while told to
// (a redirect the gateway followed would arrive as a request to /hooks/moved: recorded as failed).
const deliveries = [];
let failuresLeft = 2;
let redirectsLeft = 0;
const receiver = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    if (req.method === 'POST' && redirectsLeft > 0) {
      redirectsLeft--;
      return res.writeHead(302, { location: '/hooks/moved' }).end();
    }
    if (req.method !== 'POST' || req.url === '/hooks/moved') {
      deliveries.push({ headers: req.headers, body, failed: true, at: Date.now(), redirected: true });
      return res.writeHead(204).end();
    }
    const failed = failuresLeft > 0;
    if (failed) failuresLeft--;
    deliveries.push({ headers: req.headers, body, failed, at: Date.now() });
    res.writeHead(failed ? 500 : 204).end();
  });
});
await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
after(() => receiver.close());

const VARS = {
  ALERT_WEBHOOK_URL: `http://127.0.0.1:${receiver.address().port}/hooks/tollgate`,
  ALERT_WEBHOOK_SECRET: SECRET,
  ALERT_RETRY_SECONDS: '1',
  ALERT_BALANCE_BELOW: '4.99999',
};
const ctx = gatewayForFile({ vars: VARS });

/** The documented recipe: HMAC-SHA256 of "{x-tollgate-timestamp}.{raw body}" with the secret, hex, after "v1=". */
function verify(headers, body) {
  const expected = `v1=${createHmac('sha256', SECRET).update(`${headers['x-tollgate-timestamp']}.${body}`).digest('hex')}`;
  const given = String(headers['x-tollgate-signature']);
  return given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected));
}

function chat(token) {
  return fetch(`${ctx.gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'openai/gpt-4o-mini', max_tokens: 8, messages: [{ role: 'user', content: 'a few words to pay for' }] }),
  });
}

/** The successful deliveries, once `predicate` holds of them (within 30 s). */
async function delivered(predicate) {
  for (let i = 0; i < 150; i++) {
    const ok = deliveries.filter((d) => !d.failed).map((d) => ({ ...d, json: JSON.parse(d.body) }));
    if (predicate(ok)) return ok;
    await sleep(200);
  }
  throw new Error(`deliveries never matched: ${JSON.stringify(deliveries.map((d) => [d.failed, d.body]))}`);
}

describe('alerts', () => {
  test('crossing 80 % of a key limit sends exactly one signed delivery, retried through failures until it lands', async () => {
    const user = await ctx.admin.createUser({}, { credit: 5 });
    // One request costs a few micro-USD: a limit of twenty of them is crossed at 50 % and 80 % on the way.
    const probe = await chat((await ctx.admin.createKey(user.id)).key);
    const cost = micros((await probe.json()).usage.cost);
    const limit = 20 * cost;
    const key = await ctx.admin.createKey(user.id, { limit: limit / 1e6, limit_reset: 'daily' });
    let spent = 0;
    for (let i = 0; i < 40; i++) {
      const res = await chat(key.key);
      const body = await res.json();
      if (res.status !== 200) break;
      spent += micros(body.usage.cost);
      await sleep(150); // its settlement lands: the next request's worst case is not held beside it
    }
    assert.ok(spent >= 0.8 * limit, `spent ${spent} of ${limit}`);

    const ok = await delivered((d) => d.some((x) => x.json.key_id === key.id && x.json.threshold_percent === 80));
    const eighty = ok.filter((x) => x.json.key_id === key.id && x.json.threshold_percent === 80);
    assert.equal(eighty.length, 1, 'one delivery for the crossing');
    const [alert] = eighty;
    assert.equal(alert.json.type, 'key_limit.threshold');
    assert.equal(alert.json.account_id, user.id);
    assert.equal(micros(alert.json.limit), limit);
    assert.ok(micros(alert.json.usage) >= 0.8 * limit);
    assert.match(alert.json.resets_at, /T00:00:00\.000Z$/);
    assert.ok(verify(alert.headers, alert.body), 'the signature verifies with the documented recipe');
    assert.ok(!verify({ ...alert.headers, 'x-tollgate-timestamp': '1' }, alert.body), 'and binds the timestamp');
    assert.equal(alert.headers['x-tollgate-alert-id'], alert.json.id);
    assert.ok(Math.abs(Number(alert.headers['x-tollgate-timestamp']) - Date.now() / 1000) < 120);

    // The receiver failed twice: those deliveries were retried until each landed, never sent twice after.
    const failed = deliveries.filter((d) => d.failed);
    assert.equal(failed.length, 2);
    for (const f of failed) {
      const id = f.headers['x-tollgate-alert-id'];
      const landed = deliveries.filter((d) => !d.failed && d.headers['x-tollgate-alert-id'] === id);
      for (let i = 0; i < 100 && landed.length === 0; i++) {
        await sleep(200);
        landed.push(...deliveries.filter((d) => !d.failed && d.headers['x-tollgate-alert-id'] === id));
      }
      assert.equal(landed.length, 1, `${id} landed once after its failure`);
      assert.ok(landed[0].at - f.at >= 900, 'after a delay');
    }
    await sleep(3_000);
    const ids = deliveries.filter((d) => !d.failed).map((d) => d.headers['x-tollgate-alert-id']);
    assert.equal(new Set(ids).size, ids.length, 'no crossing is delivered twice');

    const list = await ctx.admin.call('GET', '/api/admin/alerts');
    assert.equal(list.status, 200);
    assert.equal(list.body.webhook_configured, true);
    const row = list.body.data.find((r) => r.id === alert.json.id);
    assert.equal(row.status, 'delivered');
    assert.equal(row.type, 'key_limit.threshold');
    const retried = list.body.data.filter((r) => r.attempts > 1);
    assert.ok(retried.length >= 1 && retried.every((r) => r.status === 'delivered'), 'retried alerts show their attempts');
  });

  test('the balance falling below the threshold is told once (a redirect is no delivery: it is sent again)', async () => {
    redirectsLeft = 1; // a redirect turns the POST into a GET without the alert: it must not count as delivered
    const user = await ctx.admin.createUser({}, { credit: 5 });
    const key = await ctx.admin.createKey(user.id);
    for (let i = 0; i < 5; i++) {
      const res = await chat(key.key);
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    const ok = await delivered((d) => d.some((x) => x.json.type === 'balance.below' && x.json.account_id === user.id));
    const mine = ok.filter((x) => x.json.type === 'balance.below' && x.json.account_id === user.id);
    assert.equal(mine.length, 1, 'only the charge that crossed it');
    assert.equal(mine[0].json.threshold, 4.99999);
    assert.ok(mine[0].json.balance < 4.99999);
    assert.ok(verify(mine[0].headers, mine[0].body));
    assert.ok(!deliveries.some((d) => d.redirected), 'the redirect is not followed: the signed alert goes nowhere else');
    assert.equal(redirectsLeft, 0, 'the redirecting try was made');
  });

  test('an organization nearing its monthly cost limit is told once per share', async () => {
    const user = await ctx.admin.createUser({}, { credit: 5 });
    const probe = await chat((await ctx.admin.createKey(user.id)).key);
    const cost = micros((await probe.json()).usage.cost);
    const limit = 20 * cost;
    const org = (await ctx.admin.call('POST', '/api/orgs', { name: `alerted-${randomBytes(3).toString('hex')}`, limits: { monthly_cost: limit / 1e6 } })).body.data;
    const key = (await ctx.admin.call('POST', `/api/orgs/${org.id}/keys`, { name: 'org key', user_id: user.id })).body.data;
    for (let i = 0; i < 40; i++) {
      const res = await chat(key.key);
      await res.arrayBuffer();
      if (res.status !== 200) break;
      await sleep(150);
    }
    const ok = await delivered((d) => d.some((x) => x.json.org_id === org.id && x.json.threshold_percent === 80));
    const mine = ok.filter((x) => x.json.org_id === org.id);
    const eighty = mine.filter((x) => x.json.threshold_percent === 80);
    assert.equal(eighty.length, 1);
    assert.equal(eighty[0].json.type, 'org_limit.threshold');
    assert.equal(eighty[0].json.limit_kind, 'cost');
    assert.equal(micros(eighty[0].json.limit), limit);
    assert.ok(verify(eighty[0].headers, eighty[0].body));
    assert.equal(new Set(mine.map((x) => x.json.id)).size, mine.length, 'each share once');
  });

  test('a failing alerts queue holds up neither the copy to D1 nor reconciliation', async () => {
    // Any charge from 5 USD crosses a threshold of 5.
    const vars = { ...VARS, ALERT_BALANCE_BELOW: '5', FAULT_FAIL_ALERT_QUEUE: '1' };
    await withGateway({ vars }, async (gw, admin) => {
      const user = await admin.createUser({}, { credit: 5 });
      const key = await admin.createKey(user.id);
      const res = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'openai/gpt-4o-mini', max_tokens: 8, messages: [{ role: 'user', content: 'below the threshold' }] }),
      });
      assert.equal(res.status, 200);
      const cost = micros((await res.json()).usage.cost);
      // The charge crossed ALERT_BALANCE_BELOW: its alert waits for a queue that will not take it.
      const check = await admin.call('GET', '/api/admin/reconcile');
      assert.equal(check.status, 200, JSON.stringify(check.body));
      assert.deepEqual(check.body.data.failed, [], 'the account was checked');
      assert.deepEqual(check.body.data.drift, []);
      const [charge] = await gw.sql(`SELECT amount FROM balance_transactions WHERE user_id = '${user.id}' AND type = 'usage'`);
      assert.equal(charge.amount, -cost, 'the charge is in D1');
      assert.ok(gw.logs().includes('FAULT_FAIL_ALERT_QUEUE'), 'the failing queue is logged');
    });
  });

  test('alerts need the admin token to read', async () => {
    const user = await ctx.admin.createUser();
    const key = await ctx.admin.createKey(user.id);
    const res = await fetch(`${ctx.gw.url}/api/admin/alerts`, { headers: { authorization: `Bearer ${key.key}` } });
    assert.equal(res.status, 403);
    await res.arrayBuffer();
  });
});
