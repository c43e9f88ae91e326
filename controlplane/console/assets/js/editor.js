// The change dialog: every write the console makes goes through it. It first sends the write
// with dry_run=true and shows the API's diff; only then can the operator apply it, with a
// change message, pinned to the revision the preview was made against (expected_revision),
// waiting up to 10 s for the fleet to apply it.

import { h, replace, errorBox, notice } from './dom.js';
import { diffView, rolloutView } from './diff.js';

// WAIT is how long a write waits for the proxies to apply the new revision.
export const WAIT = '10s';

// changeDialog opens a modal for one change.
//   title, intro: what the change is;
//   form: optional {node, value()}: an editor whose value() is the body to send (it may throw
//         an Error whose message is shown), and whose node fires 'input' when edited;
//   send(body, params): performs the write; params hold dry_run, or message, wait and
//         expected_revision. It resolves to the API's answer ({revision, diff, fleet}).
//   commitLabel, danger: the apply button; defaultMessage: the change message proposed;
//   onDone(answer): called after a successful apply.
export function changeDialog({ title, intro, form, send, commitLabel = 'Apply', danger = false, defaultMessage = '', onDone }) {
  const status = h('div', { class: 'dialog-status' });
  const preview = h('div', { class: 'dialog-preview' });
  const message = h('input', { type: 'text', name: 'message', class: 'wide', value: defaultMessage, placeholder: 'why (kept in the history)' });
  const previewBtn = h('button', { type: 'button', class: 'preview' }, 'Preview change');
  const commitBtn = h('button', { type: 'button', class: danger ? 'danger commit' : 'primary commit', disabled: true }, commitLabel);
  const closeBtn = h('button', { type: 'button', class: 'link close' }, 'Cancel');
  const dlg = h('dialog', { class: 'change' },
    h('h2', null, title),
    intro ? h('div', { class: 'intro' }, intro) : null,
    form ? form.node : null,
    preview,
    h('label', { class: 'message' }, 'Change message ', message),
    status,
    h('div', { class: 'actions' }, closeBtn, h('span', { class: 'spacer' }), form ? previewBtn : null, commitBtn));

  // What was previewed, and against which revision: apply sends exactly that.
  let previewed = null;
  let expected = null;
  let done = false;

  const body = () => {
    if (!form) return undefined;
    return form.value();
  };
  const stale = () => {
    if (!form || previewed === null) return;
    let now;
    try {
      now = JSON.stringify(body());
    } catch {
      now = null;
    }
    if (now !== previewed) {
      commitBtn.disabled = true;
      replace(status, notice('info', 'Edited since the preview: preview again to apply.'));
    } else {
      commitBtn.disabled = false;
      replace(status);
    }
  };
  if (form) form.node.addEventListener('input', stale);
  if (form) form.node.addEventListener('change', stale);

  const runPreview = async () => {
    let b;
    try {
      b = body();
    } catch (e) {
      replace(status, notice('bad', e.message));
      return;
    }
    previewBtn.disabled = true;
    commitBtn.disabled = true;
    replace(status, h('p', { class: 'muted' }, 'Validating (dry run)…'));
    try {
      const ans = await send(b, { dry_run: true });
      previewed = JSON.stringify(b);
      expected = ans.revision;
      replace(preview, h('h3', null, `Diff against revision ${ans.revision}`), diffView(ans.diff));
      replace(status);
      const empty = !(ans.diff && ans.diff.resources && ans.diff.resources.length);
      commitBtn.disabled = empty;
      if (empty) replace(status, notice('info', 'Nothing to apply.'));
    } catch (e) {
      previewed = null;
      replace(preview);
      replace(status, errorBox(e));
    } finally {
      previewBtn.disabled = false;
    }
  };

  previewBtn.addEventListener('click', runPreview);
  commitBtn.addEventListener('click', async () => {
    if (done) return;
    commitBtn.disabled = true;
    previewBtn.disabled = true;
    replace(status, h('p', { class: 'muted' }, 'Applying and waiting for the fleet…'));
    try {
      const ans = await send(form ? JSON.parse(previewed) : undefined, { message: message.value.trim(), wait: WAIT, expected_revision: expected });
      done = true;
      replace(status, rolloutView(ans.revision, ans.fleet));
      replace(closeBtn, 'Close');
      commitBtn.remove();
      previewBtn.remove();
      if (onDone) onDone(ans);
    } catch (e) {
      replace(status, errorBox(e), e.status === 409 ? notice('warn', 'The config may have changed since the preview: preview again.') : null);
      previewBtn.disabled = false;
    }
  });
  closeBtn.addEventListener('click', () => dlg.close());
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  if (!form) runPreview();
  return dlg;
}

