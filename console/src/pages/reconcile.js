// Reconciliation: the D1 ledger against each account's authoritative balance.

import { get } from '../api.js';
import { num, usdExact } from '../format.js';
import { h, table, widget } from '../ui.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Checks every account. Past 1,000 users the gateway hands the check to its queue and answers with the
 * run's id: the run is then followed until it is done (or two minutes have passed; its report so far).
 */
async function check() {
  const first = await get('/api/admin/reconcile');
  if (!first.data.fanned_out) return first;
  let report;
  for (let i = 0; i < 120; i++) {
    report = await get(`/api/admin/reconcile/runs/${encodeURIComponent(first.data.run_id)}`);
    if (report.data.done) break;
    await sleep(1000);
  }
  return report;
}

export function reconcilePage(main) {
  // A check walks every account (past 1,000 users, a run through the queue): one at a time from here.
  const again = h('button', { type: 'button', class: 'secondary', onclick: () => status.reload() }, 'Check again');
  const status = widget('Ledger against balances', {
    load: async () => {
      again.disabled = true;
      try {
        return await check();
      } finally {
        again.disabled = false;
      }
    },
    render: ({ data }, body) => {
      const failed = data.failed ?? [];
      const checked = data.accounts_checked - failed.length;
      const words = [];
      if (data.drift.length) words.push(`${num(data.drift.length)} of ${num(checked)} accounts disagree with their ledger.`);
      else words.push(`All ${num(checked)} accounts checked agree with their ledger.`);
      if (failed.length) words.push(`${num(failed.length)} could not be checked.`);
      if (data.done === false) words.push(`The run is still going (${num(data.accounts_checked)} of ${num(data.accounts_enumerated)} so far).`);
      body.append(h('p', { class: data.drift.length || failed.length ? 'state error' : 'state ok', role: 'status' }, words.join(' ')));
      if (data.drift.length) {
        body.append(table([
          { label: 'User', cell: (d) => h('a', { href: `#/users/${encodeURIComponent(d.user_id)}` }, d.user_id) },
          { label: 'Ledger sum', num: true, cell: (d) => usdExact(d.ledger_sum) },
          { label: 'Balance', num: true, cell: (d) => usdExact(d.balance) },
          { label: 'Difference', num: true, cell: (d) => usdExact(d.difference) },
        ], data.drift, { caption: 'Drift' }));
      }
      if (failed.length) {
        body.append(table([
          { label: 'User', cell: (f) => (f.user_id ? h('a', { href: `#/users/${encodeURIComponent(f.user_id)}` }, f.user_id) : 'D1') },
          { label: 'Why', cell: (f) => f.error },
        ], failed, { caption: 'Not checked' }));
      }
    },
    actions: again,
  });
  main.append(h('h1', {}, 'Reconciliation'), h('p', {}, 'Each account\'s ledger rows in D1 are summed and compared with the balance its Durable Object holds. The cron job runs the same check.'), status.el);
}
