package netns_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox/netns"
)

func TestDialRejectsBadInput(t *testing.T) {
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Skipf("no network namespaces here: %v", err)
	}
	defer ns.Close()
	tests := []struct {
		name, network, address, want string
	}{
		{"hostname", "tcp", "localhost:8080", "not an IP literal"},
		{"no port", "tcp", "127.0.0.1", "missing port"},
		{"unix", "unix", "/run/x.sock", "unsupported network"},
		{"empty", "tcp", "", "missing port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := netns.Dial(context.Background(), ns, tt.network, tt.address)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Dial(%q, %q) = %v, want an error containing %q", tt.network, tt.address, err, tt.want)
			}
		})
	}
}

func TestDialClosedNamespace(t *testing.T) {
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Skipf("no network namespaces here: %v", err)
	}
	ns.Close()
	if _, err := netns.Dial(context.Background(), ns, "tcp", "127.0.0.1:1"); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Dial with a closed namespace file = %v, want os.ErrClosed", err)
	}
}

func TestDialCanceled(t *testing.T) {
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Skipf("no network namespaces here: %v", err)
	}
	defer ns.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := netns.Dial(ctx, ns, "tcp", "127.0.0.1:1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial with a canceled context = %v, want context.Canceled", err)
	}
}

// TestDial reaches a listener that exists only in a fresh network namespace,
// from many goroutines at once, and checks that every thread of the process
// is back in its own namespace afterwards.
func TestDial(t *testing.T) {
	ns, ln := newNamespace(t)
	home, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}

	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()

	// The listener's address means nothing in the host namespace: the same
	// port there is most likely closed, and certainly not this listener.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			c, err := netns.Dial(t.Context(), ns, "tcp", ln.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if _, err := c.Write([]byte("ping")); err != nil {
				errs <- err
				return
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil {
				errs <- err
				return
			}
			if string(buf) != "ping" {
				errs <- errors.New("echo returned " + string(buf))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		got, err := os.Readlink(task)
		if err != nil {
			continue // the thread ended meanwhile
		}
		if got != home {
			t.Errorf("%s is in %s, want the process's own %s", task, got, home)
		}
	}
}

func BenchmarkDial(b *testing.B) {
	ns, ln := newNamespace(b)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for b.Loop() {
		c, err := netns.Dial(b.Context(), ns, "tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// newNamespace creates a network namespace with loopback up and a TCP
// listener on 127.0.0.1 inside it. It returns the namespace's file and the
// listener, both closed when the test ends.
func newNamespace(tb testing.TB) (*os.File, net.Listener) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("creating a network namespace needs root")
	}
	ns, err := netns.NewLoopback()
	if err != nil {
		tb.Fatalf("create a network namespace: %v", err)
	}
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer unix.Close(home)
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		// The listener keeps its namespace; the thread goes home, or ends
		// locked so that Go retires it.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		ns.Close()
		tb.Fatalf("listen in a network namespace: %v", r.err)
	}
	tb.Cleanup(func() {
		r.ln.Close()
		ns.Close()
	})
	return ns, r.ln
}

// TestNewLoopback checks that a new namespace is not the process's own and
// that its loopback is up: a connection to a closed port there is refused,
// where a down loopback would make the network unreachable.
func TestNewLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating a network namespace needs root")
	}
	ns, err := netns.NewLoopback()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var own, got unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &own); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(ns.Fd()), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ino == own.Ino {
		t.Fatal("NewLoopback returned the process's own network namespace")
	}
	_, err = netns.Dial(t.Context(), ns, "tcp", "127.0.0.1:1")
	if !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("dial a closed port in the new namespace = %v, want connection refused (loopback up)", err)
	}
}
