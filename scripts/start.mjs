// `npm start`: set up what is missing, build, apply local D1 migrations and
// serve the gateway under workerd on 127.0.0.1:$PORT (default 8787).
// The environment overrides .dev.vars. Without ADMIN_TOKEN one is generated
// and stored in .dev.vars; without AI_GATEWAY_API_KEY the bundled fake
// upstream runs (demo mode). Ctrl-C stops everything this started.

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync } from 'node:fs';
import path from 'node:path';

import { ROOT, startGateway } from '../tests/harness.mjs';
import { SETTINGS, readDevVars, setDevVar, weakOperatorToken } from './dev-vars.mjs';

const bold = (s) => `\x1b[1m${s}\x1b[0m`;
const yellow = (s) => `\x1b[1;33m${s}\x1b[0m`;

function step(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`\n${cmd} ${args.join(' ')} failed (exit ${r.status}); see above.`);
    process.exit(r.status ?? 1);
  }
}

// An operator token from the environment that the gateway would refuse: said before the long steps.
if (process.env.ADMIN_TOKEN && weakOperatorToken(process.env.ADMIN_TOKEN)) {
  console.error(`ADMIN_TOKEN from the environment is too short (under 32 characters) or a placeholder; unset it or use a long random one.`);
  process.exit(1);
}

step(path.join(ROOT, 'scripts', 'setup'), ['--run']); // what running needs; `npm test` sets up the rest
step(path.join(ROOT, 'scripts', 'build'), ['release']);

const devVarsFile = path.join(ROOT, '.dev.vars');
const vars = readDevVars(devVarsFile);
for (const name of SETTINGS) if (process.env[name]) vars[name] = process.env[name];
for (const name of SETTINGS) if (!vars[name]) delete vars[name];

// .dev.vars holds secrets: only its owner may read it, however it was made.
if (existsSync(devVarsFile)) chmodSync(devVarsFile, 0o600);
let generated = null;
// None yet, or one the gateway would refuse (too short, the example's placeholder): a new one, in .dev.vars.
if (weakOperatorToken(vars.ADMIN_TOKEN)) {
  generated = vars.ADMIN_TOKEN ? 'Replaced the ADMIN_TOKEN in .dev.vars, which the gateway would refuse (under 32 characters, or a placeholder), with a generated one' : 'Generated an operator token and stored it in .dev.vars';
  vars.ADMIN_TOKEN = `tg-admin-${randomBytes(24).toString('hex')}`;
  setDevVar(devVarsFile, 'ADMIN_TOKEN', vars.ADMIN_TOKEN);
}
const demo = !vars.AI_GATEWAY_API_KEY;
if (demo) delete vars.AI_GATEWAY_BASE_URL;
// Demo mode provisions upstream keys against the fake too, unless a real provisioning key is set.
if (demo && !vars.OPENROUTER_PROVISIONING_KEY) delete vars.OPENROUTER_API_BASE;

const port = Number(process.env.PORT || 8787);
const gw = await startGateway({
  vars,
  upstream: demo,
  persistTo: path.join(ROOT, '.wrangler', 'state'),
  port,
  inherit: true,
  syncPrices: false,
});
const priced = await fetch(`${gw.url}/api/models/pricing/sync`, { method: 'POST', headers: { authorization: `Bearer ${vars.ADMIN_TOKEN}` } });
if (priced.status !== 200) console.warn(yellow(`Could not sync prices from the upstream (${priced.status}); set them with PUT /api/models/pricing.`));

const url = gw.url;
console.log(`
${bold('Tollgate is running')} at ${bold(url)}  (health: ${url}/health)
Console: ${bold(`${url}/console/`)}  (sign in with the operator token or a key)
`);
if (demo) {
  console.log(yellow(`DEMO MODE: AI_GATEWAY_API_KEY is not set, so answers come from the bundled fake
OpenRouter at ${gw.fake.url}. Set AI_GATEWAY_API_KEY (env or .dev.vars) for real models.
`));
}
if (generated) console.log(`${generated} (ADMIN_TOKEN; mode 0600). It is not printed.\n`);
// Where the recipe below reads the operator token: the environment's, when it came from there.
const tokenFrom = process.env.ADMIN_TOKEN ? '$ADMIN_TOKEN' : '$(grep ^ADMIN_TOKEN= .dev.vars | cut -d= -f2-)';
console.log(`Create a user, credit it, then make a key for it:

  # the operator's header in a file only you can read (no secret on a command line)
  (umask 077; mkdir -p ~/.tollgate; printf 'Authorization: Bearer %s\\n' "${tokenFrom}" > ~/.tollgate/admin.header)
  ADMIN=~/.tollgate/admin.header
  curl -s ${url}/api/admin/users -H @$ADMIN -H 'content-type: application/json' -d '{"email":"ann@example.com","name":"Ann"}'
  curl -s ${url}/api/balance/admin/add -H @$ADMIN -H 'content-type: application/json' -d '{"user_id":"<id from the answer above>","amount":10}'
  curl -s ${url}/api/keys -H @$ADMIN -H 'content-type: application/json' -d '{"name":"laptop","user_id":"<id from the answer above>"}'

Then point any OpenAI SDK at ${url}/v1 with the key. Ctrl-C stops everything.
`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await gw.stop();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
gw.child.on('close', (code) => {
  if (!stopping) {
    console.error(`wrangler dev exited (${code}).`);
    gw.stop().then(() => process.exit(code ?? 1));
  }
});
