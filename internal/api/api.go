// Package api serves Berth's HTTP API: AgentCore's control plane
// (bedrock-agentcore-control) and data plane (bedrock-agentcore) on one
// listener, wire-compatible so the official AWS SDKs work against it, plus
// Berth's own admin calls under /berth/v1/.
//
// The two AgentCore planes share the /runtimes/ path space; their operations
// are told apart by method and path shape: data-plane paths end in
// /invocations, /stopruntimesession or /commands, control-plane paths end in
// a slash. AgentCore's wire shapes live in this package only.
package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/berthrun/berth/internal/auth"
	"github.com/berthrun/berth/internal/control"
	"github.com/berthrun/berth/internal/image"
	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/session"
)

// Options configure a Server.
type Options struct {
	// SessionLimits are the resource limits of every session's sandbox.
	SessionLimits sandbox.Limits
	// LogDir is where the session manager keeps session logs.
	LogDir string
	// Metrics, if set, records every invocation.
	Metrics Recorder
	// Verifier, if set, requires every call but the health check to be
	// signed (SigV4) with one of its keys, and each key to be allowed the
	// call.
	Verifier *auth.Verifier
	// JWT verifies the bearer tokens of runtimes with a JWT authorizer; nil
	// means one made by auth.NewJWTVerifier.
	JWT *auth.JWTVerifier
	// Tracer, if set, traces every invocation: resolving the endpoint,
	// acquiring the session and proxying to the agent, whose request
	// carries the trace context.
	Tracer trace.Tracer
	// Images, if set, takes container image uploads (PUT
	// /berth/v1/images/...).
	Images *image.Store
	Logger *slog.Logger
}

// Recorder records invocations (for metrics).
type Recorder interface {
	Invoked(runtimeID, endpoint string, code int, d time.Duration, in, out int64)
}

// Server is Berth's HTTP API.
type Server struct {
	control  *control.Service
	sessions *session.Manager
	code     CodeStore
	opts     Options
	jwt      *auth.JWTVerifier
	log      *slog.Logger
}

// New returns the API over the control plane, the session manager and the
// code store.
func New(c *control.Service, m *session.Manager, code CodeStore, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.JWT == nil {
		opts.JWT = auth.NewJWTVerifier()
	}
	return &Server{control: c, sessions: m, code: code, opts: opts, jwt: opts.JWT, log: opts.Logger}
}

type ctxKey struct{}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// ServeHTTP routes a request. Every response carries x-amzn-RequestId.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := uuid.NewString()
	w.Header().Set("X-Amzn-Requestid", id)
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, id))
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		// An access log line per request, with the ID the caller got.
		start, rec := time.Now(), &recorder{ResponseWriter: w, code: http.StatusOK}
		w = rec
		defer func() {
			s.log.Debug("request", "request_id", id, "method", r.Method, "path", r.URL.EscapedPath(),
				"status", rec.code, "bytes", rec.n, "took", time.Since(start))
		}()
	}

	// Route on the escaped path: a runtime ARN arrives percent-encoded,
	// with its '/' as %2F, and must stay one segment.
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	for i, seg := range segs {
		u, err := url.PathUnescape(seg)
		if err != nil {
			s.writeError(w, r, parseError("path segment %q is not valid percent-encoding", seg))
			return
		}
		segs[i] = u
	}
	// Trailing slashes are part of the control-plane paths; accept them
	// missing too.
	if n := len(segs); n > 1 && segs[n-1] == "" {
		segs = segs[:n-1]
	}

	if s.opts.Verifier != nil {
		var ok bool
		if r, ok = s.authenticate(w, r, segs); !ok {
			return
		}
	}

	switch {
	case segs[0] == "runtimes":
		s.routeRuntimes(w, r, segs[1:])
	case segs[0] == "berth" && len(segs) > 1 && segs[1] == "v1":
		s.routeAdmin(w, r, segs[2:])
	default:
		s.unknown(w, r)
	}
}

// handler is a JSON operation: it returns a success status and body, or an
// error.
type handler func(*http.Request) (int, any, error)

func (s *Server) serveJSON(w http.ResponseWriter, r *http.Request, h handler) {
	status, body, err := h(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Server) unknown(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, &apiError{Status: http.StatusNotFound, Type: "UnknownOperationException",
		Message: "no operation matches " + r.Method + " " + r.URL.EscapedPath()})
}

// routeRuntimes routes /runtimes/... (segs is what follows "runtimes").
func (s *Server) routeRuntimes(w http.ResponseWriter, r *http.Request, segs []string) {
	m := r.Method
	var h handler
	switch len(segs) {
	case 0:
		switch m {
		case http.MethodPut:
			h = s.createRuntime
		case http.MethodPost:
			h = s.listRuntimes
		}
	case 1:
		id := segs[0]
		switch m {
		case http.MethodGet:
			h = func(r *http.Request) (int, any, error) { return s.getRuntime(r, id) }
		case http.MethodPut:
			h = func(r *http.Request) (int, any, error) { return s.updateRuntime(r, id) }
		case http.MethodDelete:
			h = func(r *http.Request) (int, any, error) { return s.deleteRuntime(r, id) }
		}
	case 2:
		id := segs[0]
		switch {
		case segs[1] == "invocations" && m == http.MethodPost:
			s.invoke(w, r, id)
			return
		case segs[1] == "stopruntimesession" && m == http.MethodPost:
			s.stopSession(w, r, id)
			return
		case segs[1] == "versions" && m == http.MethodPost:
			h = func(r *http.Request) (int, any, error) { return s.listVersions(r, id) }
		case segs[1] == "runtime-endpoints" && m == http.MethodPut:
			h = func(r *http.Request) (int, any, error) { return s.createEndpoint(r, id) }
		case segs[1] == "runtime-endpoints" && m == http.MethodPost:
			h = func(r *http.Request) (int, any, error) { return s.listEndpoints(r, id) }
		}
	case 3:
		id, name := segs[0], segs[2]
		if segs[1] != "runtime-endpoints" {
			break
		}
		switch m {
		case http.MethodGet:
			h = func(r *http.Request) (int, any, error) { return s.getEndpoint(r, id, name) }
		case http.MethodPut:
			h = func(r *http.Request) (int, any, error) { return s.updateEndpoint(r, id, name) }
		case http.MethodDelete:
			h = func(r *http.Request) (int, any, error) { return s.deleteEndpoint(r, id, name) }
		}
	}
	if h == nil {
		s.unknown(w, r)
		return
	}
	s.serveJSON(w, r, h)
}
