// Operator overview: spend and requests today and this month, active keys, users, total
// balances, spend per day over the last 30 days, top models.

import { get, qs } from '../api.js';
import { barChart, dailySeries } from '../chart.js';
import { addDays, daysBetween, monthStart, num, today, usd } from '../format.js';
import { link } from '../router.js';
import { h, table, widget } from '../ui.js';

export function overviewPage(main) {
  const end = today();
  const chartStart = addDays(end, -29);
  const start = monthStart(end) < chartStart ? monthStart(end) : chartStart;
  // One request feeds the figures for today and this month and the 30-day chart.
  const byDay = get(`/api/stats/global${qs({ group_by: 'day', start, end })}`);
  const sumFrom = (rows, from, pick) => rows.filter((r) => r.bucket >= from).reduce((t, r) => t + pick(r), 0);

  const stat = (label, value, title) => h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, label), h('span', { class: 'stat-value', title }, value));

  const spend = widget('Spend and requests', {
    className: 'stats-widget',
    load: () => byDay,
    render: ({ data }, body) => {
      const m = monthStart(end);
      body.append(h('div', { class: 'stats' },
        stat('Spend today', usd(sumFrom(data, end, (r) => r.cost))),
        stat('Spend this month', usd(sumFrom(data, m, (r) => r.cost))),
        stat('Requests today', num(sumFrom(data, end, (r) => r.requests))),
        stat('Requests this month', num(sumFrom(data, m, (r) => r.requests)))));
    },
  });

  const one = (title, load, value) => widget(title, {
    className: 'stat-widget',
    load,
    render: (data, body) => body.append(h('span', { class: 'stat-value' }, value(data))),
  });
  // One request feeds the three tenant-wide figures.
  const overview = get('/api/admin/overview');
  const activeKeys = one('Active keys', () => overview, (r) => num(r.data.active_keys));
  const users = one('Users', () => overview, (r) => num(r.data.users));
  const balances = one('Total balances', () => overview, (r) => usd(r.data.total_balance));

  const chart = widget('Spend per day, last 30 days', {
    load: () => byDay,
    render: ({ data }, body) => {
      const days = daysBetween(chartStart, end);
      const rows = data.filter((r) => r.bucket >= chartStart);
      body.append(barChart({ labels: days, values: dailySeries(rows, days), days: true, caption: `${chartStart} to ${end} (UTC)` }));
    },
  });

  const models = widget('Top models, last 30 days', {
    load: () => get(`/api/stats/global${qs({ group_by: 'model', start: chartStart, end })}`),
    isEmpty: ({ data }) => data.length === 0,
    empty: 'No requests in the last 30 days.',
    render: ({ data }, body) => {
      const top = [...data].sort((a, b) => b.cost - a.cost || b.requests - a.requests).slice(0, 10);
      body.append(table([
        { label: 'Model', cell: (r) => r.bucket },
        { label: 'Requests', num: true, cell: (r) => num(r.requests) },
        { label: 'Tokens', num: true, cell: (r) => num(r.prompt_tokens + r.completion_tokens) },
        { label: 'Spend', num: true, cell: (r) => usd(r.cost) },
      ], top, { caption: 'Top models' }),
      h('p', {}, h('a', { href: link('usage', { group_by: 'model', start: chartStart, end }) }, 'Explore usage')));
    },
  });

  main.append(h('h1', {}, 'Overview'),
    spend.el,
    h('div', { class: 'grid stats-grid' }, activeKeys.el, users.el, balances.el),
    h('div', { class: 'grid two' }, chart.el, models.el));
}
