// Prices: the table (USD per token, also read per million tokens), inline edit, and sync
// from the upstream with an overwrite switch.

import { get, post, put } from '../api.js';
import { decimal, num, perMillion } from '../format.js';
import { badge, clear, field, form, h, table, widget } from '../ui.js';

export function pricesPage(main) {
  const filter = h('input', { type: 'search', placeholder: 'model or provider' });
  let rows = [];
  let tableArea;
  const draw = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = q ? rows.filter((p) => p.model_name.toLowerCase().includes(q) || (p.provider ?? '').toLowerCase().includes(q)) : rows;
    clear(tableArea, shown.length ? priceTable(shown, () => list.reload()) : h('p', { class: 'state empty' }, 'No model matches.'));
  };
  filter.addEventListener('input', () => tableArea && draw());

  const list = widget('Prices', {
    load: () => get('/api/models/pricing'),
    isEmpty: (r) => r.data.length === 0,
    empty: 'No prices yet: sync them from the upstream below.',
    render: (r, body) => {
      rows = r.data;
      tableArea = h('div');
      body.append(h('p', { class: 'hint' }, `${num(rows.length)} models. Prices are USD per token; the columns “per 1M” read them per million tokens.`), field('Filter models', filter), tableArea);
      draw();
    },
  });

  const sync = form({ class: 'card', 'aria-labelledby': 'sync-title' }, [
    h('h2', { id: 'sync-title' }, 'Sync from the upstream'),
    h('p', {}, 'Pulls the upstream model list and its prices (plus the tenant\'s markup). Rows an operator edited are kept unless you overwrite them.'),
    field('Overwrite edited prices', { type: 'checkbox', name: 'overwrite' }),
    h('button', { type: 'submit' }, 'Sync prices'),
  ], async (fd) => {
    const { data } = await post('/api/models/pricing/sync', { overwrite: fd.get('overwrite') === 'on' });
    list.reload();
    return `Synced ${num(data.synced)} models${data.overwrite ? ', overwriting edits' : ''}.`;
  });

  main.append(h('h1', {}, 'Prices'), sync, list.el);
}

function priceTable(rows, onChange) {
  return table([
    { label: 'Model', cell: (p) => p.model_name },
    { label: 'Provider', cell: (p) => p.provider ?? '—' },
    { label: 'Input', num: true, cell: (p) => decimal(p.pricing_input) },
    { label: 'Input per 1M', num: true, cell: (p) => perMillion(p.pricing_input) },
    { label: 'Output', num: true, cell: (p) => decimal(p.pricing_output) },
    { label: 'Output per 1M', num: true, cell: (p) => perMillion(p.pricing_output) },
    { label: 'Context', num: true, cell: (p) => num(p.context_length) },
    { label: 'State', cell: (p) => [p.is_active ? badge('active') : badge('inactive', 'disabled'), p.edited_by_admin ? badge('edited', 'edited') : null] },
    { label: 'Edit', cell: (p) => editCell(p, onChange) },
  ], rows, { caption: 'Prices' });
}

function editCell(p, onChange) {
  return h('details', { class: 'rotate' }, h('summary', { 'aria-label': `Edit ${p.model_name}` }, 'Edit'),
    form({ class: 'inline', 'aria-label': `Price of ${p.model_name}` }, [
      field('Input (USD/token)', { type: 'text', name: 'pricing_input', value: decimal(p.pricing_input), required: true, inputmode: 'decimal', pattern: '[0-9]*\\.?[0-9]+([eE]-?[0-9]+)?' }),
      field('Output (USD/token)', { type: 'text', name: 'pricing_output', value: decimal(p.pricing_output), required: true, inputmode: 'decimal', pattern: '[0-9]*\\.?[0-9]+([eE]-?[0-9]+)?' }),
      field('Active', { type: 'checkbox', name: 'is_active', checked: !!p.is_active }),
      h('button', { type: 'submit' }, 'Save price'),
    ], async (fd) => {
      // A PUT replaces the row: what this form does not show is sent back as it was (cache and reasoning
      // rates, limits, the long-context tier), so saving input and output does not clear it.
      const kept = ['display_name', 'provider', 'pricing_cache_read', 'pricing_cache_write', 'pricing_reasoning',
        'context_length', 'max_completion_tokens', 'long_context'];
      await put('/api/models/pricing', {
        ...Object.fromEntries(kept.map((k) => [k, p[k] ?? null])),
        model_name: p.model_name, pricing_input: fd.get('pricing_input').trim(), pricing_output: fd.get('pricing_output').trim(),
        is_active: fd.get('is_active') === 'on',
      });
      onChange();
    }));
}
