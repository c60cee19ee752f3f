// `npm run new-tenant -- <name> [--dry-run] [--config wrangler.toml] [--route <hostname>] [--workers-dev] [--skip-build]`
//
// One Worker per tenant: writes the tenant's `[env.<name>]` section into wrangler.toml (worker
// `tollgate-<name>` with its own D1 database, KV namespace, Durable Object namespace and cron), then
// runs the wrangler commands that create those resources, set the secrets, apply the remote
// migrations and deploy. `--dry-run` prints the section and the commands and changes nothing.
// The generated ADMIN_TOKEN is written to `.tenants/<name>.admin-token` (mode 0600, gitignored) and
// never printed; `workers_dev` (a second public hostname) stays off unless `--workers-dev` asks, and
// `--route` gives the Worker its own hostname (a custom domain). With neither the Worker answers no
// HTTP request until a route is added, and the script says so.
// The secrets asked for (AI_GATEWAY_API_KEY, and OPENROUTER_PROVISIONING_KEY, which may be left empty) are
// asked first, before anything is created, without echo on a terminal or a line each from a pipe; each goes
// to `wrangler secret put` on its standard input, never on a command line.
// Environments do not inherit bindings in wrangler, so the section restates every one of them.

import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { writePrivate } from './dev-vars.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// TOLLGATE_WRANGLER: another wrangler (the tests' recorder of the commands run, as no Cloudflare account is at hand).
const WRANGLER = process.env.TOLLGATE_WRANGLER || path.join(ROOT, 'scripts', 'wrangler');
const USAGE = 'usage: npm run new-tenant -- <name: lowercase letters, digits, hyphens> [--dry-run] [--config <wrangler.toml>] [--route <hostname>] [--workers-dev] [--skip-build]';
const PLACEHOLDER_D1 = '<database_id from `wrangler d1 create`>';
const PLACEHOLDER_KV = '<id from `wrangler kv namespace create`>';

function fail(message) {
  console.error(`new-tenant: ${message}\n${USAGE}`);
  process.exit(2);
}

const argv = process.argv.slice(2);
let dryRun = false;
let skipBuild = false;
let workersDev = false;
let route = null;
let config = path.join(ROOT, 'wrangler.toml');
const names = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--dry-run') dryRun = true;
  else if (argv[i] === '--skip-build') skipBuild = true;
  else if (argv[i] === '--workers-dev') workersDev = true;
  else if (argv[i] === '--config') config = path.resolve(argv[++i] ?? fail('--config needs a file'));
  else if (argv[i] === '--route') route = argv[++i] ?? fail('--route needs a hostname');
  else if (argv[i] === '--help' || argv[i] === '-h') {
    console.log(USAGE);
    process.exit(0);
  } else if (argv[i].startsWith('-')) fail(`unknown option ${argv[i]}`);
  else names.push(argv[i]);
}
if (names.length !== 1) fail(names.length ? 'give one tenant name' : 'the tenant name is required');
const tenant = names[0];
if (!/^[a-z][a-z0-9-]{0,38}[a-z0-9]$/.test(tenant)) {
  fail(`"${tenant}" is not a tenant name: 2-40 lowercase letters, digits or hyphens, starting with a letter`);
}
if (route !== null && !/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i.test(route)) {
  fail(`--route takes a hostname (gw.example.com), not "${route}"`);
}
const worker = `tollgate-${tenant}`;
// Where the tenant is reached; without a route or workers_dev, nowhere yet.
const reached = route ? `https://${route}` : workersDev ? `https://${worker}.<your-subdomain>.workers.dev` : null;
const unreachable = `${worker} has no route yet, so it answers no HTTP request: add one (\`--route gw.example.com\`, or \`routes\` in [env.${tenant}]), or pass --workers-dev.`;
// Failed authentications per client are counted by Cloudflare's Rate Limiting binding, in a namespace of the tenant's own.
const rateLimitNamespace = 1000 + (parseInt(createHash('sha256').update(tenant).digest('hex').slice(0, 8), 16) % 2_000_000_000);
const toml = readFileSync(config, 'utf8');
if (new RegExp(`^\\[env\\.${tenant}\\]`, 'm').test(toml)) fail(`${path.basename(config)} already has [env.${tenant}]`);

