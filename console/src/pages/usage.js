// Usage explorer: a date range and a grouping, drawn as a chart and a table from one
// query (a page of the API at a time), with a CSV download of exactly those rows. Operators read /api/stats/global;
// key holders reuse usageExplorer on /api/stats (their own user).

import { get, qs } from '../api.js';
import { barChart, dailySeries } from '../chart.js';
import { addDays, daysBetween, num, today, usd, usdExact } from '../format.js';
import { navigate } from '../router.js';
import { field, h, select, table, widget } from '../ui.js';

export const ALL_GROUPS = [['day', 'Day'], ['model', 'Model'], ['provider', 'Provider'], ['user', 'User'], ['key', 'Key']];

export function usagePage(main, params) {
  main.append(h('h1', {}, 'Usage explorer'), usageExplorer({
    path: '/api/stats/global',
    groups: ALL_GROUPS,
    params,
    onQuery: (q) => navigate('usage', q),
  }));
}

/** The form, chart and table. `onQuery` puts the choice in the URL (or redraws in place). */
export function usageExplorer({ path, groups, params, onQuery, title = 'Usage' }) {
  const end = params.get('end') || today();
  const start = params.get('start') || addDays(end, -29);
  const groupBy = groups.some(([g]) => g === params.get('group_by')) ? params.get('group_by') : 'day';

  const f = h('form', { class: 'filters', 'aria-label': 'Usage query' },
    field('From (UTC)', { type: 'date', name: 'start', value: start, required: true }),
    field('To (UTC)', { type: 'date', name: 'end', value: end, required: true }),
    field('Group by', select({ name: 'group_by', value: groupBy }, groups)),
    h('button', { type: 'submit' }, 'Show'));
  f.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const fd = new FormData(f);
    onQuery({ start: fd.get('start'), end: fd.get('end'), group_by: fd.get('group_by') });
  });

  const label = groups.find(([g]) => g === groupBy)[1];
  const result = widget(`${title} by ${label.toLowerCase()}, ${start} to ${end}`, {
    className: 'usage-result',
    load: () => allStats(path, { start, end, group_by: groupBy }),
    isEmpty: (r) => r.data.length === 0,
    empty: 'No requests in this range.',
    render: (r, body) => {
      const rows = r.data;
      let chart;
      if (groupBy === 'day') {
        const days = daysBetween(r.start, r.end);
        chart = barChart({ labels: days, values: dailySeries(rows, days), days: true, caption: `Spend per day, ${r.start} to ${r.end} (UTC)` });
      } else {
        const top = [...rows].sort((a, b) => b.cost - a.cost).slice(0, 20);
        chart = barChart({ labels: top.map((x) => x.bucket), values: top.map((x) => x.cost), caption: `Spend by ${label.toLowerCase()}${rows.length > 20 ? ' (top 20)' : ''}` });
      }
      const totals = rows.reduce((t, x) => ({ requests: t.requests + x.requests, prompt_tokens: t.prompt_tokens + x.prompt_tokens, completion_tokens: t.completion_tokens + x.completion_tokens, cost: t.cost + x.cost }), { requests: 0, prompt_tokens: 0, completion_tokens: 0, cost: 0 });
      const csv = toCsv(groupBy, rows);
      const download = h('a', {
        class: 'button secondary',
        href: URL.createObjectURL(new Blob([csv], { type: 'text/csv' })),
        download: `tollgate-usage-${groupBy}-${r.start}-${r.end}.csv`,
      }, 'Download CSV');
      if (r.partial) body.append(h('p', { class: 'hint' }, `The first ${num(rows.length)} of ${num(r.total)} (by name): the table, the total and the CSV cover those.`));
      body.append(chart, table([
        { label, cell: (x) => (x.total ? h('strong', {}, 'Total') : x.bucket) },
        { label: 'Requests', num: true, cell: (x) => num(x.requests) },
        { label: 'Prompt tokens', num: true, cell: (x) => num(x.prompt_tokens) },
        { label: 'Completion tokens', num: true, cell: (x) => num(x.completion_tokens) },
        { label: 'Spend', num: true, cell: (x) => h('span', { title: usdExact(x.cost), class: x.total ? 'usage-total' : undefined }, usd(x.cost)) },
      ], [...rows, { ...totals, total: true }], { caption: `Usage by ${label.toLowerCase()}` }), h('p', {}, download));
    },
  });
  return h('div', { class: 'explorer' }, f, result.el);
}

/** Pages a stats answer holds at most are fetched (50,000 buckets); `partial` says when there are more. */
const MAX_PAGES = 50;

/** Every bucket of a stats query, a page at a time (the API gives at most 1,000 a page). */
async function allStats(path, query) {
  const first = await get(`${path}${qs(query)}`);
  const pages = Math.min(Math.ceil(first.total / first.page_size), MAX_PAGES);
  const rest = await Promise.all(Array.from({ length: Math.max(pages - 1, 0) }, (_, i) => get(`${path}${qs({ ...query, page: i + 2 })}`)));
  const data = [...first.data, ...rest.flatMap((r) => r.data)];
  return { ...first, data, partial: data.length < first.total };
}

function toCsv(groupBy, rows) {
  const cell = (v) => (/[",\n]/.test(String(v)) ? `"${String(v).replaceAll('"', '""')}"` : String(v));
  const lines = [[groupBy, 'requests', 'prompt_tokens', 'completion_tokens', 'cost_usd']];
  for (const r of rows) lines.push([r.bucket, r.requests, r.prompt_tokens, r.completion_tokens, r.cost]);
  return lines.map((l) => l.map(cell).join(',')).join('\n') + '\n';
}
