// DOM building and formatting helpers. Text always goes in as text nodes, never as HTML, so
// names and error messages from the API cannot inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

// Properties set as DOM properties rather than attributes.
const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'open']);

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k == null || k === false) continue;
    el.append(k instanceof Node ? k : String(k));
  }
}

// h builds an HTML element: h('button', {class: 'primary', onclick: fn}, 'Save').
// Props: class (string or list, falsy entries dropped), on<event> handlers, dataset,
// value/checked/disabled/selected/open as properties, anything else as an attribute
// (true: present, null/false: absent). Children: nodes, strings, numbers, nested lists.
export function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, kids);
  return el;
}

// s builds an SVG element; every prop is an attribute.
export function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v != null && v !== false) el.setAttribute(k, String(v));
  }
  append(el, kids);
  return el;
}

// replace swaps the children of el for kids.
export function replace(el, ...kids) {
  el.replaceChildren();
  append(el, kids);
  return el;
}

// every runs fn now and then ms after each run ends, until the returned stop is called.
export function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } finally {
      if (!stopped) timer = setTimeout(tick, ms);
    }
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// num reads a JSON number or a uint64 (which proto JSON writes as a string); absent is 0.
export function num(v) {
  if (v == null || v === '') return 0;
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
}

// count formats a count: 950, 1.2k, 3.4M.
export function count(n) {
  n = num(n);
  const abs = Math.abs(n);
  if (abs >= 1e9) return (n / 1e9).toFixed(abs >= 1e10 ? 0 : 1) + 'G';
  if (abs >= 1e6) return (n / 1e6).toFixed(abs >= 1e7 ? 0 : 1) + 'M';
  if (abs >= 1e4) return (n / 1e3).toFixed(abs >= 1e5 ? 0 : 1) + 'k';
  return String(Math.round(n * 100) / 100);
}

// pct formats a ratio in [0, 1] as a percentage.
export function pct(r) {
  r = num(r) * 100;
  if (r === 0) return '0%';
  return (r < 10 ? r.toFixed(1) : r.toFixed(0)) + '%';
}

// seconds formats a duration in seconds: 850 µs, 12 ms, 1.4 s.
export function seconds(x) {
  x = num(x);
  if (x === 0) return '0';
  if (x < 1e-3) return Math.round(x * 1e6) + ' µs';
  if (x < 1) return (x < 0.01 ? (x * 1e3).toFixed(1) : Math.round(x * 1e3)) + ' ms';
  return x.toFixed(x < 10 ? 2 : 1) + ' s';
}

// rate formats a per-second rate.
export function rate(x) {
  return count(x) + '/s';
}

// ago formats how long ago an RFC 3339 time was; '' for an absent time.
export function ago(iso, now = Date.now()) {
  if (!iso) return '';
  const sec = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (sec < 60) return sec + 's ago';
  if (sec < 3600) return Math.floor(sec / 60) + 'm ago';
  if (sec < 86400) return Math.floor(sec / 3600) + 'h ago';
  return Math.floor(sec / 86400) + 'd ago';
}

const pad = (n) => String(n).padStart(2, '0');

// when formats an RFC 3339 time in local time: 2026-05-01 14:03:09.
export function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// clock formats a Date as HH:MM, with the day when it is not today.
export function clock(d) {
  const today = new Date();
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return d.toDateString() === today.toDateString() ? hm : `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}`;
}

// chip is a small coloured label; kind picks the colour (ok, warn, bad, info, muted).
export function chip(text, kind, title) {
  return h('span', { class: ['chip', kind], title }, text);
}

// table builds a table from column headers (a label, or [label, class]) and rows.
export function table(headers, rows, props = {}) {
  return h('table', { class: ['grid', props.class] },
    h('thead', null, h('tr', null, headers.map((c) => (Array.isArray(c) ? h('th', { class: c[1] }, c[0]) : h('th', null, c))))),
    h('tbody', null, rows));
}

// notice is a message box: kind is info, warn or bad.
export function notice(kind, ...kids) {
  return h('div', { class: ['notice', kind], role: kind === 'bad' ? 'alert' : 'status' }, kids);
}

// errorBox shows an API error with the fields it names.
export function errorBox(err) {
  const fields = err && err.fields ? err.fields : [];
  return notice('bad',
    h('strong', null, err && err.status ? `${err.status} ` : '', err ? err.message : 'error'),
    fields.length ? h('ul', null, fields.map((f) => h('li', null, h('code', null, f.field), ': ', f.description))) : null);
}

// mapLimit calls fn on every item, at most limit at once, and resolves to the results (an
// error in place of a result when fn failed).
export async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i], i);
      } catch (e) {
        out[i] = e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
