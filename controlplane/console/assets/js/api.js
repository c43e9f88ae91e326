// The console's only way to the control plane: the public REST API under /api/v1/, with the
// admin token the operator typed, kept in sessionStorage (gone when the tab closes).

const TOKEN_KEY = 'llmproxy-console-token';

// loggedIn reports whether the operator has given a token in this tab ('' counts: a control
// plane without admin auth accepts calls without one).
export function loggedIn() {
  return sessionStorage.getItem(TOKEN_KEY) !== null;
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// APIError is a failed call: status is the HTTP status (0 when the control plane was not
// reached), code the API's error code, fields the offending fields it named.
export class APIError extends Error {
  constructor(status, message, code, fields) {
    super(message);
    this.status = status;
    this.code = code || '';
    this.fields = fields || [];
  }

  // unrouted reports whether the control plane has no such endpoint (an older version, or a
  // feature it does not have), as opposed to a missing resource.
  get unrouted() {
    return this.status === 404 && this.message.startsWith('no route for');
  }
}

// url resolves an API path against the console's own location, so a control plane served
// under a path prefix by a reverse proxy works too (/prefix/ui/ calls /prefix/api/v1/...).
function url(path, query) {
  const u = new URL('..' + path, new URL('.', location.href));
  for (const [k, v] of Object.entries(query || {})) {
    if (v != null && v !== '' && v !== false) u.searchParams.set(k, String(v));
  }
  return u;
}

// call sends one request and resolves to the decoded JSON answer ({} for an empty one). A
// 401 also fires the window event 'console:unauthorized', which sends the operator back to
// the login form, unless quiet is set (the login form's own check).
export async function call(method, path, { query, body, quiet } = {}) {
  const headers = { Accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url(path, query), init);
  } catch (e) {
    throw new APIError(0, `control plane unreachable: ${e.message}`);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const e = data && data.error ? data.error : {};
    const err = new APIError(resp.status, e.message || `${resp.status} ${resp.statusText}`, e.code, e.fields);
    if (resp.status === 401 && !quiet) window.dispatchEvent(new CustomEvent('console:unauthorized', { detail: err.message }));
    throw err;
  }
  if (data == null) throw new APIError(resp.status, `${method} ${path}: answer is not JSON`);
  return data;
}

export const get = (path, query) => call('GET', path, { query });

// seg escapes one path segment.
export const seg = encodeURIComponent;

// routeID is a route's id: the unpadded base64url of its path.
export function routeID(path) {
  const bytes = new TextEncoder().encode(path);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}
