// The operator scripts, run as an operator runs them: `npm run provision-user`
// against a running gateway, and `npm run new-tenant -- <name> --dry-run`.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';

import { gatewayForFile } from './fixture.mjs';
import { ROOT, freePort, withGateway } from './harness.mjs';
import { SETTINGS, readDevVars, setDevVar, weakOperatorToken } from '../scripts/dev-vars.mjs';

const ctx = gatewayForFile();

/** Runs `npm run <script> -- args` without blocking this process (the fake upstream lives here). */
function npmRun(script, args, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn('npm', ['run', '--silent', script, '--', ...args], { cwd: ROOT, env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

describe('npm run provision-user', () => {
  // The admin token travels in the environment, never as an argument (where `ps` would show it).
  const common = () => [`--url=${ctx.gw.url}`];
  const asAdmin = () => ({ ADMIN_TOKEN: ctx.gw.adminToken });

  test('provisions a user with an upstream key and prints the secrets once', async () => {
    const r = await npmRun('provision-user', ['--email=script@example.com', '--name', 'Script User', '--limit=500', '--limit-reset=weekly', '--utm-source=cli', '--locale=zh', ...common()], asAdmin());
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /Provisioned Script User <script@example.com>/);
    assert.match(r.out, /\$5\.00 per week/);
    const gatewayKey = r.out.match(/TOLLGATE_API_KEY=(sk-tg-v1-[0-9a-f]{64})/)?.[1];
    const upstreamKey = r.out.match(/OPENROUTER_API_KEY=(sk-or-v1-[0-9a-f]{64})/)?.[1];
    assert.ok(gatewayKey && upstreamKey, r.out);
    assert.ok(!r.out.includes(ctx.gw.adminToken), 'the admin token is never printed');
    const users = await ctx.admin.call('GET', '/api/admin/users?search=script@example.com');
    assert.equal(users.body.data[0].locale, 'zh');
    const hash = createHash('sha256').update(upstreamKey).digest('hex');
    const upstream = [...ctx.gw.fake.keys.values()].find((k) => k.data.hash === hash);
    assert.deepEqual([upstream.data.limit, upstream.data.limit_reset], [5, 'weekly']);
    const me = await fetch(`${ctx.gw.url}/api/v1/key`, { headers: { authorization: `Bearer ${gatewayKey}` } });
    assert.equal(me.status, 200, 'the printed gateway key works');
    assert.match(r.out, /balance {8}\$0: credit it before the key can spend/);
  });

  test('--credit credits the new account, so its key can spend at once', async () => {
    const r = await npmRun('provision-user', ['--email=credited@example.com', '--name=Credited', '--credit=2.5', ...common()], asAdmin());
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /balance {8}\$2\.5\b/);
    const gatewayKey = r.out.match(/TOLLGATE_API_KEY=(sk-tg-v1-[0-9a-f]{64})/)?.[1];
    const chat = await fetch(`${ctx.gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { authorization: `Bearer ${gatewayKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(chat.status, 200);
    const bad = await npmRun('provision-user', ['--email=c2@example.com', '--name=X', '--credit=-1', ...common()], asAdmin());
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--credit is in USD/);
  });

  test('checks its arguments before calling anything, with clear messages', async () => {
    for (const [args, message] of [
      [['--name=X'], /--email is required/],
      [['--email=nope', '--name=X'], /is not an e-mail address/],
      [['--email=a@example.com'], /--name is required/],
      [['--email=a@example.com', '--name=X', '--limit=5.5'], /--limit is in cents/],
      [['--email=a@example.com', '--name=X', '--limit-reset=yearly'], /--limit-reset must be daily, weekly, monthly or none/],
      [['--email=a@example.com', '--name=X', '--colour=red'], /unknown option --colour/],
      [['--email=a@example.com', '--name=X', '--locale=English!'], /--locale must look like/],
      [['--email=a@example.com', '--name=X', '--admin-token=secret'], /would show the token .* set ADMIN_TOKEN or use --admin-token-file/],
    ]) {
      const r = await npmRun('provision-user', [...args, ...common()], asAdmin());
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.err, message);
      assert.match(r.err, /usage: npm run provision-user/);
    }
  });

  test('takes the admin token from a file', async () => {
    const file = path.join(ROOT, '.wrangler', `token-${process.pid}`);
    writeFileSync(file, `${ctx.gw.adminToken}\n`, { mode: 0o600 });
    try {
      // The file named wins over an ADMIN_TOKEN left in the environment (another tenant's, say).
      const r = await npmRun('provision-user', ['--email=file@example.com', '--name=File', ...common(), `--admin-token-file=${file}`], { ADMIN_TOKEN: 'another-tenants-token' });
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /Provisioned File <file@example.com>/);
    } finally {
      rmSync(file, { force: true });
    }
  });

  test('reports the gateway refusing, and a gateway that is not there', async () => {
    const dup = await npmRun('provision-user', ['--email=script@example.com', '--name=Again', ...common()], asAdmin());
    assert.equal(dup.code, 1);
    assert.match(dup.err, /the gateway refused \(409\)/);
    const wrongToken = await npmRun('provision-user', ['--email=t@example.com', '--name=T', `--url=${ctx.gw.url}`], { ADMIN_TOKEN: 'wrong' });
    assert.equal(wrongToken.code, 1);
    assert.match(wrongToken.err, /refused \(401\)/);
    const away = await npmRun('provision-user', ['--email=t@example.com', '--name=T', `--url=http://127.0.0.1:${await freePort()}`], { ADMIN_TOKEN: 'x' });
    assert.equal(away.code, 1);
    assert.match(away.err, /could not reach the gateway/);
    // The operator token crosses no network in clear.
    const clear = await npmRun('provision-user', ['--email=t@example.com', '--name=T', '--url=http://gw.acme.example'], { ADMIN_TOKEN: 'x' });
    assert.equal(clear.code, 2);
    assert.match(clear.err, /must be https/);
    // A token from the environment or a file (a deployed tenant's, perhaps) goes only to a gateway named.
    const unnamed = await npmRun('provision-user', ['--email=t@example.com', '--name=T'], { ADMIN_TOKEN: 'x', PORT: String(await freePort()) });
    assert.equal(unnamed.code, 2);
    assert.match(unnamed.err, /name the gateway with --url/);
  });
});

