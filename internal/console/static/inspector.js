// The agent inspector: invoke a runtime as the SDKs do and watch its answer
// arrive. Server-sent events are parsed and shown frame by frame as they
// are read from the response's ReadableStream; JSON answers are
// pretty-printed when complete; errors show their AgentCore type and
// message.
//
// The inspector's state (choices, transcript, the call in flight) outlives
// the view, so leaving it and coming back loses nothing.

import * as api from './api.js';
import { SSEParser } from './sse.js';
import { h, append, replace, route, mono, header, errorBox } from './dom.js';

const state = {
  runtimeId: '',
  qualifier: '',
  sessionId: newSessionId(),
  prompt: 'Hello!',
  stream: false,
  raw: false,
  rawText: '',
  turns: 0,
  running: null, // the AbortController of the call in flight
  transcript: h('div', { class: 'transcript' }),
  sync: () => {}, // updates the mounted view's controls
};

// newSessionId returns a random runtime session ID (AgentCore wants 33 to
// 256 characters). getRandomValues works outside secure contexts too.
function newSessionId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return 'console-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// body returns the payload the form describes.
function body() {
  if (state.raw) return state.rawText;
  const b = { prompt: state.prompt };
  if (state.stream) b.stream = true;
  return JSON.stringify(b, null, 2);
}

