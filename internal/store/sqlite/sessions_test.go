package sqlite

import (
	"io/fs"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	"github.com/berthrun/berth/internal/store"
	"github.com/berthrun/berth/internal/store/storetest"
)

func openStore(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTwoStoresTakeOver runs the session registry from two Stores on one
// file, as two processes would.
func TestTwoStoresTakeOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.db")
	storetest.TwoStoresTakeOver(t, func(t *testing.T) store.Store { return openStore(t, path) })
}

// TestHeartbeatPrunes checks that Heartbeat forgets replicas long gone.
func TestHeartbeatPrunes(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "berth.db"))
	defer s.Close()
	storetest.HeartbeatPrunes(t, s, replicaRetention)
}

func BenchmarkSessions(b *testing.B) {
	storetest.BenchSessions(b, func(b *testing.B) store.Store {
		return openStore(b, filepath.Join(b.TempDir(), "berth.db"))
	})
}

// firstMigration returns the shipped migration 0001 alone: the schema
// before the session registry.
func firstMigration(t *testing.T) fstest.MapFS {
	t.Helper()
	data, err := fs.ReadFile(migrationFS(), "0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	return fstest.MapFS{"0001_init.sql": {Data: data}}
}

// TestUpgradeSessions opens a database of the schema before the session
// registry, holding a runtime: Open adds the registry's tables in place and
// keeps the runtime.
func TestUpgradeSessions(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "berth.db")
	db := openRaw(t, path)
	if err := migrate(ctx, db, firstMigration(t)); err != nil {
		t.Fatal(err)
	}
	_, err := db.ExecContext(ctx, `INSERT INTO runtimes (id, name, latest_version, created_at, updated_at, deleting)
		VALUES ('old', 'old-name', 1, '2024-01-02T03:04:05.000000000Z', '2024-01-02T03:04:05.000000000Z', 0)`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tables(t, db), "endpoints,idempotency,runtimes,versions"; got != want {
		t.Fatalf("tables before the upgrade %q, want %q", got, want)
	}
	db.Close()

	s := openStore(t, path)
	defer s.Close()
	if got, want := tables(t, s.w), "endpoints,idempotency,replicas,runtimes,sessions,versions"; got != want {
		t.Errorf("tables after the upgrade %q, want %q", got, want)
	}
	if got := userVersion(t, s.w); got != 2 {
		t.Errorf("schema version %d after the upgrade, want 2", got)
	}
	err = s.View(ctx, func(tx store.Tx) error {
		r, err := tx.GetRuntime(ctx, "old")
		if err != nil {
			return err
		}
		if r.Name != "old-name" || !r.CreatedAt.Equal(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)) {
			t.Errorf("runtime after the upgrade: %+v", r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sess := store.Session{RuntimeID: "old", SessionID: "s", Version: 1, SandboxID: "sbx", Owner: "r",
		LeaseUntil: time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)}
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	// SQLite keeps nanoseconds here as for the other timestamps.
	got, err := s.GetSession(ctx, "old", "s")
	if err != nil {
		t.Fatal(err)
	}
	if !got.LeaseUntil.Equal(sess.LeaseUntil) {
		t.Errorf("lease until %s, want %s", got.LeaseUntil, sess.LeaseUntil)
	}
}
