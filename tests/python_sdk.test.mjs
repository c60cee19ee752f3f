// The official Python openai SDK chats through the gateway, streamed and not.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import path from 'node:path';

import { ROOT, adminClient, run, startGateway } from './harness.mjs';

let gw;

before(async () => {
  gw = await startGateway();
});

after(async () => {
  await gw?.stop();
});

test('the Python SDK chats, streams and sees OpenAI errors', async () => {
  const admin = adminClient(gw.url, gw.adminToken);
  const user = await admin.createUser({ name: 'Py' });
  const key = await admin.createKey(user.id, { name: 'python' });
  const python = path.join(ROOT, '.tools', 'bin', 'python-openai');
  const out = await run(python, [path.join(ROOT, 'tests', 'python_sdk.py'), `${gw.url}/v1`, key.key]);
  const seen = JSON.parse(out.trim().split('\n').at(-1));
  assert.equal(seen.plain, 'Echo: hello from python');
  assert.equal(seen.plain_usage.completion_tokens, 4);
  assert.equal(seen.streamed, 'Echo: hello from python');
  assert.equal(seen.stream_usage.completion_tokens, 4);
  assert.equal(typeof seen.stream_usage.cost, 'number');
  assert.deepEqual(seen.bad_request, { type: 'BadRequestError', status: 400 });
});