function section(d1Id, kvId) {
  return `
# Tenant ${tenant}: written by \`npm run new-tenant -- ${tenant}\`. Secrets are set with wrangler secret put.
[env.${tenant}]
name = "${worker}"
workers_dev = ${workersDev}${route ? `\nroutes = [{ pattern = "${route}", custom_domain = true }]` : ''}
vars = { AI_GATEWAY_BASE_URL = "https://openrouter.ai/api/v1", OPENROUTER_API_BASE = "https://openrouter.ai/api/v1", REQUEST_TIMEOUT = "60", UPSTREAM_TITLE = "Tollgate" }
d1_databases = [{ binding = "DB", database_name = "${worker}", database_id = "${d1Id}", migrations_dir = "migrations" }]
kv_namespaces = [{ binding = "CACHE", id = "${kvId}" }]
durable_objects.bindings = [{ name = "ACCOUNTS", class_name = "AccountDo" }, { name = "ORGS", class_name = "OrgDo" }]
ratelimits = [{ name = "AUTH_FAILURES", namespace_id = "${rateLimitNamespace}", simple = { limit = 100, period = 60 } }]
r2_buckets = [{ binding = "REQUEST_LOGS", bucket_name = "${worker}-request-logs" }, { binding = "ARCHIVES", bucket_name = "${worker}-archives" }]
queues = { producers = [{ binding = "ALERTS", queue = "${worker}-alerts" }, { binding = "JOBS", queue = "${worker}-jobs" }], consumers = [{ queue = "${worker}-alerts", max_batch_size = 10, max_batch_timeout = 1, max_retries = 100 }, { queue = "${worker}-jobs", max_batch_size = 50, max_batch_timeout = 1, max_retries = 5 }] }
triggers = { crons = ["*/15 * * * *"] }
`;
}

const adminToken = `tg-admin-${randomBytes(32).toString('hex')}`;
const tokenFile = path.join(ROOT, '.tenants', `${tenant}.admin-token`);
const commands = [
  ['d1', 'create', worker],
  ['kv', 'namespace', 'create', worker],
  ['queues', 'create', `${worker}-alerts`],
  ['queues', 'create', `${worker}-jobs`],
  ['r2', 'bucket', 'create', `${worker}-request-logs`],
  ['r2', 'bucket', 'create', `${worker}-archives`],
  ['secret', 'put', 'AI_GATEWAY_API_KEY', '-e', tenant],
  ['secret', 'put', 'ADMIN_TOKEN', '-e', tenant],
  ['secret', 'put', 'OPENROUTER_PROVISIONING_KEY', '-e', tenant],
  ['d1', 'migrations', 'apply', 'DB', '--remote', '-e', tenant],
  ['deploy', '-e', tenant],
];
const shown = (args) => `scripts/wrangler ${args.join(' ')}`;

if (dryRun) {
  console.log(`Dry run: nothing is written or run.\n\nWould append to ${path.relative(process.cwd(), config) || config}:`);
  console.log(section(PLACEHOLDER_D1, PLACEHOLDER_KV));
  console.log('Would then run (after `npm run build`):');
  for (const c of commands) console.log(`  ${shown(c)}`);
  console.log(`\nADMIN_TOKEN would be generated and stored in ${path.relative(process.cwd(), tokenFile) || tokenFile} (mode 0600), never printed;`);
  console.log('AI_GATEWAY_API_KEY and the optional');
  console.log('OPENROUTER_PROVISIONING_KEY are asked for (leave the latter empty to skip provisioning).');
  if (!reached) console.log(`\nNote: ${unreachable}`);
  process.exit(0);
}

function wrangler(args, input) {
  console.log(`\n$ ${shown(args)}`);
  const r = spawnSync(WRANGLER, args, { cwd: ROOT, input, stdio: [input === undefined ? 'inherit' : 'pipe', 'pipe', 'inherit'], encoding: 'utf8' });
  process.stdout.write(r.stdout ?? '');
  if (r.status !== 0) {
    console.error(`new-tenant: \`${shown(args)}\` failed (exit ${r.status}). Fix the cause and run the remaining commands by hand (docs/deploy.md).`);
    process.exit(1);
  }
  return r.stdout ?? '';
}

/** Lines of a piped standard input, read once. */
let piped = null;
function pipedLine() {
  piped ??= readFileSync(0, 'utf8').split(/\r?\n/);
  return piped.shift() ?? '';
}

