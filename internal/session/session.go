// Package session runs agent sessions: one sandbox per runtime session ID,
// started on the session's first call, reused by its later calls (affinity),
// and ended when it has been idle too long (unless its agent reports
// HealthyBusy), when it reaches its maximum lifetime, when it is stopped, or
// when its agent dies.
package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/telemetry"
)

// Errors of Acquire and Stop.
var (
	// ErrQuota reports that the server runs as many sessions as it may.
	ErrQuota = errors.New("session quota exceeded")
	// ErrNotFound reports that no live session has the given ID.
	ErrNotFound = errors.New("session not found")
	// ErrAgent reports that the agent failed: it did not become healthy in
	// time, or it exited.
	ErrAgent = errors.New("agent failed")
	// ErrClosed reports that the manager is shutting down.
	ErrClosed = errors.New("session manager closed")
)

// Reasons a session ends.
const (
	EndIdle     = "idle"
	EndLifetime = "lifetime"
	EndStopped  = "stopped"
	EndCrashed  = "crashed"
	EndShutdown = "shutdown"
)

// States of a session.
const (
	StateStarting = "STARTING"
	StateReady    = "READY"
)

// Target is what a new session runs: one version of a runtime.
type Target struct {
	RuntimeID   string
	Version     int
	Args        []string
	Env         []string
	CodeDir     string
	WorkDir     string
	RootLayers  []string     // a container image's layers; see sandbox.Spec
	Image       string       // a container image reference the driver's nodes pull; see sandbox.Spec
	User        sandbox.User // the image's user
	Port        int
	IdleTimeout time.Duration
	MaxLifetime time.Duration
	Limits      sandbox.Limits
	Network     sandbox.Network
	// OCIRuntime names the OCI runtime of the sandbox (sandbox.Spec.Runtime);
	// empty means the driver's default.
	OCIRuntime string
}

// Options configure a Manager.
type Options struct {
	// MaxSessions caps live sessions across all runtimes.
	MaxSessions int
	// ReadyTimeout bounds how long a new agent may take to answer /ping.
	ReadyTimeout time.Duration
	// ReapInterval is how often idle and expired sessions are looked for.
	ReapInterval time.Duration
	// LogDir holds each session's agent output, in
	// LogDir/<runtime ID>/<session>/agent.log.
	LogDir string
	// LogLimit caps each session's log, in bytes.
	LogLimit int64
	// Observer, if set, learns of every session's start and end.
	Observer Observer
	// Tracer, if set, traces cold starts (creating the sandbox, waiting
	// for the agent), as children of the call that caused them.
	Tracer trace.Tracer
	Logger *slog.Logger

	// Registry, if set and the driver is sandbox.Shared, shares sessions
	// with the other replicas of Berth that use the same registry (see
	// Record). Targets then says what sessions taken over from a dead
	// replica run.
	Registry Registry
	Targets  Targets
	// Replica is this replica's id, made of [A-Za-z0-9_.-]; empty means
	// a random one.
	Replica string
	// Lease is how long a replica owns its sessions' lifecycle without
	// renewing its claim (heartbeats come thrice as often); zero means 15
	// seconds. It is also how long a dead replica's sessions go unowned.
	Lease time.Duration
}

// Observer learns of sessions starting and ending, for metrics.
type Observer interface {
	// SessionStarted reports a new session; for a cold start, sandbox and
	// ready are the time to create the sandbox and for its agent to
	// become healthy; warm says a warm sandbox served it instead.
	SessionStarted(runtimeID string, warm bool, sandbox, ready time.Duration)
	SessionEnded(runtimeID, reason string)
}

type nopObserver struct{}

func (nopObserver) SessionStarted(string, bool, time.Duration, time.Duration) {}
func (nopObserver) SessionEnded(string, string)                               {}

