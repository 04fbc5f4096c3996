// The console's entry point: a router over the URL's fragment
// (#/view/arg?query) that mounts one view at a time. Each view gets an
// AbortSignal that is aborted when the view changes, which stops its polls
// and streams.

import * as api from './api.js';
import { h, replace, poll, header } from './dom.js';
import * as runtimes from './runtimes.js';
import * as sessions from './sessions.js';
import * as logs from './logs.js';
import * as inspector from './inspector.js';
import * as credentials from './credentials.js';

const main = document.getElementById('main');
let current = null;

function parseHash() {
  const [path, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const parts = path.split('/').filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { parts, query: new URLSearchParams(query) };
}

function render() {
  current?.abort();
  current = new AbortController();
  const { signal } = current;
  const { parts, query } = parseHash();
  const view = parts[0] || 'runtimes';
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.view === view);
  }
  main.replaceChildren();
  switch (view) {
    case 'runtimes':
      if (parts[1]) runtimes.detail(main, parts[1], signal);
      else runtimes.list(main, signal);
      break;
    case 'sessions':
      sessions.view(main, query, signal);
      break;
    case 'logs':
      logs.view(main, query, signal);
      break;
    case 'inspector':
      inspector.view(main, query, signal);
      break;
    case 'credentials':
      credentials.view(main, query);
      break;
    default:
      main.append(header('Not found', 'The console has no view called “' + view + '”.'),
        h('p', null, h('a', { href: '#/runtimes' }, 'Go to the runtimes')));
  }
  document.title = (document.querySelector('#main h1')?.textContent || 'Berth') + ' · Berth console';
}

function watchHealth() {
  const el = document.getElementById('health');
  const label = el.querySelector('.label');
  poll(new AbortController().signal, 5000, async () => {
    try {
      await api.health();
      el.className = 'health up';
      replace(label, 'connected to ' + location.host);
    } catch (e) {
      el.className = 'health down';
      replace(label, 'server unreachable');
    }
  });
}

// showIdentity says in the sidebar which key signs the calls, if any.
function showIdentity() {
  const el = document.getElementById('identity');
  const c = api.credentials();
  if (c) {
    replace(el, h('span', { class: 'dim' }, 'signed as '), h('code', { title: c.accessKeyId + ' in ' + c.region }, c.accessKeyId), ' ',
      h('button', { type: 'button', id: 'signout', class: 'small ghost', onclick: credentials.signOut }, 'Sign out'));
  } else {
    replace(el, h('span', { class: 'dim' }, 'unsigned calls'));
  }
}

window.addEventListener('hashchange', render);
window.addEventListener('berth-credentials', showIdentity);
render();
showIdentity();
watchHealth();