describe('npm run new-tenant -- --dry-run', () => {
  test('prints a tenant section wrangler accepts and the commands, and changes nothing', async () => {
    const config = path.join(ROOT, 'wrangler.toml');
    const before = readFileSync(config, 'utf8');
    const r = await npmRun('new-tenant', ['acme', '--dry-run']);
    assert.equal(r.code, 0, r.err);
    assert.equal(readFileSync(config, 'utf8'), before, 'a dry run writes nothing');
    assert.match(r.out, /name = "tollgate-acme"/);
    assert.match(r.out, /workers_dev = false/, 'no second public hostname unless asked');
    assert.match(r.out, /stored in \.tenants\/acme\.admin-token \(mode 0600\), never printed/);
    assert.doesNotMatch(r.out, /tg-admin-[0-9a-f]{16}/, 'no token is printed');
    assert.match(r.out, /tollgate-acme has no route yet/, 'a tenant reached nowhere is said to be');
    const asked = await npmRun('new-tenant', ['acme', '--dry-run', '--workers-dev']);
    assert.match(asked.out, /workers_dev = true/);
    assert.doesNotMatch(asked.out, /no route yet/);
    const routed = await npmRun('new-tenant', ['acme', '--dry-run', '--route', 'gw.acme.example']);
    assert.match(routed.out, /routes = \[\{ pattern = "gw\.acme\.example", custom_domain = true \}\]/);
    const badRoute = await npmRun('new-tenant', ['acme', '--dry-run', '--route', 'https://gw.acme.example/*']);
    assert.equal(badRoute.code, 2);
    for (const cmd of ['d1 create tollgate-acme', 'kv namespace create tollgate-acme', 'secret put AI_GATEWAY_API_KEY -e acme',
      'secret put ADMIN_TOKEN -e acme', 'd1 migrations apply DB --remote -e acme', 'deploy -e acme']) {
      assert.ok(r.out.includes(`scripts/wrangler ${cmd}`), cmd);
    }
    // With the ids wrangler would hand out filled in, the section deploys (checked by wrangler itself).
    const section = routed.out.split('Would append to wrangler.toml:\n')[1].split('Would then run')[0]
      .replace(/<database_id[^>]*>/, '11111111-2222-4333-8444-555555555555')
      .replace(/<id from[^>]*>/, '0123456789abcdef0123456789abcdef');
    const trial = path.join(ROOT, '.wrangler-new-tenant-test.toml');
    writeFileSync(trial, before.trimEnd() + '\n' + section);
    try {
      const check = spawnSync(path.join(ROOT, 'scripts', 'wrangler'), ['deploy', '--dry-run', '-e', 'acme', '--config', trial, '--outdir', path.join(ROOT, '.wrangler', 'new-tenant-test')], { cwd: ROOT, encoding: 'utf8' });
      assert.equal(check.status, 0, check.stdout + check.stderr);
      assert.match(check.stdout, /env\.DB \(tollgate-acme\)/);
      assert.match(check.stdout, /env\.ACCOUNTS \(AccountDo\)/);
    } finally {
      rmSync(trial, { force: true });
    }
  });

  test('refuses bad names and tenants that already exist', async () => {
    const bad = await npmRun('new-tenant', ['Acme_Corp', '--dry-run']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /is not a tenant name/);
    const none = await npmRun('new-tenant', ['--dry-run']);
    assert.equal(none.code, 2);
    assert.match(none.err, /the tenant name is required/);
    const existing = path.join(ROOT, '.wrangler-new-tenant-existing.toml');
    writeFileSync(existing, readFileSync(path.join(ROOT, 'wrangler.toml'), 'utf8') + '\n[env.acme]\nname = "tollgate-acme"\n');
    try {
      const again = await npmRun('new-tenant', ['acme', '--dry-run', '--config', existing]);
      assert.equal(again.code, 2);
      assert.match(again.err, /already has \[env\.acme\]/);
    } finally {
      rmSync(existing, { force: true });
    }
  });
});

