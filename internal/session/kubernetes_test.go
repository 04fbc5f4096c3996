package session_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berthrun/berth/internal/sandbox/kubernetes"
	"github.com/berthrun/berth/internal/sandbox/kubernetes/kubetest"
	"github.com/berthrun/berth/internal/sandbox/sandboxtest"
	"github.com/berthrun/berth/internal/session"
)

// warmObserver records the warm flag of every session start.
type warmObserver struct {
	mu    sync.Mutex
	warms []bool
}

func (o *warmObserver) SessionStarted(_ string, warm bool, _, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.warms = append(o.warms, warm)
}

func (o *warmObserver) SessionEnded(string, string) {}

func (o *warmObserver) starts() []bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.warms)
}

// TestKubernetesWarmPool runs a warm pool on the test cluster
// (tools/k8s/k8s-up.sh; see internal/sandbox/kubernetes): its pods are
// ready before any session, a new session claims one and that pod is
// labelled with it, the pool refills, a claimed pod serves one session
// only, and releasing the pool deletes the pods no session claimed.
func TestKubernetesWarmPool(t *testing.T) {
	kc := kubetest.New(t, "berth-pool-test")
	cfg, ns, hostIP, client := kc.Config, kc.Namespace, kc.HostIP, kc.Client
	const owner = "pool-test"
	d, err := kubernetes.New(kubernetes.Options{
		Config: cfg, Namespace: ns, Owner: owner, BundleListen: net.JoinHostPort(hostIP, "0"),
		AllowFrom: []string{hostIP + "/32"}, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	obs := &warmObserver{}
	m := session.New(d, session.Options{LogDir: t.TempDir(), ReapInterval: 100 * time.Millisecond, Observer: obs,
		Logger: slog.New(slog.DiscardHandler)})
	closed := false
	t.Cleanup(func() {
		if !closed {
			m.Close()
		}
	})
	tg := &session.Target{RuntimeID: "rt-pool", Version: 1, Args: []string{"/workspace/agent"},
		Env: []string{"PATH=/bin"}, CodeDir: sandboxtest.BuildAgent(t), WorkDir: "/workspace", Port: 8080,
		IdleTimeout: time.Hour, MaxLifetime: time.Hour}

	pods := func(selector string) []corev1.Pod {
		t.Helper()
		list, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{
			LabelSelector: kubernetes.LabelManagedBy + "=" + owner + selector})
		if err != nil {
			t.Fatal(err)
		}
		return list.Items
	}
	names := func(ps []corev1.Pod) []string {
		var out []string
		for _, p := range ps {
			if p.DeletionTimestamp == nil {
				out = append(out, p.Name)
			}
		}
		slices.Sort(out)
		return out
	}
	// eventually waits until cond holds, failing the test with what last
	// held after a minute.
	eventually := func(what string, cond func() (bool, any)) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			ok, last := cond()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still %v after a minute", what, last)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	pool := func() session.PoolInfo {
		ps := m.Pools()
		if len(ps) != 1 {
			return session.PoolInfo{}
		}
		return ps[0]
	}
	podOf := func(s *session.Session) string { return s.Sandbox().(*kubernetes.Sandbox).PodName() }
	hostname := func(s *session.Session) string {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://agent/hostname", nil)
		resp, err := s.Transport().RoundTrip(req)
		if err != nil {
			t.Fatalf("call session %s's agent: %v", s.ID, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}

	// Two ready pods before any session, without a session label.
	m.SetPools([]session.PoolSpec{{Target: tg, Size: 2}})
	eventually("pool filling", func() (bool, any) { p := pool(); return p.Ready == 2, p })
	warmPods := names(pods(""))
	if len(warmPods) != 2 || len(names(pods(",berth.run/session"))) != 0 || len(obs.starts()) != 0 {
		t.Fatalf("before any session: pods %v, of them with a session label %v; session starts %v",
			warmPods, names(pods(",berth.run/session")), obs.starts())
	}

	// A new session claims one: its start is warm, and its pod gets its
	// session's label.
	a, err := m.Acquire(t.Context(), "rt-pool", "session-a", tg)
	if err != nil {
		t.Fatal(err)
	}
	podA := podOf(a)
	if got := hostname(a); got != podA {
		t.Errorf("session-a's agent runs in %q, want its sandbox's pod %s", got, podA)
	}
	a.Release()
	if starts := obs.starts(); !slices.Equal(starts, []bool{true}) {
		t.Errorf("session starts %v (warm flags), want one warm start", starts)
	}
	if !slices.Contains(warmPods, podA) {
		t.Errorf("session-a runs in pod %s, not one of the warm pods %v", podA, warmPods)
	}
	eventually("session-a's pod labelled", func() (bool, any) {
		got := names(pods(",berth.run/session=session-a"))
		return slices.Equal(got, []string{podA}), got
	})

	// The pool refills: two unclaimed pods again, beside session-a's.
	eventually("pool refilling", func() (bool, any) { p := pool(); return p.Ready == 2 && p.Claimed == 1, p })
	eventually("unclaimed pods", func() (bool, any) {
		got := names(pods(",!berth.run/session"))
		return len(got) == 2 && !slices.Contains(got, podA), got
	})

	// A claimed pod serves one session: session-a's later calls reach it,
	// session-b gets another.
	b2, err := m.Acquire(t.Context(), "rt-pool", "session-b", tg)
	if err != nil {
		t.Fatal(err)
	}
	podB := podOf(b2)
	b2.Release()
	again, err := m.Acquire(t.Context(), "rt-pool", "session-a", tg)
	if err != nil {
		t.Fatal(err)
	}
	if podOf(again) != podA || hostname(again) != podA {
		t.Errorf("session-a's second call ran in pod %s", podOf(again))
	}
	again.Release()
	if podB == podA {
		t.Errorf("session-b claimed session-a's pod %s", podA)
	}
	if starts := obs.starts(); !slices.Equal(starts, []bool{true, true}) {
		t.Errorf("session starts %v (warm flags), want two warm starts", starts)
	}
	eventually("session-b's pod labelled", func() (bool, any) {
		got := names(pods(",berth.run/session=session-b"))
		return slices.Equal(got, []string{podB}), got
	})
	if err := m.Stop(t.Context(), "rt-pool", "session-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods(ns).Get(t.Context(), podA, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("session-a's pod after its session stopped: %v, want it gone", err)
	}

	// Releasing the pool deletes the unclaimed pods; session-b's stays.
	eventually("pool refilling", func() (bool, any) { p := pool(); return p.Ready == 2 && p.Starting == 0, p })
	m.SetPools(nil)
	eventually("unclaimed pods deleted", func() (bool, any) {
		got := pods(",!berth.run/session")
		return len(got) == 0, names(got)
	})
	if got := names(pods("")); !slices.Equal(got, []string{podB}) {
		t.Errorf("pods after the pool was released: %v, want session-b's %s alone", got, podB)
	}
	closed = true
	m.Close()
	if got := pods(""); len(got) != 0 {
		t.Errorf("pods left after the manager closed: %v", names(got))
	}
}
