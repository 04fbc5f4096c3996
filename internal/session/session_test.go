package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
)

// fakeDriver starts "sandboxes" that are in-process HTTP servers on
// loopback, for testing the manager's logic at its edges. The real driver
// is exercised by the end-to-end tests.
type fakeDriver struct {
	started atomic.Int32
	stopped atomic.Int32
	// pingStatus returns the /ping answer of the nth sandbox.
	pingStatus func(n int32) (int, string)
	mu         sync.Mutex
	live       map[string]*fakeSandbox
}

type fakeSandbox struct {
	id   string
	srv  *httptest.Server
	done chan struct{}
	once sync.Once
	d    *fakeDriver
}

func (d *fakeDriver) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	n := d.started.Add(1)
	sb := &fakeSandbox{id: spec.ID, done: make(chan struct{}), d: d}
	var busy atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		code, status := http.StatusOK, "Healthy"
		if d.pingStatus != nil {
			code, status = d.pingStatus(n)
		}
		if busy.Load() {
			status = "HealthyBusy"
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"status":%q}`, status)
	})
	mux.HandleFunc("POST /busy", func(w http.ResponseWriter, r *http.Request) { busy.Store(r.URL.Query().Get("on") == "1") })
	sb.srv = httptest.NewServer(mux)
	d.mu.Lock()
	if d.live == nil {
		d.live = map[string]*fakeSandbox{}
	}
	d.live[spec.ID] = sb
	d.mu.Unlock()
	return sb, nil
}

func (d *fakeDriver) Cleanup(context.Context) error { return nil }

func (d *fakeDriver) liveCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.live)
}

func (s *fakeSandbox) ID() string { return s.id }
func (s *fakeSandbox) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	var dialer net.Dialer
	return dialer.DialContext(ctx, network, s.srv.Listener.Addr().String())
}
func (s *fakeSandbox) Done() <-chan struct{} { return s.done }
func (s *fakeSandbox) Err() error {
	select {
	case <-s.done:
		return errors.New("exited with status 3")
	default:
		return nil
	}
}

// crash simulates the agent dying.
func (s *fakeSandbox) crash() { s.once.Do(func() { s.srv.Close(); close(s.done) }) }

func (s *fakeSandbox) Stop(context.Context) error {
	s.crash()
	s.d.mu.Lock()
	if _, ok := s.d.live[s.id]; ok {
		delete(s.d.live, s.id)
		s.d.stopped.Add(1)
	}
	s.d.mu.Unlock()
	return nil
}

func newManager(t *testing.T, d *fakeDriver, opts Options) *Manager {
	t.Helper()
	opts.LogDir = t.TempDir()
	if opts.ReapInterval == 0 {
		opts.ReapInterval = 10 * time.Millisecond
	}
	m := New(d, opts)
	t.Cleanup(func() {
		m.Close()
		if n := d.liveCount(); n != 0 {
			t.Errorf("%d sandboxes live after Close", n)
		}
	})
	return m
}

func target(idle, life time.Duration) *Target {
	return &Target{RuntimeID: "rt", Version: 1, Port: 8080, IdleTimeout: idle, MaxLifetime: life}
}

func TestAffinityAndSingleStart(t *testing.T) {
	d := &fakeDriver{}
	m := newManager(t, d, Options{})
	var wg sync.WaitGroup
	sessions := make([]*Session, 8)
	for i := range sessions {
		wg.Go(func() {
			s, err := m.Acquire(context.Background(), "rt", "one", target(time.Hour, time.Hour))
			if err != nil {
				t.Error(err)
				return
			}
			sessions[i] = s
			s.Release()
		})
	}
	wg.Wait()
	if n := d.started.Load(); n != 1 {
		t.Fatalf("%d sandboxes started for one session's concurrent first calls, want 1", n)
	}
	for _, s := range sessions {
		if s != sessions[0] {
			t.Fatal("concurrent calls of one session got different sessions")
		}
	}
}

func TestQuota(t *testing.T) {
	d := &fakeDriver{}
	m := newManager(t, d, Options{MaxSessions: 2})
	for _, id := range []string{"a", "b"} {
		s, err := m.Acquire(context.Background(), "rt", id, target(time.Hour, time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		s.Release()
	}
	if _, err := m.Acquire(context.Background(), "rt", "c", target(time.Hour, time.Hour)); !errors.Is(err, ErrQuota) {
		t.Fatalf("third session: %v, want ErrQuota", err)
	}
	if err := m.Stop(context.Background(), "rt", "a"); err != nil {
		t.Fatal(err)
	}
	s, err := m.Acquire(context.Background(), "rt", "c", target(time.Hour, time.Hour))
	if err != nil {
		t.Fatalf("after a stop: %v", err)
	}
	s.Release()
}

func TestNeverHealthy(t *testing.T) {
	d := &fakeDriver{pingStatus: func(int32) (int, string) { return http.StatusServiceUnavailable, "" }}
	m := newManager(t, d, Options{ReadyTimeout: 100 * time.Millisecond})
	_, err := m.Acquire(context.Background(), "rt", "x", target(time.Hour, time.Hour))
	if !errors.Is(err, ErrAgent) {
		t.Fatalf("Acquire = %v, want ErrAgent", err)
	}
	if d.liveCount() != 0 || len(m.List("")) != 0 {
		t.Errorf("a failed start left %d sandboxes and %d sessions", d.liveCount(), len(m.List("")))
	}
}

func TestIdleBusyAndLifetime(t *testing.T) {
	d := &fakeDriver{}
	m := newManager(t, d, Options{})
	ctx := context.Background()

	s, err := m.Acquire(ctx, "rt", "idle", target(50*time.Millisecond, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s.Release()
	waitGone(t, m, "idle")

	// A busy agent outlives its idle timeout until it is no longer busy.
	s, err = m.Acquire(ctx, "rt", "busy", target(50*time.Millisecond, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	setBusy(t, s, true)
	s.Release()
	time.Sleep(300 * time.Millisecond)
	if len(m.List("rt")) != 1 {
		t.Fatal("a HealthyBusy session was reaped")
	}
	setBusy(t, s, false)
	waitGone(t, m, "busy")

	// A call in flight keeps the session from idling out, but not past
	// its lifetime.
	s, err = m.Acquire(ctx, "rt", "life", target(time.Hour, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	waitGone(t, m, "life")
	select {
	case <-s.Context().Done():
	default:
		t.Error("a session's context lives on after it ended")
	}
	s.Release()
}

func TestCrash(t *testing.T) {
	d := &fakeDriver{}
	m := newManager(t, d, Options{})
	s, err := m.Acquire(context.Background(), "rt", "x", target(time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s.Release()
	s.Sandbox().(*fakeSandbox).crash()
	waitGone(t, m, "x")
	s2, err := m.Acquire(context.Background(), "rt", "x", target(time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s2.Release()
	if s2 == s || d.started.Load() != 2 {
		t.Error("the call after a crash did not get a fresh sandbox")
	}
}

func setBusy(t *testing.T, s *Session, on bool) {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	req, _ := http.NewRequest(http.MethodPost, "http://agent/busy?on="+v, nil)
	resp, err := s.Transport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func waitGone(t *testing.T, m *Manager, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		found := false
		for _, in := range m.List("") {
			found = found || in.SessionID == id
		}
		if !found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s still live", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLogName(t *testing.T) {
	for in, want := range map[string]string{
		"abc-123_x.y": "abc-123_x.y",
		"..":          "h-",
		"a/b":         "h-",
	} {
		got := logName(in)
		if want == "h-" {
			if len(got) != 34 || got[:2] != "h-" {
				t.Errorf("logName(%q) = %q, want a hash", in, got)
			}
		} else if got != want {
			t.Errorf("logName(%q) = %q, want %q", in, got, want)
		}
	}
}

func waitPool(t *testing.T, m *Manager, cond func(PoolInfo) bool) PoolInfo {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps := m.Pools()
		if len(ps) == 1 && cond(ps[0]) {
			return ps[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("pools = %+v", ps)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWarmPool(t *testing.T) {
	d := &fakeDriver{}
	m := newManager(t, d, Options{MaxSessions: 3})
	tg := target(time.Hour, time.Hour)
	m.SetPools([]PoolSpec{{Target: tg, Size: 2}})
	waitPool(t, m, func(p PoolInfo) bool { return p.Ready == 2 })

	s, err := m.Acquire(context.Background(), "rt", "a", tg)
	if err != nil {
		t.Fatal(err)
	}
	s.Release()
	if p := waitPool(t, m, func(p PoolInfo) bool { return p.Claimed == 1 }); p.Size != 2 {
		t.Errorf("pool after a claim = %+v", p)
	}
	if s.ID != "a" || len(m.List("")) != 1 {
		t.Errorf("claimed session = %q, sessions %v", s.ID, m.List(""))
	}
	// The pool refills, but only up to the session cap (1 session + 2 warm).
	waitPool(t, m, func(p PoolInfo) bool { return p.Ready == 2 })

	// Sessions take precedence over warm sandboxes: with the cap reached,
	// new sessions still start (claiming or evicting warm ones).
	for _, id := range []string{"b", "c"} {
		s, err := m.Acquire(context.Background(), "rt", id, tg)
		if err != nil {
			t.Fatalf("session %s: %v", id, err)
		}
		s.Release()
	}
	if _, err := m.Acquire(context.Background(), "rt", "d", tg); !errors.Is(err, ErrQuota) {
		t.Errorf("fourth session: %v, want ErrQuota", err)
	}
	if live := d.liveCount(); live > 3 {
		t.Errorf("%d sandboxes live with a cap of 3", live)
	}

	// A crashed claimed sandbox ends its session like any other.
	s, _ = m.Acquire(context.Background(), "rt", "a", tg)
	s.Release()
	s.Sandbox().(*fakeSandbox).crash()
	waitGone(t, m, "a")

	// Releasing the pool stops its warm sandboxes.
	for _, id := range []string{"b", "c"} {
		m.Stop(context.Background(), "rt", id)
	}
	m.SetPools(nil)
	if ps := m.Pools(); len(ps) != 0 {
		t.Errorf("pools after release = %+v", ps)
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.liveCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sandboxes live after the pool was released", d.liveCount())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWarmPoolShrinksWhenIdle(t *testing.T) {
	d := &fakeDriver{}
	m := newManager(t, d, Options{})
	tg := target(time.Hour, time.Hour)
	m.SetPools([]PoolSpec{{Target: tg, Size: 2, IdleTimeout: 200 * time.Millisecond}})
	waitPool(t, m, func(p PoolInfo) bool { return p.Ready == 2 })
	waitPool(t, m, func(p PoolInfo) bool { return p.Ready == 0 && p.Size == 0 })
	// Demand brings it back.
	s, err := m.Acquire(context.Background(), "rt", "x", tg)
	if err != nil {
		t.Fatal(err)
	}
	s.Release()
	waitPool(t, m, func(p PoolInfo) bool { return p.Ready == 2 })
}