// Manager owns every live session.
type Manager struct {
	driver sandbox.Driver
	opts   Options
	log    *slog.Logger

	mu       sync.Mutex
	sessions map[key]*Session
	pools    map[poolKey]*pool
	closed   bool
	poolWake chan struct{}

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// With a registry: the shared list of sessions, the driver as a
	// shared one, and until when this replica's leases are known to hold
	// (unix nanoseconds), so that a replica cut off from the registry
	// stops ending sessions that others may have taken over.
	reg          Registry
	driverShared sandbox.Shared
	leaseUntil   atomic.Int64
}

type key struct{ runtimeID, sessionID string }

// Session is one live session.
type Session struct {
	RuntimeID string
	ID        string
	Version   int
	CreatedAt time.Time
	// LogDir is the directory holding the session's agent output.
	LogDir string

	target    Target
	sb        sandbox.Sandbox
	log       *telemetry.SessionLog
	transport *agentTransport
	// ready is closed when the session has started or failed to; startErr
	// says which.
	ready    chan struct{}
	startErr error

	// ctx ends when the session ends; calls in flight are tied to it.
	ctx    context.Context
	cancel context.CancelFunc
	// caller is the trace context of the call that started the session.
	caller trace.SpanContext

	// sandboxID is the id of the session's sandbox.
	sandboxID string
	// owned says this replica owns the session's lifecycle: always,
	// without a registry.
	owned atomic.Bool
	// reported is the last use reported to the registry (unix nanoseconds).
	reported atomic.Int64
	// claimed says the session started from a warm sandbox; with a
	// registry, its first call registers it (regOnce, regErr).
	claimed bool
	regOnce sync.Once
	regErr  error

	// refill, for a session claimed from a warm pool, asks for the pool
	// to be refilled; the first Release calls it.
	refill   func()
	refilled atomic.Bool

	lastUsed atomic.Int64 // unix nanoseconds of the last call's end or start
	lastBusy atomic.Int64 // unix nanoseconds the agent last said HealthyBusy
	inflight atomic.Int32
	ended    atomic.Bool
}

// New returns a Manager that starts sandboxes with driver. Its reaper runs
// until Close.
func New(driver sandbox.Driver, opts Options) *Manager {
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 100
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	if opts.ReapInterval <= 0 {
		opts.ReapInterval = time.Second
	}
	if opts.LogLimit <= 0 {
		opts.LogLimit = 16 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.Replica == "" {
		opts.Replica = strings.ToLower(rand.Text()[:12])
	}
	if opts.Lease <= 0 {
		opts.Lease = 15 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{driver: driver, opts: opts, log: opts.Logger, sessions: map[key]*Session{}, pools: map[poolKey]*pool{},
		poolWake: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
	if shared, ok := driver.(sandbox.Shared); ok && opts.Registry != nil {
		m.reg, m.driverShared = opts.Registry, shared
		m.wg.Add(1)
		go m.heartbeat()
	}
	m.wg.Add(2)
	go m.reap()
	go m.fillPools()
	return m
}

// Acquire returns the live session sessionID of runtimeID, starting one that
// runs t if there is none, and waits until its agent is healthy. The caller
// must call Release when its call is done.
func (m *Manager) Acquire(ctx context.Context, runtimeID, sessionID string, t *Target) (*Session, error) {
	k := key{runtimeID, sessionID}
	claim := true // false once another replica turned out to have the session
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, ErrClosed
		}
		s := m.sessions[k]
		if s == nil && claim {
			s = m.claim(k, t)
		}
		if s != nil {
			m.sessions[k] = s
		} else {
			if len(m.sessions) >= m.opts.MaxSessions {
				m.mu.Unlock()
				return nil, fmt.Errorf("%d sessions are live, the most this server allows: %w", m.opts.MaxSessions, ErrQuota)
			}
			if len(m.sessions)+m.pooled() >= m.opts.MaxSessions {
				m.evictPooled(poolKey{t.RuntimeID, t.Version}) // sessions come before warm sandboxes
			}
			s = m.newSession(k, t)
			s.caller = trace.SpanContextFromContext(ctx)
			m.sessions[k] = s
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.start(s)
			}()
		}
		s.inflight.Add(1)
		m.mu.Unlock()

		select {
		case <-s.ready:
		case <-ctx.Done():
			s.Release()
			return nil, ctx.Err()
		}
		if s.startErr != nil {
			s.Release()
			return nil, s.startErr
		}
		if s.claimed && m.shared() {
			s.regOnce.Do(func() { s.regErr = m.register(ctx, s) })
			if s.regErr != nil {
				s.Release()
				if !errors.Is(s.regErr, ErrRegistered) {
					return nil, s.regErr
				}
				// Another replica started the session meanwhile: give
				// the warm sandbox back and attach to that one.
				m.remove(s)
				go m.discard([]*Session{s})
				claim = false
				continue
			}
		}
		if s.ended.Load() {
			// It ended between lookup and now; start a fresh one.
			s.Release()
			continue
		}
		s.touch()
		return s, nil
	}
}

