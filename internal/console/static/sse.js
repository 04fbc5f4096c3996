// A parser for text/event-stream (server-sent events) as the HTML standard
// defines it, fed with text as it arrives so each event can be shown at
// once.

export class SSEParser {
  // onEvent is called with {event, data, id} for every complete event.
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buf = '';
    this.data = [];
    this.event = '';
    // The last event ID outlives the event that set it.
    this.id = '';
  }

  // push feeds the next piece of the stream.
  push(text) {
    this.buf += text;
    const eol = /\r\n|\r|\n/g;
    let start = 0;
    let m;
    while ((m = eol.exec(this.buf))) {
      // A CR ending the text may be the first half of a CRLF.
      if (m[0] === '\r' && eol.lastIndex === this.buf.length) break;
      this.line(this.buf.slice(start, m.index));
      start = eol.lastIndex;
    }
    this.buf = this.buf.slice(start);
  }

  // end finishes the stream. An event left without its closing blank line
  // is still delivered: the standard drops it, but an inspector should show
  // everything the agent sent.
  end() {
    if (this.buf) this.line(this.buf.replace(/\r$/, ''));
    this.buf = '';
    this.dispatch();
  }

  line(line) {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return; // a comment, as used for keep-alives
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data': this.data.push(value); break;
      case 'event': this.event = value; break;
      case 'id': this.id = value; break;
      default: // retry and unknown fields mean nothing here
    }
  }

  dispatch() {
    if (this.data.length) {
      this.onEvent({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
    }
    this.data = [];
    this.event = '';
  }
}
