package session

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
)

// memRegistry is an in-memory Registry, for testing the replicas' logic at
// its edge; the PostgreSQL one is tested in package store and through the
// server.
type memRegistry struct {
	mu       sync.Mutex
	recs     map[Key]Record
	replicas map[string]time.Time
}

func newMemRegistry() *memRegistry {
	return &memRegistry{recs: map[Key]Record{}, replicas: map[string]time.Time{}}
}

func (r *memRegistry) Create(_ context.Context, rec Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := Key{rec.RuntimeID, rec.SessionID}
	if _, ok := r.recs[k]; ok {
		return ErrRegistered
	}
	r.recs[k] = rec
	return nil
}

func (r *memRegistry) Get(_ context.Context, runtimeID, sessionID string) (Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.recs[Key{runtimeID, sessionID}]
	if !ok {
		return Record{}, ErrNotFound
	}
	return rec, nil
}

func (r *memRegistry) List(_ context.Context, runtimeID string) ([]Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Record
	for _, rec := range r.recs {
		if runtimeID == "" || rec.RuntimeID == runtimeID {
			out = append(out, rec)
		}
	}
	return out, nil
}

func (r *memRegistry) Delete(_ context.Context, runtimeID, sessionID, sandboxID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := Key{runtimeID, sessionID}
	if rec, ok := r.recs[k]; !ok || rec.SandboxID != sandboxID {
		return ErrNotFound
	}
	delete(r.recs, k)
	return nil
}

func (r *memRegistry) Touch(_ context.Context, touches []Touch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range touches {
		if rec, ok := r.recs[t.Key]; ok && t.At.After(rec.LastUsed) {
			rec.LastUsed = t.At
			r.recs[t.Key] = rec
		}
	}
	return nil
}

func (r *memRegistry) Heartbeat(_ context.Context, replica string, until time.Time) ([]Key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replicas[replica] = until
	var keys []Key
	for k, rec := range r.recs {
		if rec.Owner == replica {
			rec.LeaseUntil = until
			r.recs[k] = rec
			keys = append(keys, k)
		}
	}
	return keys, nil
}

func (r *memRegistry) TakeOver(_ context.Context, replica string, now, until time.Time) ([]Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Record
	for k, rec := range r.recs {
		if rec.LeaseUntil.Before(now) {
			rec.Owner, rec.LeaseUntil = replica, until
			r.recs[k] = rec
			out = append(out, rec)
		}
	}
	return out, nil
}

func (r *memRegistry) LiveReplicas(_ context.Context, now time.Time) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, until := range r.replicas {
		if until.After(now) {
			out = append(out, id)
		}
	}
	return out, nil
}

func (r *memRegistry) record(k Key) (Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.recs[k]
	return rec, ok
}

// sharedDriver is a fakeDriver that every replica of a test reaches, as
// replicas reach the pods of one cluster.
type sharedDriver struct {
	*fakeDriver
	labels  map[string]map[string]string // by sandbox id
	created map[string]time.Time
}

func (d *sharedDriver) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	sb, err := d.fakeDriver.Start(ctx, spec)
	d.mu.Lock()
	d.labels[spec.ID], d.created[spec.ID] = spec.Labels, time.Now()
	d.mu.Unlock()
	return sb, err
}

func (d *sharedDriver) Attach(_ context.Context, id string) (sandbox.Sandbox, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if sb := d.live[id]; sb != nil {
		return sb, nil
	}
	return nil, sandbox.ErrNotFound
}

func (d *sharedDriver) List(context.Context) ([]sandbox.Listing, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []sandbox.Listing
	for id := range d.live {
		out = append(out, sandbox.Listing{ID: id, Labels: d.labels[id], Created: d.created[id]})
	}
	return out, nil
}

func (d *sharedDriver) Remove(ctx context.Context, id string) error {
	d.mu.Lock()
	sb := d.live[id]
	d.mu.Unlock()
	if sb != nil {
		return sb.Stop(ctx)
	}
	return nil
}

type fixedTargets struct{ t *Target }

func (f fixedTargets) Target(context.Context, string, int) (*Target, error) { return f.t, nil }

// replicas starts n managers sharing one registry and one driver.
func replicas(t *testing.T, n int, tgt *Target) ([]*Manager, *memRegistry, *sharedDriver) {
	t.Helper()
	reg := newMemRegistry()
	d := &sharedDriver{fakeDriver: &fakeDriver{}, labels: map[string]map[string]string{}, created: map[string]time.Time{}}
	var ms []*Manager
	for i := range n {
		m := New(d, Options{LogDir: t.TempDir(), ReapInterval: 10 * time.Millisecond, Registry: reg,
			Targets: fixedTargets{tgt}, Replica: string(rune('a' + i)), Lease: 150 * time.Millisecond})
		ms = append(ms, m)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.Close()
		}
		// Replicas hand their sessions over rather than end them.
		d.mu.Lock()
		ids := slices.Collect(maps.Keys(d.live))
		d.mu.Unlock()
		for _, id := range ids {
			d.Remove(context.Background(), id)
		}
	})
	return ms, reg, d
}

