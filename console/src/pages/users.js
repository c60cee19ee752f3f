// Operator: users (search, paging, create) and one user (balance, credit/adjust, ledger, keys).

import { get, idempotencyKey, patch, post, qs } from '../api.js';
import { dateTime, num, usd, usdExact } from '../format.js';
import { link, navigate } from '../router.js';
import { clear, field, form, h, pager, select, table, widget } from '../ui.js';

const PAGE_SIZE = 20;

export function usersPage(main, params) {
  const search = params.get('search') ?? '';
  const page = Number(params.get('page') ?? 1) || 1;

  const searchInput = h('input', { type: 'search', name: 'search', value: search, placeholder: 'name or e-mail' });
  const searchForm = h('form', { class: 'filters', role: 'search', 'aria-label': 'Search users' },
    field('Search users', searchInput), h('button', { type: 'submit' }, 'Search'));
  searchForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    navigate('users', { search: searchInput.value.trim() });
  });

  const list = widget('Users', {
    load: () => get(`/api/admin/users${qs({ page, page_size: PAGE_SIZE, search })}`),
    isEmpty: (r) => r.total === 0,
    empty: search ? `No user matches “${search}”.` : 'No users yet: create the first one below.',
    render: (r, body) => {
      body.append(table([
        { label: 'Name', cell: (u) => h('a', { href: `#/users/${encodeURIComponent(u.id)}` }, u.name || '(no name)') },
        { label: 'E-mail', cell: (u) => u.email },
        { label: 'Locale', cell: (u) => u.locale ?? '—' },
        { label: 'Created', cell: (u) => dateTime(u.created_at) },
      ], r.data, { caption: 'Users' }),
      pager({ page: r.page, size: r.page_size, total: r.total, onPage: (p) => navigate('users', { search, page: p }) }));
    },
  });

  const create = form({ class: 'card', 'aria-labelledby': 'new-user' }, [
    h('h2', { id: 'new-user' }, 'Create a user'),
    h('div', { class: 'row wrap' },
      field('E-mail', { type: 'email', name: 'email', required: true, autocomplete: 'off' }),
      field('Name', { type: 'text', name: 'name', required: true, autocomplete: 'off' }),
      field('Locale', { type: 'text', name: 'locale', placeholder: 'en', pattern: '[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*' })),
    h('button', { type: 'submit' }, 'Create user'),
  ], async (fd) => {
    const body = { email: fd.get('email').trim(), name: fd.get('name').trim() };
    if (fd.get('locale')) body.locale = fd.get('locale').trim();
    const { data } = await post('/api/admin/users', body);
    location.hash = `#/users/${encodeURIComponent(data.id)}`;
  });

  main.append(h('h1', {}, 'Users'), searchForm, list.el, create);
}

