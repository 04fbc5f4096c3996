package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/store"
	"github.com/berthrun/berth/internal/store/sqlite"
	"github.com/berthrun/berth/internal/store/storetest"
)

func TestMain(m *testing.M) {
	if code, ok := storetest.CrashChild(func(ctx context.Context, path string) (store.Store, error) {
		return sqlite.Open(ctx, path)
	}); ok {
		os.Exit(code)
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
	path := filepath.Join(t.TempDir(), "berth.db")
	storetest.TwoStores(t, func(t *testing.T) store.Store { return open(t, path) })
}

// TestCrash kills, with SIGKILL, a process writing to the store, several
// times, and checks after each kill that the database file is intact and
// holds every committed transaction whole.
func TestCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.db")
	storetest.Crash(t, path, func(t *testing.T) store.Store { return open(t, path) }, func(t *testing.T) {
		checkIntegrity(t, path)
	})
}

// checkIntegrity checks the database file at path with SQLite's own
// integrity and foreign key checks.
func checkIntegrity(t *testing.T, path string) {
	t.Helper()
	ctx := t.Context()
	db := rawDB(t, path)
	defer db.Close()
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
}
