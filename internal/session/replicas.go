package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
)

// Several replicas of Berth can serve the same sessions when they share a
// Registry and a sandbox.Shared driver (Kubernetes pods, which any replica
// can reach). The registry maps each session to its sandbox, so a call
// reaching any replica finds the session's sandbox and attaches to it. Each
// session's lifecycle (idle and lifetime ends) is owned by one replica at a
// time, through a lease that its heartbeat renews; the heartbeat also reports
// which sessions had calls, so the owner sees the calls other replicas served.
// When a replica dies its leases run out and the others take its sessions
// over, without ending them. A replica that shuts down hands its sessions
// over at once instead of ending them.

// Record is a session's entry in a Registry.
type Record struct {
	RuntimeID  string
	SessionID  string
	Version    int
	SandboxID  string    // the sandbox driver's id of the session's sandbox
	Owner      string    // the replica owning the session's lifecycle
	LeaseUntil time.Time // the owner's claim ends then unless renewed
	CreatedAt  time.Time
	LastUsed   time.Time // the latest call any replica reported
}

// Key names a session.
type Key struct{ RuntimeID, SessionID string }

// Touch reports that a session had a call at At.
type Touch struct {
	Key
	At time.Time
}

// ErrRegistered reports that a session already has a record.
var ErrRegistered = errors.New("session already registered")

// Registry is the shared list of live sessions (a table of the store, which
// replicas share in PostgreSQL).
type Registry interface {
	// Create adds r; ErrRegistered if the session has a record already.
	Create(ctx context.Context, r Record) error
	// Get returns a session's record, or ErrNotFound.
	Get(ctx context.Context, runtimeID, sessionID string) (Record, error)
	// List returns every record, or those of one runtime.
	List(ctx context.Context, runtimeID string) ([]Record, error)
	// Delete removes a session's record if it names sandboxID; ErrNotFound
	// otherwise.
	Delete(ctx context.Context, runtimeID, sessionID, sandboxID string) error
	// Touch raises each session's LastUsed to its At.
	Touch(ctx context.Context, touches []Touch) error
	// Heartbeat records replica as live until until, extends the leases of
	// its sessions to then and returns their keys.
	Heartbeat(ctx context.Context, replica string, until time.Time) ([]Key, error)
	// TakeOver gives replica, until until, the sessions whose leases ended
	// before now, and returns their records.
	TakeOver(ctx context.Context, replica string, now, until time.Time) ([]Record, error)
	// LiveReplicas returns the replicas whose heartbeat lasts beyond now.
	LiveReplicas(ctx context.Context, now time.Time) ([]string, error)
}

// Targets finds what a session of a runtime version runs, for sessions a
// replica takes over without a call to tell it.
type Targets interface {
	Target(ctx context.Context, runtimeID string, version int) (*Target, error)
}

// LabelReplica is the sandbox label naming the replica that started it.
const LabelReplica = "replica"

// Replica returns the id of this replica of Berth.
func (m *Manager) Replica() string { return m.opts.Replica }

// shared reports whether sessions are shared with other replicas.
func (m *Manager) shared() bool { return m.reg != nil }

