// The web console in a real browser: Debian's chromium, headless, driven by
// playwright-core. An operator signs in, creates a user, credits it, creates a key
// (secret shown once), the key chats through the API, the spend appears in the
// overview and the usage explorer, the key is disabled, and the key holder signs
// in and sees only its own data. Screenshots of the main pages at desktop and
// phone width go to docs/screenshots/; first-load transfer and first contentful
// paint are printed.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';

import { AxeBuilder } from '@axe-core/playwright';
import OpenAI from 'openai';
import { chromium } from 'playwright-core';

import { usd } from '../console/src/format.js';
import { gatewayForFile } from './fixture.mjs';
import { ROOT } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SHOTS = path.join(ROOT, 'docs', 'screenshots');
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 740 };
const KEY_TEXT = /^sk-tg-v1-[0-9a-f]{64}$/;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const ctx = gatewayForFile();
let browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/setup installs Debian's chromium`);
  assert.ok(existsSync(path.join(ROOT, 'build', 'assets', 'console', 'app.js')), 'the console is not built: npm run build:console');
  // playwright-core starts chromium with a fresh, empty profile (--user-data-dir) of its own.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
});

/** A fresh tab (own storage) that fails the test on any script error. */
async function newPage(viewport = DESKTOP) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  // The console runs under a strict Content-Security-Policy (console/_headers): any violation is a bug.
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) page.errors.push(m.text());
  });
  return page;
}

async function signIn(page, credential) {
  await page.goto(`${ctx.gw.url}/console/`);
  const input = page.getByLabel('Operator token or key');
  await input.fill(credential);
  await input.press('Enter');
}

/** Follows a link of the console's navigation. */
async function go(page, name) {
  await page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name, exact: true }).click();
}

/** Waits until the widgets of the page have finished loading. */
async function settled(page) {
  await page.waitForFunction(() => !document.querySelector('[aria-busy="true"]') && !document.querySelector('.state.loading'));
}

