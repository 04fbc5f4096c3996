package sqlite_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/store"
	"github.com/berthrun/berth/internal/store/sqlite"
	"github.com/berthrun/berth/internal/store/storetest"
)

// crashEnv, when set in the environment, makes the test binary run
// crashChild instead of the tests; its value is the database path.
const (
	crashEnv      = "BERTH_SQLITE_CRASH_DB"
	crashRoundEnv = "BERTH_SQLITE_CRASH_ROUND"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(crashEnv); path != "" {
		os.Exit(crashChild(path, os.Getenv(crashRoundEnv)))
	}
	os.Exit(m.Run())
}

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "berth.db"))
	})
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		return open(b, filepath.Join(b.TempDir(), "berth.db"))
	})
}

// TestReopen writes, closes, reopens and reads back, with nanoseconds,
// which SQLite keeps although the suite asks only for microseconds.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "berth.db")
	created := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
	want := store.Version{RuntimeID: "rt", Number: 1, Status: "READY", Artifact: "a", Config: []byte("{}"),
		CreatedAt: created, UpdatedAt: created}

	s := open(t, path)
	err := s.Update(ctx, func(tx store.Tx) error {
		err := tx.CreateRuntime(ctx, store.Runtime{ID: "rt", Name: "n", LatestVersion: 1, CreatedAt: created, UpdatedAt: created})
		if err != nil {
			return err
		}
		return tx.CreateVersion(ctx, want)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for range 2 { // the second reopen finds the schema current
		s = open(t, path)
		err = s.View(ctx, func(tx store.Tx) error {
			got, err := tx.GetVersion(ctx, "rt", 1)
			if err != nil {
				return err
			}
			if !got.CreatedAt.Equal(created) || got.Status != want.Status || !bytes.Equal(got.Config, want.Config) {
				t.Errorf("after reopen: got %+v, want %+v", got, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenPath opens databases at paths that need escaping in a URI.
func TestOpenPath(t *testing.T) {
	for _, name := range []string{"plain.db", "what?.db", "hash#1.db", "100%.db", "with space.db"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, filepath.Join(dir, name))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != name {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("directory holds %q, want only %q", names, name)
			}
		})
	}

	// A relative path is relative to the working directory.
	t.Chdir(t.TempDir())
	s := open(t, "relative.db")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("relative.db"); err != nil {
		t.Error(err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	newer := filepath.Join(dir, "newer.db")
	s := open(t, newer)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	setUserVersion(t, newer, 99)

	for _, tc := range []struct {
		name, path, want string
	}{
		{"empty path", "", "not a file path"},
		{"memory", ":memory:", "not a file path"},
		{"missing directory", filepath.Join(dir, "missing", "berth.db"), "unable to open"},
		{"directory", dir, "unable to open"},
		{"not a database", garbage, "not a database"},
		{"newer schema", newer, "schema version 99 is newer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sqlite.Open(t.Context(), tc.path)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q): no error", tc.path)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open(%q): %v, want an error saying %q", tc.path, err, tc.want)
			}
		})
	}
}

// setUserVersion sets the schema version of the database at path behind the
// store's back.
func setUserVersion(t *testing.T, path string, v int) {
	t.Helper()
	db := rawDB(t, path)
	if _, err := db.ExecContext(t.Context(), fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
		t.Fatal(err)
	}
}

// rawDB opens the database at path without the store, for checks the store
// does not offer.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestTwoStores runs read-modify-write transactions from two Stores on one
// file, as two processes would: BEGIN IMMEDIATE and the busy timeout keep
// every transaction from failing with SQLITE_BUSY or losing a write.
func TestTwoStores(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "berth.db")
	stores := []*sqlite.Store{open(t, path), open(t, path)}
	for _, s := range stores {
		t.Cleanup(func() { s.Close() })
	}
	err := stores[0].Update(ctx, func(tx store.Tx) error {
		return tx.CreateRuntime(ctx, store.Runtime{ID: "rt", Name: "rt"})
	})
	if err != nil {
		t.Fatal(err)
	}
	const perStore = 25
	var wg sync.WaitGroup
	for _, s := range stores {
		for range perStore {
			wg.Go(func() {
				err := s.Update(ctx, func(tx store.Tx) error {
					r, err := tx.GetRuntime(ctx, "rt")
					if err != nil {
						return err
					}
					r.LatestVersion++
					return tx.UpdateRuntime(ctx, r)
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	err = stores[1].View(ctx, func(tx store.Tx) error {
		r, err := tx.GetRuntime(ctx, "rt")
		if err != nil {
			return err
		}
		if want := len(stores) * perStore; r.LatestVersion != want {
			t.Errorf("counter is %d after %d increments", r.LatestVersion, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
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

// crashChild writes runtimes to the store at path, one transaction each, and
// prints the ID of each after it commits, until it is killed, its output is
// gone or it has written a bounded number. It returns the exit code.
func crashChild(path, round string) int {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path)
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

// TestCrash kills, with SIGKILL, a process writing to the store, several
// times, and checks after each kill that the database is intact, that every
// transaction the child reported committed is there, and that every
// transaction there is whole.
func TestCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.db")
	committed := map[string]bool{}
	for round := range 8 {
		killAfter := 3 + 2*round // commits seen before the kill
		cmd := exec.CommandContext(t.Context(), os.Args[0])
		cmd.Env = append(os.Environ(), crashEnv+"="+path, crashRoundEnv+"="+strconv.Itoa(round))
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
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		// Lines printed before the kill are still in the pipe.
		for lines.Scan() {
			committed[lines.Text()] = true
		}
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != -1 {
			t.Fatalf("round %d: child did not die by the kill: %v; stderr:\n%s", round, err, stderr.String())
		}
		// Each child may have committed once more than it printed.
		checkCrashed(t, path, committed, round+1)
	}
}

// checkCrashed checks the database at path after a crash: it is intact,
// holds every runtime in committed and at most maxExtra others, and each
// runtime is whole.
func checkCrashed(t *testing.T, path string, committed map[string]bool, maxExtra int) {
	t.Helper()
	ctx := t.Context()
	db := rawDB(t, path)
	var integrity string
	if err := db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&integrity); err != nil {
		t.Fatal(err)
	}
	if integrity != "ok" {
		t.Fatalf("integrity check: %s", integrity)
	}
	var orphans int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM pragma_foreign_key_check").Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Errorf("foreign key check finds %d orphans", orphans)
	}
	db.Close()

	s := open(t, path)
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