describe('npm run new-tenant (commands recorded: no Cloudflare account here)', () => {
  /** Runs new-tenant for `tenant` with `typed` on its standard input (a pipe, as from a script), wrangler recorded. */
  function newTenant(tenant, typed) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'new-tenant-'));
    const config = path.join(dir, 'wrangler.toml');
    writeFileSync(config, readFileSync(path.join(ROOT, 'wrangler.toml'), 'utf8'));
    const record = path.join(dir, 'calls.jsonl');
    writeFileSync(record, '');
    const r = spawnSync('node', [path.join(ROOT, 'scripts', 'new-tenant.mjs'), tenant, '--config', config, '--skip-build'], {
      cwd: ROOT, input: typed, encoding: 'utf8',
      env: { ...process.env, TOLLGATE_WRANGLER: path.join(ROOT, 'tests', 'fixtures', 'wrangler-recorder.mjs'), RECORD_FILE: record },
    });
    const calls = readFileSync(record, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const tokenFile = path.join(ROOT, '.tenants', `${tenant}.admin-token`);
    let token = null;
    try {
      token = readFileSync(tokenFile, 'utf8').trim();
      assert.equal(statSync(tokenFile).mode & 0o777, 0o600);
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
    const written = readFileSync(config, 'utf8');
    rmSync(tokenFile, { force: true });
    rmSync(dir, { recursive: true, force: true });
    return { ...r, calls, token, written };
  }

  test('the keys asked for go to `secret put` on its standard input, never on a command line; the tenant is deployed', () => {
    const upstream = 'sk-or-v1-recorded-upstream-key';
    const r = newTenant('ci-recorded-a', `${upstream}\n\n`);
    assert.equal(r.status, 0, r.stderr);
    const put = (name) => r.calls.find((c) => c.args.join(' ') === `secret put ${name} -e ci-recorded-a`);
    assert.equal(put('AI_GATEWAY_API_KEY')?.stdin, upstream);
    assert.match(r.token, /^tg-admin-[0-9a-f]{64}$/);
    assert.equal(put('ADMIN_TOKEN')?.stdin, r.token, 'the token stored is the one set');
    assert.equal(put('OPENROUTER_PROVISIONING_KEY'), undefined, 'left empty: not set');
    assert.deepEqual(r.calls[0].args, ['d1', 'create', 'tollgate-ci-recorded-a']);
    assert.deepEqual(r.calls.at(-1).args, ['deploy', '-e', 'ci-recorded-a']);
    for (const c of r.calls) {
      assert.ok(!c.args.some((a) => a.includes(upstream) || a.includes(r.token)), `no secret in: ${c.args.join(' ')}`);
    }
    assert.ok(!r.stdout.includes(upstream) && !r.stdout.includes(r.token) && !r.stderr.includes(r.token), 'nor printed');
    assert.match(r.written, /\[env\.ci-recorded-a\][^]*database_id = "11111111-2222-4333-8444-555555555555"/);
    assert.match(r.stdout, /api\/models\/pricing\/sync/, 'the operator is told how prices arrive');

    const withProvisioning = newTenant('ci-recorded-b', 'sk-or-v1-b\nsk-or-v1-provisioning\n');
    assert.equal(withProvisioning.status, 0, withProvisioning.stderr);
    const provisioning = withProvisioning.calls.find((c) => c.args[2] === 'OPENROUTER_PROVISIONING_KEY');
    assert.equal(provisioning?.stdin, 'sk-or-v1-provisioning');
  });

  test('without an upstream key nothing is created', () => {
    const r = newTenant('ci-recorded-c', '\n');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /AI_GATEWAY_API_KEY is required: nothing was created/);
    assert.deepEqual(r.calls, []);
    assert.doesNotMatch(r.written, /ci-recorded-c/);
  });
});

