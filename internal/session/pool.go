package session

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/telemetry"
)

// PoolSpec asks for warm sandboxes of one runtime version: started and
// healthy before any session needs them, so a new session's first call
// skips the cold start.
type PoolSpec struct {
	Target *Target
	Size   int
	// IdleTimeout, if positive, shrinks the pool to nothing once no new
	// session of the version has started for that long; the next one
	// restores it.
	IdleTimeout time.Duration
}

// PoolInfo describes a warm pool.
type PoolInfo struct {
	RuntimeID string
	Version   int
	Size      int // sandboxes the pool keeps ready
	Ready     int
	Starting  int
	Claimed   int // sessions that started from the pool
}

type poolKey struct {
	runtimeID string
	version   int
}

// pool holds the ready sandboxes of one runtime version. Its fields are
// guarded by Manager.mu.
type pool struct {
	spec       PoolSpec
	ready      []*Session // started, healthy, not bound to any session
	starting   int
	claimed    int
	lastDemand time.Time // last new session of this version
	failedAt   time.Time // last failed start, to back off
}

// size is how many sandboxes the pool should hold now.
func (p *pool) size(now time.Time) int {
	if p.spec.IdleTimeout > 0 && now.Sub(p.lastDemand) > p.spec.IdleTimeout {
		return 0
	}
	return p.spec.Size
}

// poolRetry is how long a pool waits after a sandbox failed to start.
const poolRetry = 10 * time.Second

// SetPools makes the warm pools those of want: new pools are filled, changed
// ones resized, and pools of versions no longer wanted are released.
func (m *Manager) SetPools(want []PoolSpec) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	keep := map[poolKey]bool{}
	now := time.Now()
	for _, w := range want {
		if w.Size <= 0 {
			continue
		}
		k := poolKey{w.Target.RuntimeID, w.Target.Version}
		keep[k] = true
		if p, ok := m.pools[k]; ok {
			p.spec = w
		} else {
			m.pools[k] = &pool{spec: w, lastDemand: now}
		}
	}
	var released []*Session
	for k, p := range m.pools {
		if !keep[k] {
			released = append(released, p.ready...)
			delete(m.pools, k)
		}
	}
	m.mu.Unlock()
	m.discard(released)
	m.wakePools()
}

// Pools describes the warm pools.
func (m *Manager) Pools() []PoolInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	out := make([]PoolInfo, 0, len(m.pools))
	for k, p := range m.pools {
		out = append(out, PoolInfo{RuntimeID: k.runtimeID, Version: k.version, Size: p.size(now),
			Ready: len(p.ready), Starting: p.starting, Claimed: p.claimed})
	}
	slices.SortFunc(out, func(a, b PoolInfo) int {
		if a.RuntimeID != b.RuntimeID {
			return map[bool]int{true: -1, false: 1}[a.RuntimeID < b.RuntimeID]
		}
		return a.Version - b.Version
	})
	return out
}

// claim binds a ready pooled sandbox of t's version to a new session, or
// returns nil. It notes the demand either way. m.mu must be held.
func (m *Manager) claim(k key, t *Target) *Session {
	p := m.pools[poolKey{t.RuntimeID, t.Version}]
	if p == nil {
		return nil
	}
	p.lastDemand = time.Now()
	for len(p.ready) > 0 {
		s := p.ready[0]
		p.ready = p.ready[1:]
		select {
		case <-s.sb.Done():
			go m.discard([]*Session{s}) // died while waiting
			continue
		default:
		}
		p.claimed++
		now := time.Now()
		s.ID = k.sessionID
		s.claimed = true
		s.CreatedAt = now
		s.lastUsed.Store(now.UnixNano())
		// The pool is refilled, and the sandbox labelled with its
		// session, once this first call is done (the refill may come
		// sooner, at the next tick): a sandbox starting or a call to the
		// cluster's API now would compete with the call for the CPU, and
		// the call is what a caller waits for. Release calls refill once.
		firstDone := make(chan struct{})
		s.refill = func() {
			m.wakePools()
			close(firstDone)
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.adoptLog(s)
			select {
			case <-firstDone:
				m.labelClaimed(s)
			case <-s.ctx.Done():
			}
		}()
		m.watch(s)
		m.opts.Observer.SessionStarted(s.RuntimeID, true, 0, 0)
		return s
	}
	return nil
}

// adoptLog makes a claimed sandbox's log its session's. The sandbox has
// been logging under a pool name; the log moves to the session's own
// directory unless that exists already (a session ID used before), in which
// case it stays put, and its info file says whose it is. It runs beside the
// session's first call, not before it: creating and renaming files costs
// hundreds of microseconds on some file systems, more than the call.
func (m *Manager) adoptLog(s *Session) {
	m.mu.Lock()
	from := s.LogDir
	m.mu.Unlock()
	dir := from
	if to := filepath.Join(m.opts.LogDir, s.RuntimeID, logName(s.ID)); os.Rename(from, to) == nil {
		dir = to
		m.mu.Lock()
		s.LogDir = to
		m.mu.Unlock()
	}
	if err := telemetry.WriteSessionInfo(dir, telemetry.SessionInfo{RuntimeID: s.RuntimeID, SessionID: s.ID,
		Version: s.Version, StartedAt: s.CreatedAt.UTC()}); err != nil {
		m.log.Warn("record session log info", "err", err)
	}
}

