// Starts the built Worker under workerd (`wrangler dev`) with fresh local D1,
// KV and Durable Object state, pointed at the fake upstream. Shared by the
// integration tests, `npm start` (demo mode) and `npm run bench`.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { writePrivate } from '../scripts/dev-vars.mjs';
import { FAKE_PROVISIONING_KEY, startFakeUpstream } from './fake-upstream.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WRANGLER = path.join(ROOT, 'scripts', 'wrangler');
/** The only upstream key the fake accepts. */
export const FAKE_UPSTREAM_KEY = 'sk-or-v1-test-upstream-key';

/** Fails when something already listens on the port (never talk to a stale server). */
export function assertPortFree(port) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', () => reject(new Error(`port ${port} on 127.0.0.1 is already in use: stop what runs there or set PORT`)));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve()));
  });
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Runs a command to completion; rejects with its output on failure. */
export function run(cmd, args, { cwd = ROOT, env = process.env } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${out}`))));
  });
}

export async function applyMigrations(persistTo) {
  return run(WRANGLER, ['d1', 'migrations', 'apply', 'DB', '--local', '--persist-to', persistTo], {
    env: { ...process.env, CI: 'true' },
  });
}

async function waitForHealth(url, child, logs, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited (${child.exitCode}):\n${logs()}`);
    try {
      const res = await fetch(`${url}/health`);
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`gateway did not become healthy within ${timeoutMs} ms:\n${logs()}`);
}

/** Stops a detached child and everything it started (workerd included). */
export function killGroup(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('close', resolve);
    try {
      process.kill(-child.pid, 'SIGTERM');
    } catch {
      resolve();
    }
    setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, 3000).unref();
  });
}

/**
 * Serves the built worker. Options:
 *   vars         extra variables (override everything else)
 *   upstream     false to skip starting the fake upstream
 *   persistTo    state folder (default: a fresh temporary one, removed on stop)
 *   port         gateway port (default: a free one)
 *   inherit      print wrangler's output instead of collecting it
 *   syncPrices   pull the upstream's prices once it is up (default true)
 *   testScheduled  serve wrangler's /__scheduled route (default true; its middleware wraps every request,
 *                so the benchmark turns it off to match the JavaScript floor)
 */