export function view(main, query, signal) {
  if (query.get('runtime')) state.runtimeId = query.get('runtime');
  if (query.has('qualifier')) state.qualifier = query.get('qualifier');
  if (query.get('session')) state.sessionId = query.get('session');

  const runtimes = new Map(); // ID → summary
  const runtimeSel = h('select', { id: 'inspect-runtime' });
  const qualifierSel = h('select', { id: 'inspect-qualifier' }, h('option', { value: '' }, 'DEFAULT'));
  const sessionIn = h('input', { id: 'inspect-session', class: 'mono', value: state.sessionId, spellcheck: false, autocomplete: 'off' });
  const promptIn = h('textarea', { id: 'inspect-prompt', rows: 4, value: state.prompt });
  const streamCb = h('input', { id: 'inspect-stream', type: 'checkbox', checked: state.stream });
  const rawCb = h('input', { id: 'inspect-raw', type: 'checkbox', checked: state.raw });
  const rawIn = h('textarea', { id: 'inspect-body', class: 'mono', rows: 8, spellcheck: false, value: state.rawText });
  const sendBtn = h('button', { id: 'inspect-send', type: 'submit', class: 'primary' }, 'Send');
  const cancelBtn = h('button', { id: 'inspect-cancel', type: 'button', class: 'ghost' }, 'Cancel');
  const formError = h('div', { class: 'form-error', role: 'alert' });
  const target = h('div', { class: 'target' });
  const promptBox = h('div', { class: 'field' }, h('label', { for: 'inspect-prompt' }, 'Prompt'), promptIn,
    h('label', { class: 'check' }, streamCb, ' add ', h('code', null, '"stream": true')));
  const rawBox = h('div', { class: 'field' }, h('label', { for: 'inspect-body' }, 'Request body (JSON)'), rawIn);

  const form = h('form', { class: 'card invoke-form', autocomplete: 'off' },
    h('div', { class: 'field' }, h('label', { for: 'inspect-runtime' }, 'Runtime'), runtimeSel),
    h('div', { class: 'field' }, h('label', { for: 'inspect-qualifier' }, 'Endpoint'), qualifierSel),
    h('div', { class: 'field' }, h('label', { for: 'inspect-session' }, 'Session ID'),
      h('div', { class: 'joined' }, sessionIn,
        h('button', { type: 'button', class: 'ghost', title: 'Start a new session', onclick: () => {
          state.sessionId = sessionIn.value = newSessionId();
          showTarget();
        } }, 'New'))),
    promptBox,
    h('label', { class: 'check' }, rawCb, ' edit the raw JSON body'),
    rawBox,
    formError,
    h('div', { class: 'buttons' }, sendBtn, cancelBtn,
      h('span', { class: 'hint' }, 'Ctrl+Enter sends')),
    target);

  const transcriptHead = h('div', { class: 'transcript-head' }, h('h2', null, 'Transcript'),
    h('button', { type: 'button', class: 'ghost small', onclick: () => { state.transcript.replaceChildren(); state.turns = 0; } }, 'Clear'));

  append(main, [
    header('Agent inspector', 'Invoke an agent runtime and watch its answer stream in.'),
    h('div', { class: 'inspector' }, form, h('div', { class: 'transcript-pane' }, transcriptHead, state.transcript)),
  ]);

  function showMode() {
    promptBox.hidden = state.raw;
    rawBox.hidden = !state.raw;
  }
  function showTarget() {
    const rt = runtimes.get(state.runtimeId);
    if (!rt) return replace(target);
    const q = state.qualifier ? '?qualifier=' + encodeURIComponent(state.qualifier) : '';
    replace(target, h('span', { class: 'dim' }, 'POST '),
      mono(`/runtimes/${encodeURIComponent(rt.agentRuntimeArn)}/invocations${q}`, 'clip'));
  }
  state.sync = () => {
    sendBtn.disabled = !!state.running || !runtimes.size;
    cancelBtn.hidden = !state.running;
  };
  showMode();
  state.sync();

  runtimeSel.addEventListener('change', () => {
    state.runtimeId = runtimeSel.value;
    state.qualifier = '';
    loadEndpoints();
  });
  qualifierSel.addEventListener('change', () => { state.qualifier = qualifierSel.value; showTarget(); });
  sessionIn.addEventListener('input', () => { state.sessionId = sessionIn.value.trim(); });
  promptIn.addEventListener('input', () => { state.prompt = promptIn.value; });
  streamCb.addEventListener('change', () => { state.stream = streamCb.checked; });
  rawIn.addEventListener('input', () => { state.rawText = rawIn.value; });
  rawCb.addEventListener('change', () => {
    if (rawCb.checked) state.rawText = rawIn.value = body();
    state.raw = rawCb.checked;
    showMode();
  });
  cancelBtn.addEventListener('click', () => state.running?.abort());
  form.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    replace(formError);
    const problem = validate();
    if (problem) return replace(formError, problem);
    send(runtimes.get(state.runtimeId));
  });

  function validate() {
    if (!runtimes.has(state.runtimeId)) return 'Pick a runtime.';
    const n = state.sessionId.length;
    if (n < 33 || n > 256) return `The session ID is ${n} characters long; it must be 33 to 256.`;
    if (state.raw) {
      try {
        JSON.parse(state.rawText);
      } catch (e) {
        return 'The body is not valid JSON: ' + e.message;
      }
    }
    return '';
  }

  async function loadEndpoints() {
    showTarget();
    replace(qualifierSel, h('option', { value: '' }, 'DEFAULT'));
    if (!state.runtimeId) return;
    try {
      const eps = await api.listEndpoints(state.runtimeId, signal);
      for (const e of eps) {
        if (e.name === 'DEFAULT') continue;
        const v = e.liveVersion ? ` (v${e.liveVersion})` : '';
        qualifierSel.append(h('option', { value: e.name }, e.name + v));
      }
      qualifierSel.value = state.qualifier;
    } catch (e) {
      if (!signal.aborted) replace(formError, errorBox(e));
    }
  }

  (async () => {
    try {
      const rts = await api.listRuntimes(signal);
      rts.sort((a, b) => a.agentRuntimeName.localeCompare(b.agentRuntimeName));
      for (const rt of rts) runtimes.set(rt.agentRuntimeId, rt);
      if (!runtimes.has(state.runtimeId)) state.runtimeId = (rts.find((r) => r.status === 'READY') ?? rts[0])?.agentRuntimeId ?? '';
      replace(runtimeSel, rts.length ? null : h('option', { value: '' }, 'no runtimes'),
        rts.map((rt) => h('option', { value: rt.agentRuntimeId }, `${rt.agentRuntimeName} (${rt.agentRuntimeId})`)));
      runtimeSel.value = state.runtimeId;
      state.sync();
      await loadEndpoints();
    } catch (e) {
      if (!signal.aborted) replace(formError, errorBox(e));
    }
  })();
}

// send makes one call and renders it as a turn of the transcript.
async function send(rt) {
  const ctl = new AbortController();
  state.running = ctl;
  state.sync();
  const payload = body();
  const turn = new Turn(++state.turns, rt, state.qualifier, state.sessionId, payload);
  state.transcript.append(turn.el);
  turn.el.scrollIntoView({ block: 'nearest' });
  const started = performance.now();
  try {
    const resp = await api.invoke({ arn: rt.agentRuntimeArn, qualifier: state.qualifier, sessionId: state.sessionId,
      body: payload, signal: ctl.signal });
    turn.response(resp, started);
    if (!resp.ok) {
      turn.fail(await api.errorFrom(resp));
      return;
    }
    const ctype = resp.headers.get('Content-Type') ?? '';
    if (ctype.startsWith('text/event-stream')) {
      const sse = new SSEParser((ev) => turn.event(ev));
      for await (const chunk of api.textChunks(resp)) {
        turn.arrived(started);
        sse.push(chunk);
      }
      sse.end();
    } else {
      let all = '';
      for await (const chunk of api.textChunks(resp)) {
        turn.arrived(started);
        all += chunk;
        turn.text(chunk);
      }
      if (/json/.test(ctype)) turn.pretty(all);
    }
    turn.finish(started);
  } catch (e) {
    if (ctl.signal.aborted) turn.finish(started, 'cancelled');
    else turn.fail(e, turn.status != null);
  } finally {
    state.running = null;
    state.sync();
  }
}

