// One key's activity: its end users (spend against their budgets; a budget of their own
// set or cleared) and its request log (bodies kept when the key opts in). Reached from a
// key's row; the key id is in the route's parameters.

import { del, get, put, qs } from '../api.js';
import { dateTime, num, usd } from '../format.js';
import { navigate } from '../router.js';
import { actionButton, badge, clear, field, form, h, pager, select, table, widget } from '../ui.js';

const PAGE_SIZE = 20;
const RESETS = [['', 'Never'], ['daily', 'Daily'], ['weekly', 'Weekly'], ['monthly', 'Monthly']];

function missingKey(main, title) {
  main.append(h('h1', {}, title), h('p', { class: 'state error', role: 'alert' }, 'No key chosen: open this page from a key\'s row.'));
}

export function endUsersPage(main, params) {
  const keyId = params.get('key');
  if (!keyId) return missingKey(main, 'End users');
  const enc = encodeURIComponent(keyId);
  const page = Number(params.get('page') ?? 1) || 1;
  const list = widget('End users', {
    load: () => get(`/api/keys/${enc}/end-users${qs({ page, page_size: PAGE_SIZE })}`),
    isEmpty: (r) => r.total === 0,
    empty: 'No request has named an end user yet (safety_identifier, user, or X-Tollgate-End-User).',
    render: (r, body) => {
      const budget = r.default_budget ? `${usd(r.default_budget.limit)}${r.default_budget.limit_reset ? ` / ${r.default_budget.limit_reset}` : ''}` : 'none';
      body.append(h('p', { class: 'hint' }, `Each end user's default budget: ${budget}.`),
        table([
          { label: 'End user', cell: (u) => h('code', {}, u.end_user) },
          { label: 'Spent (window)', num: true, cell: (u) => usd(u.usage) },
          { label: 'Spent (all time)', num: true, cell: (u) => usd(u.usage_total) },
          { label: 'Budget', num: true, cell: (u) => (u.limit === null ? 'none' : `${usd(u.limit)}${u.limit_reset ? ` / ${u.limit_reset}` : ''}`) },
          { label: 'Left', num: true, cell: (u) => usd(u.limit_remaining) },
          { label: 'Resets', cell: (u) => dateTime(u.limit_resets_at) },
          { label: 'Own budget', cell: (u) => (u.own_budget ? badge('own', 'active') : 'default') },
          {
            label: 'Actions',
            // `.` and `..` cannot be named in a URL (the browser resolves them away): no action for them.
            cell: (u) => (u.own_budget && u.end_user !== '.' && u.end_user !== '..'
              ? actionButton('Use default', async () => {
                await del(`/api/keys/${enc}/end-users/${encodeURIComponent(u.end_user)}`);
                list.reload();
              }, { class: 'secondary', 'aria-label': `Give ${u.end_user} the key's default budget` })
              : '—'),
          },
        ], r.data, { caption: 'End users' }),
        pager({ page: r.page, size: r.page_size, total: r.total, onPage: (p) => navigate('end-users', { key: keyId, page: p }) }));
    },
  });
  const own = form({ class: 'card', 'aria-label': 'Budget of one end user' }, [
    h('div', { class: 'row wrap' },
      field('End user', { type: 'text', name: 'end_user', required: true, autocomplete: 'off', maxlength: '256' }),
      field('Budget (USD)', { type: 'number', name: 'limit', min: '0', step: '0.01', inputmode: 'decimal' }, 'Empty: no budget at all for this end user.'),
      field('Budget resets', select({ name: 'limit_reset', value: '' }, RESETS))),
    h('button', { type: 'submit' }, 'Set budget'),
  ], async (fd) => {
    const who = fd.get('end_user').trim();
    const body = fd.get('limit') === '' ? { limit: null } : { limit: Number(fd.get('limit')), limit_reset: fd.get('limit_reset') || null };
    await put(`/api/keys/${enc}/end-users/${encodeURIComponent(who)}`, body);
    list.reload();
    return `${who} has a budget of its own now.`;
  });
  main.append(h('h1', {}, 'End users'), h('p', {}, 'Key ', h('code', {}, keyId), ': the people its application serves, and what each may spend.'),
    h('details', { class: 'disclosure' }, h('summary', {}, 'Give an end user a budget of its own'), own), list.el);
}