describe('npm run fleet', () => {
  test('runs one command across every tenant of wrangler.toml, in order, and --dry-run runs nothing', async () => {
    const fleet = path.join(ROOT, '.wrangler-fleet-test.toml');
    writeFileSync(fleet, `${readFileSync(path.join(ROOT, 'wrangler.toml'), 'utf8')}
[env.acme]
name = "tollgate-acme"

[env.globex]
name = "tollgate-globex"

[env.initech]
name = "tollgate-initech"
`);
    try {
      const list = await npmRun('fleet', ['list', '--config', fleet]);
      assert.equal(list.code, 0, list.err);
      assert.deepEqual(list.out.trim().split('\n'), ['acme\ttollgate-acme', 'globex\ttollgate-globex', 'initech\ttollgate-initech']);
      const migrate = await npmRun('fleet', ['migrate', '--dry-run', '--config', fleet]);
      assert.equal(migrate.code, 0, migrate.err);
      const lines = migrate.out.split('\n').filter((l) => l.includes('scripts/wrangler'));
      assert.deepEqual(lines.map((l) => l.match(/\] (\w+):/)[1]), ['acme', 'globex', 'initech'], 'every tenant, in the file\'s order');
      assert.ok(lines.every((l) => l.includes('d1 migrations apply DB --remote -e')));
      const canary = await npmRun('fleet', ['deploy', '--canary', '1', '--dry-run', '--config', fleet]);
      assert.equal(canary.out.split('\n').filter((l) => l.includes('scripts/wrangler deploy')).length, 1, 'one tenant first');
      assert.match(canary.out, /Check them, then run npm run fleet -- deploy for the rest/);
      assert.ok(canary.out.indexOf('scripts/build release') >= 0 && canary.out.indexOf('scripts/build release') < canary.out.indexOf('deploy -e'), 'built before it is deployed');
      assert.doesNotMatch((await npmRun('fleet', ['deploy', '--skip-build', '--dry-run', '--config', fleet])).out, /scripts\/build/);
      const some = await npmRun('fleet', ['versions', '--only', 'globex', '--dry-run', '--config', fleet]);
      assert.match(some.out, /globex: scripts\/wrangler deployments list -e globex/);
      assert.doesNotMatch(some.out, /acme/);
      const bad = await npmRun('fleet', ['deploy', '--only', 'nobody', '--config', fleet]);
      assert.equal(bad.code, 2);
      assert.match(bad.err, /no such tenant/);
      const none = await npmRun('fleet', []);
      assert.equal(none.code, 2);
    } finally {
      rmSync(fleet, { force: true });
    }
  });
});

test('npm start takes from the environment every setting the Worker reads', () => {
  // Each is read as `text(env, "NAME")`, `number(env, …)` or `base_url(env, …)`; bindings are not settings.
  const read = new Set([...readFileSync(path.join(ROOT, 'src', 'env.rs'), 'utf8').matchAll(/\(env, "([A-Z][A-Z0-9_]+)"/g)].map((m) => m[1]));
  const settings = [...read].filter((n) => !n.startsWith('FAULT_'));
  assert.ok(settings.length > 20, settings.join(' '));
  assert.deepEqual(settings.filter((n) => !SETTINGS.includes(n)), [], 'read by the Worker, dropped by npm start');
});

test('npm start replaces a weak operator token in .dev.vars on a line of its own, and the gateway refuses one', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'devvars-'));
  try {
    const file = path.join(dir, '.dev.vars');
    // The example's placeholder, and a last line without its newline.
    writeFileSync(file, 'ADMIN_TOKEN=replace-with-a-long-random-token\nAI_GATEWAY_API_KEY=sk-or-v1-x', { mode: 0o644 });
    assert.ok(weakOperatorToken(readDevVars(file).ADMIN_TOKEN));
    assert.ok(weakOperatorToken('x'.repeat(31)) && !weakOperatorToken('x'.repeat(32)));
    setDevVar(file, 'ADMIN_TOKEN', 'tg-admin-0123456789abcdef0123456789abcdef');
    assert.deepEqual(readDevVars(file), { AI_GATEWAY_API_KEY: 'sk-or-v1-x', ADMIN_TOKEN: 'tg-admin-0123456789abcdef0123456789abcdef' });
    assert.equal(statSync(file).mode & 0o777, 0o600);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // The gateway itself turns a weak token off: the example's placeholder opens nothing.
  for (const weak of ['replace-with-a-long-random-token', 'short-operator-token']) {
    await withGateway({ vars: { ADMIN_TOKEN: weak }, syncPrices: false }, async (gw) => {
      const res = await fetch(`${gw.url}/api/admin/users`, { headers: { authorization: `Bearer ${weak}` } });
      assert.equal(res.status, 401, weak);
      assert.equal((await res.json()).error.message, 'invalid credential', 'a guess is not confirmed to the caller');
      const said = /ADMIN_TOKEN is shorter than 32 characters or the example's placeholder/;
      for (let i = 0; i < 50 && !said.test(gw.logs()); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(gw.logs(), said, 'the operator is told why');
    });
  }
});
