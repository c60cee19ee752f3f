// One list of every authenticated route and the permission it needs, and one
// helper that runs the auth-failure cases against each. A new route is added
// here once and gets every case for free.

import assert from 'node:assert/strict';

const ID = '00000000-0000-4000-8000-000000000000';

/** [route name in src/routes.rs, method, path, needed permission, body?] */
export const AUTHENTICATED_ROUTES = [
  ['ChatCompletions', 'POST', '/v1/chat/completions', 'write', { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }],
  ['ChatCompletions', 'POST', '/api/v1/chat/completions', 'write', { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }],
  ['Embeddings', 'POST', '/v1/embeddings', 'write', { model: 'openai/text-embedding-3-small', input: 'hi' }],
  ['Embeddings', 'POST', '/api/v1/embeddings', 'write', { model: 'openai/text-embedding-3-small', input: 'hi' }],
  ['Completions', 'POST', '/v1/completions', 'write', { model: 'openai/gpt-4o-mini', prompt: 'hi' }],
  ['Completions', 'POST', '/api/v1/completions', 'write', { model: 'openai/gpt-4o-mini', prompt: 'hi' }],
  ['Messages', 'POST', '/v1/messages', 'write', { model: 'anthropic/claude-3.5-sonnet', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }],
  ['CountTokens', 'POST', '/v1/messages/count_tokens', 'write', { model: 'anthropic/claude-3.5-sonnet', messages: [{ role: 'user', content: 'hi' }] }],
  ['Responses', 'POST', '/v1/responses', 'write', { model: 'openai/gpt-4o-mini', input: 'hi' }],
  ['ResponsesUnsupported', 'GET', '/v1/responses/resp_1', 'write'],
  ['CurrentKey', 'GET', '/api/v1/key', 'any'],
  ['ListUsers', 'GET', '/api/admin/users', 'admin'],
  ['CreateUser', 'POST', '/api/admin/users', 'admin', { email: 'matrix@example.com', name: 'M' }],
  ['GetUser', 'GET', `/api/admin/users/${ID}`, 'admin'],
  ['UpdateUser', 'PATCH', `/api/admin/users/${ID}`, 'admin', { name: 'M' }],
  ['DeleteUser', 'DELETE', `/api/admin/users/${ID}`, 'admin'],
  ['ListKeys', 'GET', '/api/keys', 'read'],
  ['CreateKey', 'POST', '/api/keys', 'write', { name: 'k' }],
  ['CreateToken', 'POST', '/api/token', 'write', { name: 'k' }],
  ['GetKey', 'GET', `/api/keys/${ID}`, 'read'],
  ['UpdateKey', 'PATCH', `/api/keys/${ID}`, 'write', { name: 'k' }],
  ['DeleteKey', 'DELETE', `/api/keys/${ID}`, 'write'],
  ['RotateKey', 'POST', `/api/keys/${ID}/rotate`, 'write', {}],
  ['ListEndUsers', 'GET', `/api/keys/${ID}/end-users`, 'read'],
  ['PutEndUserBudget', 'PUT', `/api/keys/${ID}/end-users/alice`, 'write', { limit: 1 }],
  ['ClearEndUserBudget', 'DELETE', `/api/keys/${ID}/end-users/alice`, 'write'],
  ['ListRequestLog', 'GET', `/api/keys/${ID}/requests`, 'read'],
  ['GetRequestLog', 'GET', `/api/keys/${ID}/requests/req-1`, 'read'],
  ['ListOrgs', 'GET', '/api/orgs', 'admin'],
  ['CreateOrg', 'POST', '/api/orgs', 'admin', { name: 'matrix org' }],
  ['GetOrg', 'GET', `/api/orgs/${ID}`, 'admin'],
  ['UpdateOrg', 'PATCH', `/api/orgs/${ID}`, 'admin', { name: 'x' }],
  ['DeleteOrg', 'DELETE', `/api/orgs/${ID}`, 'admin'],
  ['CreateOrgKey', 'POST', `/api/orgs/${ID}/keys`, 'admin', { name: 'k', user_id: ID }],
  ['PutPrice', 'PUT', '/api/models/pricing', 'admin', { model_name: 'x/y', pricing_input: 0, pricing_output: 0 }],
  ['SyncPrices', 'POST', '/api/models/pricing/sync', 'admin', {}],
  ['GetBalance', 'GET', '/api/balance', 'read'],
  ['ListTransactions', 'GET', '/api/balance/transactions', 'read'],
  ['AddBalance', 'POST', '/api/balance/admin/add', 'admin', { user_id: ID, amount: 1 }],
  ['GetCredits', 'GET', '/api/v1/credits', 'read'],
  ['Reconcile', 'GET', '/api/admin/reconcile', 'admin'],
  ['StartReconcileRun', 'POST', '/api/admin/reconcile/runs', 'admin'],
  ['RunRetention', 'POST', '/api/admin/retention/run', 'admin'],
  ['ListArchives', 'GET', '/api/admin/archives', 'admin'],
  ['GetArchive', 'GET', '/api/admin/archives/arc-1', 'admin'],
  ['RestoreArchive', 'POST', '/api/admin/archives/arc-1/restore', 'admin'],
  ['GetReconcileRun', 'GET', '/api/admin/reconcile/runs/latest', 'admin'],
  ['OwnStats', 'GET', '/api/stats', 'read'],
  ['KeyStats', 'GET', `/api/stats/keys/${ID}`, 'read'],
  ['OrgStats', 'GET', `/api/stats/orgs/${ID}`, 'admin'],
  ['GlobalStats', 'GET', '/api/stats/global', 'admin'],
  ['Generation', 'GET', `/api/v1/generation?id=${ID}`, 'read'],
  ['Provision', 'POST', '/api/admin/provision', 'admin', { email: 'matrix@example.com', name: 'M' }],
  ['ListUpstreamKeys', 'GET', '/api/admin/openrouter-keys', 'admin'],
  ['UpdateUpstreamKey', 'PATCH', `/api/admin/openrouter-keys/${ID}`, 'admin', { disabled: true }],
  ['DeleteUpstreamKey', 'DELETE', `/api/admin/openrouter-keys/${ID}`, 'admin'],
  ['Overview', 'GET', '/api/admin/overview', 'admin'],
  ['ListAlerts', 'GET', '/api/admin/alerts', 'admin'],
  ['ListRoutes', 'GET', '/api/admin/routes', 'admin'],
  ['PutRoute', 'PUT', '/api/admin/routes/openai/gpt-4o', 'admin', { provider: 'openrouter' }],
  ['PutRouteFromBody', 'PUT', '/api/admin/routes', 'admin', { model: 'openai/gpt-4o', provider: 'openrouter' }],
  ['DeleteRoute', 'DELETE', '/api/admin/routes/openai/gpt-4o', 'admin'],
];