// eventually waits up to 5 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}

func callOn(t *testing.T, m *Manager, sessionID string, tgt *Target) *Session {
	t.Helper()
	s, err := m.Acquire(context.Background(), "rt", sessionID, tgt)
	if err != nil {
		t.Fatalf("acquire %s on replica %s: %v", sessionID, m.Replica(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.ping(ctx); err != nil {
		t.Fatalf("reach the agent of %s through replica %s: %v", sessionID, m.Replica(), err)
	}
	s.Release()
	return s
}

func TestReplicasShareSessions(t *testing.T) {
	tgt := target(400*time.Millisecond, time.Hour)
	ms, reg, d := replicas(t, 2, tgt)
	a, b := ms[0], ms[1]

	sa := callOn(t, a, "s1", tgt)
	sb := callOn(t, b, "s1", tgt) // attaches to a's sandbox
	if n := d.started.Load(); n != 1 {
		t.Fatalf("%d sandboxes started for one session on two replicas, want 1", n)
	}
	if sa.sandboxID != sb.sandboxID {
		t.Fatalf("replicas serve the session from sandboxes %s and %s", sa.sandboxID, sb.sandboxID)
	}
	rec, ok := reg.record(Key{"rt", "s1"})
	if !ok || rec.Owner != "a" || rec.SandboxID != sa.sandboxID {
		t.Fatalf("record = %+v, %v; want one owned by a naming sandbox %s", rec, ok, sa.sandboxID)
	}
	all, err := b.ListAll(context.Background(), "rt")
	if err != nil || len(all) != 1 {
		t.Fatalf("ListAll on b = %v, %v; want the one session", all, err)
	}

	// Calls through b keep a, the owner, from ending the session as idle.
	for range 12 {
		callOn(t, b, "s1", tgt)
		time.Sleep(60 * time.Millisecond)
	}
	if d.stopped.Load() != 0 {
		t.Fatal("the owner ended a session that another replica kept busy")
	}
	// Idle everywhere: the owner ends it, and b forgets it.
	eventually(t, "the idle session is ended", func() bool { return d.stopped.Load() == 1 })
	eventually(t, "b forgets the ended session", func() bool { return len(b.List("")) == 0 })
	if _, ok := reg.record(Key{"rt", "s1"}); ok {
		t.Error("the ended session's record remains")
	}
}

func TestReplicasStartOneSandboxPerSession(t *testing.T) {
	tgt := target(time.Hour, time.Hour)
	ms, _, d := replicas(t, 3, tgt)
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() { callOn(t, ms[i%3], "race", tgt) })
	}
	wg.Wait()
	if n, live := d.started.Load(), d.liveCount(); n != 1 || live != 1 {
		t.Fatalf("30 concurrent first calls on 3 replicas started %d sandboxes (%d live), want 1", n, live)
	}
}

func TestReplicaTakesOverFromDeadReplica(t *testing.T) {
	tgt := target(300*time.Millisecond, time.Hour)
	ms, reg, d := replicas(t, 2, tgt)
	a, b := ms[0], ms[1]
	callOn(t, a, "s1", tgt)

	// a dies: its heartbeat and reaper stop, nothing is handed over.
	a.cancel()
	a.wg.Wait()
	eventually(t, "b takes the session over", func() bool {
		rec, ok := reg.record(Key{"rt", "s1"})
		return ok && rec.Owner == "b"
	})
	if d.stopped.Load() != 0 {
		t.Fatal("the takeover ended the session")
	}
	if in := b.List("rt"); len(in) != 1 || in[0].Replica != "b" {
		t.Fatalf("b lists %+v, want the session, owned by b", in)
	}
	callOn(t, b, "s1", tgt) // still the same sandbox
	if n := d.started.Load(); n != 1 {
		t.Fatalf("%d sandboxes started, want 1", n)
	}
	// b now owns its lifecycle: idle, it ends.
	eventually(t, "the new owner ends the idle session", func() bool { return d.stopped.Load() == 1 })
}

func TestReplicaClosingHandsSessionsOver(t *testing.T) {
	tgt := target(time.Hour, time.Hour)
	ms, reg, d := replicas(t, 2, tgt)
	a, b := ms[0], ms[1]
	callOn(t, a, "s1", tgt)
	a.Close()
	if d.stopped.Load() != 0 {
		t.Fatal("closing a replica ended its session")
	}
	eventually(t, "b takes the session over", func() bool {
		rec, ok := reg.record(Key{"rt", "s1"})
		return ok && rec.Owner == "b"
	})
	callOn(t, b, "s1", tgt)
}

func TestReplicaStopsAnotherReplicasSession(t *testing.T) {
	tgt := target(time.Hour, time.Hour)
	ms, reg, d := replicas(t, 2, tgt)
	a, b := ms[0], ms[1]
	callOn(t, a, "s1", tgt)
	if err := b.Stop(context.Background(), "rt", "s1"); err != nil {
		t.Fatal(err)
	}
	if d.liveCount() != 0 {
		t.Fatal("the sandbox outlived StopRuntimeSession on another replica")
	}
	if _, ok := reg.record(Key{"rt", "s1"}); ok {
		t.Fatal("the stopped session's record remains")
	}
	eventually(t, "a forgets the stopped session", func() bool { return len(a.List("")) == 0 })
	if err := b.Stop(context.Background(), "rt", "s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stopping it again: err = %v, want ErrNotFound", err)
	}
}

