// Shared set-up for the integration test files (kept out of harness.mjs, which
// npm start and the bench also load).

import { after, before } from 'node:test';

import { adminClient, startGateway } from './harness.mjs';

/**
 * One gateway for the whole test file: started before its tests, stopped after.
 * Returns an object whose `gw` and `admin` are set once the gateway is up.
 */
export function gatewayForFile(options) {
  const ctx = { gw: null, admin: null };
  before(async () => {
    ctx.gw = await startGateway(options);
    ctx.admin = adminClient(ctx.gw.url, ctx.gw.adminToken);
  });
  after(async () => {
    await ctx.gw?.stop();
  });
  return ctx;
}

/** A minimal non-streamed chat with `token` (raw fetch, so any status can be inspected). */
export function chatAs(url, token) {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
  });
}
