// Keys: filter by status / user / organization, search, create (secret shown once),
// disable / enable, rotate with grace, delete with confirmation. Operators see every
// key; key holders (pages/me.js) reuse keyTable for their own.

import { del, get, idempotencyKey, patch, post, qs } from '../api.js';
import { dateTime, usd } from '../format.js';
import { link, navigate } from '../router.js';
import { actionButton, badge, clear, confirmAction, field, form, h, pager, secretPanel, select, table, widget } from '../ui.js';
import * as session from '../session.js';

const PAGE_SIZE = 20;

export function keysPage(main, params) {
  const filters = {
    status: params.get('status') ?? '',
    user_id: params.get('user_id') ?? '',
    org_id: params.get('org_id') ?? '',
    search: params.get('search') ?? '',
    page: Number(params.get('page') ?? 1) || 1,
  };
  const secretArea = h('div', { class: 'secret-area' });

  const orgSelect = select({ name: 'org_id', value: filters.org_id }, [['', 'Any organization']]);
  const filterForm = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter keys' },
    field('Status', select({ name: 'status', value: filters.status }, [['', 'Any'], ['active', 'Active'], ['disabled', 'Disabled'], ['expired', 'Expired']])),
    field('User id', { type: 'text', name: 'user_id', value: filters.user_id, autocomplete: 'off' }),
    field('Organization', orgSelect),
    field('Search', { type: 'search', name: 'search', value: filters.search, placeholder: 'name or prefix' }),
    h('button', { type: 'submit' }, 'Filter'));
  filterForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const fd = new FormData(filterForm);
    navigate('keys', { status: fd.get('status'), user_id: fd.get('user_id').trim(), org_id: fd.get('org_id'), search: fd.get('search').trim() });
  });

  // The organizations for the filter and the create form: one request, drawn into both selects.
  const orgsReady = get('/api/orgs?page_size=100').then((r) => r.data).catch(() => []);

  const list = widget('Keys', {
    load: () => get(`/api/keys${qs({ status: filters.status, user_id: filters.user_id, org_id: filters.org_id, search: filters.search, page: filters.page, limit: PAGE_SIZE })}`),
    isEmpty: (r) => r.total === 0,
    empty: 'No key matches these filters.',
    render: (r, body) => {
      body.append(keyTable(r.data, { admin: true, onChange: () => list.reload(), secretArea }),
        pager({ page: r.page, size: r.limit, total: r.total, onPage: (p) => navigate('keys', { ...filters, page: p }) }));
    },
  });

  const create = createKeyForm({
    admin: true,
    userId: filters.user_id,
    orgsReady,
    open: params.get('create') === '1',
    onCreated: (key) => {
      clear(secretArea, secretPanel(`New key “${key.name}”`, key.key, h('p', { class: 'hint' }, `Prefix ${key.key_prefix}, id ${key.id}.`)));
      secretArea.querySelector('input')?.focus();
      list.reload();
    },
  });

  orgsReady.then((orgs) => {
    for (const o of orgs) orgSelect.append(h('option', { value: o.id, selected: o.id === filters.org_id }, o.name));
  });

  main.append(h('h1', {}, 'Keys'), secretArea, create, filterForm, list.el);
}

/** The routes a key may be served by (`allowed_providers`). */
const PROVIDERS = ['openrouter', 'openai', 'anthropic', 'google'];

/** A key's spend limit and, when it has them, its allowlists, rates, end-user budget and request log (lines under it). */
function limitsCell(k) {
  const spend = k.limit === null ? 'none' : `${usd(k.limit)}${k.limit_reset ? ` / ${k.limit_reset}` : ''}`;
  const lines = [];
  if (k.allowed_models?.length || k.allowed_providers?.length) {
    const models = k.allowed_models?.length ? k.allowed_models.join(', ') : 'any model';
    lines.push(['allowed', `only ${k.allowed_providers?.length ? `${models} via ${k.allowed_providers.join(', ')}` : models}`]);
  }
  const rates = [k.rpm_limit ? `${k.rpm_limit} requests` : null, k.tpm_limit ? `${k.tpm_limit} tokens` : null].filter(Boolean);
  if (rates.length) lines.push(['rates', `${rates.join(', ')} a minute`]);
  if (k.end_user_budget) lines.push(['end-users', `${usd(k.end_user_budget.limit)}${k.end_user_budget.limit_reset ? ` / ${k.end_user_budget.limit_reset}` : ''} per end user`]);
  if (k.request_log_days) lines.push(['logged', `requests kept ${k.request_log_days} days`]);
  if (!lines.length) return spend;
  return h('div', {}, spend, lines.map(([cls, text]) => h('div', { class: `hint ${cls}` }, text)));
}

