// The credentials view: the access key the console signs its calls with
// when Berth requires signed requests (berth server --auth). The key is kept
// in sessionStorage, so it is gone when the tab closes.

import * as api from './api.js';
import { h, append, header, route } from './dom.js';
import { defaultRegion } from './sigv4.js';

// view shows the credentials form. query's "next" is the view to return to
// once the key is saved.
export function view(main, query) {
  const c = api.credentials();
  const idIn = h('input', { id: 'cred-key-id', class: 'mono', value: c?.accessKeyId ?? '', spellcheck: false, autocomplete: 'off', required: true });
  const secretIn = h('input', { id: 'cred-secret', class: 'mono', type: 'password', value: c?.secretAccessKey ?? '', autocomplete: 'off', required: true });
  const regionIn = h('input', { id: 'cred-region', class: 'mono', value: c?.region ?? defaultRegion, spellcheck: false, autocomplete: 'off' });
  const next = query.get('next');
  const form = h('form', { class: 'card invoke-form', id: 'credentials-form', autocomplete: 'off' },
    h('div', { class: 'field' }, h('label', { for: 'cred-key-id' }, 'Access key ID'), idIn),
    h('div', { class: 'field' }, h('label', { for: 'cred-secret' }, 'Secret access key'), secretIn),
    h('div', { class: 'field' }, h('label', { for: 'cred-region' }, 'Region'), regionIn),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', id: 'cred-save' }, 'Sign in'),
      c ? h('button', { type: 'button', id: 'cred-signout', class: 'ghost', onclick: signOut }, 'Sign out') : null));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    api.setCredentials({
      accessKeyId: idIn.value.trim(), secretAccessKey: secretIn.value.trim(), region: regionIn.value.trim() || defaultRegion,
    });
    // Only in-app views: next comes from the URL.
    location.hash = next?.startsWith('#/') && !next.startsWith('#/credentials') ? next : '#/runtimes';
  });
  append(main, [
    header('Credentials', 'The key the console signs its calls with when Berth requires signed requests.'),
    h('p', { class: 'dim' }, 'Use a key from ', h('code', null, 'berth keys create'),
      ' or the root key Berth printed at its first start. It is kept in this tab only (sessionStorage) and sent nowhere: ',
      'each call is signed with AWS Signature Version 4 in the browser.'),
    form,
  ]);
}

// signOut forgets the key and shows the form again.
export function signOut() {
  api.clearCredentials();
  location.hash = route(['credentials']);
}
