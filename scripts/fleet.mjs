// `npm run fleet -- <list|migrate|deploy|versions> [--only a,b] [--canary N] [--dry-run] [--skip-build] [--config wrangler.toml]`
//
// Runs one wrangler command across every tenant of a fleet: the `[env.<tenant>]` sections of
// wrangler.toml (`npm run new-tenant` writes them). Tenants go one after another, in the order of the
// file, and the run stops at the first failure, so a bad migration or version reaches one tenant only.
//   list      the tenants and their Worker names
//   migrate   d1 migrations apply DB --remote, per tenant (always before deploy: migrations only add)
//   deploy    builds the release once (scripts/build release; --skip-build deploys what build/ holds), then
//             deploy, per tenant; --canary N deploys the first N tenants and stops, for a look first
//   versions  deployments list, per tenant: which version each serves
// --only picks tenants by name; --dry-run prints the commands and runs nothing.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WRANGLER = path.join(ROOT, 'scripts', 'wrangler');
const USAGE = 'usage: npm run fleet -- <list|migrate|deploy|versions> [--only a,b] [--canary N] [--dry-run] [--skip-build] [--config <wrangler.toml>]';

function fail(message) {
  console.error(`fleet: ${message}\n${USAGE}`);
  process.exit(2);
}

const argv = process.argv.slice(2);
let config = path.join(ROOT, 'wrangler.toml');
let dryRun = false;
let skipBuild = false;
let only = null;
let canary = null;
const words = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--dry-run') dryRun = true;
  else if (argv[i] === '--skip-build') skipBuild = true;
  else if (argv[i] === '--config') config = path.resolve(argv[++i] ?? fail('--config needs a file'));
  else if (argv[i] === '--only') only = (argv[++i] ?? fail('--only needs tenant names')).split(',').map((s) => s.trim()).filter(Boolean);
  else if (argv[i] === '--canary') {
    canary = Number(argv[++i]);
    if (!Number.isInteger(canary) || canary < 1) fail('--canary needs a whole number ≥ 1');
  } else if (argv[i] === '--help' || argv[i] === '-h') {
    console.log(USAGE);
    process.exit(0);
  } else if (argv[i].startsWith('-')) fail(`unknown option ${argv[i]}`);
  else words.push(argv[i]);
}
const COMMANDS = {
  list: null,
  migrate: (t) => ['d1', 'migrations', 'apply', 'DB', '--remote', '-e', t],
  deploy: (t) => ['deploy', '-e', t],
  versions: (t) => ['deployments', 'list', '-e', t],
};
if (words.length !== 1 || !(words[0] in COMMANDS)) fail(words.length ? `unknown command ${words.join(' ')}` : 'a command is required');
const command = words[0];
if (canary !== null && command !== 'deploy') fail('--canary is for deploy');

// The tenants: each [env.<name>] section, with its Worker's name.
const toml = readFileSync(config, 'utf8');
const tenants = [];
for (const m of toml.matchAll(/^\[env\.([a-z][a-z0-9-]*)\]\s*$/gm)) {
  const rest = toml.slice(m.index + m[0].length);
  const name = rest.split(/^\[/m)[0].match(/^name\s*=\s*"([^"]+)"/m)?.[1] ?? `(no name: ${m[1]})`;
  tenants.push({ tenant: m[1], worker: name });
}
const unknown = (only ?? []).filter((t) => !tenants.some((x) => x.tenant === t));
if (unknown.length) fail(`no such tenant in ${path.basename(config)}: ${unknown.join(', ')}`);
let chosen = only ? tenants.filter((t) => only.includes(t.tenant)) : tenants;
if (canary !== null) chosen = chosen.slice(0, canary);

if (command === 'list') {
  if (!tenants.length) console.log(`No tenant in ${path.basename(config)}: add one with npm run new-tenant -- <name>.`);
  for (const t of chosen) console.log(`${t.tenant}\t${t.worker}`);
  process.exit(0);
}
if (!chosen.length) fail(`no tenant to ${command}`);
// What is deployed is this checkout, built now: not whatever an earlier build left in build/.
if (command === 'deploy' && !skipBuild) {
  console.log('\n$ scripts/build release');
  if (!dryRun) {
    const built = spawnSync(path.join(ROOT, 'scripts', 'build'), ['release'], { cwd: ROOT, stdio: 'inherit' });
    if (built.status !== 0) {
      console.error('fleet: the build failed; no tenant was touched.');
      process.exit(1);
    }
  }
}
for (const [i, t] of chosen.entries()) {
  const args = [...COMMANDS[command](t.tenant), ...(config !== path.join(ROOT, 'wrangler.toml') ? ['--config', config] : [])];
  console.log(`\n[${i + 1}/${chosen.length}] ${t.tenant}: scripts/wrangler ${args.join(' ')}`);
  if (dryRun) continue;
  const r = spawnSync(WRANGLER, args, { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`fleet: ${command} failed for ${t.tenant} (exit ${r.status}); the tenants after it were not touched.`);
    process.exit(1);
  }
}
if (canary !== null && canary < (only ? tenants.filter((t) => only.includes(t.tenant)) : tenants).length) {
  console.log(`\nCanary: ${chosen.length} tenant(s) deployed. Check them, then run npm run fleet -- deploy for the rest.`);
}
