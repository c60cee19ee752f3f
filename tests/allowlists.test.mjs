// Allowlists (issue 18): which models a key, or every key of an organization, may
// use (exact ids, `vendor/*`), and which providers may serve them. Anything else is
// 403 `model_not_allowed` naming the model, in the endpoint's own error shape, on
// every endpoint that names a model, before anything is reserved (it costs
// nothing). A key managing keys cannot give them more than it has.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { FAKE_OPENAI_KEY } from './fake-upstream.mjs';
import { gatewayForFile } from './fixture.mjs';

const ctx = gatewayForFile({ vars: { OPENAI_API_KEY: FAKE_OPENAI_KEY } });
const micros = (usd) => Math.round(usd * 1e6);

async function as(token, method, p, body, headers = {}) {
  const res = await fetch(ctx.gw.url + p, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const messages = [{ role: 'user', content: 'hi' }];
/** One request naming `model` on each endpoint that names one. */
const ENDPOINTS = {
  chat: (model) => ['/v1/chat/completions', { model, messages, max_tokens: 5 }],
  completions: (model) => ['/v1/completions', { model, prompt: 'hi', max_tokens: 5 }],
  responses: (model) => ['/v1/responses', { model, input: 'hi', max_output_tokens: 5 }],
  messages: (model) => ['/v1/messages', { model, max_tokens: 5, messages }],
  count_tokens: (model) => ['/v1/messages/count_tokens', { model, messages }],
  embeddings: (model) => ['/v1/embeddings', { model, input: 'hi' }],
};

async function keyWith(lists, extra = {}) {
  const user = await ctx.admin.createUser({}, { credit: 1 });
  const res = await ctx.admin.call('POST', '/api/keys', { name: 'allow', user_id: user.id, ...lists, ...extra });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return { user, key: res.body.data };
}

async function balanceOf(userId) {
  return micros((await ctx.admin.call('GET', `/api/balance?user_id=${userId}`)).body.balance);
}

function refusedAs(res, model, anthropic) {
  assert.equal(res.status, 403, JSON.stringify(res.body));
  if (anthropic) {
    assert.equal(res.body.type, 'error');
    assert.equal(res.body.error.type, 'permission_error');
    assert.match(res.body.error.message, new RegExp(model.replace(/[/.*]/g, '\\$&')));
  } else {
    assert.equal(res.body.error.code, 'model_not_allowed');
    assert.match(res.body.error.message, new RegExp(model.replace(/[/.*]/g, '\\$&')));
  }
}

describe('allowlists', () => {
  test('exact ids on every endpoint that names a model; a refusal costs nothing', async () => {
    const { user, key } = await keyWith({ allowed_models: ['openai/gpt-4o-mini', 'openai/text-embedding-3-small'] });
    assert.deepEqual(key.allowed_models, ['openai/gpt-4o-mini', 'openai/text-embedding-3-small']);
    const before = await balanceOf(user.id);
    for (const [name, make] of Object.entries(ENDPOINTS)) {
      const [p, body] = make('openai/gpt-4o');
      refusedAs(await as(key.key, 'POST', p, body), 'openai/gpt-4o', name === 'messages' || name === 'count_tokens');
    }
    // With a fallback list, every model named must be allowed.
    const fallback = await as(key.key, 'POST', '/v1/chat/completions', { model: 'openai/gpt-4o-mini', models: ['openai/gpt-4o'], messages });
    refusedAs(fallback, 'openai/gpt-4o');
    assert.equal(await balanceOf(user.id), before, 'refusals cost nothing');
    const ledger = (await ctx.admin.call('GET', `/api/balance/transactions?user_id=${user.id}`)).body.data;
    assert.equal(ledger.filter((r) => r.type === 'usage').length, 0);
    for (const [p, body] of [ENDPOINTS.chat('openai/gpt-4o-mini'), ENDPOINTS.embeddings('openai/text-embedding-3-small')]) {
      assert.equal((await as(key.key, 'POST', p, body)).status, 200, p);
    }
  });

  test('a vendor pattern, and providers: a model only another provider serves is refused', async () => {
    const { key } = await keyWith({ allowed_models: ['openai/*', 'meta-llama/*'], allowed_providers: ['openai'] });
    assert.equal((await as(key.key, 'POST', ...ENDPOINTS.chat('openai/gpt-4o'))).status, 200, 'any openai model, served by OpenAI');
    refusedAs(await as(key.key, 'POST', ...ENDPOINTS.chat('anthropic/claude-3.5-sonnet')), 'anthropic/claude-3.5-sonnet');
    // Allowed by pattern, but only OpenRouter serves it here.
    const llama = await as(key.key, 'POST', ...ENDPOINTS.chat('meta-llama/llama-3.1-8b-instruct'));
    assert.equal(llama.status, 403);
    assert.match(llama.body.error.message, /providers/);
    // Cleared with null: any model again.
    assert.equal((await ctx.admin.call('PATCH', `/api/keys/${key.id}`, { allowed_models: null, allowed_providers: null })).status, 200);
    assert.equal((await as(key.key, 'POST', ...ENDPOINTS.chat('anthropic/claude-3.5-sonnet'))).status, 200);
  });

  test('an organization\'s lists bind every key of it', async () => {
    const user = await ctx.admin.createUser({}, { credit: 1 });
    const org = (await ctx.admin.call('POST', '/api/orgs', { name: `Allow ${user.id}`, allowed_models: ['openai/*'] })).body.data;
    assert.deepEqual(org.allowed_models, ['openai/*']);
    const key = (await ctx.admin.call('POST', `/api/orgs/${org.id}/keys`, { name: 'o', user_id: user.id })).body.data;
    assert.equal((await as(key.key, 'POST', ...ENDPOINTS.chat('openai/gpt-4o-mini'))).status, 200);
    refusedAs(await as(key.key, 'POST', ...ENDPOINTS.chat('anthropic/claude-3.5-sonnet')), 'anthropic/claude-3.5-sonnet');
  });

  test('a key gives the keys it makes no more than its own lists', async () => {
    const { key } = await keyWith({ allowed_models: ['openai/gpt-4o-mini'] }, { permissions: ['read', 'write'] });
    const wider = await as(key.key, 'POST', '/api/keys', { name: 'wider', allowed_models: ['openai/*'] });
    assert.equal(wider.status, 403);
    const open = await as(key.key, 'POST', '/api/keys', { name: 'open', allowed_models: [] });
    assert.equal(open.status, 403, 'an open list is wider than any');
    const inherited = await as(key.key, 'POST', '/api/keys', { name: 'same' });
    assert.equal(inherited.status, 201, JSON.stringify(inherited.body));
    assert.deepEqual(inherited.body.data.allowed_models, ['openai/gpt-4o-mini'], 'lists left out are the maker\'s');
    const widen = await as(key.key, 'PATCH', `/api/keys/${inherited.body.data.id}`, { allowed_models: null });
    assert.equal(widen.status, 403);
    const bad = await ctx.admin.call('POST', '/api/keys', { name: 'bad', user_id: key.user_id, allowed_models: ['open*/x'] });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.param, 'allowed_models');
    const unknown = await ctx.admin.call('POST', '/api/keys', { name: 'bad', user_id: key.user_id, allowed_providers: ['azure'] });
    assert.equal(unknown.status, 400);
  });
});
