// History: the kept revisions, newest first, what each changed (its diff against the one
// before), and a rollback to any of them, previewed as a diff and confirmed.
// Sources: GET /api/v1/revisions (paged), GET /api/v1/revisions/{rev}/diff,
// POST /api/v1/revisions/{rev}:rollback (dry_run first).

import { h, replace, num, chip, errorBox, when, ago } from '../dom.js';
import { diffView } from '../diff.js';
import { changeDialog } from '../editor.js';
import * as api from '../api.js';

export default function history(main, ctx) {
  let alive = true;
  const list = h('tbody');
  const more = h('div', { class: 'more' });
  let current = 0;
  let selected = null;

  // showDiff opens, under the revision's row, what it changed; a second click closes it.
  const showDiff = async (rev, tr) => {
    const open = tr.nextElementSibling && tr.nextElementSibling.classList.contains('detail') ? tr.nextElementSibling : null;
    if (selected) {
      selected.classList.remove('selected');
      if (selected.nextElementSibling && selected.nextElementSibling.classList.contains('detail')) selected.nextElementSibling.remove();
    }
    if (open) {
      selected = null;
      return;
    }
    selected = tr;
    tr.classList.add('selected');
    const cell = h('td', { colspan: 7, class: 'history-detail' }, h('p', { class: 'muted' }, `Loading revision ${rev}…`));
    tr.after(h('tr', { class: 'detail', dataset: { detail: String(rev) } }, cell));
    try {
      const d = await api.get(`/api/v1/revisions/${rev}/diff`);
      if (!alive) return;
      replace(cell,
        h('h3', null, `What revision ${rev} changed`, h('span', { class: 'muted' }, num(d.base_revision) ? ` against revision ${num(d.base_revision)}` : ' against the empty config')),
        diffView(d));
    } catch (e) {
      replace(cell, errorBox(e));
    }
  };

  const rollback = (r) => changeDialog({
    title: `Roll back to revision ${num(r.revision)}`,
    intro: h('p', null, `Revision ${num(r.revision)}`, r.message ? [' (', h('em', null, r.message), ')'] : null,
      ` becomes a new revision after ${current}. The preview shows what changes against the current config.`),
    send: (_, params) => api.call('POST', `/api/v1/revisions/${num(r.revision)}:rollback`, { query: params }),
    commitLabel: `Roll back to r${num(r.revision)}`,
    danger: true,
    defaultMessage: `rollback to revision ${num(r.revision)} from the console`,
    onDone: () => reload(),
  });

  const row = (r) => {
    const rev = num(r.revision);
    const tr = h('tr', { dataset: { revision: String(rev) }, class: 'clickable' },
      h('td', null, h('strong', null, 'r' + rev), rev === current ? [' ', chip('current', 'ok')] : null),
      h('td', { title: when(r.create_time) }, when(r.create_time), h('div', { class: 'small muted' }, ago(r.create_time))),
      h('td', null, h('code', null, r.operation)),
      h('td', null, (r.resources || []).map((x) => h('span', { class: 'tag' }, x))),
      h('td', null, r.message || h('span', { class: 'muted' }, '—')),
      h('td', null, r.actor),
      h('td', { class: 'actions' }, rev === current ? null : h('button', {
        class: 'rollback',
        onclick: (ev) => {
          ev.stopPropagation();
          rollback(r);
        },
      }, 'Roll back to this')));
    tr.addEventListener('click', () => showDiff(rev, tr));
    return tr;
  };

  const page = async (token) => {
    const d = await api.get('/api/v1/revisions', { page_size: 25, page_token: token });
    if (!alive) return;
    current = num(d.revision);
    ctx.revision(current);
    list.append(...(d.revisions || []).map(row));
    replace(more, d.next_page_token
      ? h('button', { onclick: () => page(d.next_page_token).catch((e) => replace(more, errorBox(e))) }, 'Older revisions')
      : h('p', { class: 'muted small' }, 'Older revisions are not kept (see --history).'));
  };

  const reload = () => {
    list.replaceChildren();
    selected = null;
    page('').catch((e) => replace(more, errorBox(e)));
  };

  replace(main,
    h('div', { class: 'page-head' }, h('h1', null, 'History'),
      h('p', { class: 'muted' }, 'Every accepted change is a revision. Click one to see what it changed; roll back to any kept revision.')),
    h('table', { class: 'grid revisions' },
      h('thead', null, h('tr', null, ['Revision', 'When', 'Operation', 'Resources', 'Message', 'Actor', ''].map((c) => h('th', null, c)))),
      list),
    more);
  reload();
  return () => {
    alive = false;
  };
}