/** A secret from the operator: typed without echo on a terminal (the prompt on stderr), else a line of stdin. */
function askSecret(question) {
  if (!process.stdin.isTTY) return Promise.resolve(pipedLine().trim());
  process.stderr.write(`${question}: `);
  return new Promise((resolve) => {
    let text = '';
    process.stdin.setRawMode(true);
    process.stdin.resume();
    const onData = (chunk) => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\u0003') {
          process.stdin.setRawMode(false);
          process.stderr.write('\n');
          process.exit(130);
        } else if (ch === '\r' || ch === '\n') {
          process.stdin.setRawMode(false);
          process.stdin.pause();
          process.stdin.off('data', onData);
          process.stderr.write('\n');
          return resolve(text.trim());
        } else if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1);
        else text += ch;
      }
    };
    process.stdin.on('data', onData);
  });
}

// Asked before anything is created, so a tenant is not left half made for want of a key.
const upstreamKey = await askSecret('AI_GATEWAY_API_KEY (the OpenRouter API key this tenant calls with)');
if (!upstreamKey) fail('AI_GATEWAY_API_KEY is required: nothing was created');
const provisioningKey = await askSecret('OPENROUTER_PROVISIONING_KEY (optional: Enter to skip provisioning)');

if (!skipBuild) {
  const build = spawnSync(path.join(ROOT, 'scripts', 'build'), ['release'], { cwd: ROOT, stdio: 'inherit' });
  if (build.status !== 0) process.exit(build.status ?? 1);
}
const d1Id = wrangler(commands[0]).match(/database_id\s*=\s*"([^"]+)"|"database_id":\s*"([^"]+)"/)?.slice(1).find(Boolean);
const kvId = wrangler(commands[1]).match(/id\s*=\s*"([0-9a-f]{32})"|"id":\s*"([0-9a-f]{32})"/)?.slice(1).find(Boolean);
if (!d1Id || !kvId) {
  console.error('new-tenant: could not read the new database or namespace id from wrangler\'s output; add them to the section by hand.');
}
writeFileSync(config, toml.trimEnd() + '\n' + section(d1Id ?? PLACEHOLDER_D1, kvId ?? PLACEHOLDER_KV));
console.log(`\nWrote [env.${tenant}] to ${config}.`);
if (!d1Id || !kvId) process.exit(1);
wrangler(commands[2]);
wrangler(commands[3]);
wrangler(commands[4]);
wrangler(commands[5]);
wrangler(commands[6], upstreamKey);
mkdirSync(path.dirname(tokenFile), { recursive: true, mode: 0o700 });
writePrivate(tokenFile, `${adminToken}\n`);
wrangler(commands[7], adminToken);
if (provisioningKey) wrangler(commands[8], provisioningKey);
else console.log('\nOPENROUTER_PROVISIONING_KEY left unset: provisioning is off (set it later with `scripts/wrangler secret put OPENROUTER_PROVISIONING_KEY -e ' + tenant + '`).');
wrangler(commands[9]);
const deployed = wrangler(commands[10]);
console.log(`\n${worker} is deployed. Its ADMIN_TOKEN is in ${tokenFile} (readable by you only).`);
console.log(reached ? `It answers at ${reached}.` : `Note: ${unreachable}`);
// Prices come with the cron's first run (every 15 minutes): until then every model is unpriced (404). So
// they are asked for now where the Worker can be reached (a new custom domain may not answer yet).
const url = route ? `https://${route}` : deployed.match(/https:\/\/[\w.-]+\.workers\.dev/)?.[0];
let synced = false;
if (url) {
  try {
    const res = await fetch(`${url}/api/models/pricing/sync`, { method: 'POST', headers: { authorization: `Bearer ${adminToken}` }, signal: AbortSignal.timeout(30_000) });
    synced = res.ok;
    console.log(res.ok ? 'Prices synced from OpenRouter.' : `Syncing prices answered ${res.status}.`);
  } catch (e) {
    console.log(`Syncing prices failed: ${e.message}.`);
  }
}
if (!synced) {
  const file = path.relative(process.cwd(), tokenFile) || tokenFile;
  console.log(`Prices arrive with the first cron run (within 15 minutes); to have them sooner (bash):\n  curl -X POST ${url ?? '<its URL>'}/api/models/pricing/sync -H @<(printf 'Authorization: Bearer %s' "$(cat ${file})")`);
}
