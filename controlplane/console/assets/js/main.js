// The console's shell: login form, navigation and a hash router (#/fleet, #/config/routes…),
// so the control plane serves one index.html and needs no server-side routes.

import { h, replace, errorBox, notice } from './dom.js';
import * as api from './api.js';
import fleet from './pages/fleet.js';
import upstreams from './pages/upstreams.js';
import config from './pages/config.js';
import history from './pages/history.js';
import usage from './pages/usage.js';

const PAGES = [
  { id: 'fleet', title: 'Fleet', render: fleet },
  { id: 'upstreams', title: 'Upstreams', render: upstreams },
  { id: 'config', title: 'Config', render: config },
  { id: 'history', title: 'History', render: history },
  { id: 'usage', title: 'Usage', render: usage },
];

const app = document.getElementById('app');
let stopPage = null;
let loginMessage = '';

// parseHash splits "#/config/routes?forward=main" into its page, sub-path and query.
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, q] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || 'fleet', rest: parts.slice(1), query: new URLSearchParams(q || '') };
}

// stop ends the current page: its polling, and any dialog it left open.
function stop() {
  if (stopPage) stopPage();
  stopPage = null;
  for (const d of document.querySelectorAll('dialog')) d.close();
}

function showLogin() {
  stop();
  const input = h('input', { id: 'token', type: 'password', name: 'token', autocomplete: 'current-password', placeholder: 'LLMPROXY_ADMIN_AUTH_TOKEN', autofocus: true });
  const status = h('div', { class: 'login-status' });
  if (loginMessage) replace(status, notice('warn', loginMessage));
  const button = h('button', { class: 'primary', type: 'submit', id: 'login-button' }, 'Log in');
  const form = h('form', { class: 'login', id: 'login', method: 'post' },
    h('h1', null, 'LLMProxy console'),
    h('label', { for: 'token' }, 'Admin token'),
    input,
    h('p', { class: 'muted small' }, 'Kept in this tab only (session storage) and sent as Authorization: Bearer to the control plane\u2019s REST API.'),
    button,
    status);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    replace(status, h('p', { class: 'muted' }, 'Checking the token…'));
    api.setToken(input.value.trim());
    try {
      await api.call('GET', '/api/v1/revisions', { query: { page_size: 1 }, quiet: true });
      loginMessage = '';
      render();
    } catch (e) {
      api.logout();
      replace(status, e.status === 401 ? notice('bad', 'The control plane refused this token.') : errorBox(e));
      button.disabled = false;
      input.select();
    }
  });
  replace(app, h('div', { class: 'login-page' }, form));
  input.focus();
}

// shell is the page frame; its revision badge is updated by the pages through ctx.revision.
function shell(current) {
  const badge = h('span', { class: 'rev-badge', id: 'serving-revision', title: 'revision the control plane serves' });
  const main = h('main', { id: 'page', class: 'page-' + current.id });
  const nav = h('nav', null, PAGES.map((p) =>
    h('a', { href: '#/' + p.id, class: p.id === current.id ? 'active' : null, 'aria-current': p.id === current.id ? 'page' : null }, p.title)));
  const out = h('button', {
    class: 'link', id: 'logout', onclick: () => {
      api.logout();
      loginMessage = 'Logged out.';
      showLogin();
    },
  }, 'Log out');
  replace(app,
    h('header', { class: 'top' }, h('a', { class: 'brand', href: '#/fleet' }, 'LLMProxy'), nav, h('span', { class: 'spacer' }), badge, out),
    main);
  return { main, badge };
}

function render() {
  stop();
  if (!api.loggedIn()) {
    showLogin();
    return;
  }
  const { page, rest, query } = parseHash();
  const current = PAGES.find((p) => p.id === page);
  if (!current) {
    location.replace('#/fleet');
    return;
  }
  document.title = `${current.title} · LLMProxy console`;
  const { main, badge } = shell(current);
  const ctx = {
    rest,
    query,
    revision: (rev) => replace(badge, 'revision ', h('strong', null, String(rev))),
    go: (hash) => {
      if (location.hash === hash) render();
      else location.hash = hash;
    },
  };
  stopPage = current.render(main, ctx) || null;
}

window.addEventListener('hashchange', render);
window.addEventListener('console:unauthorized', (ev) => {
  if (!api.loggedIn()) return;
  api.logout();
  loginMessage = `The control plane refused the token: ${ev.detail}. Log in again.`;
  showLogin();
});
render();
