// Fleet: every proxy that connected to this control plane, the revision it applied or
// refused, how far behind it is, and (with proxy reports) its last report and health.
// Source: GET /api/v1/proxies, every 2 s.

import { h, replace, every, num, chip, table, errorBox, notice, ago, when, rate, pct } from '../dom.js';
import * as api from '../api.js';

const HEALTH_KIND = { ok: 'ok', degraded: 'warn', stale: 'bad', unknown: 'muted' };

// rollout says where a proxy stands against the served revision.
function rollout(p, serving) {
  const acked = num(p.acked_revision);
  const nacked = num(p.last_nack_revision);
  if (nacked > acked) {
    return h('span', null, chip(`NACK r${nacked}`, 'bad', p.last_nack_error), h('div', { class: 'small nack' }, p.last_nack_error));
  }
  if (acked === serving) return chip('ACK', 'ok', `applied revision ${acked}`);
  if (acked === 0) return chip('waiting', 'warn', 'has applied no revision yet');
  return chip(`lagging ${serving - acked}`, 'warn', `applied revision ${acked}; the control plane serves ${serving}`);
}

function row(p, serving, reports) {
  const hl = p.health || null;
  const cells = [
    h('td', null, h('strong', null, p.node_id)),
    h('td', null, p.connected ? chip('connected', 'ok') : chip('disconnected', 'bad'), h('div', { class: 'small muted' }, p.address || '')),
    h('td', { class: 'num' }, num(p.acked_revision) ? 'r' + num(p.acked_revision) : '—'),
    h('td', { class: 'rollout' }, rollout(p, serving)),
    h('td', { class: 'num' }, num(p.acked_revision) ? String(Math.max(0, serving - num(p.acked_revision))) : '—'),
    h('td', { title: when(p.connected_since) }, p.connected_since ? ago(p.connected_since) : '—'),
  ];
  if (reports) {
    cells.push(
      h('td', { class: 'last-report', title: when(p.last_report_time) }, p.last_report_time ? ago(p.last_report_time) : 'none yet'),
      h('td', { class: 'health' }, hl ? chip(hl.status, HEALTH_KIND[hl.status] || 'muted') : '—',
        hl && hl.unhealthy_upstreams && hl.unhealthy_upstreams.length
          ? h('div', { class: 'small' }, 'breaker not closed: ', hl.unhealthy_upstreams.join(', ')) : null),
      h('td', { class: 'num' }, hl ? rate(hl.requests_per_second) : ''),
      h('td', { class: 'num' }, hl ? pct(hl.error_rate) : ''),
      h('td', { class: 'num' }, hl ? String(num(hl.in_flight)) : ''));
  }
  return h('tr', { dataset: { node: p.node_id, acked: String(num(p.acked_revision)) } }, cells);
}

export default function fleet(main, ctx) {
  const body = h('div');
  replace(main,
    h('div', { class: 'page-head' }, h('h1', null, 'Fleet'), h('p', { class: 'muted' }, 'Proxies connected to this control plane, the revision each applied, and their last report.')),
    body);
  return every(2000, async () => {
    let d;
    try {
      d = await api.get('/api/v1/proxies');
    } catch (e) {
      replace(body, errorBox(e));
      return;
    }
    const serving = num(d.revision);
    ctx.revision(serving);
    const ps = d.proxies || [];
    const reports = ps.some((p) => p.health);
    const connected = ps.filter((p) => p.connected);
    const current = connected.filter((p) => num(p.acked_revision) === serving);
    const refusing = ps.filter((p) => num(p.last_nack_revision) > num(p.acked_revision));
    const headers = ['Proxy', 'Connection', ['Applied', 'num'], 'Rollout', ['Lag', 'num'], 'Connected'];
    if (reports) headers.push('Last report', 'Health', ['Requests', 'num'], ['Errors', 'num'], ['In flight', 'num']);
    replace(body,
      h('div', { class: 'cards' },
        h('div', { class: 'card stat' }, h('div', { class: 'label' }, 'Serving revision'), h('div', { class: 'value' }, 'r' + serving)),
        h('div', { class: 'card stat' }, h('div', { class: 'label' }, 'Connected proxies'), h('div', { class: 'value', id: 'fleet-connected' }, `${connected.length} of ${ps.length}`)),
        h('div', { class: ['card', 'stat', current.length < connected.length ? 'warn' : 'ok'] }, h('div', { class: 'label' }, 'At the served revision'), h('div', { class: 'value', id: 'fleet-current' }, `${current.length} of ${connected.length}`)),
        h('div', { class: ['card', 'stat', refusing.length ? 'bad' : null] }, h('div', { class: 'label' }, 'Refusing (NACK)'), h('div', { class: 'value' }, String(refusing.length)))),
      ps.length
        ? table(headers, ps.map((p) => row(p, serving, reports)), { class: 'fleet' })
        : notice('info', 'No proxy has connected yet. Start one with ', h('code', null, 'llmproxy --control-plane HOST:PORT'), '.'),
      reports ? null : h('p', { class: 'muted small' }, 'Proxies send no reports to this control plane: last report and health are not shown.'));
  });
}
