// `npm run provision-user -- --email=ann@example.com --name="Ann" [--credit=10] [--limit=500]
//   [--limit-reset=monthly] [--utm-source=ads] [--locale=zh] [--url=https://tollgate-acme.example.workers.dev]
//   [--admin-token-file=…]`
//
// Asks a running gateway (local by default) to make a user, a gateway key and — when the gateway has
// OPENROUTER_PROVISIONING_KEY — an upstream OpenRouter key with a spend limit (cents). `--credit` (USD)
// credits the new account, so its key can spend at once (a new account holds $0). Prints what was made and
// the secrets, once. The admin token never travels on the command line (where `ps` shows it):
// it comes from the file named by --admin-token-file, else $ADMIN_TOKEN (either only with --url), else .dev.vars.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { readDevVars } from './dev-vars.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OPTIONS = ['email', 'name', 'credit', 'limit', 'limit-reset', 'utm-source', 'locale', 'url', 'admin-token-file'];
const USAGE = `usage: npm run provision-user -- --email=<address> --name=<name> [--credit=<USD for the account>]
       [--limit=<cents, default 1000: the upstream OpenRouter key's limit>]
       [--limit-reset=daily|weekly|monthly|none] [--utm-source=<text>] [--locale=<en, zh, …>]
       [--url=<gateway URL, default http://127.0.0.1:$PORT or 8787>] [--admin-token-file=<file holding the token>]
The admin token comes from --admin-token-file, else $ADMIN_TOKEN (either only with --url naming the gateway),
else .dev.vars (a gateway on this machine only); never from an argument.`;

function fail(message, code = 2) {
  console.error(`provision-user: ${message}`);
  if (code === 2) console.error(USAGE);
  process.exit(code);
}

/** --name=value or --name value; every option known, none repeated. */
export function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    const m = arg.match(/^--([a-z-]+)(?:=(.*))?$/s);
    if (!m) fail(`unexpected argument "${arg}"`);
    const [, name, inline] = m;
    if (name === 'admin-token') fail('--admin-token would show the token to every user of this machine (ps); set ADMIN_TOKEN or use --admin-token-file');
    if (!OPTIONS.includes(name)) fail(`unknown option --${name}`);
    if (name in out) fail(`--${name} given twice`);
    const value = inline ?? argv[++i];
    if (value === undefined || value.startsWith('--')) fail(`--${name} needs a value`);
    out[name] = value;
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
if (!args.email) fail('--email is required');
if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(args.email)) fail(`--email "${args.email}" is not an e-mail address`);
if (!args.name?.trim()) fail('--name is required');
const body = { email: args.email, name: args.name.trim() };
if (args.limit !== undefined) {
  if (!/^\d+$/.test(args.limit)) fail(`--limit is in cents: a whole number like 500 ($5.00), not "${args.limit}"`);
  body.limit = Number(args.limit);
}
if (args['limit-reset'] !== undefined) {
  const reset = args['limit-reset'];
  if (!['daily', 'weekly', 'monthly', 'none'].includes(reset)) fail(`--limit-reset must be daily, weekly, monthly or none, not "${reset}"`);
  body.limit_reset = reset === 'none' ? null : reset;
}
const credit = args.credit === undefined ? null : Number(args.credit);
if (credit !== null && !(/^\d+(\.\d{1,6})?$/.test(args.credit) && credit > 0)) fail(`--credit is in USD: a positive amount like 10 or 2.50, not "${args.credit}"`);
if (args['utm-source'] !== undefined) body.utm_source = args['utm-source'];
if (args.locale !== undefined) {
  if (!/^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$/.test(args.locale)) fail(`--locale must look like en, zh or pt-BR, not "${args.locale}"`);
  body.locale = args.locale;
}
// A token from the environment or a file may be a deployed tenant's: it is sent only where --url says. The
// default, this machine's port (where any local user could listen), is for the local gateway's own token.
if (!args.url && (args['admin-token-file'] || process.env.ADMIN_TOKEN)) {
  fail('a token from ADMIN_TOKEN or --admin-token-file is sent only to a gateway you name: name the gateway with --url (http://127.0.0.1:8787 for `npm start`)');
}
const url = (args.url ?? `http://127.0.0.1:${process.env.PORT || 8787}`).replace(/\/+$/, '');
let parsed;
try {
  parsed = new URL(url);
} catch {
  fail(`--url "${url}" is not a URL`);
}
// The operator token goes only over TLS, but to this machine.
const local = ['127.0.0.1', 'localhost', '[::1]'].includes(parsed.hostname);
if (parsed.protocol !== 'https:' && !local) fail(`--url must be https:// for a gateway not on this machine (the operator token would cross in clear)`);
function tokenFromFile(file) {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (e) {
    return fail(`cannot read --admin-token-file ${file}: ${e.code ?? e.message}`);
  }
}
// The file named on the command line first; the local gateway's own token (.dev.vars) only for a local gateway.
const token = (args['admin-token-file'] ? tokenFromFile(args['admin-token-file']) : process.env.ADMIN_TOKEN)
  || (local ? readDevVars(path.join(ROOT, '.dev.vars')).ADMIN_TOKEN : undefined);
if (!token) fail(`no admin token: pass --admin-token-file, set ADMIN_TOKEN${local ? ', or run `npm start` once to generate one in .dev.vars' : ' (the local .dev.vars token is used only for a local gateway)'}`);

let res;
try {
  res = await fetch(`${url}/api/admin/provision`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
} catch (e) {
  fail(`could not reach the gateway at ${url} (${e.cause?.code ?? e.message}); is it running? (npm start)`, 1);
}
const answer = await res.json().catch(() => null);
if (res.status !== 201) fail(`the gateway refused (${res.status}): ${answer?.error?.message ?? 'no details'}`, 1);

const { user, key, openrouter_key: upstream } = answer.data;
console.log(`Provisioned ${user.name} <${user.email}> on ${url}`);
console.log(`  user id        ${user.id} (locale ${user.locale}${user.utm_source ? `, utm_source ${user.utm_source}` : ''})`);
console.log(`  gateway key    ${key.id}`);
if (upstream) {
  const limit = upstream.limit === null ? 'no limit' : `$${(upstream.limit / 100).toFixed(2)}${upstream.limit_reset ? ` per ${{ daily: 'day', weekly: 'week', monthly: 'month' }[upstream.limit_reset]}` : ''}`;
  console.log(`  upstream key   ${upstream.id} (OpenRouter ${upstream.upstream_hash.slice(0, 12)}…, ${limit})`);
} else {
  console.log('  upstream key   none (the gateway has no OPENROUTER_PROVISIONING_KEY)');
}
if (credit !== null) {
  // Keyed by the new user: run again, the same credit is not made twice.
  const credited = await fetch(`${url}/api/balance/admin/add`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': `provision-credit-${user.id}` },
    body: JSON.stringify({ user_id: user.id, amount: credit, description: 'provisioned' }),
  }).catch((e) => ({ ok: false, status: e.cause?.code ?? e.message, json: async () => null }));
  const said = await credited.json().catch(() => null);
  if (credited.ok) console.log(`  balance        $${said.data.balance}`);
  else console.error(`provision-user: the credit failed (${credited.status}: ${said?.error?.message ?? 'no details'}); credit ${user.id} with POST /api/balance/admin/add`);
} else {
  console.log(`  balance        $0: credit it before the key can spend (--credit, or POST /api/balance/admin/add)`);
}
console.log('\nSecrets — shown this once, store them now:');
console.log(`  TOLLGATE_API_KEY=${key.key}`);
if (upstream) console.log(`  OPENROUTER_API_KEY=${upstream.key}`);
