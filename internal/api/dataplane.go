package api

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/berthrun/berth/internal/session"
)

// Headers of the AgentCore data plane.
const (
	hdrSessionID = "X-Amzn-Bedrock-Agentcore-Runtime-Session-Id"
	hdrRequestID = "X-Amzn-Bedrock-Agentcore-Runtime-Request-Id"
)

// smallBody is the size up to which a request body is read whole before it
// is forwarded.
const smallBody = 32 << 10

// MaxPayload is the largest invocation body accepted (AgentCore's limit).
const MaxPayload = 100 << 20

// forwardedHeaders are passed from the caller to the agent as they are.
var forwardedHeaders = []string{
	"Content-Type", "Accept", "Traceparent", "Tracestate", "Baggage", "X-Amzn-Trace-Id",
	"Mcp-Session-Id", "Mcp-Protocol-Version", "Mcp-Method", "Mcp-Name",
}

// returnedHeaders are passed from the agent's response back to the caller.
var returnedHeaders = []string{"Content-Type", "Content-Length", "Cache-Control", "Mcp-Session-Id", "Mcp-Protocol-Version"}

// echoedHeaders are trace headers the caller sent that the response repeats.
var echoedHeaders = []string{"Traceparent", "Tracestate", "Baggage", "X-Amzn-Trace-Id"}

var runtimeIDRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]{0,99}-[a-zA-Z0-9]{10}$`)

// runtimeID reads the runtime a data-plane path label names: a full runtime
// ARN, or a bare runtime ID with the accountId query parameter.
func (s *Server) runtimeID(label string, q url.Values) (string, error) {
	var id string
	if rest, ok := strings.CutPrefix(label, "arn:"); ok {
		// aws:bedrock-agentcore:{region}:{account}:runtime/{id}
		parts := strings.SplitN(rest, ":", 5)
		if len(parts) != 5 || parts[1] != "bedrock-agentcore" || !strings.HasPrefix(parts[4], "runtime/") {
			return "", validationError("agentRuntimeArn", "%q is not an agent runtime ARN (arn:aws:bedrock-agentcore:REGION:ACCOUNT:runtime/ID)", label)
		}
		if parts[2] != s.control.Region() || parts[3] != s.control.AccountID() {
			return "", notFound("agent runtime %s not found: this server serves region %s, account %s", label, s.control.Region(), s.control.AccountID())
		}
		id = strings.TrimPrefix(parts[4], "runtime/")
	} else {
		id = label
		acct := q.Get("accountId")
		if acct == "" {
			return "", validationError("accountId", "is required when the agent runtime is given by ID rather than ARN")
		}
		if acct != s.control.AccountID() {
			return "", notFound("agent runtime %s not found in account %s", id, acct)
		}
	}
	if !runtimeIDRE.MatchString(id) {
		return "", validationError("agentRuntimeArn", "%q is not a valid agent runtime ID", id)
	}
	return id, nil
}

// sessionID returns the call's runtime session ID, generating one if the
// caller sent none (AWS SDKs always send one).
func sessionID(r *http.Request, required bool) (string, error) {
	id := r.Header.Get(hdrSessionID)
	if id == "" {
		if required {
			return "", validationError("runtimeSessionId", "is required (header %s)", hdrSessionID)
		}
		return uuid.NewString(), nil
	}
	if n := len(id); n < 33 || n > 256 {
		return "", validationError("runtimeSessionId", "is %d characters long; it must be 33 to 256", n)
	}
	for _, c := range id {
		if c < 0x21 || c > 0x7e {
			return "", validationError("runtimeSessionId", "must contain only printable ASCII characters")
		}
	}
	return id, nil
}

// invoke implements InvokeAgentRuntime: it finds or starts the session's
// sandbox and streams the agent's answer back as it is produced.
func (s *Server) invoke(w http.ResponseWriter, r *http.Request, label string) {
	q := r.URL.Query()
	runtimeID, err := s.runtimeID(label, q)
	if err == nil {
		err = s.authorizeRuntime(r, runtimeID)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.opts.Tracer != nil {
		// The caller's trace context, if any, is the parent.
		ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := s.opts.Tracer.Start(ctx, "InvokeAgentRuntime", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("berth.runtime_id", runtimeID), attribute.String("berth.qualifier", q.Get("qualifier"))))
		defer span.End()
		r = r.WithContext(ctx)
	}
	if s.opts.Metrics != nil {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, code: http.StatusOK}
		body := &countingBody{ReadCloser: r.Body}
		r.Body, w = body, rec
		endpoint := cmp.Or(q.Get("qualifier"), "DEFAULT")
		defer func() { s.opts.Metrics.Invoked(runtimeID, endpoint, rec.code, time.Since(start), body.n, rec.n) }()
	}
	sid, err := sessionID(r, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Echoed on errors too, so a caller learns a generated session ID.
	w.Header().Set(hdrSessionID, sid)
	if r.ContentLength > MaxPayload {
		s.writeError(w, r, validationError("payload", "is %d bytes; the limit is %d bytes (100 MB)", r.ContentLength, MaxPayload))
		return
	}
	_, end := s.span(r.Context(), "resolve endpoint")
	d, err := s.control.Resolve(r.Context(), runtimeID, q.Get("qualifier"))
	end(err)
	if err == nil {
		err = s.authorizeBearer(r, runtimeID, d.Config.JWT)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	acquireCtx, end := s.span(r.Context(), "acquire session", attribute.String("berth.session_id", sid))
	sess, err := s.sessions.Acquire(acquireCtx, runtimeID, sid, d.Target(s.opts.SessionLimits))
	end(err)
	if errors.Is(err, session.ErrAgent) {
		err = runtimeClientError("%v; %s", err, logsHint(runtimeID, sid))
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer sess.Release()

	// The call ends when the caller goes away or when the session ends
	// (StopRuntimeSession ends streams in flight).
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(sess.Context(), cancel)
	defer stop()

	// An agent may answer while the caller is still sending (an agent
	// that streams its input back, say); HTTP/1.1 allows it, Go's server
	// only when asked.
	if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
		s.log.Debug("full duplex unavailable", "err", err)
	}
	body := &limitedBody{r: http.MaxBytesReader(w, r.Body, MaxPayload)}
	out, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent"+d.Config.Protocol.Path, body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out.ContentLength = r.ContentLength
	switch {
	case r.ContentLength == 0:
		out.Body = http.NoBody
	case r.ContentLength > 0 && r.ContentLength <= smallBody:
		// Read whole, a small body leaves with the headers in one write
		// (net/http writes other bodies separately): one syscall and one
		// wakeup of the agent fewer per call.
		// (Not a pooled buffer: the transport may still read the body
		// after the answer is back.)
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(body, buf); err != nil {
			s.writeError(w, r, parseError("could not read the request body: %v", err))
			return
		}
		out.Body = io.NopCloser(bytes.NewReader(buf))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	}
	for _, h := range forwardedHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			out.Header[h] = v
		}
	}
	for _, h := range d.Config.HeaderAllowlist {
		if v := r.Header.Values(h); len(v) > 0 {
			out.Header[http.CanonicalHeaderKey(h)] = v
		}
	}
	out.Header.Set(hdrSessionID, sid)
	out.Header.Set(hdrRequestID, requestID(r.Context()))

	proxyCtx, endProxy := s.span(r.Context(), "proxy to agent", attribute.Int("berth.version", d.Version))
	if s.opts.Tracer != nil {
		// The agent's parent span is the proxy's.
		propagation.TraceContext{}.Inject(proxyCtx, propagation.HeaderCarrier(out.Header))
	}
	var streamErr error
	defer func() { endProxy(streamErr) }()
	resp, err := sess.Transport().RoundTrip(out)
	streamErr = err
	if err != nil {
		switch {
		case body.tooLarge:
			s.writeError(w, r, validationError("payload", "is larger than the limit of %d bytes (100 MB)", MaxPayload))
		case r.Context().Err() != nil:
			// The caller is gone; nobody reads an answer.
		case sess.Context().Err() != nil && sess.Sandbox().Err() == nil:
			s.writeError(w, r, runtimeClientError("runtime session %s was stopped during the call", sid))
		default:
			s.writeError(w, r, s.agentFailure(sess, err))
		}
		return
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		s.writeError(w, r, runtimeClientError("the agent answered %s: %s; %s", resp.Status, strings.TrimSpace(string(snippet)), logsHint(runtimeID, sid)))
		return
	}
	h := w.Header()
	for _, k := range returnedHeaders {
		if v := resp.Header.Values(k); len(v) > 0 {
			h[k] = v
		}
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/octet-stream")
	}
	for _, k := range echoedHeaders {
		if v := r.Header.Values(k); len(v) > 0 {
			h[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	// Event streams and answers of unknown length are flushed as they
	// arrive; a body of known length just flows through the buffer.
	flush := resp.ContentLength < 0 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	if err := stream(w, resp.Body, flush); err != nil && r.Context().Err() == nil {
		streamErr = err
		// The agent's side failed mid-answer. Abort the connection so
		// the caller sees a broken stream, not a clean but short one.
		s.log.Warn("stream from agent broke", "request_id", requestID(r.Context()), "session", sid, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// agentFailure explains why a call to an agent failed, waiting briefly for
// the sandbox to report an exit so the caller learns that the agent died.
func (s *Server) agentFailure(sess *session.Session, err error) error {
	select {
	case <-sess.Sandbox().Done():
		return runtimeClientError("the agent exited during the call (%v); the next call starts a new session sandbox; %s", sess.Sandbox().Err(), logsHint(sess.RuntimeID, sess.ID))
	case <-time.After(200 * time.Millisecond):
		return runtimeClientError("could not reach the agent: %v; %s", err, logsHint(sess.RuntimeID, sess.ID))
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// stream copies an agent's answer to the caller, flushing every chunk as it
// arrives if flush is set, so that server-sent events are never held back.
func stream(w http.ResponseWriter, body io.Reader, flush bool) error {
	rc := http.NewResponseController(w)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil // the caller is gone
			}
			if flush {
				if ferr := rc.Flush(); ferr != nil {
					return nil
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// limitedBody remembers whether the caller's body went over MaxPayload, so
// that the failure is reported as the caller's fault.
type limitedBody struct {
	r        io.ReadCloser
	tooLarge bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.tooLarge = true
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.r.Close() }

type stopSessionRequest struct {
	ClientToken string `json:"clientToken,omitempty"`
}

// stopSession implements StopRuntimeSession.
func (s *Server) stopSession(w http.ResponseWriter, r *http.Request, label string) {
	runtimeID, err := s.runtimeID(label, r.URL.Query())
	if err == nil {
		err = s.authorizeRuntime(r, runtimeID)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The newest version's authorizer guards the runtime's sessions.
	rt, err := s.control.GetRuntime(r.Context(), runtimeID, 0)
	if err == nil {
		err = s.authorizeBearer(r, runtimeID, rt.Config.JWT)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sid, err := sessionID(r, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req stopSessionRequest
	if err := decodeJSON(r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.sessions.Stop(r.Context(), runtimeID, sid); err != nil {
		s.writeError(w, r, fmt.Errorf("stop runtime session: %w", err))
		return
	}
	w.Header().Set(hdrSessionID, sid)
	writeJSON(w, http.StatusOK, struct{}{})
}

// recorder remembers a response's status and size, for metrics.
type recorder struct {
	http.ResponseWriter
	code int
	n    int64
}

func (r *recorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	n, err := r.ResponseWriter.Write(p)
	r.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (flushing, full
// duplex).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// countingBody counts a request body's bytes, for metrics.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// span starts a child span of ctx's, if tracing, and returns a function that
// ends it, recording err.
func (s *Server) span(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, func(error)) {
	if s.opts.Tracer == nil {
		return ctx, func(error) {}
	}
	ctx, span := s.opts.Tracer.Start(ctx, name, trace.WithAttributes(attrs...))
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// logsHint tells a caller where a session's agent output is.
func logsHint(runtimeID, sessionID string) string {
	return fmt.Sprintf("the agent's output: GET /berth/v1/logs?runtimeId=%s&sessionId=%s (berth logs --session %s)",
		url.QueryEscape(runtimeID), url.QueryEscape(sessionID), sessionID)
}
