// Upstreams: the fleet's verdict on every upstream (healthy, degraded: breaker open on some
// proxies, down: on all), each proxy's view from its last report, and the last hour per
// minute (attempts, failures, latency) as sparklines.
// Sources: GET /api/v1/upstreams (names, URLs) and GET /api/v1/upstream-health (every
// upstream's GET /api/v1/upstreams/{name}/health in one answer); every 5 s.

import { h, replace, every, num, chip, table, errorBox, notice, ago, when, rate, pct, seconds, count } from '../dom.js';
import { sparkline } from '../charts.js';
import * as api from '../api.js';

const VERDICT_KIND = { healthy: 'ok', degraded: 'warn', down: 'bad', unknown: 'muted' };
const VERDICT_ORDER = { down: 0, degraded: 1, unknown: 2, healthy: 3 };
const BREAKER_KIND = { closed: 'ok', half_open: 'warn', open: 'bad' };

function proxyRows(health) {
  return (health.proxies || []).map((p) => h('tr', { dataset: { node: p.node_id, breaker: p.breaker }, class: p.stale ? 'stale' : null },
    h('td', null, p.node_id, p.stale ? h('span', { class: 'small muted' }, ' (stale)') : null),
    h('td', null, chip(p.breaker.replace('_', '-'), BREAKER_KIND[p.breaker] || 'muted')),
    h('td', { class: 'num' }, count(p.requests)),
    h('td', { class: 'num' }, count(p.errors)),
    h('td', { class: 'num' }, count(p.rate_limited)),
    h('td', { class: 'num' }, seconds(p.latency_p50_seconds)),
    h('td', { class: 'num' }, seconds(p.latency_p95_seconds)),
    h('td', { class: 'num' }, String(num(p.in_flight))),
    h('td', { title: when(p.report_time) }, ago(p.report_time))));
}

// MINUTES is the span of the sparklines: the hour the health endpoint keeps.
const MINUTES = 60;

// perMinute lays the health endpoint's recent points (silent minutes left out) on the last
// MINUTES minutes, the minute in progress last, silent minutes as 0.
function perMinute(recent, field) {
  const out = new Array(MINUTES).fill(0);
  const now = Math.floor(Date.now() / 60000);
  for (const p of recent || []) {
    const i = MINUTES - 1 - (now - Math.floor(Date.parse(p.time) / 60000));
    if (i >= 0 && i < MINUTES) out[i] = num(p[field]);
  }
  return out;
}

function card(u, health) {
  const ok = Boolean(health);
  const verdict = ok ? health.verdict : null;
  const recent = ok ? health.recent : null;
  return h('section', { class: ['card', 'upstream', verdict ? 'v-' + verdict : null], dataset: { upstream: u.name, verdict: verdict || '' } },
    h('div', { class: 'card-head' },
      h('h2', null, u.name),
      verdict ? chip(verdict, VERDICT_KIND[verdict] || 'muted', health.reason) : null,
      h('span', { class: 'spacer' }),
      h('code', { class: 'small muted url' }, u.url)),
    ok
      ? h('div', { class: 'upstream-body' },
        h('p', { class: 'reason' }, health.reason || ''),
        h('div', { class: 'stats' },
          h('div', null, h('span', { class: 'label' }, 'Requests'), rate(health.requests_per_second)),
          h('div', null, h('span', { class: 'label' }, 'Error rate'), pct(health.error_rate)),
          h('div', null, h('span', { class: 'label' }, 'In flight'), String(num(health.in_flight))),
          h('div', { class: 'spark-cell' }, h('span', { class: 'label' }, 'Attempts / min'), sparkline(perMinute(recent, 'requests'), { title: 'attempts per minute, last hour', cls: 's0', format: count })),
          h('div', { class: 'spark-cell' }, h('span', { class: 'label' }, 'Failed / min'), sparkline(perMinute(recent, 'errors'), { title: 'failed attempts per minute, last hour', cls: 'bad', format: count })),
          h('div', { class: 'spark-cell' }, h('span', { class: 'label' }, 'Latency p95'), sparkline(perMinute(recent, 'latency_p95_seconds'), { title: 'p95 latency (attempt-weighted over proxies), last hour', cls: 's4', format: seconds }))),
        (health.proxies || []).length
          ? table(['Proxy', 'Breaker', ['Attempts', 'num'], ['Failed', 'num'], ['429s', 'num'], ['p50', 'num'], ['p95', 'num'], ['In flight', 'num'], 'Report'], proxyRows(health), { class: 'compact' })
          : h('p', { class: 'muted small' }, 'No proxy has reported this upstream.'))
      : null);
}

export default function upstreams(main, ctx) {
  const body = h('div', { class: 'upstream-list' });
  replace(main,
    h('div', { class: 'page-head' }, h('h1', null, 'Upstreams'),
      h('p', { class: 'muted' }, 'Passive health as every proxy sees it (no probes are sent), from the proxies\u2019 reports. Counts cover each proxy\u2019s last report interval.')),
    body);
  return every(5000, async () => {
    let list, healthList;
    try {
      [list, healthList] = await Promise.all([
        api.get('/api/v1/upstreams'),
        api.get('/api/v1/upstream-health').catch((e) => e),
      ]);
    } catch (e) {
      replace(body, errorBox(e));
      return;
    }
    ctx.revision(num(list.revision));
    const ups = list.upstreams || [];
    const noReports = healthList instanceof api.APIError && (healthList.unrouted || healthList.code === 'unimplemented');
    const byName = {};
    if (!(healthList instanceof Error)) {
      for (const x of healthList.upstreams || []) byName[x.name] = x;
    }
    const healthErr = healthList instanceof Error && !noReports ? healthList : null;
    // An upstream added between the two calls has no health yet.
    const order = ups.map((u) => ({ u, health: byName[u.name] || null }));
    order.sort((a, b) => {
      const va = a.health ? VERDICT_ORDER[a.health.verdict] : 9;
      const vb = b.health ? VERDICT_ORDER[b.health.verdict] : 9;
      return va - vb || a.u.name.localeCompare(b.u.name);
    });
    replace(body,
      noReports ? notice('warn', 'This control plane collects no proxy reports (GET /api/v1/upstream-health): only the configured upstreams are listed.') : null,
      healthErr ? errorBox(healthErr) : null,
      ups.length ? null : notice('info', 'No upstream is configured.'),
      order.map(({ u, health }) => card(u, health)));
  });
}
