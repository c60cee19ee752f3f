// The OpenAPI document (issue 18.5): served at /openapi.json, generated from the
// route table and the handlers' own body types; it lists every route the
// table serves, and schemathesis (from PyPI, installed by scripts/setup)
// drives every documented operation with generated valid and invalid inputs
// against a real gateway: no 500, no status the document does not list.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { AUTHENTICATED_ROUTES } from './auth-matrix.mjs';
import { gatewayForFile } from './fixture.mjs';

const ctx = gatewayForFile();
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** A path template as a pattern: `{model}` may hold slashes, any other `{name}` is one segment. */
const pattern = (template) =>
  new RegExp(`^${template.replace(/\{model\}/g, '.+').replace(/\{[a-z_]+\}/g, '[^/]+')}$`);

describe('OpenAPI document', () => {
  test('is served at /openapi.json and lists every route the table serves', async () => {
    const res = await fetch(`${ctx.gw.url}/openapi.json`);
    assert.equal(res.status, 200);
    const doc = await res.json();
    assert.equal(doc.openapi, '3.1.0');
    const templates = Object.keys(doc.paths);
    for (const [name, method, url] of AUTHENTICATED_ROUTES) {
      const pathOnly = url.split('?')[0];
      const documented = templates.find((t) => pattern(t).test(pathOnly) && doc.paths[t][method.toLowerCase()]);
      assert.ok(documented, `${name}: ${method} ${pathOnly} is documented`);
    }
    for (const [method, url] of [['GET', '/health'], ['GET', '/v1/models'], ['GET', '/api/models/pricing'], ['GET', '/openapi.json']]) {
      assert.ok(doc.paths[url]?.[method.toLowerCase()], `${method} ${url}`);
    }
    // Bodies come from the handlers' types: a key's new fields are there.
    const createKey = doc.paths['/api/keys'].post.requestBody.content['application/json'].schema;
    assert.ok(createKey.properties.rpm_limit && createKey.properties.end_user_budget);
  });

  test('schemathesis finds no 500 and no undocumented status on any operation', { timeout: 600_000 }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-schemathesis-'));
    try {
      // The admin token reaches schemathesis through its environment, never its command line.
      const config = path.join(dir, 'schemathesis.toml');
      writeFileSync(config, 'headers = { Authorization = "Bearer ${TOLLGATE_ADMIN_TOKEN}" }\n', { mode: 0o600 });
      const args = [
        '--config-file', config, 'run', `${ctx.gw.url}/openapi.json`,
        '--checks', 'not_a_server_error,status_code_conformance',
        '--phases', 'examples,coverage,fuzzing',
        '--max-examples', '15',
        '--generation-deterministic',
        '--workers', '2',
        '--request-timeout', '30',
        '--no-color',
      ];
      const { code, out } = await new Promise((resolve) => {
        execFile(path.join(ROOT, '.tools', 'bin', 'schemathesis'), args, {
          env: { ...process.env, TOLLGATE_ADMIN_TOKEN: ctx.gw.adminToken, SCHEMATHESIS_HOOKS: '' },
          cwd: dir, // its cache of found failures goes there, not in the checkout
          maxBuffer: 64 * 1024 * 1024,
          timeout: 540_000,
        }, (error, stdout, stderr) => resolve({ code: error ? error.code ?? 1 : 0, out: `${stdout}\n${stderr}` }));
      });
      const summary = out.split('\n').filter((l) => /passed|failed|error|operations|test cases/i.test(l)).slice(-12).join('\n');
      console.log(`[schemathesis]\n${summary}`);
      assert.equal(code, 0, out.slice(-8000));
      assert.doesNotMatch(out, /Authorization: Bearer tg-admin/, 'the token is not printed');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
