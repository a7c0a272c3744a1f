// Shared by cordon's pages: the session, API calls, and building the page from text.
//
// Everything shown comes from the API and much of it from submitters (output, step and
// artifact names, images, error text): it only ever enters the page as text nodes
// (`textContent`, `createTextNode`), never as HTML.

const CSRF_HEADER = 'X-Cordon-CSRF';
let session = null;

// Builds an element; string children become text nodes.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function setText(id, text) {
  const e = document.getElementById(id);
  e.textContent = text;
  return e;
}

export function showError(message) {
  const e = document.getElementById('error');
  if (!e) return;
  e.textContent = message;
  e.hidden = !message;
}

// ANSI escape sequences (colours, cursor moves, window titles) and other control
// characters are dropped: the output is shown as plain text, tabs and newlines kept.
const ANSI = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[P^_][^\x1b]*(?:\x1b\\)?|\x1b[ -\/]*[0-~]?/g;
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]/g;
export function plainText(s) {
  return s.replace(/\r\n/g, '\n').replace(ANSI, '').replace(CONTROL, '');
}

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${Math.round(s - m * 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} m`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function toSignIn() {
  sessionStorage.setItem('cordon.next', location.pathname);
  location.replace('/sign-in');
}

// The API's error message, or the status line.
export async function errorText(r) {
  try {
    const body = await r.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `${r.status} ${r.statusText}`;
}

export class SignedOut extends Error {}

// Reads the session (who is signed in, the CSRF token) and fills the page's header; without
// one, goes to the sign-in page.
export async function requireSession() {
  const r = await fetch('/web/session', { cache: 'no-store' });
  if (r.status === 401) { toSignIn(); throw new SignedOut('not signed in'); }
  if (!r.ok) throw new Error(await errorText(r));
  session = await r.json();
  setText('who', `signed in as ${session.name}${session.admin ? ' (admin)' : ''}`);
  const out = document.getElementById('sign-out');
  out.hidden = false;
  out.addEventListener('click', signOut);
  return session;
}

async function signOut() {
  await api('DELETE', '/web/session');
  location.replace('/sign-in');
}

// A request to the service with the session cookie; state-changing ones carry the CSRF
// token. A 401 (session expired, signed out elsewhere) goes to the sign-in page.
export async function api(method, path, init = {}) {
  const headers = new Headers(init.headers || {});
  if (method !== 'GET' && method !== 'HEAD' && session) headers.set(CSRF_HEADER, session.csrf);
  const r = await fetch(path, { ...init, method, headers, cache: 'no-store' });
  if (r.status === 401) { toSignIn(); throw new SignedOut('signed out'); }
  return r;
}

// Where a job's page is.
export function jobHref(id) {
  return `/jobs/${encodeURIComponent(id)}`;
}

// A badge for a state or an outcome; the class is picked from a fixed list only.
const KNOWN = new Set(['queued', 'running', 'finished', 'passed', 'failed', 'timed_out', 'oom_killed',
  'output_limit_exceeded', 'disk_limit_exceeded', 'cancelled', 'sandbox_error']);
export function badge(kind, value) {
  const cls = KNOWN.has(value) ? `badge ${kind}-${value}` : 'badge';
  return el('span', { class: cls }, value || '');
}

export function setBadge(id, kind, value) {
  const e = document.getElementById(id);
  e.textContent = value || '';
  e.className = KNOWN.has(value) ? `badge ${kind}-${value}` : 'badge';
  e.hidden = !value;
}
