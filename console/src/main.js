// The console's shell: sign-in, the navigation and a hash router (#/page?params).
// Routes never carry the credential.

import './app.css';

import { ApiError, get } from './api.js';
import * as session from './session.js';
import { parseHash } from './router.js';
import { clear, errorText, field, h } from './ui.js';

import { alertsPage, endUsersPage, requestLogPage } from './pages/activity.js';
import { keysPage } from './pages/keys.js';
import { mePage } from './pages/me.js';
import { orgsPage } from './pages/orgs.js';
import { overviewPage } from './pages/overview.js';
import { pricesPage } from './pages/prices.js';
import { reconcilePage } from './pages/reconcile.js';
import { routesPage } from './pages/routes.js';
import { upstreamPage } from './pages/upstream.js';
import { usagePage } from './pages/usage.js';
import { userPage, usersPage } from './pages/users.js';

const OPERATOR_PAGES = [
  ['overview', 'Overview', overviewPage],
  ['users', 'Users', usersPage],
  ['keys', 'Keys', keysPage],
  ['orgs', 'Organizations', orgsPage],
  ['prices', 'Prices', pricesPage],
  ['routes', 'Routes', routesPage],
  ['upstream', 'Upstream keys', upstreamPage],
  ['usage', 'Usage', usagePage],
  ['alerts', 'Alerts', alertsPage],
  ['reconcile', 'Reconciliation', reconcilePage],
  // Reached from a key's row, not the navigation.
  ['end-users', 'End users', endUsersPage, { hidden: true }],
  ['requests', 'Request log', requestLogPage, { hidden: true }],
];
const KEY_PAGES = [
  ['me', 'My account', mePage],
  ['end-users', 'End users', endUsersPage, { hidden: true }],
  ['requests', 'Request log', requestLogPage, { hidden: true }],
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const menu = document.getElementById('menu-toggle');

function render() {
  const s = session.current();
  if (!s) return signIn();
  const pages = s.role === 'operator' ? OPERATOR_PAGES : KEY_PAGES;
  const route = parseHash();
  const found = pages.find(([name]) => name === route.page) ?? pages[0];
  if (found[0] !== route.page && !(route.page === 'users' && route.id)) {
    history.replaceState(null, '', `#/${found[0]}`);
  }
  drawNav(pages, found[0], s);
  clear(main);
  document.title = `${found[1]} · Tollgate console`;
  if (route.page === 'users' && route.id && s.role === 'operator') userPage(main, route.id);
  else found[2](main, route.params, s);
}

function drawNav(pages, active, s) {
  nav.hidden = false;
  menu.hidden = false;
  clear(nav, h('ul', {}, pages.filter(([, , , opts]) => !opts?.hidden).map(([name, label]) =>
    h('li', {}, h('a', { href: `#/${name}`, 'aria-current': name === active ? 'page' : undefined, onclick: closeMenu }, label)))));
  clear(who,
    h('span', { class: 'who-label' }, s.role === 'operator' ? 'Operator' : `Key ${s.label ?? ''}`),
    h('button', { type: 'button', class: 'secondary', id: 'sign-out', onclick: signOut }, 'Sign out'));
}

function closeMenu() {
  document.body.classList.remove('menu-open');
  menu.setAttribute('aria-expanded', 'false');
}

menu.addEventListener('click', () => {
  const open = document.body.classList.toggle('menu-open');
  menu.setAttribute('aria-expanded', String(open));
});

function signOut() {
  session.clear();
  history.replaceState(null, '', location.pathname);
  render();
}

/** Works out who the credential is: a key (GET /api/v1/key answers) or the operator token. */
async function identify(token) {
  try {
    const me = await get('/api/v1/key', { token });
    const perms = me.data.permissions ?? [];
    return { token, role: perms.includes('admin') ? 'operator' : 'key', label: me.data.label, permissions: perms, key_id: me.data.id };
  } catch (e) {
    // 400: it authenticated but is not a key. Only the operator token may list users.
    if (!(e instanceof ApiError) || e.status !== 400) throw e;
  }
  await get('/api/admin/users?page_size=1', { token });
  return { token, role: 'operator', label: 'operator', permissions: ['read', 'write', 'admin'] };
}

function signIn() {
  nav.hidden = true;
  menu.hidden = true;
  clear(nav);
  clear(who);
  clear(main);
  document.title = 'Sign in · Tollgate console';
  const input = h('input', { type: 'password', name: 'credential', required: true, autocomplete: 'off', spellcheck: 'false' });
  const live = h('div', { 'aria-live': 'polite' });
  const button = h('button', { type: 'submit' }, 'Sign in');
  const f = h('form', { class: 'signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in to the Tollgate console'),
    h('p', {}, 'Paste the operator token to run the tenant, or a key (sk-tg-…) to see its own balance, limits and spend. It is kept in the session storage of this tab only (a browser that restores closed tabs may bring it back with the tab): sign out when you are done.'),
    field('Operator token or key', input),
    button, live);
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    clear(live);
    if (!token) {
      live.append(errorText('Paste a token or a key first.'));
      return;
    }
    button.disabled = true;
    try {
      session.save(await identify(token));
      history.replaceState(null, '', '#/');
      render();
      main.focus();
    } catch (e) {
      live.append(errorText(e.message));
    } finally {
      button.disabled = false;
    }
  });
  main.append(f);
  input.focus();
}

// A new page moves focus to its content, so a screen reader announces it and the keyboard starts there;
// a change of the same page's filters or paging leaves focus where it was.
let shownPage = parseHash().page;
window.addEventListener('hashchange', () => {
  render();
  const page = parseHash().page;
  if (page !== shownPage) main.focus();
  shownPage = page;
});
render();