func (m *Manager) newSession(k key, t *Target) *Session {
	ctx, cancel := context.WithCancel(m.ctx)
	now := time.Now()
	s := &Session{RuntimeID: k.runtimeID, ID: k.sessionID, Version: t.Version, CreatedAt: now,
		LogDir: filepath.Join(m.opts.LogDir, k.runtimeID, logName(k.sessionID)),
		target: *t, ready: make(chan struct{}), ctx: ctx, cancel: cancel, sandboxID: "berth-" + rand.Text()[:20]}
	s.lastUsed.Store(now.UnixNano())
	s.owned.Store(!m.shared())
	return s
}

// start creates the session's sandbox and waits for its agent's /ping.
func (m *Manager) start(s *Session) {
	log := m.log.With("runtime", s.RuntimeID, "session", s.ID)
	begin := time.Now()
	var attached bool
	var err error
	if m.shared() {
		attached, err = m.attachOrRegister(s)
	}
	if err == nil && !attached {
		err = m.traced(s, "sandbox.create", m.startSandbox)
	}
	created := time.Now()
	if err == nil {
		err = m.traced(s, "agent.ready", m.waitReady)
	}
	if err != nil {
		s.startErr = err
		m.remove(s)
		if s.owned.Load() {
			if m.shared() {
				m.unregister(s)
			}
			m.stopSandbox(s)
		}
		s.cancel()
		close(s.ready)
		log.Warn("session failed to start", "err", err)
		return
	}
	if attached {
		m.watch(s)
		close(s.ready)
		log.Info("session attached", "sandbox", s.sandboxID, "owned", s.owned.Load())
		return
	}
	// The watch starts before ready is closed, so that Close, which waits
	// for ready, cannot be in wg.Wait yet.
	m.watch(s)
	close(s.ready)
	m.opts.Observer.SessionStarted(s.RuntimeID, false, created.Sub(begin), time.Since(created))
	log.Info("session started", "version", s.Version, "took", time.Since(begin))
}

// traced runs a step of a session's start in a span of its own, if tracing.
func (m *Manager) traced(s *Session, name string, step func(*Session) error) error {
	if m.opts.Tracer == nil {
		return step(s)
	}
	ctx := trace.ContextWithSpanContext(context.Background(), s.caller)
	_, span := m.opts.Tracer.Start(ctx, name, trace.WithAttributes(
		attribute.String("berth.runtime_id", s.RuntimeID), attribute.Int("berth.version", s.Version)))
	defer span.End()
	err := step(s)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// watch ends the session when its agent dies.
func (m *Manager) watch(s *Session) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		select {
		case <-s.sb.Done():
			reason := EndCrashed
			switch {
			case !s.owned.Load(): // its owner ends it
			case m.shared() && m.stoppedElsewhere(s):
				reason = EndStopped
			default:
				m.log.Warn("agent exited", "runtime", s.RuntimeID, "session", s.ID, "err", s.sb.Err())
			}
			m.end(s, reason)
		case <-s.ctx.Done():
		}
	}()
}

