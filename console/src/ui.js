// Small DOM helpers shared by the pages: element building, labelled fields, tables,
// widgets with loading / empty / error states, a confirmation dialog and the
// shown-once secret panel.

let nextId = 0;
export const uid = (prefix = 'f') => `${prefix}-${++nextId}`;

/** h('button', {type: 'button', onclick}, 'Save') */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' || k === 'checked' || k === 'selected') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A label and its control, tied by id. `control` is an element or attrs for an <input>. */
export function field(label, control, hint) {
  const input = control instanceof Node ? control : h('input', control);
  if (!input.id) input.id = uid();
  const hintEl = hint ? h('span', { class: 'hint', id: `${input.id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: input.type === 'checkbox' ? 'field check' : 'field' },
    input.type === 'checkbox' ? [input, h('label', { for: input.id }, label)] : [h('label', { for: input.id }, label), input],
    hintEl);
}

export function select(attrs, options) {
  return h('select', attrs, options.map(([value, text]) => h('option', { value, selected: attrs.value === value }, text)));
}

/** A message for a failed action, read out by screen readers. */
export function errorText(message) {
  return h('p', { class: 'state error', role: 'alert' }, message);
}

export function note(message) {
  return h('p', { class: 'state ok', role: 'status' }, message);
}

/** An area whose content is replaced by status messages (aria-live). */
export function liveArea() {
  return h('div', { class: 'live', 'aria-live': 'polite' });
}

/**
 * A titled section that draws itself from one request: `load()` makes it, `render(data, body)`
 * draws; `isEmpty(data)` decides the empty state. Returns {el, reload}.
 */
export function widget(title, { load, render, isEmpty = () => false, empty = 'Nothing yet.', className = '', actions } = {}) {
  const body = h('div', { class: 'widget-body' });
  const heading = title ? h('h2', {}, title) : null;
  const el = h('section', { class: `widget ${className}`, 'aria-label': title || undefined }, heading || actions ? h('div', { class: 'widget-head' }, heading, actions) : null, body);
  let seq = 0;
  const reload = async () => {
    const mine = ++seq;
    el.setAttribute('aria-busy', 'true');
    clear(body, h('p', { class: 'state loading', role: 'status' }, 'Loading…'));
    try {
      const data = await load();
      if (mine !== seq) return;
      clear(body);
      if (isEmpty(data)) body.append(h('p', { class: 'state empty' }, empty));
      else render(data, body);
    } catch (e) {
      if (mine !== seq) return;
      clear(body, errorText(e.message));
    } finally {
      if (mine === seq) el.removeAttribute('aria-busy');
    }
  };
  reload();
  return { el, reload, body };
}

/** A table that scrolls sideways on narrow screens. columns: [{label, cell(row) → node|string, num?}] */
export function table(columns, rows, { caption } = {}) {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption ?? 'table' },
    h('table', {},
      caption ? h('caption', { class: 'sr-only' }, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : undefined }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, columns.map((c) => h('td', { class: c.num ? 'num' : undefined }, c.cell(r))))))));
}

/** Previous / next page buttons. */
export function pager({ page, size, total, onPage }) {
  const pages = Math.max(1, Math.ceil(total / size));
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    h('button', { type: 'button', disabled: page <= 1, onclick: () => onPage(page - 1) }, 'Previous'),
    h('span', {}, `Page ${page} of ${pages} · ${total} in all`),
    h('button', { type: 'button', disabled: page >= pages, onclick: () => onPage(page + 1) }, 'Next'));
}

/** Asks before something that cannot be undone. Resolves true when confirmed. */
export function confirmAction(message, confirmLabel = 'Delete') {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-msg' },
      h('p', { id: 'confirm-msg' }, message),
      h('div', { class: 'row' },
        h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close('cancel') }, 'Cancel'),
        h('button', { type: 'button', class: 'danger', onclick: () => dialog.close('ok') }, confirmLabel)));
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'ok');
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** Shows a secret once, with a copy button and a warning. */
export function secretPanel(title, secret, extra) {
  const input = h('input', { type: 'text', readonly: true, value: secret, class: 'secret', spellcheck: 'false', 'aria-label': title });
  const status = h('span', { class: 'hint', 'aria-live': 'polite' });
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(secret);
    } catch {
      input.select();
      document.execCommand('copy');
    }
    status.textContent = 'Copied.';
  };
  return h('div', { class: 'secret-panel', role: 'region', 'aria-label': title },
    h('h3', {}, title),
    h('p', { class: 'warning' }, 'Copy it now: this is the only time it is shown. Tollgate keeps only its hash.'),
    h('div', { class: 'row' }, input, h('button', { type: 'button', onclick: copy }, 'Copy'), status),
    extra);
}

/** A form whose submit runs `action(formData)`, disabling it meanwhile and showing errors inline. */
export function form(attrs, children, action) {
  const live = liveArea();
  const el = h('form', { ...attrs, novalidate: attrs.novalidate }, children, live);
  el.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!el.reportValidity()) return;
    const buttons = el.querySelectorAll('button');
    buttons.forEach((b) => (b.disabled = true));
    clear(live);
    try {
      const message = await action(new FormData(el), el);
      if (message) live.append(note(message));
    } catch (e) {
      live.append(errorText(e.message));
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
  return el;
}

/** A button whose click runs an async action, with errors shown next to it. */
export function actionButton(label, action, attrs = {}) {
  const btn = h('button', { type: 'button', ...attrs }, label);
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    const old = btn.parentElement?.querySelector(':scope > .inline-error');
    old?.remove();
    try {
      await action();
    } catch (e) {
      btn.after(h('span', { class: 'inline-error', role: 'alert' }, e.message));
    } finally {
      btn.disabled = false;
    }
  });
  return btn;
}

export function badge(text, kind = text) {
  return h('span', { class: `badge badge-${kind}` }, text);
}

/** A labelled horizontal bar (usage against a limit). */
export function meter(label, value, max, text) {
  const pct = max > 0 ? Math.min(100, (value / max) * 100) : 0;
  const fill = h('div', { class: 'meter-fill' });
  fill.style.width = `${pct.toFixed(1)}%`; // through CSSOM: the CSP allows no inline style attributes
  return h('div', { class: 'meter' },
    h('div', { class: 'meter-label' }, h('span', {}, label), h('span', {}, text)),
    h('div', { class: `meter-track${pct >= 90 ? ' hot' : ''}`, role: 'meter', 'aria-label': label, 'aria-valuemin': '0', 'aria-valuemax': String(max), 'aria-valuenow': String(value), 'aria-valuetext': text },
      fill));
}
