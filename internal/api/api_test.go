package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthrun/berth/internal/control"
	"github.com/berthrun/berth/internal/session"
	"github.com/berthrun/berth/internal/store/sqlite"
)

// newTestServer returns an API over a real control plane (SQLite in a temp
// dir) and a session manager whose driver is never reached by these tests.
func newTestServer(t testing.TB) *Server {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := control.New(context.Background(), st, nil, control.Options{Region: "eu-west-1", AccountID: "123456789012"})
	if err != nil {
		t.Fatal(err)
	}
	m := session.New(nil, session.Options{LogDir: t.TempDir()})
	t.Cleanup(func() { m.Close(); ctl.Close(); st.Close() })
	return New(ctl, m, nil, Options{Logger: slog.New(slog.DiscardHandler)})
}

func TestRuntimeIDFromLabel(t *testing.T) {
	s := newTestServer(t)
	cases := []struct {
		label, account string
		want           string // ID, or the error type
	}{
		{"arn:aws:bedrock-agentcore:eu-west-1:123456789012:runtime/agent-abcdefghij", "", "agent-abcdefghij"},
		{"agent-abcdefghij", "123456789012", "agent-abcdefghij"},
		{"agent-abcdefghij", "", "ValidationException"},                                                                // no accountId
		{"agent-abcdefghij", "999999999999", "ResourceNotFoundException"},                                              // other account
		{"arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/agent-abcdefghij", "", "ResourceNotFoundException"}, // other region
		{"arn:aws:s3:::bucket", "", "ValidationException"},
		{"arn:aws:bedrock-agentcore:eu-west-1:123456789012:runtime/agent-abcdefghij/runtime-endpoint/x", "", "ValidationException"},
		{"not an id", "123456789012", "ValidationException"},
	}
	for _, c := range cases {
		q := url.Values{}
		if c.account != "" {
			q.Set("accountId", c.account)
		}
		got, err := s.runtimeID(c.label, q)
		if err != nil {
			got = toAPIError(err).Type
		}
		if got != c.want {
			t.Errorf("runtimeID(%q, %q) = %q, want %q", c.label, c.account, got, c.want)
		}
	}
}