func (m *Manager) startSandbox(s *Session) error {
	log, err := telemetry.OpenSessionLog(s.LogDir, m.opts.LogLimit)
	if err != nil {
		return err
	}
	s.log = log
	if err := telemetry.WriteSessionInfo(s.LogDir, telemetry.SessionInfo{RuntimeID: s.RuntimeID, SessionID: s.ID,
		Version: s.Version, StartedAt: s.CreatedAt.UTC()}); err != nil {
		return err
	}
	stdout, err := log.Pipe(telemetry.Stdout)
	if err != nil {
		return err
	}
	defer stdout.Close()
	stderr, err := log.Pipe(telemetry.Stderr)
	if err != nil {
		return err
	}
	defer stderr.Close()

	t := s.target
	labels := map[string]string{"runtime": s.RuntimeID, "version": strconv.Itoa(s.Version)}
	if s.ID != "" { // a warm sandbox's session is labelled when claimed
		labels["session"] = s.ID
	}
	if m.shared() {
		labels[LabelReplica] = m.opts.Replica
	}
	sb, err := m.driver.Start(s.ctx, sandbox.Spec{
		ID: s.sandboxID, Args: t.Args, Env: t.Env, CodeDir: t.CodeDir, WorkDir: t.WorkDir,
		RootLayers: t.RootLayers, Image: t.Image, User: t.User, Limits: t.Limits, Network: t.Network, Runtime: t.OCIRuntime,
		Labels: labels, Stdout: stdout, Stderr: stderr,
	})
	if err != nil {
		return fmt.Errorf("start sandbox: %w", err)
	}
	s.sb = sb
	s.transport = transportTo(sb, t.Port)
	return nil
}

// waitReady polls the agent's /ping until it answers 200, the agent exits,
// or ReadyTimeout passes. Polls are frequent, since a cold start's latency is
// what the caller waits for; a refused dial costs ~0.1 ms.
func (m *Manager) waitReady(s *Session) error {
	deadline := time.NewTimer(m.opts.ReadyTimeout)
	defer deadline.Stop()
	delay := time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(s.ctx, time.Second)
		_, err := s.ping(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.sb.Done():
			return fmt.Errorf("agent exited before it became healthy (%v): %w", s.sb.Err(), ErrAgent)
		case <-deadline.C:
			return fmt.Errorf("runtime initialization time exceeded: the agent did not answer GET /ping with 200 within %s (last: %v): %w",
				m.opts.ReadyTimeout, err, ErrAgent)
		case <-s.ctx.Done():
			return ErrClosed
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Millisecond)
	}
}

// pingStatus is the body of GET /ping.
type pingStatus struct {
	Status string `json:"status"`
}

// ping calls the agent's /ping and returns its status ("Healthy" if the body
// does not say).
func (s *Session) ping(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/ping", nil)
	if err != nil {
		return "", err
	}
	resp, err := s.transport.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /ping answered %s", resp.Status)
	}
	var ps pingStatus
	if json.Unmarshal(body, &ps) != nil || ps.Status == "" {
		return "Healthy", nil
	}
	return ps.Status, nil
}

// Transport returns the round tripper that reaches the session's agent. The
// request's URL host is ignored.
func (s *Session) Transport() http.RoundTripper { return s.transport }

// Context returns a context that ends when the session ends.
func (s *Session) Context() context.Context { return s.ctx }

// Sandbox returns the session's sandbox.
func (s *Session) Sandbox() sandbox.Sandbox { return s.sb }

// Release ends a call begun by Acquire.
func (s *Session) Release() {
	s.touch()
	s.inflight.Add(-1)
	if s.refill != nil && s.refilled.CompareAndSwap(false, true) {
		s.refill()
	}
}

func (s *Session) touch() { s.lastUsed.Store(time.Now().UnixNano()) }

// Info describes a live session.
type Info struct {
	RuntimeID string
	SessionID string
	Version   int
	State     string
	CreatedAt time.Time
	LastUsed  time.Time
	Inflight  int
	LogDir    string
	// Resource use of the session's sandbox, if its driver reports it.
	MemoryBytes int64
	CPUSeconds  float64
	// Replica is the replica that owns the session, with a registry.
	Replica string
}