/** The create form. Operators pick the user and organization; key holders create for themselves. */
export function createKeyForm({ admin, userId = '', orgsReady, open = false, onCreated }) {
  const perm = (p, checked) => field(p, { type: 'checkbox', name: 'permissions', value: p, checked });
  const orgSelect = select({ name: 'org_id' }, [['', 'None']]);
  orgsReady?.then((orgs) => orgs.forEach((o) => orgSelect.append(h('option', { value: o.id }, o.name))));
  const f = form({ class: 'card' }, [
    h('div', { class: 'row wrap' },
      field('Name', { type: 'text', name: 'name', required: true, autocomplete: 'off', maxlength: '100' }),
      admin ? field('User id', { type: 'text', name: 'user_id', value: userId, required: true, autocomplete: 'off' }) : null,
      admin ? field('Organization', orgSelect) : null,
      field('Description', { type: 'text', name: 'description', maxlength: '200' })),
    h('fieldset', {}, h('legend', {}, 'Permissions'), h('div', { class: 'row wrap' }, perm('read', true), perm('write', true), admin ? perm('admin', false) : null)),
    h('div', { class: 'row wrap' },
      field('Expires (UTC)', { type: 'datetime-local', name: 'expires_at' }, 'Empty: never.'),
      field('Spend limit (USD)', { type: 'number', name: 'limit', min: '0', step: '0.01', inputmode: 'decimal' }, 'Empty: no limit.'),
      field('Limit resets', select({ name: 'limit_reset', value: '' }, [['', 'Never'], ['daily', 'Daily'], ['weekly', 'Weekly'], ['monthly', 'Monthly']]))),
    h('div', { class: 'row wrap' },
      field('Allowed models', { type: 'text', name: 'allowed_models', autocomplete: 'off', placeholder: 'openai/*, anthropic/claude-3.5-sonnet' },
        admin ? 'Model ids or vendor/*, separated by commas. Empty: any model.' : 'Model ids or vendor/*, separated by commas. Empty: the same as your own key.'),
      h('fieldset', {}, h('legend', {}, 'Allowed providers (none ticked: any)'),
        h('div', { class: 'row wrap' }, ...PROVIDERS.map((p) => field(p, { type: 'checkbox', name: 'allowed_providers', value: p }))))),
    h('div', { class: 'row wrap' },
      field('Requests per minute', { type: 'number', name: 'rpm_limit', min: '1', step: '1', inputmode: 'numeric' }, 'Empty: the tenant\'s default.'),
      field('Tokens per minute', { type: 'number', name: 'tpm_limit', min: '1', step: '1', inputmode: 'numeric' }, 'Empty: the tenant\'s default.'),
      field('Budget per end user (USD)', { type: 'number', name: 'end_user_limit', min: '0', step: '0.01', inputmode: 'decimal' }, 'Empty: none.'),
      field('End-user budget resets', select({ name: 'end_user_reset', value: '' }, [['', 'Never'], ['daily', 'Daily'], ['weekly', 'Weekly'], ['monthly', 'Monthly']])),
      field('Keep request log (days)', { type: 'number', name: 'request_log_days', min: '1', max: '90', step: '1', inputmode: 'numeric' }, 'Empty: off. Keeps request and answer bodies.')),
    h('button', { type: 'submit' }, 'Create key'),
  ], async (fd, el) => {
    const body = { name: fd.get('name').trim(), permissions: fd.getAll('permissions') };
    if (fd.get('description')) body.description = fd.get('description').trim();
    if (fd.get('expires_at')) body.expires_at = `${fd.get('expires_at').slice(0, 16)}:00Z`;
    if (fd.get('limit') !== '' && fd.get('limit') !== null) body.limit = Number(fd.get('limit'));
    if (fd.get('limit_reset')) body.limit_reset = fd.get('limit_reset');
    const models = (fd.get('allowed_models') ?? '').split(',').map((m) => m.trim()).filter(Boolean);
    if (models.length) body.allowed_models = models;
    if (fd.getAll('allowed_providers').length) body.allowed_providers = fd.getAll('allowed_providers');
    for (const name of ['rpm_limit', 'tpm_limit', 'request_log_days']) {
      if (fd.get(name)) body[name] = Number(fd.get(name));
    }
    if (fd.get('end_user_limit')) body.end_user_budget = { limit: Number(fd.get('end_user_limit')), limit_reset: fd.get('end_user_reset') || null };
    let key;
    if (admin) {
      body.user_id = fd.get('user_id').trim();
      const org = fd.get('org_id');
      key = (await post(org ? `/api/orgs/${encodeURIComponent(org)}/keys` : '/api/keys', body)).data;
    } else {
      key = (await post('/api/keys', body)).data;
    }
    el.reset();
    onCreated(key);
    return null;
  });
  return h('details', { class: 'disclosure', open }, h('summary', {}, 'Create a key'), f);
}