export function userPage(main, id) {
  const enc = encodeURIComponent(id);
  const heading = h('h1', {}, 'User');
  const profile = widget('Profile', {
    load: () => get(`/api/admin/users/${enc}`),
    render: ({ data: u }, body) => {
      clear(heading, u.name || u.email);
      body.append(h('dl', { class: 'facts' },
        h('dt', {}, 'E-mail'), h('dd', {}, u.email),
        h('dt', {}, 'Id'), h('dd', {}, h('code', {}, u.id)),
        h('dt', {}, 'Locale'), h('dd', {}, u.locale ?? '—'),
        h('dt', {}, 'Created'), h('dd', {}, dateTime(u.created_at))));
      const rename = form({ class: 'inline', 'aria-label': 'Rename user' }, [
        field('Name', { type: 'text', name: 'name', value: u.name ?? '', required: true }),
        h('button', { type: 'submit', class: 'secondary' }, 'Save name'),
      ], async (fd) => {
        await patch(`/api/admin/users/${enc}`, { name: fd.get('name').trim() });
        profile.reload();
      });
      body.append(rename);
    },
  });

  const balance = widget('Balance', {
    load: () => get(`/api/balance${qs({ user_id: id })}`),
    render: (b, body) => body.append(h('div', { class: 'stats' },
      h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'Balance'), h('span', { class: 'stat-value', id: 'user-balance', title: usdExact(b.balance) }, usd(b.balance))),
      h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'Reserved for requests in flight'), h('span', { class: 'stat-value' }, usd(b.reserved))))),
  });

  // One Idempotency-Key per intended credit: a double click or a retry after a lost answer
  // changes nothing; a new key is drawn once the credit went through. Sent again with another amount
  // or type (edited after a lost answer), the gateway answers 409: the first went through. The key waits
  // in this tab's storage, from when it is sent until its answer comes, for ten minutes at most: a reload
  // or a visit elsewhere before the retry keeps it too; later, a credit is a new one (the earlier one, if
  // its answer was lost, is in the ledger).
  const pendingName = `tollgate.console.credit.${id}`;
  const PENDING_MS = 10 * 60 * 1000;
  // A credit answered (or refused as another): the next one is a new credit.
  const drawKey = () => {
    sessionStorage.removeItem(pendingName);
    sentAt = null;
    return idempotencyKey('console-credit');
  };
  const pending = () => {
    try {
      const { key, at } = JSON.parse(sessionStorage.getItem(pendingName) ?? 'null') ?? {};
      return typeof key === 'string' && Date.now() - at < PENDING_MS ? { key, at } : null;
    } catch {
      return null;
    }
  };
  // The key, and when it was first sent (null: not yet).
  let { key: creditKey, at: sentAt } = pending() ?? { key: idempotencyKey('console-credit'), at: null };
  const credit = form({ class: 'card', 'aria-labelledby': 'credit-title' }, [
    h('h2', { id: 'credit-title' }, 'Credit or adjust'),
    h('div', { class: 'row wrap' },
      field('Amount (USD)', { type: 'number', name: 'amount', step: '0.000001', required: true, inputmode: 'decimal' }, 'Adjustments may be negative.'),
      field('Type', select({ name: 'type', value: 'recharge' }, [['recharge', 'Recharge'], ['refund', 'Refund'], ['adjustment', 'Adjustment']])),
      field('Description', { type: 'text', name: 'description', maxlength: '200' })),
    h('button', { type: 'submit' }, 'Apply'),
  ], async (fd, el) => {
    const body = { user_id: id, amount: Number(fd.get('amount')), type: fd.get('type') };
    if (fd.get('description')) body.description = fd.get('description').trim();
    let data;
    try {
      // Sent first over ten minutes ago and never answered: that credit is in the ledger or not at all, and
      // this is a new one.
      if (sentAt !== null && Date.now() - sentAt >= PENDING_MS) creditKey = drawKey();
      if (sentAt === null) {
        sentAt = Date.now();
        sessionStorage.setItem(pendingName, JSON.stringify({ key: creditKey, at: sentAt }));
      }
      ({ data } = await post('/api/balance/admin/add', body, { headers: { 'idempotency-key': creditKey } }));
    } catch (e) {
      if (e.status !== 409) throw e;
      creditKey = drawKey();
      balance.reload();
      ledger.reload();
      throw new Error('The credit sent before (its answer was lost) went through with another amount or type: check the ledger; applying this one now would be a second credit.');
    }
    creditKey = drawKey();
    el.reset();
    balance.reload();
    ledger.reload();
    return `Done: the balance is now ${usd(data.balance)}.`;
  });

  let ledgerPage = 1;
  const ledger = widget('Ledger', {
    load: () => get(`/api/balance/transactions${qs({ user_id: id, page: ledgerPage, page_size: PAGE_SIZE })}`),
    isEmpty: (r) => r.total === 0,
    empty: 'No transactions yet.',
    render: (r, body) => body.append(table([
      { label: 'When', cell: (t) => dateTime(t.created_at) },
      { label: 'Type', cell: (t) => t.type },
      { label: 'Amount', num: true, cell: (t) => h('span', { title: usdExact(t.amount) }, usd(t.amount)) },
      { label: 'Balance after', num: true, cell: (t) => usd(t.balance_after) },
      { label: 'Description', cell: (t) => t.description ?? '—' },
      { label: 'Reference', cell: (t) => (t.reference_id ? h('code', {}, t.reference_id) : '—') },
    ], r.data, { caption: 'Ledger' }),
    pager({ page: r.page, size: r.page_size, total: r.total, onPage: (p) => { ledgerPage = p; ledger.reload(); } })),
  });

  const keys = widget('Keys', {
    actions: h('a', { class: 'button', href: link('keys', { user_id: id, create: '1' }) }, 'Create a key'),
    load: () => get(`/api/keys${qs({ user_id: id, limit: 100 })}`),
    isEmpty: (r) => r.total === 0,
    empty: 'This user has no keys yet.',
    render: (r, body) => body.append(table([
      { label: 'Prefix', cell: (k) => h('code', {}, k.key_prefix) },
      { label: 'Name', cell: (k) => k.name },
      { label: 'Status', cell: (k) => k.status },
      { label: 'Limit', num: true, cell: (k) => (k.limit === null ? 'none' : `${usd(k.limit)}${k.limit_reset ? ` / ${k.limit_reset}` : ''}`) },
      { label: 'Last used', cell: (k) => dateTime(k.last_used_at) },
    ], r.data, { caption: 'Keys' }),
    h('p', {}, h('a', { href: link('keys', { user_id: id }) }, `Manage these ${num(r.total)} keys`))),
  });

  main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/users' }, 'Users')), heading,
    h('div', { class: 'grid two' }, profile.el, balance.el), credit, ledger.el, keys.el);
}
