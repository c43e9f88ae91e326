// Rendering of the API's structured config diffs (ConfigDiff) and fleet rollouts (Rollout).

import { h, chip, notice, num } from './dom.js';

const ACTION_KIND = { added: 'ok', removed: 'bad', changed: 'warn' };

// breakable puts word-break opportunities after the separators of a field path, so a long
// path wraps at a dot or a bracket rather than inside a name.
function breakable(path) {
  return path.split(/(?<=[.\]/])/).flatMap((part, i) => (i ? [h('wbr'), part] : [part]));
}

function value(v) {
  if (v === undefined) return h('span', { class: 'muted' }, 'unset');
  return h('code', null, typeof v === 'string' ? v : JSON.stringify(v));
}

// diffView shows a ConfigDiff resource by resource, field by field. Secrets never come
// back from the API; a changed secret shows as such.
export function diffView(diff) {
  const resources = (diff && diff.resources) || [];
  if (!resources.length) {
    return h('p', { class: 'diff-empty muted' }, 'No change: the config would stay as it is.');
  }
  return h('div', { class: 'diff' }, resources.map((r) =>
    h('section', { class: 'diff-resource', dataset: { kind: r.kind, name: r.name || '' } },
      h('h4', null, chip(r.action, ACTION_KIND[r.action] || 'info'), ' ', h('span', { class: 'muted' }, r.kind.replace('_', ' ')), ' ', r.name || ''),
      h('table', { class: 'diff-fields' }, h('tbody', null, (r.fields || []).map((f) =>
        h('tr', { dataset: { path: f.path } },
          h('td', { class: 'path' }, h('code', null, breakable(f.path))),
          f.secret
            ? h('td', { class: 'secret', colspan: 3 }, chip('secret', 'info'), ' changed (values withheld)')
            : [h('td', { class: 'old' }, value(f.old)), h('td', { class: 'arrow' }, '→'), h('td', { class: 'new' }, value(f.new))])))))));
}

// rolloutView summarizes how far a write reached the fleet.
export function rolloutView(revision, fleet) {
  if (!fleet) {
    return notice('info', `Committed as revision ${num(revision)}.`);
  }
  const refused = fleet.refused || [];
  const lagging = fleet.lagging || [];
  const kind = refused.length ? 'bad' : fleet.timed_out || lagging.length ? 'warn' : 'ok';
  return notice(kind,
    h('strong', null, `Revision ${num(fleet.revision || revision)}: `), fleet.summary || '',
    refused.length ? h('ul', null, refused.map((r) => h('li', null, h('code', null, r.node_id), ' refused: ', r.error))) : null,
    lagging.length ? h('p', null, 'Not yet applied by: ', lagging.join(', ')) : null);
}