func TestReconcile(t *testing.T) {
	tgt := target(time.Hour, time.Hour)
	ms, reg, d := replicas(t, 1, tgt)
	m := ms[0]
	ctx := context.Background()
	kept := callOn(t, m, "kept", tgt)
	// A sandbox of a replica that is gone, which no session names; and
	// one as young as a sandbox a replica starts before its first
	// heartbeat.
	for _, id := range []string{"orphan", "young"} {
		if _, err := d.Start(ctx, sandboxSpec(id, map[string]string{LabelReplica: "gone"})); err != nil {
			t.Fatal(err)
		}
	}
	d.mu.Lock()
	d.created["orphan"] = time.Now().Add(-time.Hour)
	d.mu.Unlock()
	// A record of a session whose sandbox is gone, old enough not to be
	// one still starting.
	old := time.Now().Add(-time.Hour)
	reg.Create(ctx, Record{RuntimeID: "rt", SessionID: "dead", SandboxID: "vanished", Owner: "gone", CreatedAt: old, LastUsed: old})

	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	_, orphanLive := d.live["orphan"]
	_, youngLive := d.live["young"]
	_, keptLive := d.live[kept.sandboxID]
	d.mu.Unlock()
	if orphanLive || !youngLive || !keptLive {
		t.Errorf("after reconcile: orphan live %v (want false), young sandbox live %v, session's sandbox live %v (want true)",
			orphanLive, youngLive, keptLive)
	}
	if _, ok := reg.record(Key{"rt", "dead"}); ok {
		t.Error("the record of a session without a sandbox remains")
	}
	if _, ok := reg.record(Key{"rt", "kept"}); !ok {
		t.Error("reconcile removed a live session's record")
	}
}

func sandboxSpec(id string, labels map[string]string) sandbox.Spec {
	return sandbox.Spec{ID: id, Args: []string{"agent"}, Labels: labels}
}

func TestReplicasWarmPoolsShareSessions(t *testing.T) {
	tgt := target(time.Hour, time.Hour)
	ms, reg, d := replicas(t, 2, tgt)
	a, b := ms[0], ms[1]
	for _, m := range ms {
		m.SetPools([]PoolSpec{{Target: tgt, Size: 1}})
	}
	eventually(t, "both pools are ready", func() bool {
		return a.Pools()[0].Ready == 1 && b.Pools()[0].Ready == 1
	})
	sa := callOn(t, a, "s1", tgt) // from a's pool, and registered
	if rec, ok := reg.record(Key{"rt", "s1"}); !ok || rec.SandboxID != sa.sandboxID || rec.Owner != "a" {
		t.Fatalf("record = %+v, %v; want a's warm sandbox %s, owned by a", rec, ok, sa.sandboxID)
	}
	sb := callOn(t, b, "s1", tgt) // b's warm sandbox goes back; b attaches to a's
	if sb.sandboxID != sa.sandboxID {
		t.Fatalf("b serves the session from sandbox %s, a from %s", sb.sandboxID, sa.sandboxID)
	}
	// b's warm sandbox was given back, not leaked: only the session's and
	// the pools' sandboxes are live.
	eventually(t, "pools refilled", func() bool { return a.Pools()[0].Ready == 1 && b.Pools()[0].Ready == 1 })
	if n := d.liveCount(); n != 3 {
		t.Errorf("%d sandboxes live, want 3 (the session's and one per pool)", n)
	}
}
