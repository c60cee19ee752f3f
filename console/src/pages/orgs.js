// Organizations: their monthly limits, this month's usage against each as a bar, create,
// change limits, suspend / activate.

import { get, patch, post, qs } from '../api.js';
import { monthStart, num, today, usd } from '../format.js';
import { field, form, h, meter, widget } from '../ui.js';

export function orgsPage(main) {
  const list = widget('Organizations', {
    load: () => get('/api/orgs?page_size=100'),
    isEmpty: (r) => r.total === 0,
    empty: 'No organizations yet.',
    render: (r, body) => {
      body.append(h('p', { class: 'hint' }, `Usage counts this calendar month (UTC), from ${monthStart()}.`));
      for (const org of r.data) body.append(orgCard(org, () => list.reload()).el);
    },
  });

  const create = form({ class: 'card', 'aria-labelledby': 'new-org' }, [
    h('h2', { id: 'new-org' }, 'Create an organization'),
    h('div', { class: 'row wrap' },
      field('Name', { type: 'text', name: 'name', required: true }),
      field('Description', { type: 'text', name: 'description' })),
    limitFields({}),
    allowedField({}),
    h('button', { type: 'submit' }, 'Create organization'),
  ], async (fd, el) => {
    const body = { name: fd.get('name').trim(), limits: limitsFrom(fd), allowed_models: modelsFrom(fd) };
    if (fd.get('description')) body.description = fd.get('description').trim();
    await post('/api/orgs', body);
    el.reset();
    list.reload();
    return 'Created.';
  });

  main.append(h('h1', {}, 'Organizations'), list.el, create);
}

function limitFields(limits) {
  return h('div', { class: 'row wrap' },
    field('Monthly requests', { type: 'number', name: 'monthly_requests', min: '1', step: '1', value: limits.monthly_requests ?? '' }, 'Empty: no limit.'),
    field('Monthly tokens', { type: 'number', name: 'monthly_tokens', min: '1', step: '1', value: limits.monthly_tokens ?? '' }),
    field('Monthly spend (USD)', { type: 'number', name: 'monthly_cost', min: '0', step: '0.01', value: limits.monthly_cost ?? '' }));
}

/** The models every key of the organization may use (`allowed_models`). */
function allowedField(org) {
  return h('div', { class: 'row wrap' },
    field('Allowed models', { type: 'text', name: 'allowed_models', autocomplete: 'off', value: (org.allowed_models ?? []).join(', '), placeholder: 'openai/*, anthropic/claude-3.5-sonnet' },
      'Model ids or vendor/*, separated by commas: they bind every key of the organization. Empty: any model.'));
}

function modelsFrom(fd) {
  return (fd.get('allowed_models') ?? '').split(',').map((m) => m.trim()).filter(Boolean);
}

function limitsFrom(fd) {
  const n = (name) => (fd.get(name) === '' ? null : Number(fd.get(name)));
  return { monthly_requests: n('monthly_requests'), monthly_tokens: n('monthly_tokens'), monthly_cost: n('monthly_cost') };
}

/** One organization: its limits and this month's usage against them (one stats request). */
function orgCard(org, onChange) {
  const enc = encodeURIComponent(org.id);
  const l = org.limits;
  return widget(org.name, {
    className: 'org',
    load: () => get(`/api/stats/orgs/${enc}${qs({ group_by: 'provider', start: monthStart(), end: today() })}`),
    render: ({ data }, body) => {
      const used = data.reduce((t, b) => ({ requests: t.requests + b.requests, tokens: t.tokens + b.prompt_tokens + b.completion_tokens, cost: t.cost + b.cost }), { requests: 0, tokens: 0, cost: 0 });
      const bar = (label, value, max, fmt) => (max === null || max === undefined
        ? h('p', { class: 'meter-none' }, `${label}: ${fmt(value)} (no limit)`)
        : meter(label, value, max, `${fmt(value)} of ${fmt(max)}`));
      body.append(
        h('p', {}, `Status: ${org.status}`, org.description ? ` · ${org.description}` : ''),
        ...(org.allowed_models?.length ? [h('p', { class: 'hint' }, `Models: only ${org.allowed_models.join(', ')}`)] : []),
        bar('Requests', used.requests, l.monthly_requests, num),
        bar('Tokens', used.tokens, l.monthly_tokens, num),
        bar('Spend', used.cost, l.monthly_cost, usd),
        h('details', { class: 'disclosure' }, h('summary', {}, `Change ${org.name}`),
          form({ class: 'inline', 'aria-label': `Limits of ${org.name}` }, [
            limitFields(l),
            allowedField(org),
            h('div', { class: 'row' },
              field('Suspended', { type: 'checkbox', name: 'suspended', checked: org.status === 'suspended' })),
            h('button', { type: 'submit' }, 'Save'),
          ], async (fd) => {
            await patch(`/api/orgs/${enc}`, { limits: limitsFrom(fd), allowed_models: modelsFrom(fd), status: fd.get('suspended') ? 'suspended' : 'active' });
            onChange();
          })));
    },
  });
}