async function shoot(page, name) {
  for (const [label, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await page.setViewportSize(viewport);
    await settled(page);
    await sleep(150); // charts redraw at the new width
    await page.screenshot({ path: path.join(SHOTS, `${name}-${label}.png`), fullPage: true });
  }
  await page.setViewportSize(DESKTOP);
}

/** Waits until the gateway has recorded a request (usage reaches D1 within about a second). */
async function recorded(requestId) {
  for (let i = 0; i < 100; i++) {
    const r = await ctx.admin.call('GET', `/api/v1/generation?id=${requestId}`);
    if (r.status === 200) return r.body.data;
    await sleep(100);
  }
  assert.fail(`request ${requestId} was never recorded`);
}

describe('web console', () => {
  const state = {};

  test('the first load is small, local and fast', async () => {
    const page = await newPage();
    await page.goto(`${ctx.gw.url}/console/`);
    await page.getByLabel('Operator token or key').waitFor();
    await sleep(300);
    const perf = await page.evaluate(() => ({
      fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null,
      nav: performance.getEntriesByType('navigation')[0].toJSON(),
      resources: performance.getEntriesByType('resource').map((e) => e.toJSON()),
    }));
    const entries = [perf.nav, ...perf.resources];
    const origin = new URL(ctx.gw.url).origin;
    for (const e of entries) assert.equal(new URL(e.name).origin, origin, `only the gateway serves the console (${e.name})`);
    // What crossed the wire as served, and what a gzip-compressing edge sends of the same bodies.
    let transferred = 0;
    let gzipped = 0;
    for (const e of entries) {
      transferred += e.transferSize;
      const body = Buffer.from(await (await fetch(e.name)).arrayBuffer());
      gzipped += gzipSync(body, { level: 6 }).length;
    }
    console.log(`[console] first load: ${entries.length} files, ${(transferred / 1024).toFixed(1)} KB transferred as served, `
      + `${(gzipped / 1024).toFixed(1)} KB gzipped; first contentful paint ${perf.fcp?.toFixed(0)} ms`);
    assert.ok(gzipped <= 250 * 1024, `first load is ${gzipped} bytes gzipped; the budget is 250 KB`);
    assert.ok(perf.fcp !== null && perf.fcp > 0, 'first contentful paint is reported');
    // Keyboard: the credential field has the focus, and the skip link is the only stop before it.
    assert.equal(await page.evaluate(() => document.activeElement.labels?.[0]?.textContent), 'Operator token or key');
    await page.keyboard.press('Shift+Tab');
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('a wrong token shows the API\'s own message and stores nothing', async () => {
    const page = await newPage();
    const wrong = 'tg-admin-not-the-token';
    const api = await fetch(`${ctx.gw.url}/api/v1/key`, { headers: { authorization: `Bearer ${wrong}` } });
    const { error } = await api.json();
    assert.equal(api.status, 401);
    await signIn(page, wrong);
    await page.getByRole('alert').filter({ hasText: error.message }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length + localStorage.length), 0);
    await page.context().close();
  });

  test('an operator creates a user, credits it and creates a key shown once', async () => {
    const page = await newPage();
    state.operator = page;
    await signIn(page, ctx.gw.adminToken);
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
    // The credential is in sessionStorage only: never localStorage, never the URL.
    const stored = await page.evaluate(() => ({ session: JSON.stringify({ ...sessionStorage }), local: localStorage.length, url: location.href }));
    assert.ok(stored.session.includes(ctx.gw.adminToken));
    assert.equal(stored.local, 0);
    assert.ok(!stored.url.includes(ctx.gw.adminToken));

    // Another user with its own spend, which the key holder must never see.
    const other = await ctx.admin.createUser({ name: 'Other Person', email: 'other@console.example' });
    const otherKey = await ctx.admin.createKey(other.id, { name: 'other-key' });
    const otherChat = await new OpenAI({ baseURL: `${ctx.gw.url}/v1`, apiKey: otherKey.key, maxRetries: 0 }).chat.completions
      .create({ model: 'openai/gpt-4o', messages: [{ role: 'user', content: 'hello from someone else' }] }).withResponse();
    state.other = { user: other, key: otherKey, cost: otherChat.data.usage.cost };
    await recorded(otherChat.response.headers.get('x-request-id'));

    await go(page, 'Users');
    await page.getByLabel('E-mail').fill('ann@console.example');
    await page.getByLabel('Name', { exact: true }).fill('Ann Console');
    await page.getByRole('button', { name: 'Create user' }).click();
    await page.getByRole('heading', { name: 'Ann Console', level: 1 }).waitFor();
    const userId = decodeURIComponent(new URL(page.url()).hash.split('/')[2]);
    state.userId = userId;

    // The first answer is lost on its way (the credit went through); the operator reloads and applies again:
    // the same credit, not a second.
    const credits = '**/api/balance/admin/add';
    await page.route(credits, async (route) => {
      await route.fetch();
      await route.abort('connectionreset');
    });
    await page.getByLabel('Amount (USD)').fill('5');
    await page.getByLabel('Description').fill('console top-up');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.getByRole('alert').waitFor();
    await page.unroute(credits);
    await page.reload();
    await page.getByRole('heading', { name: 'Ann Console', level: 1 }).waitFor();
    await page.getByLabel('Amount (USD)').fill('5');
    await page.getByLabel('Description').fill('console top-up');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.getByRole('status').filter({ hasText: 'the balance is now $5.00' }).waitFor();
    await page.locator('#user-balance', { hasText: '$5.00' }).waitFor();
    const ledger = await ctx.admin.call('GET', `/api/balance/transactions?user_id=${userId}`);
    assert.equal(ledger.body.total, 1);
    assert.equal(ledger.body.data[0].description, 'console top-up');
    await page.getByRole('cell', { name: 'console top-up', exact: true }).waitFor();
    await shoot(page, 'user');

    await page.getByRole('link', { name: 'Create a key' }).click();
    await page.getByRole('heading', { name: 'Keys', level: 1 }).waitFor();
    const createForm = page.locator('details.disclosure form');
    assert.equal(await createForm.getByLabel('User id').inputValue(), userId, 'the user is filled in');
    await createForm.getByLabel('Name', { exact: true }).fill('laptop');
    await createForm.getByLabel('Spend limit (USD)').fill('2');
    await createForm.getByLabel('Limit resets').selectOption('daily');
    await createForm.getByLabel('Allowed models').fill('openai/*, meta-llama/llama-3.1-8b-instruct');
    await page.getByRole('button', { name: 'Create key' }).click();
    const secret = page.getByRole('textbox', { name: 'New key “laptop”' });
    await secret.waitFor();
    const keyText = await secret.inputValue();
    assert.match(keyText, KEY_TEXT);
    await page.getByText('this is the only time it is shown').waitFor();
    await page.getByRole('button', { name: 'Copy' }).waitFor();
    state.keyText = keyText;
    await page.getByRole('cell', { name: 'laptop', exact: true }).waitFor();

    // Gone once the page is left: not in the page, not in any storage.
    await go(page, 'Overview');
    await go(page, 'Keys');
    await page.getByRole('cell', { name: 'laptop', exact: true }).waitFor();
    const leftovers = await page.evaluate((k) => ({
      html: document.documentElement.outerHTML.includes(k),
      storage: JSON.stringify({ ...sessionStorage, ...localStorage }).includes(k),
    }), keyText);
    assert.deepEqual(leftovers, { html: false, storage: false }, 'the secret is shown once only');

    const keys = await ctx.admin.call('GET', `/api/keys?user_id=${userId}`);
    assert.equal(keys.body.total, 1);
    assert.deepEqual([keys.body.data[0].limit, keys.body.data[0].limit_reset], [2, 'daily']);
    assert.deepEqual(keys.body.data[0].allowed_models, ['openai/*', 'meta-llama/llama-3.1-8b-instruct'], 'the allowlist as typed');
    state.keyId = keys.body.data[0].id;
    assert.deepEqual(page.errors, []);
  });

  test('the key\'s spend appears in the overview chart and the usage explorer', async () => {
    const page = state.operator;
    const client = new OpenAI({ baseURL: `${ctx.gw.url}/v1`, apiKey: state.keyText, maxRetries: 0 });
    const { data, response } = await client.chat.completions
      .create({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'Hello from the console test' }] }).withResponse();
    const cost = data.usage.cost;
    assert.ok(cost > 0);
    state.cost = cost;
    const rec = await recorded(response.headers.get('x-request-id'));
    assert.equal(rec.total_cost, cost);
    const total = Math.round((cost + state.other.cost) * 1e6) / 1e6;

    await go(page, 'Overview');
    await settled(page);
    const spendToday = page.locator('.stat', { hasText: 'Spend today' }).locator('.stat-value');
    assert.equal(await spendToday.textContent(), usd(total));
    const chart = page.getByRole('figure').filter({ hasText: 'UTC' }).first();
    assert.equal(Number(await chart.getAttribute('data-total')), total, 'the 30-day chart adds up to what was charged');
    assert.equal(await chart.locator('.chart-total').textContent(), usd(total));
    assert.equal(await page.locator('.stat-widget', { hasText: 'Active keys' }).locator('.stat-value').textContent(), '2');
    await page.getByRole('cell', { name: 'openai/gpt-4o-mini', exact: true }).waitFor();
    let balances = 0;
    for (const u of (await ctx.admin.call('GET', '/api/admin/users?page_size=100')).body.data) {
      balances += Math.round((await ctx.admin.call('GET', `/api/balance?user_id=${u.id}`)).body.balance * 1e6);
    }
    assert.equal(await page.locator('.stat-widget', { hasText: 'Total balances' }).locator('.stat-value').textContent(), usd(balances / 1e6),
      'the sum of every account, after the charge');
    await shoot(page, 'overview');

    await go(page, 'Usage');
    await page.getByLabel('Group by').selectOption('model');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.getByRole('heading', { name: /Usage by model/ }).waitFor();
    await settled(page);
    const row = page.getByRole('row').filter({ has: page.getByRole('cell', { name: 'openai/gpt-4o-mini', exact: true }) });
    assert.equal(await row.getByRole('cell').last().textContent(), usd(cost));
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download CSV' }).click()]);
    const csv = readFileSync(await download.path(), 'utf8').trim().split('\n');
    assert.equal(csv[0], 'model,requests,prompt_tokens,completion_tokens,cost_usd');
    const line = csv.find((l) => l.startsWith('openai/gpt-4o-mini,'));
    assert.equal(Number(line.split(',')[4]), cost);
    await page.getByLabel('Group by').selectOption('day');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.getByRole('heading', { name: /Usage by day/ }).waitFor();
    await settled(page);
    assert.equal(Number(await page.getByRole('figure').getAttribute('data-total')), total);
    await shoot(page, 'usage');
    assert.deepEqual(page.errors, []);
  });

  test('the operator disables the key (it stops at once), rotates one with grace and deletes one after asking', async () => {
    const page = state.operator;
    // A second key for the same user, for the key holder's sign-in below.
    state.second = await ctx.admin.createKey(state.userId, { name: 'phone', permissions: ['read', 'write'] });
    await go(page, 'Keys');
    // Disabling is asked first: cancelled, nothing changes.
    await page.getByRole('button', { name: 'Disable key laptop' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
    assert.equal((await ctx.admin.call('GET', `/api/keys/${state.keyId}`)).body.data.disabled, false);
    await page.getByRole('button', { name: 'Disable key laptop' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Disable' }).click();
    await page.getByRole('button', { name: 'Enable key laptop' }).waitFor();
    const row = page.getByRole('row').filter({ has: page.getByRole('cell', { name: 'laptop', exact: true }) });
    assert.equal(await row.locator('.badge').textContent(), 'disabled');
    const chat = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${state.keyText}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(chat.status, 401);
    await shoot(page, 'keys');

    // Rotation with grace: the new secret is shown once and the old one keeps working meanwhile.
    await page.getByLabel('Rotate key other-key', { exact: true }).click();
    await page.getByRole('form', { name: 'Rotation of other-key' }).getByLabel('Grace (seconds)').fill('600');
    await page.getByRole('button', { name: 'Rotate now' }).click();
    const rotated = page.getByRole('textbox', { name: 'New secret for “other-key”' });
    await rotated.waitFor();
    const newSecret = await rotated.inputValue();
    assert.match(newSecret, KEY_TEXT);
    assert.notEqual(newSecret, state.other.key.key);
    await page.getByText(/The old secret works until/).waitFor();
    for (const secret of [newSecret, state.other.key.key]) {
      const me = await fetch(`${ctx.gw.url}/api/v1/key`, { headers: { authorization: `Bearer ${secret}` } });
      assert.equal(me.status, 200, 'both secrets work during the grace period');
    }

    // Deleting asks first; cancelling keeps the key, confirming removes it.
    const doomed = await ctx.admin.createKey(state.other.user.id, { name: 'doomed' });
    await go(page, 'Overview');
    await go(page, 'Keys');
    await page.getByRole('button', { name: 'Delete key doomed' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
    assert.equal((await ctx.admin.call('GET', `/api/keys/${doomed.id}`)).status, 200);
    await page.getByRole('button', { name: 'Delete key doomed' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('cell', { name: 'doomed', exact: true }).waitFor({ state: 'detached' });
    assert.equal((await ctx.admin.call('GET', `/api/keys/${doomed.id}`)).status, 404);

    // Each main operator page draws without a script error.
    for (const name of ['Organizations', 'Prices', 'Upstream keys', 'Reconciliation']) {
      await go(page, name);
      await page.getByRole('heading', { name, level: 1 }).waitFor();
      await settled(page);
      assert.equal(await page.locator('.state.error').count(), 0, `${name} shows no error`);
    }
    // An organization created with an allowlist shows it, and the API has it as typed.
    await go(page, 'Organizations');
    const orgForm = page.locator('form', { has: page.getByRole('heading', { name: 'Create an organization' }) });
    await orgForm.getByLabel('Name', { exact: true }).fill('Console Org');
    await orgForm.getByLabel('Allowed models').fill('openai/*, anthropic/claude-3.5-sonnet');
    await orgForm.getByRole('button', { name: 'Create organization' }).click();
    await page.getByText('Models: only openai/*, anthropic/claude-3.5-sonnet').waitFor();
    const orgs = (await ctx.admin.call('GET', '/api/orgs?page_size=100')).body.data;
    assert.deepEqual(orgs.find((o) => o.name === 'Console Org').allowed_models, ['openai/*', 'anthropic/claude-3.5-sonnet']);
    // Routes: a pin to a provider without a key is refused with the API's message; a pin shows and unpins.
    await go(page, 'Routes');
    await page.getByRole('heading', { name: 'Routes', level: 1 }).waitFor();
    await page.getByLabel('Model', { exact: true }).fill('openai/gpt-4o');
    await page.getByLabel('Provider', { exact: true }).selectOption('anthropic');
    await page.getByRole('button', { name: 'Pin', exact: true }).click();
    await page.getByText('this tenant has no key for anthropic: set ANTHROPIC_API_KEY first').waitFor();
    await page.getByLabel('Provider', { exact: true }).selectOption('openrouter');
    await page.getByLabel('Native id').fill('openai/gpt-4o-2024-08-06');
    await page.getByRole('button', { name: 'Pin', exact: true }).click();
    await page.getByText('openai/gpt-4o now goes to openrouter as openai/gpt-4o-2024-08-06.').waitFor();
    const pinned = (await ctx.admin.call('GET', '/api/admin/routes')).body.data.find((r) => r.model === 'openai/gpt-4o');
    assert.deepEqual([pinned.pinned, pinned.native_model], [true, 'openai/gpt-4o-2024-08-06']);
    await page.getByRole('button', { name: 'Unpin openai/gpt-4o' }).click();
    await page.getByRole('button', { name: 'Unpin openai/gpt-4o' }).waitFor({ state: 'detached' });
    assert.equal((await ctx.admin.call('GET', '/api/admin/routes')).body.data.find((r) => r.model === 'openai/gpt-4o').pinned, false);

    await go(page, 'Users');
    await page.getByRole('cell', { name: 'ann@console.example', exact: true }).waitFor();
    await shoot(page, 'users');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Operator token or key').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'signing out forgets the credential');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('the key holder sees its own balance, limits, usage and keys, and nobody else\'s', async () => {
    const page = await newPage();
    // The disabled key is refused with the API's message.
    const refused = await fetch(`${ctx.gw.url}/api/v1/key`, { headers: { authorization: `Bearer ${state.keyText}` } });
    assert.equal(refused.status, 401);
    await signIn(page, state.keyText);
    await page.getByRole('alert').filter({ hasText: (await refused.json()).error.message }).waitFor();

    await signIn(page, state.second.key);
    await page.getByRole('heading', { name: 'My account', level: 1 }).waitFor();
    await settled(page);
    const nav = await page.getByRole('navigation', { name: 'Console' }).getByRole('link').allTextContents();
    assert.deepEqual(nav, ['My account'], 'no operator pages');
    const balance = await ctx.admin.call('GET', `/api/balance?user_id=${state.userId}`);
    assert.equal(await page.locator('.stat', { hasText: /^Balance/ }).locator('.stat-value').textContent(), usd(balance.body.balance));
    assert.equal(balance.body.balance, Math.round((5 - state.cost) * 1e6) / 1e6);
    await page.getByText('No limit', { exact: true }).waitFor();
    // Its own usage: the laptop key's spend, not the other user's.
    assert.equal(Number(await page.getByRole('figure').getAttribute('data-total')), state.cost);
    const body = await page.locator('main').textContent();
    assert.ok(!body.includes('other-key') && !body.includes(state.other.key.key_prefix), 'nothing of the other user');
    await page.getByRole('cell', { name: 'laptop', exact: true }).waitFor();
    await page.getByRole('cell', { name: 'phone', exact: true }).waitFor();
    assert.equal(await page.getByRole('cell', { name: 'other-key', exact: true }).count(), 0);
    // Operator routes lead back to its own page.
    await page.goto(`${ctx.gw.url}/console/#/users`);
    await page.getByRole('heading', { name: 'My account', level: 1 }).waitFor();
    // Its usage by model names only its own model.
    await page.getByLabel('Group by').selectOption('model');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.getByRole('heading', { name: /Your usage by model/ }).waitFor();
    await settled(page);
    assert.equal(await page.getByRole('cell', { name: 'openai/gpt-4o', exact: true }).count(), 0);
    await page.getByRole('cell', { name: 'openai/gpt-4o-mini', exact: true }).waitFor();
    await page.getByLabel('Group by').selectOption('day');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.getByRole('heading', { name: /Your usage by day/ }).waitFor();
    await shoot(page, 'key-holder');
    // It rotates the key it is signed in with, without grace: the console goes on with the new secret.
    await page.getByLabel('Rotate key phone', { exact: true }).click();
    await page.getByRole('form', { name: 'Rotation of phone' }).getByRole('button', { name: 'Rotate now' }).click();
    const rotated = page.getByRole('textbox', { name: 'New secret for “phone”' });
    await rotated.waitFor();
    await page.getByText(/This console now signs in with the new secret/).waitFor();
    const phoneSecret = await rotated.inputValue();
    assert.equal(await page.evaluate(() => JSON.parse(sessionStorage.getItem('tollgate.console.session')).token), phoneSecret);
    await page.reload();
    await page.getByRole('cell', { name: 'phone', exact: true }).waitFor();
    state.second.key = phoneSecret;
    state.holderViolations = await accessibilityViolations(page, 'My account');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('an operator reads a key\'s end users and request log, gives one end user a budget, and sees the alerts', async () => {
    const user = await ctx.admin.createUser({ name: 'App Owner', email: 'app@console.example' });
    const key = await ctx.admin.createKey(user.id, { name: 'app-key', request_log_days: 3, end_user_budget: { limit: 1, limit_reset: 'monthly' }, rpm_limit: 100 });
    const client = new OpenAI({ baseURL: `${ctx.gw.url}/v1`, apiKey: key.key, maxRetries: 0 });
    await client.chat.completions.create({ model: 'openai/gpt-4o-mini', user: 'carol@app.example', messages: [{ role: 'user', content: 'the word is marigold' }] });
    for (let i = 0; i < 50 && (await ctx.admin.call('GET', `/api/keys/${key.id}/requests`)).body.total < 1; i++) await sleep(100);

    const page = await newPage();
    state.activityPage = page;
    await signIn(page, ctx.gw.adminToken);
    await go(page, 'Keys');
    await page.getByRole('cell', { name: 'app-key', exact: true }).waitFor();
    const row = page.getByRole('row').filter({ hasText: 'app-key' });
    await row.getByText('100 requests a minute').waitFor();
    await row.getByText('$1.00 / monthly per end user').waitFor();
    await row.getByText('requests kept 3 days').waitFor();

    await page.getByRole('link', { name: 'End users of key app-key' }).click();
    await page.getByRole('heading', { name: 'End users', level: 1 }).waitFor();
    await page.getByRole('cell', { name: 'carol@app.example' }).waitFor();
    await shoot(page, 'end-users');
    await page.getByText('Give an end user a budget of its own').click();
    await page.getByLabel('End user', { exact: true }).fill('dave@app.example');
    await page.getByLabel('Budget (USD)').fill('0.25');
    await page.getByRole('button', { name: 'Set budget' }).click();
    await page.getByRole('status').filter({ hasText: 'dave@app.example has a budget of its own now.' }).waitFor();
    const listed = (await ctx.admin.call('GET', `/api/keys/${key.id}/end-users`)).body.data.find((u) => u.end_user === 'dave@app.example');
    assert.deepEqual([listed.limit, listed.own_budget], [0.25, true]);
    await page.getByRole('button', { name: "Give dave@app.example the key's default budget" }).click();
    await page.getByRole('cell', { name: 'dave@app.example', exact: true }).waitFor();
    for (let i = 0; i < 50 && (await ctx.admin.call('GET', `/api/keys/${key.id}/end-users`)).body.data.find((u) => u.end_user === 'dave@app.example').own_budget; i++) await sleep(100);

    await go(page, 'Keys');
    await page.getByRole('link', { name: 'Requests of key app-key' }).click();
    await page.getByRole('heading', { name: 'Request log', level: 1 }).waitFor();
    await page.getByRole('button', { name: /^View request / }).first().click();
    await page.locator('pre.body').first().filter({ hasText: 'marigold' }).waitFor();
    await shoot(page, 'requests');

    await go(page, 'Alerts');
    await page.getByRole('heading', { name: 'Alerts', level: 1 }).waitFor();
    await page.getByText('No webhook is set').waitFor();
    await shoot(page, 'alerts');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('an operator edits a price: input and output change, what the form does not show stays', async () => {
    const page = await newPage();
    await signIn(page, ctx.gw.adminToken);
    const model = 'google/gemini-2.5-pro';
    const tier = { from_prompt_tokens: 200000, pricing_input: '0.0000025', pricing_output: '0.000015' };
    const set = await ctx.admin.call('PUT', '/api/models/pricing', {
      model_name: model, pricing_input: '0.00000125', pricing_output: '0.00001', pricing_cache_read: '0.00000031',
      context_length: 1048576, display_name: 'Gemini 2.5 Pro', long_context: tier,
    });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    await go(page, 'Prices');
    await settled(page);
    await page.getByLabel(`Edit ${model}`, { exact: true }).click();
    const form = page.getByRole('form', { name: `Price of ${model}` });
    await form.getByLabel('Input (USD/token)').fill('0.000002');
    const saved = page.waitForResponse((r) => r.url().endsWith('/api/models/pricing') && r.request().method() === 'PUT');
    await form.getByRole('button', { name: 'Save price' }).click();
    assert.equal((await saved).status(), 200);
    const after = (await ctx.admin.call('GET', `/api/models/pricing/${model}`)).body.data;
    assert.equal(after.pricing_input, 0.000002);
    assert.equal(after.pricing_output, 0.00001);
    assert.equal(after.pricing_cache_read, 0.00000031);
    assert.equal(after.context_length, 1048576);
    assert.equal(after.display_name, 'Gemini 2.5 Pro');
    assert.deepEqual(after.long_context, set.body.data.long_context, 'the long-context tier stays');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('every page passes an automated accessibility check (axe: WCAG 2 A and AA)', async () => {
    const page = await newPage();
    await signIn(page, ctx.gw.adminToken);
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
    const found = [...(state.holderViolations ?? [])];
    for (const name of ['Overview', 'Users', 'Keys', 'Organizations', 'Prices', 'Routes', 'Upstream keys', 'Usage', 'Alerts', 'Reconciliation']) {
      await go(page, name);
      await page.getByRole('heading', { name, level: 1 }).waitFor();
      if (name !== 'Overview') {
        assert.equal(await page.evaluate(() => document.activeElement?.id), 'main', `${name}: focus moves to the new page`);
      }
      await settled(page);
      found.push(...(await accessibilityViolations(page, name)));
    }
    // A key's pages, reached from its row: the first key listed, with a logged request opened.
    const { data: [anyKey] } = (await ctx.admin.call('GET', '/api/keys?search=app-key')).body;
    for (const [hash, name] of [['end-users', 'End users'], ['requests', 'Request log']]) {
      await page.goto(`${ctx.gw.url}/console/#/${hash}?key=${encodeURIComponent(anyKey.id)}`);
      await page.getByRole('heading', { name, level: 1 }).waitFor();
      await settled(page);
      if (hash === 'requests') {
        await page.getByRole('button', { name: /^View request / }).first().click();
        await page.locator('pre.body').first().waitFor();
      }
      found.push(...(await accessibilityViolations(page, name)));
    }
    assert.deepEqual(found, [], found.join('\n'));
    await page.context().close();
  });
});

/** What axe finds on the page as it is now (disclosures opened, so their forms are checked too). */
async function accessibilityViolations(page, name) {
  await page.evaluate(() => document.querySelectorAll('details').forEach((d) => { d.open = true; }));
  const { violations } = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze();
  return violations.map((v) => `${name}: ${v.id} (${v.impact}) ×${v.nodes.length}: ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
}
