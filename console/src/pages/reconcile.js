// Reconciliation: the D1 ledger against each account's authoritative balance.

import { get } from '../api.js';
import { num, usdExact } from '../format.js';
import { h, table, widget } from '../ui.js';

export function reconcilePage(main) {
  const status = widget('Ledger against balances', {
    load: () => get('/api/admin/reconcile'),
    render: ({ data }, body) => {
      body.append(h('p', { class: data.drift.length ? 'state error' : 'state ok', role: 'status' },
        data.drift.length
          ? `${num(data.drift.length)} of ${num(data.accounts_checked)} accounts disagree with their ledger.`
          : `All ${num(data.accounts_checked)} accounts agree with their ledger.`));
      if (data.drift.length) {
        body.append(table([
          { label: 'User', cell: (d) => h('a', { href: `#/users/${encodeURIComponent(d.user_id)}` }, d.user_id) },
          { label: 'Ledger sum', num: true, cell: (d) => usdExact(d.ledger_sum) },
          { label: 'Balance', num: true, cell: (d) => usdExact(d.balance) },
          { label: 'Difference', num: true, cell: (d) => usdExact(d.difference) },
        ], data.drift, { caption: 'Drift' }));
      }
    },
    actions: h('button', { type: 'button', class: 'secondary', onclick: () => status.reload() }, 'Check again'),
  });
  main.append(h('h1', {}, 'Reconciliation'), h('p', {}, 'Each account\'s ledger rows in D1 are summed and compared with the balance its Durable Object holds. The cron job runs the same check.'), status.el);
}