// Info returns a snapshot of the session.
func (s *Session) Info() Info {
	state := StateStarting
	select {
	case <-s.ready:
		state = StateReady
	default:
	}
	in := Info{RuntimeID: s.RuntimeID, SessionID: s.ID, Version: s.Version, State: state, CreatedAt: s.CreatedAt,
		LastUsed: time.Unix(0, s.lastUsed.Load()), Inflight: int(s.inflight.Load()), LogDir: s.LogDir}
	if sr, ok := s.sb.(sandbox.StatsReader); ok && state == StateReady {
		if st, err := sr.Stats(); err == nil {
			in.MemoryBytes, in.CPUSeconds = st.MemoryBytes, st.CPUSeconds
		}
	}
	return in
}

// List returns the sessions live in this process, of one runtime if
// runtimeID is not empty.
func (m *Manager) List(runtimeID string) []Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Info, 0, len(m.sessions))
	for k, s := range m.sessions {
		if runtimeID == "" || k.runtimeID == runtimeID {
			in := s.Info()
			if m.shared() && s.owned.Load() {
				in.Replica = m.opts.Replica
			}
			out = append(out, in)
		}
	}
	return out
}

// ListAll is List and, with a registry, the sessions that only other
// replicas serve, as far as the registry describes them.
func (m *Manager) ListAll(ctx context.Context, runtimeID string) ([]Info, error) {
	out := m.List(runtimeID)
	if !m.shared() {
		return out, nil
	}
	local := make(map[key]bool, len(out))
	for _, in := range out {
		local[key{in.RuntimeID, in.SessionID}] = true
	}
	recs, err := m.reg.List(ctx, runtimeID)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	for _, r := range recs {
		if !local[key{r.RuntimeID, r.SessionID}] {
			out = append(out, Info{RuntimeID: r.RuntimeID, SessionID: r.SessionID, Version: r.Version, State: StateReady,
				CreatedAt: r.CreatedAt, LastUsed: r.LastUsed, Replica: r.Owner})
		}
	}
	return out, nil
}

// Stop ends a session, also ending any call in flight on it, and returns
// once its sandbox is gone.
func (m *Manager) Stop(ctx context.Context, runtimeID, sessionID string) error {
	m.mu.Lock()
	s := m.sessions[key{runtimeID, sessionID}]
	m.mu.Unlock()
	if s == nil && m.shared() {
		// Another replica's session: end it for that replica, which
		// notices its sandbox going.
		rec, err := m.reg.Get(ctx, runtimeID, sessionID)
		if err != nil {
			return fmt.Errorf("session %s of runtime %s: %w", sessionID, runtimeID, err)
		}
		if err := m.reg.Delete(ctx, runtimeID, sessionID, rec.SandboxID); err != nil {
			return fmt.Errorf("session %s of runtime %s: %w", sessionID, runtimeID, err)
		}
		if err := m.driverShared.Remove(ctx, rec.SandboxID); err != nil {
			return fmt.Errorf("stop session %s of runtime %s: %w", sessionID, runtimeID, err)
		}
		return nil
	}
	if s == nil {
		return fmt.Errorf("session %s of runtime %s: %w", sessionID, runtimeID, ErrNotFound)
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.startErr != nil {
		return fmt.Errorf("session %s of runtime %s: %w", sessionID, runtimeID, ErrNotFound)
	}
	m.end(s, EndStopped)
	return nil
}

// StopRuntime ends every session of a runtime, many at once: ending one
// may wait a second or more for its sandbox to go (a pod).
func (m *Manager) StopRuntime(ctx context.Context, runtimeID string) error {
	infos, err := m.ListAll(ctx, runtimeID)
	var wg sync.WaitGroup
	sem := make(chan struct{}, stopParallel)
	for _, in := range infos {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = m.Stop(ctx, runtimeID, in.SessionID)
		})
	}
	wg.Wait()
	return err
}

