// Amounts, numbers and dates as the console shows them. Days are UTC, as the API counts them.

const usd2 = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });
const usd6 = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 6 });
const int = new Intl.NumberFormat('en-US');

/** USD; amounts under a cent keep up to 6 decimals so they never read as $0.00. */
export function usd(amount) {
  if (amount === null || amount === undefined || Number.isNaN(Number(amount))) return '—';
  const n = Number(amount);
  return n !== 0 && Math.abs(n) < 0.01 ? usd6.format(n) : usd2.format(n);
}

/** USD with all 6 decimals the API carries (for titles and ledgers). */
export function usdExact(amount) {
  return amount === null || amount === undefined ? '—' : usd6.format(Number(amount));
}

export function num(n) {
  return n === null || n === undefined ? '—' : int.format(Number(n));
}

/** USD per token → USD per million tokens, for reading. */
export function perMillion(pricePerToken) {
  const n = Number(pricePerToken);
  return Number.isFinite(n) ? usd6.format(Math.round(n * 1e6 * 1e6) / 1e6) : '—';
}

/** A price per token as a plain decimal (0.00000015, never 1.5e-7). */
export function decimal(n) {
  const x = Number(n);
  if (!Number.isFinite(x)) return String(n ?? '—');
  return x.toFixed(12).replace(/\.?0+$/, '') || '0';
}

export function dateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** YYYY-MM-DD (UTC) of a Date. */
export function isoDay(d) {
  return d.toISOString().slice(0, 10);
}

export function today() {
  return isoDay(new Date());
}

export function addDays(day, n) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return isoDay(d);
}

export function monthStart(day = today()) {
  return `${day.slice(0, 7)}-01`;
}

/** Every day from start to end, both included. */
export function daysBetween(start, end) {
  const out = [];
  for (let d = start; d <= end && out.length < 1000; d = addDays(d, 1)) out.push(d);
  return out;
}
