// The logs view: a live tail of a runtime's session logs, followed with
// fetch and a ReadableStream until the view or its filters change.

import * as api from './api.js';
import { h, append, replace, route, header, errorBox, clock } from './dom.js';

// maxLines bounds the lines kept on screen; older ones are dropped.
const maxLines = 5000;

export function view(main, query, signal) {
  const sel = {
    runtime: query.get('runtime') ?? '',
    session: query.get('session') ?? '',
    stream: query.get('stream') ?? '',
    tail: query.get('tail') ?? '200',
  };
  const runtimeSel = h('select', { 'aria-label': 'Runtime' });
  const sessionSel = h('select', { 'aria-label': 'Session', class: 'mono-select' });
  const streamSel = h('select', { 'aria-label': 'Stream' },
    h('option', { value: '' }, 'stdout + stderr'), h('option', { value: 'stdout' }, 'stdout'),
    h('option', { value: 'stderr' }, 'stderr'));
  const tailIn = h('input', { type: 'number', min: '0', step: '50', value: sel.tail, 'aria-label': 'Lines of history', class: 'narrow' });
  const state = h('span', { class: 'tail-state' });
  const out = h('div', { class: 'log', role: 'log', 'aria-live': 'off' });
  const status = h('div', { class: 'status' });
  append(main, [
    header('Logs', 'Agent stdout and stderr, per session, followed live.'),
    h('div', { class: 'toolbar' },
      h('label', null, 'Runtime ', runtimeSel),
      h('label', null, 'Session ', sessionSel),
      h('label', null, 'Stream ', streamSel),
      h('label', null, 'History ', tailIn, ' lines'),
      h('button', { type: 'button', class: 'ghost', onclick: () => follow() }, 'Reconnect'),
      h('button', { type: 'button', class: 'ghost', onclick: () => out.replaceChildren() }, 'Clear'),
      state),
    status, out,
  ]);

  let tail = null; // the AbortController of the stream being followed

  async function follow() {
    tail?.abort();
    tail = new AbortController();
    const mine = AbortSignal.any([signal, tail.signal]);
    out.replaceChildren();
    replace(status);
    history.replaceState(null, '', route(['logs'], sel));
    if (!sel.runtime) {
      setState('idle', 'Pick a runtime.');
      return;
    }
    const many = !sel.session;
    setState('live', 'following');
    try {
      await api.followLogs({ runtimeId: sel.runtime, sessionId: sel.session, stream: sel.stream, tail: sel.tail },
        (l) => addLine(l, many), mine);
      if (!mine.aborted) setState('ended', 'stream ended');
    } catch (e) {
      if (mine.aborted) return;
      setState('ended', 'stopped');
      replace(status, errorBox(e));
    }
  }

  function setState(kind, text) {
    state.className = 'tail-state ' + kind;
    replace(state, text);
  }

  function addLine(l, many) {
    const atBottom = out.scrollHeight - out.scrollTop - out.clientHeight < 8;
    out.append(h('div', { class: 'logline ' + l.stream },
      h('span', { class: 'ts', title: l.time }, clock(l.time)),
      many ? h('span', { class: 'sess', title: l.sessionId }, l.sessionId.slice(0, 12)) : null,
      h('span', { class: 'stream' }, l.stream),
      h('span', { class: 'text' }, l.line)));
    while (out.childElementCount > maxLines) out.firstElementChild.remove();
    if (atBottom) out.scrollTop = out.scrollHeight;
  }

  runtimeSel.addEventListener('change', async () => {
    sel.runtime = runtimeSel.value;
    sel.session = '';
    try {
      await fillSessions();
    } catch (e) {
      if (!signal.aborted) replace(status, errorBox(e));
    }
    follow();
  });
  sessionSel.addEventListener('change', () => { sel.session = sessionSel.value; follow(); });
  streamSel.addEventListener('change', () => { sel.stream = streamSel.value; follow(); });
  tailIn.addEventListener('change', () => { sel.tail = tailIn.value; follow(); });
  streamSel.value = sel.stream;

  async function fillSessions() {
    const live = sel.runtime ? await api.listSessions(sel.runtime, signal) : [];
    const ids = live.map((s) => s.sessionId);
    if (sel.session && !ids.includes(sel.session)) ids.unshift(sel.session);
    replace(sessionSel, h('option', { value: '' }, 'All sessions'),
      ids.map((id) => h('option', { value: id }, id)));
    sessionSel.value = sel.session;
  }

  (async () => {
    try {
      const rts = await api.listRuntimes(signal);
      rts.sort((a, b) => a.agentRuntimeName.localeCompare(b.agentRuntimeName));
      if (!sel.runtime && rts.length) sel.runtime = rts[0].agentRuntimeId;
      replace(runtimeSel, rts.length ? null : h('option', { value: '' }, 'no runtimes'),
        rts.map((rt) => h('option', { value: rt.agentRuntimeId }, rt.agentRuntimeName)));
      runtimeSel.value = sel.runtime;
      await fillSessions();
      follow();
    } catch (e) {
      if (!signal.aborted) replace(status, errorBox(e));
    }
  })();
}