// ---- Forms over plain objects, addressed by dotted paths ----

function getPath(obj, path) {
  return path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

// setPath sets obj's path to v, or deletes it when v is undefined, pruning objects left
// empty, so a cleared field is sent as unset.
function setPath(obj, path, v) {
  const keys = path.split('.');
  const stack = [obj];
  let o = obj;
  for (const k of keys.slice(0, -1)) {
    if (o[k] == null || typeof o[k] !== 'object') o[k] = {};
    o = o[k];
    stack.push(o);
  }
  const last = keys[keys.length - 1];
  if (v === undefined) delete o[last];
  else o[last] = v;
  for (let i = keys.length - 2; i >= 0; i--) {
    const parent = stack[i];
    const child = parent[keys[i]];
    if (child && typeof child === 'object' && !Array.isArray(child) && Object.keys(child).length === 0) delete parent[keys[i]];
  }
}

// Field types: text, number, select (options), list (comma separated strings), map (one
// key=value a line), bool (unset, true, false), members (group members with weights).
function fieldInput(f, model, options) {
  const v = getPath(model, f.path);
  const id = 'f-' + f.path.replace(/\W/g, '-');
  const set = (x) => setPath(model, f.path, x);
  let input;
  switch (f.type) {
    case 'number':
      input = h('input', { id, type: 'number', step: 'any', value: v == null ? '' : String(v), placeholder: f.placeholder, readonly: f.readonly });
      input.addEventListener('input', () => set(input.value === '' ? undefined : Number(input.value)));
      break;
    case 'select': {
      const opts = f.options(options);
      input = h('select', { id, disabled: f.readonly },
        f.required && v != null ? null : h('option', { value: '' }, f.required ? '(choose)' : '(unset)'),
        opts.map((o) => h('option', { value: o, selected: o === v }, o)),
        v && !opts.includes(v) ? h('option', { value: v, selected: true }, v + ' (undefined)') : null);
      input.addEventListener('change', () => set(input.value === '' ? undefined : input.value));
      break;
    }
    case 'bool':
      input = h('select', { id },
        h('option', { value: '', selected: v == null }, '(default)'),
        h('option', { value: 'true', selected: v === true }, 'true'),
        h('option', { value: 'false', selected: v === false }, 'false'));
      input.addEventListener('change', () => set(input.value === '' ? undefined : input.value === 'true'));
      break;
    case 'list':
      input = h('input', { id, type: 'text', value: (v || []).join(', '), placeholder: f.placeholder });
      input.addEventListener('input', () => {
        const xs = input.value.split(',').map((x) => x.trim()).filter(Boolean);
        set(xs.length ? xs : undefined);
      });
      break;
    case 'map':
      input = h('textarea', { id, rows: 3, placeholder: f.placeholder }, Object.entries(v || {}).map(([k, x]) => `${k}=${x}`).join('\n'));
      input.addEventListener('input', () => {
        const m = {};
        for (const line of input.value.split('\n')) {
          const i = line.indexOf('=');
          if (i > 0) m[line.slice(0, i).trim()] = line.slice(i + 1).trim();
        }
        set(Object.keys(m).length ? m : undefined);
      });
      break;
    case 'members':
      return membersInput(f, model, options);
    default:
      input = h('input', { id, type: f.secret ? 'password' : 'text', value: v == null ? '' : String(v), placeholder: f.placeholder, readonly: f.readonly, autocomplete: 'off' });
      input.addEventListener('input', () => set(input.value === '' ? undefined : input.value));
  }
  return h('div', { class: 'field' }, h('label', { for: id }, f.label), input, f.hint ? h('div', { class: 'hint' }, f.hint) : null);
}

// membersInput edits a group's member list: one row per member, name and weight.
function membersInput(f, model, options) {
  const rows = h('div', { class: 'members' });
  const names = f.options(options);
  const sync = () => {
    const list = [];
    for (const r of rows.children) {
      const name = r.querySelector('select').value;
      const w = r.querySelector('input').value;
      if (name) list.push(w === '' ? { name } : { name, weight: Number(w) });
    }
    setPath(model, f.path, list);
  };
  const addRow = (m) => {
    const sel = h('select', { 'aria-label': 'member upstream' }, h('option', { value: '' }, '(choose)'),
      names.map((n) => h('option', { value: n, selected: m && m.name === n }, n)));
    const w = h('input', { type: 'number', min: 0, step: 1, placeholder: 'weight', value: m && m.weight != null ? String(m.weight) : '', 'aria-label': 'weight' });
    const rm = h('button', { type: 'button', class: 'link', onclick: () => { r.remove(); sync(); rows.dispatchEvent(new Event('input', { bubbles: true })); } }, 'remove');
    const r = h('div', { class: 'member' }, sel, w, rm);
    sel.addEventListener('change', sync);
    w.addEventListener('input', sync);
    rows.append(r);
  };
  for (const m of getPath(model, f.path) || []) addRow(m);
  const add = h('button', { type: 'button', class: 'link', onclick: () => addRow(null) }, '+ add member');
  return h('div', { class: 'field' }, h('label', null, f.label), rows, add);
}

// resourceForm edits a copy of resource with the given fields, or as JSON. Its value() is
// the resource to send.
export function resourceForm(resource, fields, options = {}) {
  let model = structuredClone(resource || {});
  let mode = fields && fields.length ? 'form' : 'json';
  const area = h('div', { class: 'form-area' });
  const json = h('textarea', { class: 'json', rows: 16, spellcheck: 'false', 'aria-label': 'resource as JSON' });
  const formTab = h('button', { type: 'button', class: 'tab', disabled: !(fields && fields.length) }, 'Form');
  const jsonTab = h('button', { type: 'button', class: 'tab' }, 'JSON');
  const paint = () => {
    formTab.classList.toggle('active', mode === 'form');
    jsonTab.classList.toggle('active', mode === 'json');
    if (mode === 'form') {
      replace(area, h('div', { class: 'form-grid' }, fields.map((f) => fieldInput(f, model, options))));
    } else {
      json.value = JSON.stringify(model, null, 2);
      replace(area, json);
    }
  };
  const fromJSON = () => {
    try {
      model = JSON.parse(json.value);
    } catch (e) {
      throw new Error('The JSON does not parse: ' + e.message);
    }
    if (model === null || typeof model !== 'object' || Array.isArray(model)) throw new Error('The JSON must be an object.');
  };
  formTab.addEventListener('click', () => {
    try {
      if (mode === 'json') fromJSON();
      mode = 'form';
      paint();
    } catch (e) {
      replace(area, notice('bad', e.message), json);
    }
  });
  jsonTab.addEventListener('click', () => {
    mode = 'json';
    paint();
  });
  const node = h('div', { class: 'resource-form' }, h('div', { class: 'tabs' }, formTab, jsonTab), area);
  paint();
  return {
    node,
    value() {
      if (mode === 'json') fromJSON();
      return structuredClone(model);
    },
  };
}
