package storetest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/store"
)

// The environment of a crash child: crashEnv holds the store's address (a
// file path, a connection string) and makes the test binary run CrashChild
// instead of the tests; crashRoundEnv numbers the child.
const (
	crashEnv      = "BERTH_STORETEST_CRASH_STORE"
	crashRoundEnv = "BERTH_STORETEST_CRASH_ROUND"
)

// CrashChild runs the writer side of Crash if this process is a child that
// Crash started, and returns its exit code and true; otherwise it returns
// false at once. Call it first in TestMain:
//
//	func TestMain(m *testing.M) {
//		if code, ok := storetest.CrashChild(openByAddress); ok {
//			os.Exit(code)
//		}
//		os.Exit(m.Run())
//	}
//
// open opens the store at the address given to Crash.
func CrashChild(open func(ctx context.Context, addr string) (store.Store, error)) (int, bool) {
	addr := os.Getenv(crashEnv)
	if addr == "" {
		return 0, false
	}
	return crashChild(open, addr, os.Getenv(crashRoundEnv)), true
}

// crashRecord returns what crashChild writes in one transaction: a runtime
// with its version 1, carrying a large config so that the process is likely
// inside a transaction when it is killed, and its DEFAULT endpoint.
func crashRecord(id string, seq int) (store.Runtime, store.Version, store.Endpoint) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Millisecond)
	config := bytes.Repeat([]byte(id), 64<<10/len(id)*(1+seq%4))
	return store.Runtime{ID: id, Name: id, LatestVersion: 1, CreatedAt: now, UpdatedAt: now},
		store.Version{RuntimeID: id, Number: 1, Status: "READY", Artifact: id, Config: config, CreatedAt: now, UpdatedAt: now},
		store.Endpoint{RuntimeID: id, Name: "DEFAULT", ID: "ep-" + id, LiveVersion: 1, TargetVersion: 1, Status: "READY",
			CreatedAt: now, UpdatedAt: now}
}

// crashChild writes runtimes to the store at addr, one transaction each,
// and prints the ID of each after it commits, until it is killed, its
// output is gone or it has written a bounded number. It returns the exit
// code.
func crashChild(open func(ctx context.Context, addr string) (store.Store, error), addr, round string) int {
	ctx := context.Background()
	s, err := open(ctx, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer s.Close()
	for seq := range 10000 {
		id := fmt.Sprintf("r%s-%05d", round, seq)
		r, v, e := crashRecord(id, seq)
		err := s.Update(ctx, func(tx store.Tx) error {
			if err := tx.CreateRuntime(ctx, r); err != nil {
				return err
			}
			if err := tx.CreateVersion(ctx, v); err != nil {
				return err
			}
			return tx.CreateEndpoint(ctx, e)
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if _, err := fmt.Println(id); err != nil {
			return 0 // the test is gone
		}
	}
	return 0
}

// Crash kills, with SIGKILL, a process writing to the store at addr,
// several times, and checks after each kill that every transaction the
// child reported committed is there, and that every transaction there is
// whole. The process is the test binary itself, whose TestMain must call
// CrashChild. open opens the store at addr in the test; check, if not nil,
// runs the backend's own integrity checks after each kill, before open.
func Crash(t *testing.T, addr string, open func(t *testing.T) store.Store, check func(t *testing.T)) {
	crashRounds(t, addr, open, check, nil)
}

// CrashServer is Crash for a store kept by a server (a database server):
// in each round crash kills the server while the child writes, and starts
// it again, before the child is killed too. What the child reported
// committed must have survived the server's crash.
func CrashServer(t *testing.T, addr string, open func(t *testing.T) store.Store, check, crash func(t *testing.T)) {
	crashRounds(t, addr, open, check, crash)
}

func crashRounds(t *testing.T, addr string, open func(t *testing.T) store.Store, check, crashServer func(t *testing.T)) {
	committed := map[string]bool{}
	for round := range 8 {
		killAfter := 3 + 2*round // commits seen before the kill
		cmd := exec.CommandContext(t.Context(), os.Args[0])
		cmd.Env = append(os.Environ(), crashEnv+"="+addr, crashRoundEnv+"="+strconv.Itoa(round))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		var first, last time.Time
		for seen := 0; seen < killAfter && lines.Scan(); seen++ {
			committed[lines.Text()] = true
			if last = time.Now(); seen == 0 {
				first = last
			}
		}
		// Kill at a random point of the next transactions, so that
		// across rounds the kill lands in all phases of a write.
		perCommit := last.Sub(first) / time.Duration(killAfter-1)
		time.Sleep(rand.N(2*perCommit + 1))
		if crashServer != nil {
			// The child may fail, or go on once the server is back.
			crashServer(t)
		}
		if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Fatal(err)
		}
		// Lines printed before the kill are still in the pipe.
		for lines.Scan() {
			committed[lines.Text()] = true
		}
		err = cmd.Wait()
		var exit *exec.ExitError
		killed := errors.As(err, &exit) && exit.ExitCode() == -1
		// With the server gone, the child may also give up on its own.
		failed := crashServer != nil && errors.As(err, &exit) && exit.ExitCode() == 2
		if !killed && !failed {
			t.Fatalf("round %d: child did not die by the kill: %v; stderr:\n%s", round, err, stderr.String())
		}
		if check != nil {
			check(t)
		}
		// Each child may have committed once more than it printed.
		checkCrashed(t, open(t), committed, round+1)
	}
}

// checkCrashed checks the store s after a crash: it holds every runtime in
// committed and at most maxExtra others, and each runtime is whole. It
// closes s.
func checkCrashed(t *testing.T, s store.Store, committed map[string]bool, maxExtra int) {
	t.Helper()
	ctx := t.Context()
	defer s.Close()
	err := s.View(ctx, func(tx store.Tx) error {
		rs, err := tx.ListRuntimes(ctx, "", 0)
		if err != nil {
			return err
		}
		found := map[string]bool{}
		for _, r := range rs {
			found[r.ID] = true
			_, n, _ := strings.Cut(r.ID, "-")
			seq, err := strconv.Atoi(n)
			if err != nil {
				t.Errorf("unexpected runtime %+v", r)
				continue
			}
			wantR, wantV, wantE := crashRecord(r.ID, seq)
			v, err := tx.GetVersion(ctx, r.ID, 1)
			if err != nil {
				t.Errorf("runtime %s has no version 1: %v", r.ID, err)
				continue
			}
			e, err := tx.GetEndpoint(ctx, r.ID, "DEFAULT")
			if err != nil {
				t.Errorf("runtime %s has no DEFAULT endpoint: %v", r.ID, err)
				continue
			}
			if !r.CreatedAt.Equal(wantR.CreatedAt) || r.Name != wantR.Name ||
				!bytes.Equal(v.Config, wantV.Config) || v.Artifact != wantV.Artifact || e.ID != wantE.ID {
				t.Errorf("runtime %s is not what was written", r.ID)
			}
		}
		for id := range committed {
			if !found[id] {
				t.Errorf("runtime %s was committed but is gone", id)
			}
		}
		if extra := len(rs) - len(committed); extra < 0 || extra > maxExtra {
			t.Errorf("%d runtimes stored, %d reported committed", len(rs), len(committed))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
