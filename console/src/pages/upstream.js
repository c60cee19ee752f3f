// Upstream (OpenRouter) keys: the provisioning form that `npm run provision-user` drives,
// the list, changing a limit, disabling and deleting.

import { del, get, patch, post } from '../api.js';
import { dateTime, usd } from '../format.js';
import { actionButton, badge, clear, confirmAction, field, form, h, secretPanel, select, table, widget } from '../ui.js';

const RESETS = [['monthly', 'Monthly'], ['weekly', 'Weekly'], ['daily', 'Daily'], ['', 'Never']];
const cents = (usdText) => Math.round(Number(usdText) * 100);

export function upstreamPage(main) {
  const secrets = h('div', { class: 'secret-area' });

  const provision = form({ class: 'card', 'aria-labelledby': 'prov-title' }, [
    h('h2', { id: 'prov-title' }, 'Provision a user'),
    h('p', {}, 'Creates the user, a gateway key and, when the tenant has a provisioning key, an upstream OpenRouter key with this limit. Both secrets are shown once.'),
    h('div', { class: 'row wrap' },
      field('E-mail', { type: 'email', name: 'email', required: true, autocomplete: 'off' }),
      field('Name', { type: 'text', name: 'name', required: true, autocomplete: 'off' }),
      field('Upstream limit (USD)', { type: 'number', name: 'limit', min: '0', step: '0.01', value: '10', required: true }),
      field('Limit resets', select({ name: 'limit_reset', value: 'monthly' }, RESETS)),
      field('Locale', { type: 'text', name: 'locale', placeholder: 'en' }),
      field('Source (utm_source)', { type: 'text', name: 'utm_source' })),
    h('button', { type: 'submit' }, 'Provision'),
  ], async (fd, el) => {
    const body = { email: fd.get('email').trim(), name: fd.get('name').trim(), limit: cents(fd.get('limit')), limit_reset: fd.get('limit_reset') || null };
    if (fd.get('locale')) body.locale = fd.get('locale').trim();
    if (fd.get('utm_source')) body.utm_source = fd.get('utm_source').trim();
    const { data } = await post('/api/admin/provision', body);
    el.reset();
    clear(secrets,
      secretPanel(`Gateway key for ${data.user.email}`, data.key.key),
      data.openrouter_key
        ? secretPanel('Upstream OpenRouter key', data.openrouter_key.key)
        : h('p', { class: 'hint' }, 'No upstream key: the tenant has no OPENROUTER_PROVISIONING_KEY.'));
    list.reload();
    return `Provisioned ${data.user.name} <${data.user.email}>.`;
  });

  const list = widget('Upstream keys', {
    load: () => get('/api/admin/openrouter-keys'),
    isEmpty: (r) => r.data.length === 0,
    empty: 'No upstream keys yet.',
    render: (r, body) => body.append(table([
      { label: 'Name', cell: (k) => k.name },
      { label: 'User', cell: (k) => h('a', { href: `#/users/${encodeURIComponent(k.user_id)}` }, k.user_id.slice(0, 8)) },
      { label: 'Prefix', cell: (k) => h('code', {}, k.key_prefix ?? '—') },
      { label: 'Limit', num: true, cell: (k) => (k.limit === null ? 'none' : `${usd(k.limit / 100)}${k.limit_reset ? ` / ${k.limit_reset}` : ''}`) },
      { label: 'Usage', num: true, cell: (k) => usd(k.usage) },
      { label: 'Status', cell: (k) => badge(k.disabled ? 'disabled' : 'active') },
      { label: 'Synced', cell: (k) => dateTime(k.synced_at) },
      { label: 'Actions', cell: (k) => actions(k, () => list.reload()) },
    ], r.data, { caption: 'Upstream keys' })),
  });

  main.append(h('h1', {}, 'Upstream keys'), secrets, provision, list.el);
}

function actions(k, onChange) {
  const enc = encodeURIComponent(k.id);
  return h('div', { class: 'actions' },
    h('details', { class: 'rotate' }, h('summary', { 'aria-label': `Change the limit of ${k.name}` }, 'Limit'),
      form({ class: 'inline', 'aria-label': `Limit of ${k.name}` }, [
        field('Limit (USD)', { type: 'number', name: 'limit', min: '0', step: '0.01', value: k.limit === null ? '' : String(k.limit / 100) }, 'Empty: no limit.'),
        field('Resets', select({ name: 'limit_reset', value: k.limit_reset ?? '' }, RESETS)),
        h('button', { type: 'submit' }, 'Save limit'),
      ], async (fd) => {
        await patch(`/api/admin/openrouter-keys/${enc}`, { limit: fd.get('limit') === '' ? null : cents(fd.get('limit')), limit_reset: fd.get('limit_reset') || null });
        onChange();
      })),
    actionButton(k.disabled ? 'Enable' : 'Disable', async () => {
      await patch(`/api/admin/openrouter-keys/${enc}`, { disabled: !k.disabled });
      onChange();
    }, { class: 'secondary', 'aria-label': `${k.disabled ? 'Enable' : 'Disable'} upstream key ${k.name}` }),
    actionButton('Delete', async () => {
      if (!(await confirmAction(`Delete upstream key “${k.name}”? OpenRouter deletes it too.`))) return;
      await del(`/api/admin/openrouter-keys/${enc}`);
      onChange();
    }, { class: 'danger', 'aria-label': `Delete upstream key ${k.name}` }));
}
