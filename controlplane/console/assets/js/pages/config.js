// Config: browse and edit forwards, routes, upstream groups, upstreams and (when the control
// plane has them) consumers. Every change is previewed with dry_run=true and the API's diff
// before it is applied (see editor.js). Validation is the control plane's: the console
// checks nothing itself and shows the fields the API names.
// Sources: the resource endpoints under /api/v1/ (list, create, update, delete).

import { h, replace, num, chip, table, errorBox, notice } from '../dom.js';
import { changeDialog, resourceForm } from '../editor.js';
import * as api from '../api.js';

const names = (xs) => (xs || []).map((x) => x.name);

// Each kind: its tab, how to list it, its table, its form fields, and its write paths.
const KINDS = [
  {
    id: 'forwards', label: 'Forwards', singular: 'forward',
    list: () => api.get('/api/v1/forwards').then((d) => ({ revision: d.revision, items: d.forwards || [] })),
    columns: ['Name', 'Listen', 'Default group', 'Routes', 'Rate limit'],
    cells: (f) => [
      h('strong', null, f.name),
      h('code', null, `${f.address || '0.0.0.0'}:${f.port || ''}`),
      f.default_group || '—',
      String((f.routing || []).length),
      // A ratelimit block limits unless it says enabled: false.
      f.ratelimit && f.ratelimit.enabled !== false ? `${f.ratelimit.per_second || 100}/s` : 'off',
    ],
    fields: (isNew) => [
      { path: 'name', label: 'Name', readonly: !isNew },
      { path: 'address', label: 'Address', placeholder: 'e.g. 0.0.0.0' },
      { path: 'port', label: 'Port', type: 'number' },
      { path: 'default_group', label: 'Default group', type: 'select', options: (o) => o.groups },
      { path: 'max_body_bytes', label: 'Max body bytes', type: 'number' },
      { path: 'ratelimit.enabled', label: 'Rate limit', type: 'bool' },
      { path: 'ratelimit.per_second', label: 'Requests per second per client', type: 'number' },
      { path: 'ratelimit.burst', label: 'Burst', type: 'number' },
    ],
    create: () => '/api/v1/forwards',
    item: (f) => `/api/v1/forwards/${api.seg(f.name)}`,
  },
  {
    id: 'routes', label: 'Routes', singular: 'route', perForward: true,
    list: (fwd) => api.get(`/api/v1/forwards/${api.seg(fwd)}/routes`).then((d) => ({
      revision: d.revision,
      items: (d.routes || []).map((r) => Object.assign({ _id: r.id }, r.route)),
    })),
    columns: ['Path', 'Target group', 'Model', 'Methods', 'Headers'],
    cells: (r) => [
      h('code', null, r.path),
      h('strong', { class: 'target' }, r.target_group),
      r.model ? h('code', null, r.model) : '—',
      (r.methods || []).join(', ') || 'any',
      Object.entries(r.headers || {}).map(([k, v]) => h('div', null, h('code', null, `${k}: ${v}`))),
    ],
    fields: (isNew) => [
      { path: 'path', label: 'Path', readonly: !isNew, placeholder: 'e.g. /v1/chat/completions', hint: 'LLMProxy patterns: :param, {param:regex}, * (one segment, or the rest at the end)' },
      { path: 'target_group', label: 'Target group', type: 'select', required: true, options: (o) => o.groups },
      { path: 'model', label: 'Model glob', placeholder: 'e.g. gpt-4o*' },
      { path: 'methods', label: 'Methods', type: 'list', placeholder: 'e.g. POST, GET' },
      { path: 'headers', label: 'Headers (name=value a line)', type: 'map' },
    ],
    create: (fwd) => `/api/v1/forwards/${api.seg(fwd)}/routes`,
    item: (r, fwd) => `/api/v1/forwards/${api.seg(fwd)}/routes/${api.seg(r._id)}`,
    key: (r) => r.path,
  },
  {
    id: 'groups', label: 'Upstream groups', singular: 'upstream group',
    list: () => api.get('/api/v1/upstream-groups').then((d) => ({ revision: d.revision, items: d.upstream_groups || [] })),
    columns: ['Name', 'Members (weight)', 'Balance', 'Retries', 'Concurrency'],
    cells: (g) => [
      h('strong', null, g.name),
      (g.upstreams || []).map((m) => h('div', null, m.name, m.weight != null ? h('span', { class: 'muted' }, ` ×${m.weight}`) : null)),
      (g.balance && g.balance.strategy) || 'default',
      g.http_client && g.http_client.retry && g.http_client.retry.attempts != null ? String(g.http_client.retry.attempts) : 'default',
      g.concurrency && g.concurrency.max ? `max ${g.concurrency.max}` : 'unlimited',
    ],
    fields: (isNew) => [
      { path: 'name', label: 'Name', readonly: !isNew },
      { path: 'upstreams', label: 'Members', type: 'members', options: (o) => o.upstreams },
      { path: 'balance.strategy', label: 'Balance strategy', placeholder: 'e.g. roundrobin' },
      { path: 'http_client.retry.attempts', label: 'Retry attempts', type: 'number' },
      { path: 'http_client.timeout.request', label: 'Request timeout (s)', type: 'number' },
      { path: 'concurrency.max', label: 'Max in flight', type: 'number' },
    ],
    create: () => '/api/v1/upstream-groups',
    item: (g) => `/api/v1/upstream-groups/${api.seg(g.name)}`,
  },
  {
    id: 'upstreams', label: 'Upstreams', singular: 'upstream',
    list: () => api.get('/api/v1/upstreams').then((d) => ({ revision: d.revision, items: d.upstreams || [] })),
    columns: ['Name', 'URL', 'Auth', 'Breaker'],
    cells: (u) => [
      h('strong', null, u.name),
      h('code', { class: 'url' }, u.url),
      u.auth && u.auth.type ? u.auth.type : 'none',
      u.breaker ? Object.entries(u.breaker).map(([k, v]) => `${k} ${v}`).join(', ') : 'default',
    ],
    fields: (isNew) => [
      { path: 'name', label: 'Name', readonly: !isNew },
      { path: 'url', label: 'URL', placeholder: 'e.g. https://api.openai.com/v1' },
      { path: 'auth.type', label: 'Auth type', placeholder: 'e.g. bearer' },
      { path: 'auth.token', label: 'Auth token', secret: true, hint: 'Shown as <redacted>: leave it so to keep the stored secret; ${env:NAME} is resolved by each proxy.' },
      { path: 'breaker.threshold', label: 'Breaker threshold (failure ratio)', type: 'number' },
      { path: 'breaker.cooldown', label: 'Breaker cooldown (s)', type: 'number' },
      { path: 'breaker.window', label: 'Breaker window', placeholder: 'e.g. 10s' },
      { path: 'breaker.min_requests', label: 'Breaker min requests', type: 'number' },
      { path: 'breaker.half_open_probes', label: 'Half-open probes', type: 'number' },
    ],
    create: () => '/api/v1/upstreams',
    item: (u) => `/api/v1/upstreams/${api.seg(u.name)}`,
  },
  {
    id: 'consumers', label: 'Consumers', singular: 'consumer', optional: true,
    list: () => api.get('/api/v1/consumers').then((d) => ({ revision: d.revision, items: d.consumers || [] })),
    columns: ['Name', 'Keys', 'Models', 'Forwards', 'Limits'],
    cells: (c) => [
      h('strong', null, c.name),
      (c.keys || []).map((k) => h('div', null, h('code', null, k.id), k.disabled ? chip('disabled', 'bad') : null, k.expires_at ? h('span', { class: 'muted small' }, ` expires ${k.expires_at}`) : null)),
      (c.models || []).join(', ') || 'any',
      (c.forwards || []).join(', ') || 'any',
      c.limits ? Object.entries(c.limits).map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ') : 'none',
    ],
    fields: (isNew) => [
      { path: 'name', label: 'Name', readonly: !isNew },
      { path: 'models', label: 'Models (globs)', type: 'list', placeholder: 'e.g. gpt-4o*, claude-*' },
      { path: 'forwards', label: 'Forwards', type: 'list' },
      { path: 'limits.requests_per_minute', label: 'Requests per minute', type: 'number' },
      { path: 'limits.tokens_per_minute', label: 'Tokens per minute', type: 'number' },
      { path: 'limits.tokens_per_day', label: 'Tokens per day', type: 'number' },
      { path: 'limits.max_parallel', label: 'Max parallel', type: 'number' },
      { path: 'labels', label: 'Labels (key=value a line)', type: 'map' },
    ],
    create: () => '/api/v1/consumers',
    item: (c) => `/api/v1/consumers/${api.seg(c.name)}`,
  },
];