/** Routes anyone may call (API.md's first row). */
export const PUBLIC_ROUTES = ['Health', 'ListModels', 'GetModel', 'ListPrices', 'GetPrice', 'OpenApi'];

/** Every route variant the route table knows, read from src/routes.rs. */
export function routeTableNames(source) {
  return [...new Set([...source.matchAll(/\("(?:GET|POST|PUT|PATCH|DELETE)", Route::(\w+)/g)].map((m) => m[1]))];
}

/**
 * Who may call each route, as the route table says it (src/routes.rs): route name →
 * 'public' | 'any' | 'read' | 'write' | 'admin' (inference and token counts need `write`).
 */
export function routeTableAccess(source) {
  const access = {};
  const tuples = source.matchAll(/\("(?:GET|POST|PUT|PATCH|DELETE)", Route::(\w+)(?:\((?:[^()]|\([^()]*\))*\))?, (Public|AnyKey|Inference|Unmetered|Key\((\w+)\))\)/g);
  for (const [, name, kind, permission] of tuples) {
    access[name] = { Public: 'public', AnyKey: 'any', Inference: 'write', Unmetered: 'write' }[kind] ?? permission.toLowerCase();
  }
  return access;
}

/** A key whose permissions lack `needed` (null when every key has it). */
function keyLacking(needed, keys) {
  return { read: keys.writeOnly, write: keys.readOnly, admin: keys.readWrite, any: null }[needed];
}

/**
 * Runs the auth-failure cases against every route:
 * no credential, a malformed one, an unknown key, a disabled key, a deleted key,
 * an expired key (401 each), and a key without the needed permission (403).
 * `keys` holds texts: readOnly, writeOnly, readWrite, disabled, deleted, expired.
 */
export async function assertAuthFailures(baseUrl, keys) {
  const cases = [
    ['no credential', null, 401],
    ['malformed', 'Bearer', 401],
    ['unknown key', `sk-tg-v1-${'9'.repeat(64)}`, 401],
    ['disabled key', keys.disabled, 401],
    ['deleted key', keys.deleted, 401],
    ['expired key', keys.expired, 401],
  ];
  for (const [, method, path, needed, body] of AUTHENTICATED_ROUTES) {
    const lacking = keyLacking(needed, keys);
    const all = lacking ? [...cases, [`key without ${needed}`, lacking, 403]] : cases;
    for (const [label, token, status] of all) {
      const headers = { 'content-type': 'application/json' };
      if (token === 'Bearer') headers.authorization = 'Bearer';
      else if (token) headers.authorization = `Bearer ${token}`;
      const res = await fetch(baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await res.text();
      assert.equal(res.status, status, `${method} ${path} with ${label}: ${text}`);
      const err = JSON.parse(text).error;
      // OpenAI's shape names it `code`; Anthropic's (the Messages API) `type`.
      assert.equal(err.code ?? err.type, status === 401 ? 'authentication_error' : 'permission_error', `${method} ${path} with ${label}`);
    }
  }
}