// labelClaimed labels a claimed sandbox with its session, if its driver
// can relabel sandboxes (a pod then says which session it serves). It runs
// once the session's first call is done; the session works without it.
func (m *Manager) labelClaimed(s *Session) {
	l, ok := s.sb.(sandbox.Labeler)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	if err := l.SetLabels(ctx, map[string]string{"session": s.ID}); err != nil && s.ctx.Err() == nil {
		m.log.Warn("label a claimed warm sandbox with its session", "runtime", s.RuntimeID, "session", s.ID, "err", err)
	}
}

// evictPooled frees room for a session by discarding one pooled sandbox,
// preferring another version's. It reports whether it found one. m.mu must
// be held.
func (m *Manager) evictPooled(prefer poolKey) bool {
	var victim *pool
	for k, p := range m.pools {
		if len(p.ready) > 0 && (victim == nil || k != prefer) {
			victim = p
		}
	}
	if victim == nil {
		return false
	}
	s := victim.ready[len(victim.ready)-1]
	victim.ready = victim.ready[:len(victim.ready)-1]
	go m.discard([]*Session{s})
	return true
}

// pooled counts pooled sandboxes, ready or starting. m.mu must be held.
func (m *Manager) pooled() int {
	n := 0
	for _, p := range m.pools {
		n += len(p.ready) + p.starting
	}
	return n
}

// wakePools asks the pool loop to look at the pools now.
func (m *Manager) wakePools() {
	select {
	case m.poolWake <- struct{}{}:
	default:
	}
}

// fillPools keeps every pool at its size, until Close.
func (m *Manager) fillPools() {
	defer m.wg.Done()
	tick := time.NewTicker(m.opts.ReapInterval)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C:
		case <-m.poolWake:
		}
		m.fillOnce()
	}
}

func (m *Manager) fillOnce() {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	for k, p := range m.pools {
		// Drop sandboxes that died while waiting.
		live := p.ready[:0]
		for _, s := range p.ready {
			select {
			case <-s.sb.Done():
				go m.discard([]*Session{s})
			default:
				live = append(live, s)
			}
		}
		p.ready = live
		if n := len(p.ready) - p.size(now); n > 0 { // shrank
			extra := slices.Clone(p.ready[len(p.ready)-n:])
			p.ready = p.ready[:len(p.ready)-n]
			go m.discard(extra)
		}
		if now.Sub(p.failedAt) < poolRetry {
			continue
		}
		for len(p.ready)+p.starting < p.size(now) && len(m.sessions)+m.pooled() < m.opts.MaxSessions {
			p.starting++
			s := m.newSession(key{k.runtimeID, ""}, p.spec.Target)
			s.LogDir = filepath.Join(m.opts.LogDir, k.runtimeID, "pool-"+rand.Text()[:16])
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.startPooled(k, s)
			}()
		}
	}
}

// startPooled starts a sandbox for a pool and, once healthy, adds it.
func (m *Manager) startPooled(k poolKey, s *Session) {
	err := m.startSandbox(s)
	if err == nil {
		err = m.waitReady(s)
	}
	close(s.ready)
	m.mu.Lock()
	p := m.pools[k]
	if p != nil {
		p.starting--
	}
	switch {
	case err != nil:
		if p != nil {
			p.failedAt = time.Now()
		}
		m.mu.Unlock()
		if !errors.Is(err, ErrClosed) && m.ctx.Err() == nil { // not just shutting down
			m.log.Warn("warm sandbox failed to start", "runtime", k.runtimeID, "version", k.version, "err", err)
		}
		m.discard([]*Session{s})
	case p == nil || m.closed || len(p.ready) >= p.size(time.Now()) || len(m.sessions)+m.pooled()+1 > m.opts.MaxSessions:
		m.mu.Unlock() // no longer wanted, or no room
		m.discard([]*Session{s})
	default:
		p.ready = append(p.ready, s)
		m.mu.Unlock()
	}
}

// discard destroys pooled sandboxes and their logs.
func (m *Manager) discard(ss []*Session) {
	for _, s := range ss {
		s.cancel()
		m.stopSandbox(s)
		if s.ID == "" {
			os.RemoveAll(s.LogDir)
		}
	}
}

// closePools releases every pooled sandbox; Close calls it.
func (m *Manager) closePools() {
	m.mu.Lock()
	var all []*Session
	for k, p := range m.pools {
		all = append(all, p.ready...)
		delete(m.pools, k)
	}
	m.mu.Unlock()
	m.discard(all)
}