// strip drops the console's bookkeeping (keys starting with _) before a resource is sent.
function strip(r) {
  const out = {};
  for (const [k, v] of Object.entries(r)) if (!k.startsWith('_')) out[k] = v;
  return out;
}

// writer returns the send function of the change dialog for one write.
const writer = (method, path) => (body, params) => api.call(method, path, { query: params, body });

export default function config(main, ctx) {
  let alive = true;
  const tabs = h('nav', { class: 'tabs' });
  const body = h('div', { class: 'config-body' });
  replace(main,
    h('div', { class: 'page-head' }, h('h1', null, 'Config'),
      h('p', { class: 'muted' }, 'Every change is checked by the control plane (dry run) and shown as a diff before it is applied.')),
    tabs, body);

  const load = async () => {
    // The option lists of the forms (groups, upstreams, forwards) and whether consumers exist.
    const [fw, gs, us, cs] = await Promise.all([
      api.get('/api/v1/forwards'), api.get('/api/v1/upstream-groups'), api.get('/api/v1/upstreams'),
      api.get('/api/v1/consumers').catch((e) => e),
    ]);
    const hasConsumers = !(cs instanceof api.APIError && cs.unrouted);
    const options = { forwards: names(fw.forwards), groups: names(gs.upstream_groups), upstreams: names(us.upstreams) };
    const kinds = KINDS.filter((k) => !k.optional || hasConsumers);
    const kind = kinds.find((k) => k.id === ctx.rest[0]) || kinds[0];
    replace(tabs, kinds.map((k) => h('a', { href: '#/config/' + k.id, class: k === kind ? 'active' : null, dataset: { tab: k.id } }, k.label)));
    const forward = kind.perForward ? (ctx.query.get('forward') || options.forwards[0]) : null;
    if (kind.perForward && !forward) {
      replace(body, notice('info', 'No forward is configured: create one first.'));
      return;
    }
    const { revision, items } = await kind.list(forward);
    if (!alive) return;
    ctx.revision(num(revision));
    const reload = () => {
      if (alive) load().catch((e) => replace(body, errorBox(e)));
    };
    const edit = (item) => {
      const isNew = !item;
      const form = resourceForm(isNew ? {} : strip(item), kind.fields(isNew), options);
      changeDialog({
        title: isNew ? `New ${kind.singular}` : `Edit ${kind.singular} ${kind.key ? kind.key(item) : item.name}`,
        intro: forward ? h('p', { class: 'muted' }, 'Forward ', h('strong', null, forward)) : null,
        form,
        send: isNew ? writer('POST', kind.create(forward)) : writer('PUT', kind.item(item, forward)),
        defaultMessage: '',
        onDone: reload,
      });
    };
    const remove = (item) => changeDialog({
      title: `Delete ${kind.singular} ${kind.key ? kind.key(item) : item.name}`,
      intro: h('p', null, 'The control plane refuses to delete what is still referenced. The preview shows what would go.'),
      send: writer('DELETE', kind.item(item, forward)),
      commitLabel: 'Delete',
      danger: true,
      onDone: reload,
    });
    replace(body,
      h('div', { class: 'toolbar' },
        kind.perForward
          ? h('label', null, 'Forward ', h('select', {
            id: 'forward-select',
            onchange: (ev) => ctx.go(`#/config/${kind.id}?forward=${encodeURIComponent(ev.target.value)}`),
          }, options.forwards.map((f) => h('option', { value: f, selected: f === forward }, f))))
          : null,
        h('span', { class: 'spacer' }),
        h('button', { class: 'primary', id: 'new-resource', onclick: () => edit(null) }, `New ${kind.singular}`)),
      items.length
        ? table([...kind.columns, ''], items.map((it) => h('tr', { dataset: { name: kind.key ? kind.key(it) : it.name } },
          kind.cells(it).map((c) => h('td', null, c)),
          h('td', { class: 'actions' },
            h('button', { class: 'edit', onclick: () => edit(it) }, 'Edit'),
            h('button', { class: 'link danger-text delete', onclick: () => remove(it) }, 'Delete')))), { class: 'config ' + kind.id })
        : notice('info', `No ${kind.singular} is configured.`));
  };
  load().catch((e) => replace(body, errorBox(e)));
  return () => {
    alive = false;
  };
}
