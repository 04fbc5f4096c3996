// Calls to Berth's HTTP API: the AgentCore control and data planes and
// Berth's own /berth/v1 calls, on the console's own origin. When
// credentials are set, every call is signed with SigV4 (berth server --auth).

import { sign } from './sigv4.js';

// credentialsKey names the credentials in sessionStorage: they last as long
// as the tab and are never written to localStorage.
const credentialsKey = 'berth.credentials';

// credentials returns the signing credentials ({ accessKeyId,
// secretAccessKey, region }), or null when calls go unsigned.
export function credentials() {
  try {
    const c = JSON.parse(sessionStorage.getItem(credentialsKey) ?? 'null');
    return c?.accessKeyId && c?.secretAccessKey ? c : null;
  } catch {
    return null;
  }
}

// setCredentials signs every later call with c.
export function setCredentials(c) {
  sessionStorage.setItem(credentialsKey, JSON.stringify({
    accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, region: c.region,
  }));
  window.dispatchEvent(new Event('berth-credentials'));
}

// clearCredentials forgets the credentials: later calls go unsigned.
export function clearCredentials() {
  sessionStorage.removeItem(credentialsKey);
  window.dispatchEvent(new Event('berth-credentials'));
}

// send is fetch, signing the request when credentials are set. init.body
// must be a string or bytes; the response is returned as is, so its body
// still streams.
export async function send(path, init = {}) {
  const c = credentials();
  if (c) {
    const auth = await sign({ method: init.method, url: path, body: init.body }, c);
    init = { ...init, headers: { ...init.headers, ...auth } };
  }
  return fetch(path, init);
}

// APIError is a failed call in AgentCore's error shape: the X-Amzn-ErrorType
// header and the body's message.
export class APIError extends Error {
  constructor(status, type, message, requestId) {
    super(`${type}: ${message}`);
    this.status = status;
    this.type = type;
    this.message = message;
    this.requestId = requestId;
  }
}

// errorFrom reads a failed response into an APIError.
export async function errorFrom(resp) {
  // AWS error types may carry a ":namespace" suffix.
  const type = (resp.headers.get('X-Amzn-ErrorType') || '').split(':')[0] || `HTTP ${resp.status}`;
  const text = await resp.text().catch(() => '');
  let message = text.trim() || resp.statusText;
  try {
    const body = JSON.parse(text);
    message = body.message ?? body.Message ?? message;
  } catch {
    // Not JSON: the text is the message.
  }
  return new APIError(resp.status, type, message, resp.headers.get('X-Amzn-RequestId'));
}

// call makes a JSON call and returns its decoded answer.
async function call(method, path, { body, signal } = {}) {
  const init = { method, signal, headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await send(path, init);
  if (!resp.ok) throw await errorFrom(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : {};
}

// pages collects a paginated control-plane list (POST with maxResults and
// nextToken in the query).
async function pages(path, member, signal) {
  const out = [];
  let token = '';
  do {
    const q = new URLSearchParams({ maxResults: '100' });
    if (token) q.set('nextToken', token);
    const page = await call('POST', `${path}?${q}`, { signal });
    out.push(...(page[member] ?? []));
    token = page.nextToken ?? '';
  } while (token);
  return out;
}

const seg = encodeURIComponent;

export const listRuntimes = (signal) => pages('/runtimes/', 'agentRuntimes', signal);
export const getRuntime = (id, signal) => call('GET', `/runtimes/${seg(id)}/`, { signal });
export const listVersions = (id, signal) => pages(`/runtimes/${seg(id)}/versions/`, 'agentRuntimes', signal);
export const listEndpoints = (id, signal) => pages(`/runtimes/${seg(id)}/runtime-endpoints/`, 'runtimeEndpoints', signal);

export async function listSessions(runtimeId, signal) {
  const q = runtimeId ? '?' + new URLSearchParams({ runtimeId }) : '';
  return (await call('GET', '/berth/v1/sessions' + q, { signal })).sessions ?? [];
}
export const stopSession = (runtimeId, sessionId) =>
  call('DELETE', `/berth/v1/sessions/${seg(runtimeId)}/${seg(sessionId)}`);
export const listPools = async (signal) => (await call('GET', '/berth/v1/pools', { signal })).pools ?? [];
export const health = (signal) => call('GET', '/berth/v1/health', { signal });

// textChunks yields a response body's text as it arrives.
export async function* textChunks(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

// followLogs streams a session's log lines (JSON lines of time, sessionId,
// stream and line) to onLine until the server ends the stream or signal
// is aborted. query holds runtimeId and optionally sessionId, stream and
// tail.
export async function followLogs(query, onLine, signal) {
  const q = new URLSearchParams({ follow: 'true' });
  for (const [k, v] of Object.entries(query)) if (v) q.set(k, v);
  const resp = await send('/berth/v1/logs?' + q, { signal, headers: { Accept: 'application/x-ndjson' } });
  if (!resp.ok) throw await errorFrom(resp);
  let buf = '';
  for await (const chunk of textChunks(resp)) {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim()) onLine(JSON.parse(line));
    }
  }
}

// invoke calls InvokeAgentRuntime with body as the payload and returns the
// response, whose body the caller reads as it streams. qualifier is an
// endpoint name ("" for DEFAULT).
export async function invoke({ arn, qualifier, sessionId, body, signal }) {
  const q = qualifier ? '?' + new URLSearchParams({ qualifier }) : '';
  return send(`/runtimes/${seg(arn)}/invocations${q}`, {
    method: 'POST',
    signal,
    headers: {
      'Content-Type': 'application/json',
      Accept: 'text/event-stream, application/json',
      'X-Amzn-Bedrock-AgentCore-Runtime-Session-Id': sessionId,
    },
    body,
  });
}
