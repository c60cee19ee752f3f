// Routes: which provider serves each priced model (its pin, else the default rule), a form to pin a
// model to a provider under its native id, and unpinning.

import { del, get, put } from '../api.js';
import { actionButton, badge, field, form, h, select, table, widget } from '../ui.js';

const PROVIDERS = [['openrouter', 'OpenRouter'], ['openai', 'OpenAI'], ['anthropic', 'Anthropic'], ['google', 'Google']];

export function routesPage(main) {
  const list = widget('Routes', {
    load: () => get('/api/admin/routes'),
    isEmpty: (r) => r.data.length === 0,
    empty: 'No priced models yet: a model is routed once it has a price.',
    render: (r, body) => {
      const direct = r.direct_providers.length ? r.direct_providers.join(', ') : 'none (everything goes to OpenRouter)';
      body.append(h('p', { class: 'hint' }, `Direct provider keys on this tenant: ${direct}.`), table([
        { label: 'Model', cell: (x) => x.model },
        { label: 'Provider', cell: (x) => x.provider },
        { label: 'Native id', cell: (x) => x.native_model },
        { label: 'OpenRouter fallback', cell: (x) => (x.fallback_to_openrouter ? 'yes' : 'no') },
        { label: 'Pin', cell: (x) => (x.pinned ? [badge('pinned', 'edited'), ' ', actionButton('Unpin', async () => {
          await del(`/api/admin/routes/${pathOf(x.model)}`);
          list.reload();
        }, { class: 'secondary', 'aria-label': `Unpin ${x.model}` })] : '—') },
      ], r.data, { caption: 'Routes' }));
    },
  });

  const pin = form({ class: 'card', 'aria-labelledby': 'pin-title' }, [
    h('h2', { id: 'pin-title' }, 'Pin a model'),
    h('p', {}, 'Sends a priced model to one provider, under that provider\'s own id, from the next request on.'),
    field('Model', { type: 'text', name: 'model', required: true, placeholder: 'anthropic/claude-3.5-sonnet', autocomplete: 'off' }),
    field('Provider', select({ name: 'provider', value: 'anthropic' }, PROVIDERS)),
    field('Native id', { type: 'text', name: 'native_model', placeholder: 'claude-3-5-sonnet-latest', autocomplete: 'off' }, 'Empty: the id without its provider prefix.'),
    field('Fall back to OpenRouter when the provider keeps failing', { type: 'checkbox', name: 'fallback', checked: true }),
    h('button', { type: 'submit' }, 'Pin'),
  ], async (fd) => {
    const model = fd.get('model').trim();
    const native = fd.get('native_model').trim();
    const { data } = await put(`/api/admin/routes/${pathOf(model)}`, {
      provider: fd.get('provider'), native_model: native || null, fallback_to_openrouter: fd.get('fallback') === 'on',
    });
    list.reload();
    return `${data.model} now goes to ${data.provider} as ${data.native_model}.`;
  });

  main.append(h('h1', {}, 'Routes'), pin, list.el);
}

/** A model id as path segments, each encoded (an id's `?`, `#` or `%` would send the call elsewhere). */
function pathOf(model) {
  return model.split('/').map(encodeURIComponent).join('/');
}
