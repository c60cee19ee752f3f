// Reads and writes the developer's .dev.vars (KEY=value lines; quotes optional; mode 0600).
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';

/**
 * Writes a file of secrets only its owner may read: a new file made 0600, then renamed over `file`, so the
 * secret is never readable by others, not for a moment, whatever mode an earlier `file` had.
 */
export function writePrivate(file, text) {
  const temp = `${file}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(temp, text, { mode: 0o600, flag: 'wx' });
    renameSync(temp, file);
  } catch (e) {
    rmSync(temp, { force: true }); // no copy of the secrets left behind
    throw e;
  }
}

/**
 * Every setting the Worker reads (src/env.rs; the test suite checks none is missing). `npm start` takes each
 * from the environment over .dev.vars.
 */
export const SETTINGS = [
  'AI_GATEWAY_BASE_URL', 'AI_GATEWAY_API_KEY', 'ADMIN_TOKEN', 'OPENROUTER_API_BASE', 'OPENROUTER_PROVISIONING_KEY',
  'REQUEST_TIMEOUT', 'UPSTREAM_REFERER', 'UPSTREAM_TITLE', 'MODELS_CACHE_TTL', 'LOG_LEVEL', 'PRICE_MARKUP_PERCENT',
  'MAX_IN_FLIGHT_PER_KEY', 'MAX_IN_FLIGHT_PER_ACCOUNT', 'ANTHROPIC_API_KEY', 'ANTHROPIC_BASE_URL',
  'GOOGLE_API_KEY', 'GOOGLE_BASE_URL', 'OPENAI_API_KEY', 'OPENAI_BASE_URL', 'UPSTREAM_RETRIES',
  'SHOW_UPSTREAM_COST', 'DEFAULT_RPM_LIMIT', 'DEFAULT_TPM_LIMIT', 'ALERT_WEBHOOK_URL', 'ALERT_WEBHOOK_SECRET',
  'ALERT_BALANCE_BELOW', 'ALERT_THRESHOLDS', 'ALERT_RETRY_SECONDS', 'USAGE_RETENTION_DAYS', 'BUDGET_LEASES',
  'RESERVATION_GRACE', 'AUTH_FAILURE_LIMIT',
];

/** The shortest operator token the gateway accepts (domain::keys::MIN_OPERATOR_TOKEN_LEN). */
export const MIN_OPERATOR_TOKEN_LEN = 32;

/** Whether the gateway would refuse `token` as its operator token (too short, or the example's placeholder). */
export function weakOperatorToken(token) {
  const t = (token ?? '').trim();
  return t.length < MIN_OPERATOR_TOKEN_LEN || t === 'replace-with-a-long-random-token';
}

/** Sets `name` in the file: its earlier lines go, the new one ends the file (on a line of its own). */
export function setDevVar(file, name, value) {
  const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n') : [];
  const kept = lines.filter((line) => !new RegExp(`^\\s*${name}\\s*=`).test(line));
  while (kept.length && kept[kept.length - 1] === '') kept.pop();
  kept.push(`${name}=${value}`, '');
  writePrivate(file, kept.join('\n'));
}

export function readDevVars(file) {
  if (!existsSync(file)) return {};
  const vars = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = line.match(/^\s*([A-Z0-9_]+)\s*=\s*(.*?)\s*$/);
    if (m) vars[m[1]] = m[2].replace(/^(['"])(.*)\1$/, '$2');
  }
  return vars;
}
