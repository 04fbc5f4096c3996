// The sessions view: live sessions with a Stop button, and warm pools,
// refreshed every few seconds.

import * as api from './api.js';
import { h, append, replace, route, table, badge, mono, duration, bytes, poll, header, errorBox } from './dom.js';

const refreshMs = 2000;

export function view(main, query, signal) {
  let runtimeId = query.get('runtime') ?? '';
  const names = new Map(); // runtime ID → name
  const stopping = new Set(); // runtimeId/sessionId being stopped
  const status = h('div', { class: 'status' });
  const stopStatus = h('div', { class: 'status' }); // kept until the next Stop
  const filter = h('select', {
    'aria-label': 'Runtime',
    onchange: () => {
      runtimeId = filter.value;
      history.replaceState(null, '', route(['sessions'], { runtime: runtimeId }));
      refresh();
    },
  }, h('option', { value: '' }, 'All runtimes'));
  const sessionsCard = h('section', { class: 'card' }, h('p', { class: 'loading' }, 'Loading…'));
  const poolsCard = h('section', { class: 'card' });
  append(main, [
    header('Sessions', 'Live sessions, one sandbox each. Refreshed every ' + refreshMs / 1000 + ' s.',
      h('label', { class: 'inline' }, 'Runtime ', filter)),
    stopStatus, status, sessionsCard,
    h('h2', null, 'Warm pools'), poolsCard,
  ]);

  async function stop(s, button) {
    const key = s.runtimeId + '/' + s.sessionId;
    stopping.add(key);
    button.disabled = true;
    replace(button, 'Stopping…');
    replace(stopStatus);
    try {
      await api.stopSession(s.runtimeId, s.sessionId);
    } catch (e) {
      replace(stopStatus, errorBox(e));
    } finally {
      stopping.delete(key);
      refresh();
    }
  }

  function sessionRow(s) {
    const key = s.runtimeId + '/' + s.sessionId;
    const stopButton = h('button', { class: 'small danger', type: 'button', disabled: stopping.has(key) },
      stopping.has(key) ? 'Stopping…' : 'Stop');
    stopButton.addEventListener('click', () => stop(s, stopButton));
    return h('tr', { 'data-session-id': s.sessionId, 'data-runtime-id': s.runtimeId },
      h('td', null,
        h('a', { href: route(['runtimes', s.runtimeId]), class: 'strong' }, names.get(s.runtimeId) ?? s.runtimeId),
        h('div', null, mono(s.runtimeId, 'dim'))),
      h('td', null, mono(s.sessionId, 'clip')),
      h('td', { class: 'num' }, s.version),
      h('td', null, badge(s.state)),
      h('td', { class: 'num', title: s.createdAt }, duration(s.ageSeconds)),
      h('td', { class: 'num', title: s.lastUsedAt }, s.inflight > 0 ? 'busy' : duration(s.idleSeconds)),
      h('td', { class: 'num' }, s.inflight),
      h('td', { class: 'num' }, bytes(s.memoryBytes)),
      h('td', { class: 'num' }, s.cpuSeconds == null ? '—' : s.cpuSeconds.toFixed(2) + ' s'),
      h('td', { class: 'row-actions' },
        h('a', { class: 'button small ghost', href: route(['logs'], { runtime: s.runtimeId, session: s.sessionId }) }, 'Logs'),
        h('a', { class: 'button small ghost', href: route(['inspector'], { runtime: s.runtimeId, session: s.sessionId }) }, 'Invoke'),
        stopButton));
  }

  const refresh = poll(signal, refreshMs, async () => {
    try {
      const [rts, live, pools] = await Promise.all([
        api.listRuntimes(signal), api.listSessions(runtimeId, signal), api.listPools(signal)]);
      names.clear();
      for (const rt of rts) names.set(rt.agentRuntimeId, rt.agentRuntimeName);
      fillFilter(filter, rts, runtimeId);
      replace(status);
      replace(sessionsCard, table(
        ['Runtime', 'Session', 'Version', 'State', 'Age', 'Idle', 'In flight', 'Memory', 'CPU', ''],
        live.map(sessionRow),
        h('span', null, 'No live sessions. Invoke an agent in the ',
          h('a', { href: route(['inspector'], { runtime: runtimeId }) }, 'agent inspector'), ' to start one.')));
      const shown = pools.filter((p) => !runtimeId || p.runtimeId === runtimeId);
      replace(poolsCard, table(['Runtime', 'Version', 'Size', 'Ready', 'Starting', 'Claimed'],
        shown.map((p) => h('tr', null,
          h('td', null, names.get(p.runtimeId) ?? p.runtimeId, h('div', null, mono(p.runtimeId, 'dim'))),
          h('td', { class: 'num' }, p.version),
          h('td', { class: 'num' }, p.size),
          h('td', { class: 'num' }, p.ready),
          h('td', { class: 'num' }, p.starting),
          h('td', { class: 'num' }, p.claimed))),
        'No warm pools. A runtime gets one with the environment variable BERTH_WARM_POOL_SIZE.'));
    } catch (e) {
      if (!signal.aborted) replace(status, errorBox(e));
    }
  });
}

// fillFilter lists the runtimes in the filter, keeping the selection.
function fillFilter(select, rts, selected) {
  const want = ['', ...rts.map((rt) => rt.agentRuntimeId)];
  const have = [...select.options].map((o) => o.value);
  if (want.join('\n') !== have.join('\n')) {
    replace(select, h('option', { value: '' }, 'All runtimes'),
      rts.map((rt) => h('option', { value: rt.agentRuntimeId }, rt.agentRuntimeName)));
  }
  select.value = selected;
}