// attachOrRegister either registers s, a new session whose sandbox this
// replica is about to start, or, if another replica has registered the
// session, attaches s to its sandbox. It reports whether it attached.
func (m *Manager) attachOrRegister(s *Session) (bool, error) {
	ctx := s.ctx
	deadline := time.Now().Add(m.opts.ReadyTimeout)
	for {
		// Registering first: a new session, the usual case, then costs
		// one round trip to the registry.
		err := m.register(ctx, s)
		if !errors.Is(err, ErrRegistered) {
			return false, err
		}
		// Another replica has the session: attach to its sandbox.
		rec, err := m.reg.Get(ctx, s.RuntimeID, s.ID)
		if errors.Is(err, ErrNotFound) {
			continue // ended meanwhile
		}
		if err != nil {
			return false, fmt.Errorf("look up session %s: %w", s.ID, err)
		}
		err = m.attach(ctx, s, rec)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, sandbox.ErrNotFound) {
			return false, err
		}
		// The record names no live sandbox. A replica that has just
		// registered the session may not have created it yet; otherwise
		// the session is dead and its record stale.
		if time.Since(rec.CreatedAt) > m.opts.ReadyTimeout || time.Now().After(deadline) {
			m.forget(ctx, rec)
			continue
		}
		select {
		case <-ctx.Done():
			return false, ErrClosed
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// register records s as a session this replica owns.
func (m *Manager) register(ctx context.Context, s *Session) error {
	now := time.Now()
	m.mu.Lock()
	rec := Record{RuntimeID: s.RuntimeID, SessionID: s.ID, Version: s.Version, SandboxID: s.sandboxID,
		Owner: m.opts.Replica, LeaseUntil: now.Add(m.opts.Lease), CreatedAt: s.CreatedAt, LastUsed: now}
	m.mu.Unlock()
	if err := m.reg.Create(ctx, rec); err != nil {
		if errors.Is(err, ErrRegistered) {
			return err
		}
		return fmt.Errorf("register session %s: %w", s.ID, err)
	}
	s.owned.Store(true)
	return nil
}

// unregister removes s's record, if it still names s's sandbox.
func (m *Manager) unregister(s *Session) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.reg.Delete(ctx, s.RuntimeID, s.ID, s.sandboxID); err != nil && !errors.Is(err, ErrNotFound) {
		m.log.Error("unregister session", "runtime", s.RuntimeID, "session", s.ID, "err", err)
	}
}

// attach makes s the session rec describes, reaching the sandbox another
// replica started.
func (m *Manager) attach(ctx context.Context, s *Session, rec Record) error {
	sb, err := m.driverShared.Attach(ctx, rec.SandboxID)
	if err != nil {
		return err
	}
	m.mu.Lock()
	s.Version, s.CreatedAt, s.sandboxID = rec.Version, rec.CreatedAt, rec.SandboxID
	m.mu.Unlock()
	s.sb = sb
	s.transport = transportTo(sb, s.target.Port)
	s.lastUsed.Store(max(rec.LastUsed.UnixNano(), s.lastUsed.Load()))
	s.owned.Store(rec.Owner == m.opts.Replica)
	return nil
}

// forget removes a dead session's record and whatever is left of its
// sandbox.
func (m *Manager) forget(ctx context.Context, rec Record) {
	if err := m.driverShared.Remove(ctx, rec.SandboxID); err != nil {
		m.log.Warn("remove the sandbox of a dead session", "runtime", rec.RuntimeID, "session", rec.SessionID, "err", err)
	}
	if err := m.reg.Delete(ctx, rec.RuntimeID, rec.SessionID, rec.SandboxID); err != nil && !errors.Is(err, ErrNotFound) {
		m.log.Warn("delete the record of a dead session", "runtime", rec.RuntimeID, "session", rec.SessionID, "err", err)
	}
}

// SandboxLogs returns the output of a live session's sandbox as its driver
// keeps it (see sandbox.LogSource), whichever replica started it: the
// replicas that did not start a session have no log file of it. ErrNotFound
// if the session has no record, or without a registry or a driver that
// keeps output.
func (m *Manager) SandboxLogs(ctx context.Context, runtimeID, sessionID string, o sandbox.LogOptions) (io.ReadCloser, error) {
	src, ok := m.driver.(sandbox.LogSource)
	if !m.shared() || !ok {
		return nil, fmt.Errorf("logs of session %s of runtime %s: %w", sessionID, runtimeID, ErrNotFound)
	}
	rec, err := m.reg.Get(ctx, runtimeID, sessionID)
	if err != nil {
		return nil, fmt.Errorf("logs of session %s of runtime %s: %w", sessionID, runtimeID, err)
	}
	rc, err := src.Logs(ctx, rec.SandboxID, o)
	if errors.Is(err, sandbox.ErrNotFound) {
		return nil, fmt.Errorf("logs of session %s of runtime %s: %w: %w", sessionID, runtimeID, ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("logs of session %s of runtime %s: %w", sessionID, runtimeID, err)
	}
	return rc, nil
}

// transportTo returns the transport to the agent of sb listening on port.
func transportTo(sb sandbox.Sandbox, port int) *agentTransport {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return newAgentTransport(func(ctx context.Context) (net.Conn, error) {
		return sb.DialContext(ctx, "tcp", addr)
	})
}

// heartbeat, until Close, reports calls, renews this replica's leases (the
// first time at once, so that other replicas know it is live before it
// starts sandboxes), takes over the sessions of replicas that died, and
// removes what dead sessions and replicas left behind (at once, then every
// reconcileEvery beats).
func (m *Manager) heartbeat() {
	defer m.wg.Done()
	interval := m.opts.Lease / 3
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 0; ; n++ {
		ctx, cancel := context.WithTimeout(m.ctx, interval)
		m.beat(ctx)
		cancel()
		if n%reconcileEvery == 0 {
			// Removing a sandbox can take as long as its grace period:
			// a minute at least.
			ctx, cancel := context.WithTimeout(m.ctx, max(interval, time.Minute))
			if err := m.Reconcile(ctx); err != nil && m.ctx.Err() == nil {
				m.log.Warn("reconcile sessions", "err", err)
			}
			cancel()
		}
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// reconcileEvery is how many heartbeats pass between reconciliations.
const reconcileEvery = 10

// beat is one heartbeat.
func (m *Manager) beat(ctx context.Context) {
	now := time.Now()
	m.reportCalls(ctx, now)
	until := now.Add(m.opts.Lease)
	keys, err := m.reg.Heartbeat(ctx, m.opts.Replica, until)
	if err != nil {
		if m.ctx.Err() == nil {
			m.log.Error("renew session leases", "err", err)
		}
		return
	}
	m.leaseUntil.Store(until.UnixNano())
	owned := make(map[key]bool, len(keys))
	for _, k := range keys {
		owned[key{k.RuntimeID, k.SessionID}] = true
	}
	m.mu.Lock()
	var orphans []key // owned here, but not live here
	for k, s := range m.sessions {
		if isReady(s) {
			s.owned.Store(owned[k])
		}
		delete(owned, k)
	}
	for k := range owned {
		orphans = append(orphans, k)
	}
	m.mu.Unlock()
	for _, k := range orphans {
		rec, err := m.reg.Get(ctx, k.runtimeID, k.sessionID)
		if err == nil {
			m.adopt(ctx, rec)
		}
	}
	recs, err := m.reg.TakeOver(ctx, m.opts.Replica, now, until)
	if err != nil {
		if m.ctx.Err() == nil {
			m.log.Error("take over sessions", "err", err)
		}
		return
	}
	for _, rec := range recs {
		m.log.Info("taking over a session", "runtime", rec.RuntimeID, "session", rec.SessionID, "from", rec.Owner)
		m.adopt(ctx, rec)
	}
}

// reportCalls tells the registry which sessions had calls since the last
// report, so that their owners do not end them for being idle.
func (m *Manager) reportCalls(ctx context.Context, now time.Time) {
	type report struct {
		s  *Session
		at int64
	}
	var reports []report
	var touches []Touch
	m.mu.Lock()
	for k, s := range m.sessions {
		if !isReady(s) || s.startErr != nil {
			continue
		}
		at := s.lastUsed.Load()
		if s.inflight.Load() > 0 {
			at = now.UnixNano()
		}
		if at > s.reported.Load() {
			reports = append(reports, report{s, at})
			touches = append(touches, Touch{Key{k.runtimeID, k.sessionID}, time.Unix(0, at)})
		}
	}
	m.mu.Unlock()
	if len(touches) == 0 {
		return
	}
	if err := m.reg.Touch(ctx, touches); err != nil {
		if m.ctx.Err() == nil {
			m.log.Warn("report session use", "err", err)
		}
		return
	}
	for _, r := range reports {
		r.s.reported.Store(r.at)
	}
}

// adopt makes this replica serve and own a session it holds the lease of:
// the one it has live already, or a new one attached to its sandbox. A
// session whose sandbox is gone is forgotten.
func (m *Manager) adopt(ctx context.Context, rec Record) {
	k := key{rec.RuntimeID, rec.SessionID}
	m.mu.Lock()
	if s := m.sessions[k]; s != nil {
		m.mu.Unlock()
		if isReady(s) && s.startErr == nil && s.sandboxID == rec.SandboxID {
			s.owned.Store(true)
			s.lastUsed.Store(max(rec.LastUsed.UnixNano(), s.lastUsed.Load()))
		}
		return
	}
	m.mu.Unlock()
	log := m.log.With("runtime", rec.RuntimeID, "session", rec.SessionID)
	if m.opts.Targets == nil {
		return
	}
	t, err := m.opts.Targets.Target(ctx, rec.RuntimeID, rec.Version)
	if err != nil {
		// The version is gone (its runtime deleted): so is the session.
		log.Info("ending a session whose version is gone", "version", rec.Version, "err", err)
		m.forget(ctx, rec)
		return
	}
	s := m.newSession(k, t)
	if err := m.attach(ctx, s, rec); err != nil {
		s.cancel()
		if errors.Is(err, sandbox.ErrNotFound) {
			log.Info("forgetting a session whose sandbox is gone", "sandbox", rec.SandboxID, "err", err)
			m.forget(ctx, rec)
		} else {
			log.Warn("attach to a session's sandbox", "err", err)
		}
		return
	}
	s.owned.Store(true)
	m.mu.Lock()
	if m.closed || m.sessions[k] != nil {
		m.mu.Unlock()
		s.cancel()
		return
	}
	m.sessions[k] = s
	m.watch(s)
	close(s.ready)
	m.mu.Unlock()
}

// Reconcile removes what dead sessions and dead replicas left behind:
// sandboxes that no session record names and no live replica started
// (orphans), and records whose sandbox is gone. The heartbeat runs it when
// the manager starts and now and then after.
func (m *Manager) Reconcile(ctx context.Context) error {
	if !m.shared() {
		return nil
	}
	recs, err := m.reg.List(ctx, "")
	if err != nil {
		return fmt.Errorf("reconcile: list sessions: %w", err)
	}
	live, err := m.reg.LiveReplicas(ctx, time.Now())
	if err != nil {
		return fmt.Errorf("reconcile: list replicas: %w", err)
	}
	sandboxes, err := m.driverShared.List(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	liveReplica := map[string]bool{m.opts.Replica: true}
	for _, r := range live {
		liveReplica[r] = true
	}
	named := map[string]bool{}
	for _, r := range recs {
		named[r.SandboxID] = true
	}
	exists := map[string]bool{}
	var orphans []string
	for _, sb := range sandboxes {
		exists[sb.ID] = true
		// Neither a session's nor a live replica's warm or starting one,
		// nor so young that its replica may not have said it is live.
		if !named[sb.ID] && !liveReplica[sb.Labels[LabelReplica]] && time.Since(sb.Created) > m.opts.Lease {
			orphans = append(orphans, sb.ID)
		}
	}
	// Many at once: each may wait for its sandbox's grace period.
	errs := make([]error, len(orphans))
	var wg sync.WaitGroup
	sem := make(chan struct{}, stopParallel)
	for i, id := range orphans {
		m.log.Info("removing an orphaned sandbox", "sandbox", id)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = m.driverShared.Remove(ctx, id)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	for _, r := range recs {
		// A young record may name a sandbox being created.
		if !exists[r.SandboxID] && time.Since(r.CreatedAt) > m.opts.ReadyTimeout {
			m.log.Info("forgetting a session whose sandbox is gone", "runtime", r.RuntimeID, "session", r.SessionID)
			m.forget(ctx, r)
		}
	}
	return nil
}

// handOver gives up this replica's leases, so other replicas take its
// sessions over at their next heartbeat; Close calls it.
func (m *Manager) handOver() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.reportCalls(ctx, time.Now())
	if _, err := m.reg.Heartbeat(ctx, m.opts.Replica, time.Now()); err != nil {
		m.log.Error("hand sessions over", "err", err)
	}
}

func isReady(s *Session) bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// usedElsewhere reports whether s, idle here, must live on: the registry
// knows of a later call (which another replica served), or says that s is
// no longer this replica's to end, or cannot be asked.
func (m *Manager) usedElsewhere(ctx context.Context, s *Session, now time.Time) bool {
	rec, err := m.reg.Get(ctx, s.RuntimeID, s.ID)
	switch {
	case errors.Is(err, ErrNotFound):
		return false // ended elsewhere; end it here too
	case err != nil:
		m.log.Warn("look up an idle session", "runtime", s.RuntimeID, "session", s.ID, "err", err)
		return true
	case rec.Owner != m.opts.Replica || rec.SandboxID != s.sandboxID:
		s.owned.Store(false)
		return true
	}
	if now.Sub(rec.LastUsed) < s.target.IdleTimeout {
		s.lastUsed.Store(max(rec.LastUsed.UnixNano(), s.lastUsed.Load()))
		return true
	}
	return false
}

// stoppedElsewhere reports whether s's record is gone, as when another
// replica stopped it (StopRuntimeSession): its sandbox went for that reason.
func (m *Manager) stoppedElsewhere(s *Session) bool {
	ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
	defer cancel()
	_, err := m.reg.Get(ctx, s.RuntimeID, s.ID)
	return errors.Is(err, ErrNotFound)
}
