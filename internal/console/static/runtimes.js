// The runtimes views: every agent runtime, and one runtime with its
// configuration, versions and endpoints.

import * as api from './api.js';
import { h, append, replace, route, table, badge, mono, ago, duration, poll, header, errorBox } from './dom.js';

// list shows every agent runtime, refreshed every few seconds.
export function list(main, signal) {
  const status = h('div', { class: 'status' });
  const body = h('section', { class: 'card' }, h('p', { class: 'loading' }, 'Loading…'));
  append(main, [
    header('Runtimes', 'Agent runtimes, their latest version and their live sessions.'),
    status, body,
  ]);
  poll(signal, 5000, async () => {
    try {
      const [rts, live] = await Promise.all([api.listRuntimes(signal), api.listSessions('', signal)]);
      const count = new Map();
      for (const s of live) count.set(s.runtimeId, (count.get(s.runtimeId) ?? 0) + 1);
      rts.sort((a, b) => a.agentRuntimeName.localeCompare(b.agentRuntimeName));
      const rows = rts.map((rt) => h('tr', { 'data-runtime-id': rt.agentRuntimeId },
        h('td', null, h('a', { href: route(['runtimes', rt.agentRuntimeId]), class: 'strong' }, rt.agentRuntimeName)),
        h('td', null, mono(rt.agentRuntimeId)),
        h('td', { class: 'num' }, rt.agentRuntimeVersion),
        h('td', null, badge(rt.status)),
        h('td', { class: 'num' }, count.get(rt.agentRuntimeId) ?? 0),
        h('td', { title: rt.lastUpdatedAt }, ago(rt.lastUpdatedAt)),
        h('td', { class: 'wrap' }, rt.description || ''),
        h('td', { class: 'row-actions' },
          h('a', { class: 'button small', href: route(['inspector'], { runtime: rt.agentRuntimeId }) }, 'Invoke'),
          h('a', { class: 'button small ghost', href: route(['sessions'], { runtime: rt.agentRuntimeId }) }, 'Sessions'))));
      replace(status);
      replace(body, table(['Name', 'ID', 'Version', 'Status', 'Sessions', 'Updated', 'Description', ''], rows,
        'No agent runtimes yet. Create one with the CLI (berth deploy) or CreateAgentRuntime.'));
    } catch (e) {
      if (!signal.aborted) replace(status, errorBox(e));
    }
  });
}

// detail shows one runtime: its configuration, endpoints and versions.
export function detail(main, id, signal) {
  const head = h('div', null, header(id, 'Agent runtime'));
  const status = h('div', { class: 'status' });
  const config = h('section', { class: 'card' }, h('p', { class: 'loading' }, 'Loading…'));
  const endpoints = h('section', { class: 'card' });
  const versions = h('section', { class: 'card' });
  append(main, [
    h('p', { class: 'crumbs' }, h('a', { href: '#/runtimes' }, 'Runtimes'), ' / ', mono(id)),
    head, status, config,
    h('h2', null, 'Endpoints'), endpoints,
    h('h2', null, 'Versions'), versions,
  ]);
  poll(signal, 5000, async () => {
    try {
      const [rt, eps, vs] = await Promise.all([
        api.getRuntime(id, signal), api.listEndpoints(id, signal), api.listVersions(id, signal)]);
      replace(status);
      replace(head, header(h('span', null, rt.agentRuntimeName, ' ', badge(rt.status)),
        'Agent runtime, version ' + rt.agentRuntimeVersion,
        h('a', { class: 'button', href: route(['inspector'], { runtime: id }) }, 'Invoke'),
        h('a', { class: 'button ghost', href: route(['sessions'], { runtime: id }) }, 'Sessions'),
        h('a', { class: 'button ghost', href: route(['logs'], { runtime: id }) }, 'Logs')));
      replace(config, configList(rt));
      replace(endpoints, table(['Name', 'Live version', 'Target version', 'Status', 'Updated', 'ARN', ''],
        eps.map((e) => h('tr', { 'data-endpoint': e.name },
          h('td', { class: 'strong' }, e.name),
          h('td', { class: 'num' }, e.liveVersion || '—'),
          h('td', { class: 'num' }, e.targetVersion || '—'),
          h('td', null, badge(e.status), e.failureReason ? h('div', { class: 'reason' }, e.failureReason) : null),
          h('td', { title: e.lastUpdatedAt }, ago(e.lastUpdatedAt)),
          h('td', null, mono(e.agentRuntimeEndpointArn, 'clip')),
          h('td', { class: 'row-actions' },
            h('a', { class: 'button small', href: route(['inspector'], { runtime: id, qualifier: e.name }) }, 'Invoke')))),
        'No endpoints.'));
      vs.sort((a, b) => Number(b.agentRuntimeVersion) - Number(a.agentRuntimeVersion));
      replace(versions, table(['Version', 'Status', 'Updated', 'Description'],
        vs.map((v) => h('tr', { 'data-version': v.agentRuntimeVersion },
          h('td', { class: 'num' }, v.agentRuntimeVersion),
          h('td', null, badge(v.status)),
          h('td', { title: v.lastUpdatedAt }, ago(v.lastUpdatedAt)),
          h('td', { class: 'wrap' }, v.description || ''))),
        'No versions.'));
    } catch (e) {
      if (!signal.aborted) replace(status, errorBox(e));
    }
  });
}

// configList shows a runtime's configuration as a list of terms.
function configList(rt) {
  const rows = [
    ['ARN', mono(rt.agentRuntimeArn)],
    ['ID', mono(rt.agentRuntimeId)],
    ['Status', [badge(rt.status), rt.failureReason ? h('div', { class: 'reason' }, rt.failureReason) : null]],
    ['Created', [ago(rt.createdAt), ' ', h('span', { class: 'dim' }, rt.createdAt)]],
    ['Updated', [ago(rt.lastUpdatedAt), ' ', h('span', { class: 'dim' }, rt.lastUpdatedAt)]],
  ];
  if (rt.description) rows.push(['Description', rt.description]);
  const code = rt.agentRuntimeArtifact?.codeConfiguration;
  const container = rt.agentRuntimeArtifact?.containerConfiguration;
  if (code) {
    const s3 = code.code?.s3 ?? {};
    rows.push(['Code', [mono(`s3://${s3.bucket ?? ''}/${s3.prefix ?? ''}`),
      s3.versionId ? h('div', null, mono(s3.versionId, 'dim')) : null]]);
    rows.push(['Runtime', code.runtime]);
    rows.push(['Entry point', mono((code.entryPoint ?? []).join(' '))]);
  }
  if (container) rows.push(['Container image', mono(container.containerUri)]);
  const p = rt.protocolConfiguration;
  if (p?.serverProtocol) rows.push(['Protocol', p.serverProtocol]);
  if (rt.networkConfiguration?.networkMode) rows.push(['Network', rt.networkConfiguration.networkMode]);
  const l = rt.lifecycleConfiguration;
  if (l) {
    rows.push(['Idle timeout', duration(l.idleRuntimeSessionTimeout)]);
    rows.push(['Max lifetime', duration(l.maxLifetime)]);
  }
  const env = Object.entries(rt.environmentVariables ?? {});
  if (env.length) {
    rows.push(['Environment', h('div', { class: 'env' },
      env.sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => h('div', { class: 'mono' }, k + '=' + v)))]);
  }
  const allow = rt.requestHeaderConfiguration?.requestHeaderAllowlist;
  if (allow?.length) rows.push(['Forwarded headers', mono(allow.join(', '))]);
  return h('dl', { class: 'props' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}