func TestSessionIDValidation(t *testing.T) {
	cases := []struct {
		header   string
		required bool
		ok       bool
	}{
		{strings.Repeat("a", 33), true, true},
		{strings.Repeat("a", 256), true, true},
		{strings.Repeat("a", 32), false, false},
		{strings.Repeat("a", 257), false, false},
		{strings.Repeat("a", 32) + " ", false, false},
		{"", false, true}, // generated
		{"", true, false},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		if c.header != "" {
			r.Header.Set(hdrSessionID, c.header)
		}
		id, err := sessionID(r, c.required)
		if (err == nil) != c.ok {
			t.Errorf("sessionID(%q, required %v) = %q, %v", c.header, c.required, id, err)
		}
		if err == nil && c.header == "" && len(id) < 33 {
			t.Errorf("generated session id %q is too short", id)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		err    error
		status int
		typ    string
	}{
		{fmt.Errorf("x: %w", control.ErrNotFound), 404, "ResourceNotFoundException"},
		{fmt.Errorf("x: %w", control.ErrConflict), 409, "ConflictException"},
		{fmt.Errorf("x: %w", control.ErrNotReady), 409, "RetryableConflictException"},
		{fmt.Errorf("x: %w", control.ErrQuota), 402, "ServiceQuotaExceededException"},
		{fmt.Errorf("x: %w", session.ErrQuota), 402, "ServiceQuotaExceededException"},
		{fmt.Errorf("x: %w", session.ErrAgent), 424, "RuntimeClientError"},
		{&control.ValidationError{Fields: []control.FieldError{{Field: "f", Message: "m"}}}, 400, "ValidationException"},
		{errors.New("disk on fire"), 500, "InternalServerException"},
	}
	for _, c := range cases {
		ae := toAPIError(c.err)
		if ae.Status != c.status || ae.Type != c.typ {
			t.Errorf("toAPIError(%v) = %d %s, want %d %s", c.err, ae.Status, ae.Type, c.status, c.typ)
		}
		if ae.Status == 500 && strings.Contains(ae.Message, "fire") {
			t.Error("an internal error's details reached the caller")
		}
	}
}

func TestRouting(t *testing.T) {
	s := newTestServer(t)
	cases := []struct {
		method, path string
		status       int
		typ          string
	}{
		{http.MethodPost, "/runtimes/", 200, ""},
		{http.MethodPost, "/runtimes", 200, ""}, // trailing slash optional
		{http.MethodGet, "/runtimes/nosuch-abcdefghij/", 404, "ResourceNotFoundException"},
		{http.MethodPatch, "/runtimes/", 404, "UnknownOperationException"},
		{http.MethodGet, "/nowhere", 404, "UnknownOperationException"},
		{http.MethodPut, "/runtimes/", 400, "ValidationException"}, // empty body: no name
		{http.MethodPost, "/runtimes/" + url.PathEscape("arn:aws:bedrock-agentcore:eu-west-1:123456789012:runtime/a-abcdefghij") + "/invocations", 404, "ResourceNotFoundException"},
		{http.MethodGet, "/berth/v1/health", 200, ""},
		{http.MethodGet, "/berth/v1/logs", 400, "ValidationException"}, // runtimeId missing
	}
	for _, c := range cases {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(c.method, c.path, nil))
		if w.Code != c.status || w.Header().Get("X-Amzn-ErrorType") != c.typ {
			t.Errorf("%s %s = %d %q, want %d %q: %s", c.method, c.path, w.Code, w.Header().Get("X-Amzn-ErrorType"), c.status, c.typ, w.Body)
		}
		if w.Header().Get("X-Amzn-Requestid") == "" {
			t.Errorf("%s %s: no request id", c.method, c.path)
		}
	}
}

func TestDecodeJSONNamesField(t *testing.T) {
	r := httptest.NewRequest(http.MethodPut, "/runtimes/", strings.NewReader(`{"agentRuntimeName": 5}`))
	var req createRuntimeRequest
	err := decodeJSON(r, &req)
	ae := toAPIError(err)
	if ae.Type != "ValidationException" || len(ae.FieldList) != 1 || ae.FieldList[0].Name != "agentRuntimeName" {
		t.Errorf("decodeJSON = %+v, want a ValidationException naming agentRuntimeName", ae)
	}
	r = httptest.NewRequest(http.MethodPut, "/runtimes/", strings.NewReader(`{`))
	if ae := toAPIError(decodeJSON(r, &req)); ae.Reason != "CannotParse" {
		t.Errorf("malformed JSON = %+v, want reason CannotParse", ae)
	}
}

// FuzzRoute: any path and label is routed or refused in AWS's error shape,
// never a panic, and an accepted runtime label yields a valid runtime ID.
func FuzzRoute(f *testing.F) {
	s := newTestServer(f)
	f.Add("arn:aws:bedrock-agentcore:eu-west-1:123456789012:runtime/agent-abcdefghij", "/runtimes/x/invocations")
	f.Add("agent-abcdefghij", "/runtimes/%2F%2F/runtime-endpoints/a/")
	f.Add("arn:::::", "/berth/v1/code/b/../../k")
	f.Add("", "/%zz")
	f.Fuzz(func(t *testing.T, label, path string) {
		if id, err := s.runtimeID(label, url.Values{"accountId": {"123456789012"}}); err == nil && !runtimeIDRE.MatchString(id) {
			t.Errorf("runtimeID(%q) accepted %q", label, id)
		}
		u, err := url.Parse("http://berth" + path)
		if err != nil || u.Host != "berth" {
			return
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, &http.Request{Method: http.MethodPost, URL: u, Header: http.Header{}, Body: http.NoBody})
		if w.Code >= 400 && w.Header().Get("X-Amzn-ErrorType") == "" {
			t.Errorf("POST %s = %d without an error type", path, w.Code)
		}
	})
}