// stopParallel bounds how many sessions StopRuntime ends at once.
const stopParallel = 32

// end removes a session and destroys its sandbox. Only the first call for a
// session does anything.
func (m *Manager) end(s *Session, reason string) {
	if s.ended.Swap(true) {
		return
	}
	m.remove(s)
	s.cancel()
	if !s.owned.Load() && reason != EndStopped {
		// Another replica's session, which that replica ends: here it is
		// only forgotten.
		if s.transport != nil {
			s.transport.CloseIdleConnections()
		}
		return
	}
	m.opts.Observer.SessionEnded(s.RuntimeID, reason)
	if m.shared() {
		m.unregister(s)
	}
	m.stopSandbox(s)
	m.log.Info("session ended", "runtime", s.RuntimeID, "session", s.ID, "reason", reason,
		"age", time.Since(s.CreatedAt).Round(time.Millisecond))
}

func (m *Manager) remove(s *Session) {
	m.mu.Lock()
	k := key{s.RuntimeID, s.ID}
	if m.sessions[k] == s {
		delete(m.sessions, k)
	}
	m.mu.Unlock()
}

func (m *Manager) stopSandbox(s *Session) {
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s.sb != nil {
		if err := s.sb.Stop(ctx); err != nil {
			m.log.Error("stop sandbox", "runtime", s.RuntimeID, "session", s.ID, "sandbox", s.sb.ID(), "err", err)
		}
	}
	if s.log != nil {
		s.log.Close()
	}
}

// reap ends sessions past their idle timeout or lifetime, until Close.
func (m *Manager) reap() {
	defer m.wg.Done()
	tick := time.NewTicker(m.opts.ReapInterval)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C:
			m.reapOnce()
		}
	}
}

func (m *Manager) reapOnce() {
	now := time.Now()
	if m.shared() && now.UnixNano() >= m.leaseUntil.Load() {
		return // the leases may have passed to other replicas
	}
	m.mu.Lock()
	var candidates []*Session
	for _, s := range m.sessions {
		if isReady(s) && s.owned.Load() { // not starting, nor another replica's
			candidates = append(candidates, s)
		}
	}
	m.mu.Unlock()

	var wg sync.WaitGroup
	for _, s := range candidates {
		if now.Sub(s.CreatedAt) >= s.target.MaxLifetime {
			wg.Go(func() { m.end(s, EndLifetime) })
			continue
		}
		last := max(s.lastUsed.Load(), s.lastBusy.Load())
		if s.inflight.Load() > 0 || now.Sub(time.Unix(0, last)) < s.target.IdleTimeout {
			continue
		}
		// Idle by traffic: the agent may still be working in the background.
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
			defer cancel()
			if m.shared() && m.usedElsewhere(ctx, s, now) {
				return
			}
			status, err := s.ping(ctx)
			if err == nil && status == "HealthyBusy" {
				s.lastBusy.Store(time.Now().UnixNano())
				return
			}
			m.end(s, EndIdle)
		})
	}
	wg.Wait()
}

// Close ends every session and stops the reaper.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	all := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		all = append(all, s)
	}
	m.mu.Unlock()
	m.cancel()
	if m.shared() {
		// The sessions live on: other replicas (or this one's successor)
		// take them over.
		m.wg.Wait()
		m.handOver()
		for _, s := range all {
			<-s.ready
			s.owned.Store(false)
			m.end(s, EndShutdown)
		}
		m.closePools()
		return
	}
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() {
			<-s.ready
			if s.startErr == nil {
				m.end(s, EndShutdown)
			}
		})
	}
	wg.Wait()
	m.wg.Wait()
	m.closePools()
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)

// logName turns a session ID into a directory name: itself when it is a safe
// name, else a hash of it.
func logName(sessionID string) string {
	if safeName.MatchString(sessionID) && sessionID != "." && sessionID != ".." {
		return sessionID
	}
	sum := sha256.Sum256([]byte(sessionID))
	return "h-" + hex.EncodeToString(sum[:16])
}
