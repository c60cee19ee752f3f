// The key holder's view: balance, the key's limits and when they reset, its own usage
// (chart and table) and its own keys, within what its permissions allow.

import { get } from '../api.js';
import { dateTime, usd, usdExact } from '../format.js';
import { clear, h, secretPanel, widget } from '../ui.js';
import { createKeyForm, keyTable } from './keys.js';
import { usageExplorer } from './usage.js';

export function mePage(main, params, session) {
  const perms = session.permissions ?? [];
  const stat = (label, value, title) => h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, label), h('span', { class: 'stat-value', title }, value));

  const balance = widget('Balance', {
    load: () => get('/api/balance'),
    render: (b, body) => body.append(h('div', { class: 'stats' },
      stat('Balance', usd(b.balance), usdExact(b.balance)),
      stat('Reserved for requests in flight', usd(b.reserved)))),
  });

  const key = widget('This key', {
    load: () => get('/api/v1/key'),
    render: ({ data: k }, body) => {
      const span = k.limit_reset ? `${k.limit_reset} window` : 'lifetime';
      body.append(
        h('div', { class: 'stats' },
          stat('Spend limit', k.limit === null ? 'No limit' : `${usd(k.limit)} (${span})`),
          stat('Left in this window', k.limit === null ? '—' : usd(k.limit_remaining)),
          stat('Resets', k.limit === null ? '—' : k.limit_resets_at ? dateTime(k.limit_resets_at) : 'never')),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Name'), h('dd', {}, k.label),
          h('dt', {}, 'Permissions'), h('dd', {}, k.permissions.join(', ')),
          h('dt', {}, 'Expires'), h('dd', {}, k.expires_at ? dateTime(k.expires_at) : 'never'),
          h('dt', {}, 'Spent today / this week / this month'), h('dd', {}, `${usd(k.usage_daily)} / ${usd(k.usage_weekly)} / ${usd(k.usage_monthly)}`),
          h('dt', {}, 'Spent in all'), h('dd', {}, usd(k.usage))));
    },
  });

  const usageArea = h('div');
  const drawUsage = (p) => clear(usageArea, usageExplorer({
    path: '/api/stats',
    groups: [['day', 'Day'], ['model', 'Model'], ['provider', 'Provider']],
    params: p,
    title: 'Your usage',
    onQuery: (q) => drawUsage(new URLSearchParams(q)),
  }));
  drawUsage(params);

  const canWrite = perms.includes('write');
  const secretArea = h('div', { class: 'secret-area' });
  const keys = widget('Your keys', {
    load: () => get('/api/keys?limit=100'),
    isEmpty: (r) => r.total === 0,
    render: (r, body) => body.append(keyTable(r.data, { admin: false, canWrite, onChange: () => keys.reload(), secretArea })),
  });

  main.append(h('h1', {}, 'My account'),
    h('div', { class: 'grid two' }, balance.el, key.el),
    h('section', { 'aria-labelledby': 'usage-title', class: 'widget' }, h('h2', { id: 'usage-title' }, 'Usage'), usageArea),
    secretArea,
    keys.el,
    canWrite
      ? createKeyForm({ admin: false, onCreated: (k) => { clear(secretArea, secretPanel(`New key “${k.name}”`, k.key)); keys.reload(); } })
      : h('p', { class: 'hint' }, 'This key may only read: creating or changing keys needs the write permission.'));
}
