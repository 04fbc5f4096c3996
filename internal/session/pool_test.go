package session

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
)

// labelDriver is a fakeDriver whose sandboxes can be relabelled
// (sandbox.Labeler), as pods can.
type labelDriver struct {
	fakeDriver
	failLabels bool // SetLabels fails

	mu     sync.Mutex
	labels map[string]map[string]string // by sandbox id: the labels now
	calls  int                          // SetLabels calls
}

type labelSandbox struct {
	*fakeSandbox
	d *labelDriver
}

func (d *labelDriver) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	sb, err := d.fakeDriver.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.labels == nil {
		d.labels = map[string]map[string]string{}
	}
	d.labels[spec.ID] = maps.Clone(spec.Labels)
	return labelSandbox{sb.(*fakeSandbox), d}, nil
}

func (s labelSandbox) SetLabels(_ context.Context, labels map[string]string) error {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.calls++
	if s.d.failLabels {
		return errors.New("the API server is away")
	}
	maps.Copy(s.d.labels[s.id], labels)
	return nil
}

// labelsOf returns the labels of sandbox id now.
func (d *labelDriver) labelsOf(id string) map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.labels[id])
}

func (d *labelDriver) labelCalls() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls
}

// TestWarmPoolLabels checks that a warm sandbox starts without a session
// label and gets its session's once claimed, and that a sandbox started for
// a session has it from the start, with or without a Labeler.
func TestWarmPoolLabels(t *testing.T) {
	for _, tt := range []struct {
		name       string
		failLabels bool
	}{
		{"labelled", false},
		{"labelling fails", true}, // the session works all the same
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := &labelDriver{failLabels: tt.failLabels}
			m := New(d, Options{LogDir: t.TempDir(), ReapInterval: 10 * time.Millisecond})
			t.Cleanup(m.Close)
			tg := target(time.Hour, time.Hour)
			m.SetPools([]PoolSpec{{Target: tg, Size: 1}})
			waitPool(t, m, func(p PoolInfo) bool { return p.Ready == 1 })
			d.mu.Lock()
			for id, l := range d.labels {
				if _, ok := l["session"]; ok || l["runtime"] != "rt" || l["version"] != "1" {
					t.Errorf("warm sandbox %s labels %v, want runtime and version and no session", id, l)
				}
			}
			d.mu.Unlock()

			s, err := m.Acquire(t.Context(), "rt", "claimer", tg)
			if err != nil {
				t.Fatal(err)
			}
			// Labelling waits until the first call is done.
			time.Sleep(20 * time.Millisecond)
			if n := d.labelCalls(); n != 0 {
				t.Errorf("the claimed sandbox was relabelled %d times during its first call", n)
			}
			s.Release()
			if p := waitPool(t, m, func(p PoolInfo) bool { return p.Claimed == 1 }); p.Claimed != 1 {
				t.Fatalf("pool %+v: the session did not claim the warm sandbox", p)
			}
			id := s.Sandbox().ID()
			deadline := time.Now().Add(5 * time.Second)
			for d.labelCalls() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the claimed sandbox was never relabelled")
				}
				time.Sleep(5 * time.Millisecond)
			}
			want := "claimer"
			if tt.failLabels {
				want = ""
			}
			if got := d.labelsOf(id)["session"]; got != want {
				t.Errorf("claimed sandbox's session label %q, want %q", got, want)
			}
			if again, err := m.Acquire(t.Context(), "rt", "claimer", tg); err != nil {
				t.Errorf("second call of the claimed session: %v", err)
			} else {
				again.Release()
			}

			// No pool for this version: the session's sandbox starts
			// labelled, and is not relabelled.
			calls := d.labelCalls()
			other := *tg
			other.Version = 2
			s2, err := m.Acquire(t.Context(), "rt", "cold", &other)
			if err != nil {
				t.Fatal(err)
			}
			s2.Release()
			if l := d.labelsOf(s2.Sandbox().ID()); l["session"] != "cold" || l["version"] != "2" {
				t.Errorf("cold session's sandbox labels %v", l)
			}
			if d.labelCalls() != calls {
				t.Errorf("a sandbox started for its session was relabelled")
			}
		})
	}
}
