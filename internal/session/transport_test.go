package session

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testAgent is an HTTP agent on loopback that counts its connections and
// requests.
type testAgent struct {
	srv          *http.Server
	addr         string
	conns, calls atomic.Int32

	mu   sync.Mutex
	idle map[net.Conn]bool // the agent's connections waiting for a request
}

// closeIdle closes the agent's end of its idle connections, as an agent with
// a short keep-alive timeout would, once the last call's connection is idle.
func (a *testAgent) closeIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		a.mu.Lock()
		n := len(a.idle)
		for c := range a.idle {
			c.Close()
			delete(a.idle, c)
		}
		a.mu.Unlock()
		if n > 0 {
			time.Sleep(10 * time.Millisecond) // for the FIN to arrive
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no idle connection to close")
		}
		time.Sleep(time.Millisecond)
	}
}

func startTestAgent(t *testing.T, h http.HandlerFunc) *testAgent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &testAgent{addr: ln.Addr().String(), idle: map[net.Conn]bool{}}
	a.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.calls.Add(1)
			h(w, r)
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				a.conns.Add(1)
			}
			a.mu.Lock()
			if s == http.StateIdle {
				a.idle[c] = true
			} else {
				delete(a.idle, c)
			}
			a.mu.Unlock()
		},
	}
	go a.srv.Serve(ln)
	t.Cleanup(func() { a.srv.Close() })
	return a
}

func (a *testAgent) transport() *agentTransport {
	return newAgentTransport(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", a.addr)
	})
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Write(b)
}

// call posts body and returns the answer, read whole.
func call(ctx context.Context, rt http.RoundTripper, body string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/invocations", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestAgentTransportReusesConnections(t *testing.T) {
	a := startTestAgent(t, echo)
	tr := a.transport()
	defer tr.CloseIdleConnections()
	for i := range 5 {
		body := strings.Repeat("x", i*1000)
		if got, err := call(context.Background(), tr, body); err != nil || got != body {
			t.Fatalf("call %d = %d bytes, %v; want the body echoed", i, len(got), err)
		}
	}
	if n := a.conns.Load(); n != 1 {
		t.Errorf("5 sequential calls used %d connections, want 1", n)
	}
}

// An agent that closes kept-alive connections between calls: every call
// still succeeds and reaches the agent exactly once (a POST is never sent
// twice).
func TestAgentTransportAgentClosesIdle(t *testing.T) {
	a := startTestAgent(t, echo)
	tr := a.transport()
	defer tr.CloseIdleConnections()
	for i := range 4 {
		if _, err := call(context.Background(), tr, "hi"); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		a.closeIdle(t)
	}
	if n := a.calls.Load(); n != 4 {
		t.Errorf("the agent got %d calls, want 4", n)
	}
	if n := a.conns.Load(); n != 4 {
		t.Errorf("%d connections, want 4 (a closed one is never reused)", n)
	}
}

// A connection is given back only when its answer was read whole and the
// agent keeps it alive.
func TestAgentTransportConnectionReturn(t *testing.T) {
	for _, c := range []struct {
		name    string
		handler http.HandlerFunc
		read    bool // read the answer to its end before closing
		reused  bool
	}{
		{name: "read whole", handler: echo, read: true, reused: true},
		{name: "closed early", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write(bytes.Repeat([]byte("y"), 1<<20))
		}, read: false, reused: false},
		{name: "empty answer, not read", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		}, read: false, reused: true},
		{name: "agent says close", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			w.Write([]byte("bye"))
		}, read: true, reused: false},
		{name: "no length (read to EOF)", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			w.(http.Flusher).Flush()
			w.Write([]byte("streamed"))
		}, read: true, reused: false},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := startTestAgent(t, c.handler)
			tr := a.transport()
			defer tr.CloseIdleConnections()
			for range 2 {
				req, _ := http.NewRequest(http.MethodPost, "http://agent/invocations", strings.NewReader("q"))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				if c.read {
					io.Copy(io.Discard, resp.Body)
				}
				resp.Body.Close()
			}
			want := map[bool]int32{true: 1, false: 2}[c.reused]
			if n := a.conns.Load(); n != want {
				t.Errorf("2 calls used %d connections, want %d", n, want)
			}
		})
	}
}

// A call cancelled while the agent is still answering fails at once, and
// its connection is not reused.
func TestAgentTransportCancel(t *testing.T) {
	release := make(chan struct{})
	a := startTestAgent(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("slow") == "" {
			echo(w, r)
			return
		}
		w.Write([]byte("first"))
		w.(http.Flusher).Flush()
		<-release
	})
	defer close(release)
	tr := a.transport()
	defer tr.CloseIdleConnections()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/invocations?slow=1", strings.NewReader("q"))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("first chunk = %q, %v", buf, err)
	}
	cancel()
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(resp.Body); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("reading a cancelled call's answer succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading a cancelled call's answer still blocks")
	}
	resp.Body.Close()

	// Cancelled before it is sent: the context's error.
	if _, err := call(ctx, tr, "q"); !errors.Is(err, context.Canceled) {
		t.Errorf("a call with a cancelled context = %v, want context.Canceled", err)
	}
	if got, err := call(context.Background(), tr, "again"); err != nil || got != "again" {
		t.Errorf("the next call = %q, %v", got, err)
	}
	if n := a.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the cancelled call's is not reused)", n)
	}
}

// A large body goes through net/http's Transport, which lets the agent
// answer while the body is still being sent.
func TestAgentTransportLargeBody(t *testing.T) {
	a := startTestAgent(t, echo)
	tr := a.transport()
	defer tr.CloseIdleConnections()
	body := strings.Repeat("z", inlineBody+1)
	if got, err := call(context.Background(), tr, body); err != nil || got != body {
		t.Fatalf("large call = %d bytes, %v", len(got), err)
	}
	// A body of unknown length too.
	req, _ := http.NewRequest(http.MethodPost, "http://agent/invocations", io.NopCloser(strings.NewReader("stream")))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "stream" {
		t.Errorf("unknown-length call = %q", b)
	}
}

// After CloseIdleConnections, nothing is kept.
func TestAgentTransportClose(t *testing.T) {
	a := startTestAgent(t, echo)
	tr := a.transport()
	if _, err := call(context.Background(), tr, "x"); err != nil {
		t.Fatal(err)
	}
	tr.CloseIdleConnections()
	if _, err := call(context.Background(), tr, "y"); err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	idle := len(tr.idle)
	tr.mu.Unlock()
	if idle != 0 {
		t.Errorf("%d idle connections kept after CloseIdleConnections", idle)
	}
}

func BenchmarkAgentTransport(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(echo)}
	go srv.Serve(ln)
	defer srv.Close()
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	}
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"direct", newAgentTransport(dial)},
		{"net-http", newAgentTransport(dial).std},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := call(context.Background(), c.rt, `{"prompt":"hi"}`); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