// Turn is one call in the transcript: the request, then the answer as it
// arrives.
class Turn {
  constructor(n, rt, qualifier, sessionId, payload) {
    this.frames = 0;
    this.firstByte = 0;
    this.status = null; // set when the response's headers arrive
    this.run = null; // the text node that string frames are appended to
    this.meta = h('div', { class: 'turn-meta' }, h('span', { class: 'badge busy' }, 'sending'));
    this.output = h('div', { class: 'output' });
    this.el = h('article', { class: 'turn', 'data-state': 'sending' },
      h('div', { class: 'turn-head' },
        h('span', { class: 'turn-n' }, '#' + n),
        h('a', { href: route(['runtimes', rt.agentRuntimeId]), class: 'strong' }, rt.agentRuntimeName),
        h('span', { class: 'dim' }, qualifier || 'DEFAULT'),
        h('a', { href: route(['logs'], { runtime: rt.agentRuntimeId, session: sessionId }), title: 'Logs of this session' },
          mono(sessionId, 'clip')),
        h('span', { class: 'dim right' }, new Date().toLocaleTimeString())),
      h('details', { class: 'request' }, h('summary', null, 'Request'), h('pre', null, payload)),
      this.meta, this.output);
  }

  response(resp, started) {
    this.el.dataset.state = 'streaming'; // until the body is read, answer or error
    this.status = h('span', { class: 'badge ' + (resp.ok ? 'good' : 'bad') }, `${resp.status} ${resp.statusText}`.trim());
    this.timing = h('span', { class: 'dim' });
    this.count = h('span', { class: 'dim' });
    replace(this.meta, this.status, h('span', { class: 'mono' }, resp.headers.get('Content-Type') ?? ''),
      this.timing, this.count,
      resp.headers.get('X-Amzn-RequestId') ? h('span', { class: 'dim' }, 'request ', mono(resp.headers.get('X-Amzn-RequestId'))) : null);
    this.showTiming(started);
  }

  arrived(started) {
    if (!this.firstByte) this.firstByte = performance.now() - started;
    this.showTiming(started);
  }

  showTiming(started, total) {
    const parts = ['headers after ' + ms(performance.now() - started)];
    if (this.firstByte) parts[0] = 'first byte after ' + ms(this.firstByte);
    if (total != null) parts.push('done in ' + ms(total));
    replace(this.timing, parts.join(' · '));
  }

  // event shows one server-sent event: JSON strings and plain text run on
  // as prose (how agents stream tokens), anything else gets its own line.
  event(ev) {
    this.frames++;
    replace(this.count, this.frames + (this.frames === 1 ? ' frame' : ' frames'));
    let value;
    try {
      value = JSON.parse(ev.data);
    } catch {
      value = undefined;
    }
    const label = ev.event !== 'message' ? ev.event + ': ' : '';
    if (!label && (typeof value === 'string' || value === undefined)) {
      this.text(typeof value === 'string' ? value : ev.data);
      return;
    }
    this.run = null;
    this.output.append(h('div', { class: 'frame' }, label, value === undefined ? ev.data : JSON.stringify(value)));
  }

  text(s) {
    if (!this.run) {
      this.run = document.createTextNode('');
      this.output.append(h('span', { class: 'run' }, this.run));
    }
    this.run.appendData(s);
  }

  // pretty re-renders a complete JSON answer indented.
  pretty(all) {
    try {
      const v = JSON.parse(all);
      this.run = null;
      replace(this.output, h('div', { class: 'json' }, JSON.stringify(v, null, 2)));
    } catch {
      // Not JSON after all: leave it as it came.
    }
  }

  finish(started, note) {
    this.el.dataset.state = note || 'done';
    this.showTiming(started, performance.now() - started);
    if (note) append(this.meta, h('span', { class: 'badge neutral' }, note));
    if (!this.output.hasChildNodes()) this.output.append(h('span', { class: 'dim' }, '(empty answer)'));
  }

  // fail shows why the call failed; midway says the answer had begun.
  fail(err, midway) {
    this.el.dataset.state = 'error';
    if (midway) {
      // The call failed after it began: the connection broke mid-answer.
      append(this.meta, h('span', { class: 'badge bad' }, 'broken'));
      err = new Error('The answer broke off: ' + (err?.message ?? err));
    }
    this.el.append(errorBox(err));
  }
}

function ms(t) {
  return t < 1000 ? Math.round(t) + ' ms' : (t / 1000).toFixed(2) + ' s';
}
