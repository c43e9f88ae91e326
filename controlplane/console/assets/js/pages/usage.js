// Usage: requests and tokens over time by consumer, model or upstream, from the control
// plane's per-minute rollups of the proxies' reports.
// Source: GET /api/v1/usage?by=…&window=…&step=…, every 30 s.

import { h, replace, every, num, count, table, errorBox, notice } from '../dom.js';
import { lineChart, barChart } from '../charts.js';
import * as api from '../api.js';

const DIMENSIONS = [['model', 'Model'], ['consumer', 'Consumer'], ['upstream', 'Upstream']];
// Windows offered, each with a step that keeps a chart between 15 and 288 points.
const WINDOWS = [['15m', '1m'], ['1h', '1m'], ['6h', '5m'], ['24h', '15m'], ['7d', '1h']];
// LINES is how many entries (the largest, as the API sorts them) get a line of their own.
const LINES = 8;
const BARS = 20;

const tokens = (x) => num(x.prompt_tokens) + num(x.completion_tokens);

function stat(label, value, id) {
  return h('div', { class: 'card stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value', id }, value));
}

export default function usage(main, ctx) {
  const by = DIMENSIONS.some(([d]) => d === ctx.query.get('by')) ? ctx.query.get('by') : 'model';
  const win = WINDOWS.find(([w]) => w === ctx.query.get('window')) || WINDOWS[1];
  const link = (b, w) => `#/usage?by=${b}&window=${w}`;
  const body = h('div');
  replace(main,
    h('div', { class: 'page-head' }, h('h1', null, 'Usage'),
      h('p', { class: 'muted' }, 'Requests and tokens reported by the proxies, rolled up per minute by the control plane.')),
    h('div', { class: 'toolbar' },
      h('div', { class: 'segmented', role: 'group', 'aria-label': 'group by' },
        DIMENSIONS.map(([d, label]) => h('a', { href: link(d, win[0]), class: d === by ? 'active' : null, dataset: { by: d } }, label))),
      h('div', { class: 'segmented', role: 'group', 'aria-label': 'window' },
        WINDOWS.map(([w]) => h('a', { href: link(by, w), class: w === win[0] ? 'active' : null, dataset: { window: w } }, w)))),
    body);

  return every(30000, async () => {
    let d;
    try {
      d = await api.get('/api/v1/usage', { by, window: win[0], step: win[1] });
    } catch (e) {
      replace(body, e.unrouted ? notice('warn', 'This control plane has no usage endpoint (GET /api/v1/usage).') : errorBox(e));
      return;
    }
    const entries = d.entries || [];
    const total = d.total || {};
    const first = entries[0] && entries[0].points ? entries[0].points : [];
    const times = first.map((p) => new Date(p.time));
    const top = entries.slice(0, LINES);
    const rest = entries.length - top.length;
    const label = (e) => (e.name === '' ? '(none)' : e.name);
    // Charts are drawn at the page's width: a card's padding is 2 × 17 px, two columns 14 px apart.
    const full = body.clientWidth - 34;
    const half = body.clientWidth >= 1000 ? (body.clientWidth - 14) / 2 - 34 : full;
    replace(body,
      h('div', { class: 'cards' },
        stat('Requests', count(total.requests), 'usage-requests'),
        stat('Errors', count(total.errors)),
        stat('Prompt tokens', count(total.prompt_tokens)),
        stat('Completion tokens', count(total.completion_tokens))),
      entries.length
        ? [
          h('section', { class: 'card' },
            h('h2', null, `Tokens per ${win[1]} by ${by}`, rest > 0 ? h('span', { class: 'muted small' }, ` (the ${LINES} largest; ${rest} more below)`) : null),
            lineChart(top.map((e) => ({ name: label(e), values: (e.points || []).map(tokens) })), times, { format: count, label: `tokens by ${by}`, width: full })),
          h('section', { class: 'card' },
            h('h2', null, `Requests per ${win[1]} by ${by}`),
            lineChart(top.map((e) => ({ name: label(e), values: (e.points || []).map((p) => num(p.requests)) })), times, { format: count, label: `requests by ${by}`, width: full })),
          h('div', { class: 'two' },
            h('section', { class: 'card' }, h('h2', null, `Tokens by ${by}, last ${win[0]}`),
              barChart(entries.slice(0, BARS).map((e) => ({ name: e.name, parts: [num(e.prompt_tokens), num(e.completion_tokens)], total: tokens(e) })),
                { parts: ['prompt', 'completion'], format: count, label: `tokens by ${by}`, width: half })),
            h('section', { class: 'card' }, h('h2', null, `Requests by ${by}, last ${win[0]}`),
              barChart(entries.slice(0, BARS).map((e) => ({ name: e.name, parts: [num(e.requests)], total: num(e.requests) })),
                { parts: ['requests'], format: count, label: `requests by ${by}`, width: half }))),
          table([by[0].toUpperCase() + by.slice(1), ['Requests', 'num'], ['Errors', 'num'], ['Prompt tokens', 'num'], ['Completion tokens', 'num']],
            entries.map((e) => h('tr', { dataset: { name: e.name } },
              h('td', null, label(e)), h('td', { class: 'num' }, count(e.requests)), h('td', { class: 'num' }, count(e.errors)),
              h('td', { class: 'num' }, count(e.prompt_tokens)), h('td', { class: 'num' }, count(e.completion_tokens)))), { class: 'usage' }),
        ]
        : notice('info', `No traffic by ${by} in the last ${win[0]}.`));
  });
}