/** Keys as a table with their actions. */
export function keyTable(rows, { admin, canWrite = true, onChange, secretArea }) {
  const activity = (k) => h('div', { class: 'actions' },
    h('a', { href: link('end-users', { key: k.id }), 'aria-label': `End users of key ${k.name}` }, 'End users'),
    h('a', { href: link('requests', { key: k.id }), 'aria-label': `Requests of key ${k.name}` }, 'Requests'));
  const actions = (k) => {
    if (!canWrite) return activity(k);
    const enc = encodeURIComponent(k.id);
    const own = session.current()?.key_id === k.id;
    const toggle = actionButton(k.disabled ? 'Enable' : 'Disable', async () => {
      // Disabling stops a key's traffic at once (and, for the key signed in here, the console's): asked first.
      const why = own ? 'It is the key you are signed in with: the console stops working with it.' : 'Its requests stop at once; Enable brings it back.';
      if (!k.disabled && !(await confirmAction(`Disable key “${k.name}” (${k.key_prefix}…)? ${why}`, 'Disable'))) return;
      await patch(`/api/keys/${enc}`, { disabled: !k.disabled });
      onChange();
    }, { class: 'secondary', 'aria-label': `${k.disabled ? 'Enable' : 'Disable'} key ${k.name}` });
    const rotate = h('details', { class: 'rotate' }, h('summary', { 'aria-label': `Rotate key ${k.name}` }, 'Rotate'),
      rotateForm(k, (res) => {
        // The key signed in here: the console goes on with the new secret (the old one may have stopped).
        if (own) session.save({ ...session.current(), token: res.key });
        const old = res.previous_expires_at ? `The old secret works until ${dateTime(res.previous_expires_at)}.` : 'The old secret stopped working.';
        clear(secretArea, secretPanel(`New secret for “${k.name}”`, res.key,
          h('p', { class: 'hint' }, own ? `${old} This console now signs in with the new secret.` : old)));
        secretArea.scrollIntoView?.({ block: 'nearest' });
        secretArea.querySelector('input')?.focus();
        onChange();
      }));
    const remove = actionButton('Delete', async () => {
      if (!(await confirmAction(`Delete key “${k.name}” (${k.key_prefix}…)? It stops working at once; its usage history stays.`))) return;
      await del(`/api/keys/${enc}`);
      onChange();
    }, { class: 'danger', 'aria-label': `Delete key ${k.name}` });
    return h('div', { class: 'actions' }, toggle, rotate, remove, activity(k));
  };
  return table([
    { label: 'Prefix', cell: (k) => h('code', {}, k.key_prefix) },
    { label: 'Name', cell: (k) => k.name },
    admin ? { label: 'User', cell: (k) => h('a', { href: `#/users/${encodeURIComponent(k.user_id)}` }, k.user_id.slice(0, 8)) } : null,
    admin ? { label: 'Org', cell: (k) => k.org_id ?? '—' } : null,
    { label: 'Permissions', cell: (k) => k.permissions.join(', ') },
    { label: 'Status', cell: (k) => badge(k.status) },
    { label: 'Limits', num: true, cell: (k) => limitsCell(k) },
    { label: 'Expires', cell: (k) => dateTime(k.expires_at) },
    { label: 'Last used', cell: (k) => dateTime(k.last_used_at) },
    { label: 'Actions', cell: actions },
  ].filter(Boolean), rows, { caption: 'Keys' });
}

function rotateForm(k, onRotated) {
  const retryKey = idempotencyKey('console-rotate');
  return form({ class: 'inline', 'aria-label': `Rotation of ${k.name}` }, [
    field('Grace (seconds)', { type: 'number', name: 'grace_seconds', min: '0', max: '2592000', value: '0', step: '1' }, 'How long the old secret keeps working.'),
    h('button', { type: 'submit' }, 'Rotate now'),
  ], async (fd) => {
    const res = await post(`/api/keys/${encodeURIComponent(k.id)}/rotate`, { grace_seconds: Number(fd.get('grace_seconds') || 0) }, { headers: { 'idempotency-key': retryKey } });
    onRotated(res.data);
    return null;
  });
}
