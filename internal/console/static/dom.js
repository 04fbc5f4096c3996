// DOM building and formatting helpers. Everything shown is built with
// createElement and text nodes: data from the API is never parsed as HTML.

import { credentials } from './api.js';

// Attributes set as element properties rather than with setAttribute.
const props = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'readOnly', 'spellcheck']);

// h builds an element. attrs maps attribute names to values; "class" sets
// the class, "onX" functions become listeners, null/false values are left
// out. children are nodes or strings (which become text nodes), nested
// arrays are flattened.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (props.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

// append adds children to el as h does.
export function append(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// replace swaps el's children for new ones.
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// route returns the href of an in-app view; parts are path segments, query an
// object of parameters. Both are encoded, so API data cannot form a URL of
// another scheme.
export function route(parts, query) {
  let href = '#/' + parts.map(encodeURIComponent).join('/');
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v) q.set(k, v);
  if ([...q].length) href += '?' + q;
  return href;
}

// table builds a table from column headings and rows of cells; empty is
// shown in place of rows when there are none.
export function table(columns, rows, empty) {
  return h('table', { class: 'grid' },
    h('thead', null, h('tr', null, columns.map((c) => h('th', null, c)))),
    h('tbody', null, rows.length ? rows : h('tr', null, h('td', { class: 'empty', colspan: columns.length }, empty))));
}

// badge shows a status word, coloured by what it means.
export function badge(status) {
  const s = String(status ?? '');
  let kind = 'neutral';
  if (/FAILED|ERROR/.test(s)) kind = 'bad';
  else if (/^(READY|ACTIVE)$/.test(s)) kind = 'good';
  else if (/ING$/.test(s)) kind = 'busy';
  return h('span', { class: 'badge ' + kind }, s || '—');
}

// mono shows an identifier in a monospace face, its full value in a tooltip.
export function mono(text, cls = '') {
  return h('span', { class: ('mono ' + cls).trim(), title: text }, text ?? '');
}

// duration formats seconds as "4s", "2m 05s", "3h 12m" or "2d 4h".
export function duration(seconds) {
  if (seconds == null || !isFinite(seconds)) return '—';
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n) => String(n).padStart(2, '0');
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + pad(s % 60) + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + pad(Math.floor(s / 60) % 60) + 'm';
  return Math.floor(s / 86400) + 'd ' + (Math.floor(s / 3600) % 24) + 'h';
}

// ago formats a timestamp as time elapsed since it.
export function ago(timestamp) {
  const t = Date.parse(timestamp);
  if (isNaN(t)) return '—';
  return duration((Date.now() - t) / 1000) + ' ago';
}

// bytes formats a size: "512 B", "3.2 MiB".
export function bytes(n) {
  if (n == null || !isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
}

// clock formats a timestamp as local wall-clock time with milliseconds.
export function clock(timestamp) {
  const d = new Date(timestamp);
  if (isNaN(d)) return '';
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

// errorBox shows a failed call: the AWS error type, the message and the
// request ID to look for in the server log.
export function errorBox(err) {
  const box = h('div', { class: 'notice error', role: 'alert' });
  if (err && err.type) {
    append(box, [
      h('div', { class: 'error-title' }, h('span', { class: 'error-type' }, err.type),
        err.status ? h('span', { class: 'error-status' }, 'HTTP ' + err.status) : null),
      h('div', { class: 'error-message' }, err.message || '(no message)'),
      err.requestId ? h('div', { class: 'error-request' }, 'request ', mono(err.requestId)) : null,
      err.type === 'AccessDeniedException' ? signInHint() : null,
    ]);
  } else {
    append(box, h('div', { class: 'error-message' }, String(err?.message ?? err)));
  }
  return box;
}

// signInHint points a refused call at the credentials form.
function signInHint() {
  const c = credentials();
  const form = h('a', { href: route(['credentials'], { next: location.hash }) }, 'Credentials');
  return h('div', { class: 'error-hint' },
    c ? ['The key ', h('code', null, c.accessKeyId), ' was refused or may not do this. '] : null,
    'This Berth requires signed requests: enter a key from ', h('code', null, 'berth keys create'),
    ' or the root key printed at first start in ', form, '.');
}

// poll runs fn now and then every ms milliseconds until signal is aborted.
// It returns a function that runs fn again at once (or as soon as the run
// in progress ends).
export function poll(signal, ms, fn) {
  let wake = null;
  let again = false;
  (async () => {
    while (!signal.aborted) {
      await fn();
      if (again) {
        again = false;
        continue;
      }
      await new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          signal.removeEventListener('abort', done);
          wake = null;
          resolve();
        };
        const timer = setTimeout(done, ms);
        signal.addEventListener('abort', done);
        wake = done;
      });
    }
  })();
  return () => (wake ? wake() : (again = true));
}

// header is a view's title with a line saying what it shows, and actions.
export function header(title, subtitle, ...actions) {
  return h('header', { class: 'view-head' },
    h('div', null, h('h1', null, title), subtitle ? h('p', { class: 'subtitle' }, subtitle) : null),
    actions.length ? h('div', { class: 'actions' }, actions) : null);
}