/** A JSON body indented for reading; anything else (a stream's events, a cut body) as it is. */
function readable(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

export function requestLogPage(main, params) {
  const keyId = params.get('key');
  if (!keyId) return missingKey(main, 'Request log');
  const enc = encodeURIComponent(keyId);
  const page = Number(params.get('page') ?? 1) || 1;
  const shown = h('div', { class: 'request-entry', 'aria-live': 'polite' });
  const view = async (row) => {
    const { data } = await get(`/api/keys/${enc}/requests/${encodeURIComponent(row.id)}`);
    const body = (title, text, cut) => h('section', { 'aria-label': title },
      h('h3', {}, title, cut ? ' (cut at 64 KiB)' : ''), h('pre', { class: 'body', tabindex: '0' }, readable(text) || '(empty)'));
    clear(shown, h('h2', {}, `Request ${data.id}`),
      h('p', { class: 'hint' }, `${data.model} · status ${data.status} · ${data.streamed ? 'streamed' : 'not streamed'} · ${dateTime(data.created_at)}`),
      body('Request', data.request, data.request_truncated), body('Answer', data.response, data.response_truncated));
    shown.querySelector('h2')?.setAttribute('tabindex', '-1');
    shown.querySelector('h2')?.focus();
  };
  const list = widget('Logged requests', {
    load: () => get(`/api/keys/${enc}/requests${qs({ page, page_size: PAGE_SIZE })}`),
    isEmpty: (r) => r.total === 0,
    empty: 'Nothing kept. A key keeps its requests only when its request log is on (Keep request log, in days).',
    render: (r, body) => {
      body.append(h('p', { class: 'hint' }, r.request_log_days ? `Kept ${r.request_log_days} days.` : 'The request log is off for this key; older entries stay until their days are over.'),
        table([
          { label: 'When', cell: (x) => dateTime(x.created_at) },
          { label: 'Model', cell: (x) => x.model },
          { label: 'Status', cell: (x) => badge(String(x.status), x.status < 400 ? 'active' : 'disabled') },
          { label: 'Streamed', cell: (x) => (x.streamed ? 'yes' : 'no') },
          { label: 'Sizes', num: true, cell: (x) => `${num(x.request_bytes)} B → ${num(x.response_bytes)} B` },
          { label: 'Kept until', cell: (x) => dateTime(x.expires_at) },
          { label: 'Bodies', cell: (x) => actionButton('View', () => view(x), { class: 'secondary', 'aria-label': `View request ${x.id}` }) },
        ], r.data, { caption: 'Logged requests' }),
        pager({ page: r.page, size: r.page_size, total: r.total, onPage: (p) => navigate('requests', { key: keyId, page: p }) }));
    },
  });
  main.append(h('h1', {}, 'Request log'), h('p', {}, 'Key ', h('code', {}, keyId), ': the bodies of its requests and answers, as sent and received.'), list.el, shown);
}

export function alertsPage(main, params) {
  const page = Number(params.get('page') ?? 1) || 1;
  const subject = (a) => {
    const x = a.alert ?? {};
    if (x.type === 'balance.below') return `balance ${usd(x.balance)} fell below ${usd(x.threshold)}`;
    if (x.type === 'org_limit.threshold') {
      const amount = (v) => (x.limit_kind === 'cost' ? usd(v) : `${num(v)} ${x.limit_kind}`);
      return `organization ${String(x.org_id).slice(0, 8)}: ${x.threshold_percent} % of its monthly ${amount(x.limit)} (used ${amount(x.usage)})`;
    }
    const who = x.end_user ? `end user ${x.end_user} of key ${String(x.key_id).slice(0, 8)}` : `key ${String(x.key_id).slice(0, 8)}`;
    return `${who}: ${x.threshold_percent} % of ${usd(x.limit)} (spent ${usd(x.usage)})`;
  };
  const list = widget('Alerts', {
    load: () => get(`/api/admin/alerts${qs({ page, page_size: PAGE_SIZE })}`),
    isEmpty: (r) => r.total === 0,
    empty: 'No alert yet.',
    render: (r, body) => {
      body.append(table([
        { label: 'When', cell: (a) => dateTime(a.created_at) },
        { label: 'Type', cell: (a) => a.type },
        { label: 'What', cell: subject },
        { label: 'Delivery', cell: (a) => badge(a.status, a.status === 'delivered' ? 'active' : a.status === 'failed' ? 'disabled' : 'expired') },
        { label: 'Attempts', num: true, cell: (a) => num(a.attempts) },
        { label: 'Last answer', cell: (a) => (a.last_status ? String(a.last_status) : a.last_error ?? '—') },
      ], r.data, { caption: 'Alerts' }),
      pager({ page: r.page, size: r.page_size, total: r.total, onPage: (p) => navigate('alerts', { page: p }) }));
    },
  });
  const setup = widget('', {
    load: () => get('/api/admin/alerts?page_size=1'),
    render: (r, body) => body.append(r.webhook_configured
      ? h('p', { class: 'state ok', role: 'status' }, 'Alerts are signed and sent to the tenant\'s webhook (ALERT_WEBHOOK_URL).')
      : h('p', { class: 'state empty', role: 'status' }, 'No webhook is set: set ALERT_WEBHOOK_URL and ALERT_WEBHOOK_SECRET to be told when spend crosses a limit\'s share.')),
  });
  main.append(h('h1', {}, 'Alerts'), setup.el, list.el);
}