export async function startGateway({ vars = {}, upstream = true, persistTo, port, inherit = false, syncPrices = true, testScheduled = true } = {}) {
  const fake = upstream ? await startFakeUpstream({ apiKey: FAKE_UPSTREAM_KEY }) : null;
  const fresh = !persistTo;
  const state = persistTo ?? mkdtempSync(path.join(tmpdir(), 'tollgate-state-'));
  await applyMigrations(state);

  const adminToken = vars.ADMIN_TOKEN ?? `tg-admin-${randomBytes(24).toString('hex')}`;
  const allVars = {
    ADMIN_TOKEN: adminToken,
    REQUEST_TIMEOUT: '60',
    ...(fake
      ? {
          AI_GATEWAY_BASE_URL: fake.url, AI_GATEWAY_API_KEY: FAKE_UPSTREAM_KEY, OPENROUTER_API_BASE: fake.url,
          OPENROUTER_PROVISIONING_KEY: FAKE_PROVISIONING_KEY,
          // Direct routes stay off until a test sets a provider's key.
          ANTHROPIC_BASE_URL: fake.url.replace('/api/v1', ''),
          GOOGLE_BASE_URL: fake.url.replace('/api/v1', ''),
          OPENAI_BASE_URL: fake.url.replace('/api/v1', '/openai/v1'),
        }
      : {}),
    ...vars,
  };
  // Variables go in an env file of our own (mode 600, never on a command line);
  // with --env-file, wrangler does not read the developer's .dev.vars.
  const envFile = path.join(state, 'gateway.env');
  writePrivate(envFile, Object.entries(allVars).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');

  if (port) await assertPortFree(port);
  // Free ports are picked before wrangler binds them, so a parallel test file can take one in between;
  // wrangler then exits with "Address already in use", and we start again on new ports.
  for (let launch = 1; ; launch++) {
    const gatewayPort = port ?? (await freePort());
    const inspectorPort = await freePort();
    const args = [
      'dev', '--ip', '127.0.0.1', '--port', String(gatewayPort), '--persist-to', state,
      '--env-file', envFile, ...(testScheduled ? ['--test-scheduled'] : []), '--show-interactive-dev-session=false', '--log-level', 'log',
      '--inspector-port', String(inspectorPort),
    ];
    let output = '';
    const child = spawn(WRANGLER, args, {
      cwd: ROOT,
      detached: true,
      env: { ...process.env, CI: 'true', WRANGLER_SEND_METRICS: 'false' },
      stdio: ['ignore', inherit ? 'inherit' : 'pipe', inherit ? 'inherit' : 'pipe'],
    });
    if (!inherit) {
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
    }
    const url = `http://127.0.0.1:${gatewayPort}`;
    const stop = async () => {
      await killGroup(child);
      if (fake) await fake.close();
      // The copy of the secrets wrangler read at its start is not left behind.
      rmSync(envFile, { force: true });
      if (fresh) rmSync(state, { recursive: true, force: true });
    };
    try {
      await waitForHealth(url, child, () => output);
      if (syncPrices) {
        const res = await adminClient(url, adminToken).call('POST', '/api/models/pricing/sync', {});
        if (res.status !== 200) throw new Error(`price sync failed: ${res.status} ${JSON.stringify(res.body)}`);
      }
    } catch (e) {
      if (!port && launch < 3 && output.includes('Address already in use')) {
        await killGroup(child);
        continue;
      }
      await stop();
      throw e;
    }
    // The runtime's log lines reach us through wrangler's output, a little after the requests that wrote them.
    const logsOnce = async (pattern, timeoutMs = 15_000) => {
      for (const end = Date.now() + timeoutMs; !pattern.test(output) && Date.now() < end; ) {
        await new Promise((r) => setTimeout(r, 50));
      }
      return output;
    };
    // SQL on the gateway's local D1 from outside (its rows). The gateway may be writing meanwhile: a
    // statement that finds the file locked (SQLITE_BUSY: wrangler does not wait) is tried again.
    const sql = async (command) => {
      for (let attempt = 1; ; attempt++) {
        try {
          const out = await run(`${ROOT}/scripts/wrangler`, ['d1', 'execute', 'DB', '--local', '--persist-to', state, '--json', '--command', command], {
            env: { ...process.env, CI: 'true' },
          });
          return JSON.parse(out.slice(out.indexOf('[')))[0].results;
        } catch (e) {
          if (attempt >= 10 || !String(e.message).includes('SQLITE_BUSY')) throw e;
          await new Promise((r) => setTimeout(r, 300));
        }
      }
    };
    return { url, adminToken, fake, state, child, inspectorPort, logs: () => output, logsOnce, sql, stop };
  }
}

/** A small client for the admin API used by tests, bench and demo mode. */
/** Runs `run(gw, admin)` against a gateway of its own (started with `options`), stopped after. */
export async function withGateway(options, run) {
  const gw = await startGateway(options);
  try {
    return await run(gw, adminClient(gw.url, gw.adminToken));
  } finally {
    await gw.stop();
  }
}

export function adminClient(url, token) {
  const call = async (method, p, body, headers = {}) => {
    const res = await fetch(url + p, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, headers: res.headers, body: json };
  };
  return {
    call,
    /** Creates a user and credits it `credit` USD (default 10; 0 for none). */
    async createUser(fields = {}, { credit = 10 } = {}) {
      const email = fields.email ?? `user-${randomBytes(6).toString('hex')}@example.com`;
      const res = await call('POST', '/api/admin/users', { name: 'Test User', ...fields, email });
      if (res.status !== 201) throw new Error(`create user: ${res.status} ${JSON.stringify(res.body)}`);
      if (credit) await this.credit(res.body.data.id, credit);
      return res.body.data;
    },
    async credit(userId, amount, { type = 'recharge', idempotencyKey, description } = {}) {
      const res = await call('POST', '/api/balance/admin/add', { user_id: userId, amount, type, ...(description ? { description } : {}) },
        idempotencyKey ? { 'idempotency-key': idempotencyKey } : {});
      if (res.status !== 200) throw new Error(`credit: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.data;
    },
    async createKey(userId, fields = {}) {
      const res = await call('POST', '/api/keys', { name: 'test key', user_id: userId, ...fields });
      if (res.status !== 201) throw new Error(`create key: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.data;
    },
  };
}
