package postgres

import (
	"io/fs"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthrun/berth/internal/store"
	"github.com/berthrun/berth/internal/store/storetest"
)

func openStore(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTwoStoresTakeOver runs the session registry from two Stores, each
// with its own pool, on one database, as two Berth replicas would.
func TestTwoStoresTakeOver(t *testing.T) {
	dsn := testPG.Database(t)
	storetest.TwoStoresTakeOver(t, func(t *testing.T) store.Store { return openStore(t, dsn) })
}

// TestHeartbeatPrunes checks that Heartbeat forgets replicas long gone.
func TestHeartbeatPrunes(t *testing.T) {
	s := openStore(t, testPG.Database(t))
	defer s.Close()
	storetest.HeartbeatPrunes(t, s, replicaRetention)
}

func BenchmarkSessions(b *testing.B) {
	storetest.BenchSessions(b, func(b *testing.B) store.Store {
		return openStore(b, testPG.Database(b))
	})
}

// TestUpgradeSessions opens a database of the schema before the session
// registry, holding a runtime: Open adds the registry's tables in place and
// keeps the runtime.
func TestUpgradeSessions(t *testing.T) {
	ctx := t.Context()
	dsn := testPG.Database(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	data, err := fs.ReadFile(migrationFS(), "0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, pool, fstest.MapFS{"0001_init.sql": {Data: data}}); err != nil {
		t.Fatal(err)
	}
	created := time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC)
	_, err = pool.Exec(ctx, `INSERT INTO runtimes (id, name, latest_version, created_at, updated_at, deleting)
		VALUES ('old', 'old-name', 1, $1, $1, false)`, created)
	if err != nil {
		t.Fatal(err)
	}
	if migrations, tables := schema(t, pool); migrations != "1:0001_init.sql" || tables != "endpoints,idempotency,runtimes,versions" {
		t.Fatalf("before the upgrade: migrations %q, tables %q", migrations, tables)
	}

	s := openStore(t, dsn)
	defer s.Close()
	migrations, tables := schema(t, pool)
	if want := "1:0001_init.sql,2:0002_sessions.sql,3:0003_artifacts.sql"; migrations != want {
		t.Errorf("migrations after the upgrade %q, want %q", migrations, want)
	}
	if want := "artifact_blobs,artifact_chunks,artifact_refs,endpoints,idempotency,replicas,runtimes,sessions,versions"; tables != want {
		t.Errorf("tables after the upgrade %q, want %q", tables, want)
	}
	err = s.View(ctx, func(tx store.Tx) error {
		r, err := tx.GetRuntime(ctx, "old")
		if err != nil {
			return err
		}
		if r.Name != "old-name" || !r.CreatedAt.Equal(created) {
			t.Errorf("runtime after the upgrade: %+v", r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// timestamptz keeps microseconds; the nanoseconds below are dropped,
	// not rounded.
	sess := store.Session{RuntimeID: "old", SessionID: "s", Version: 1, SandboxID: "sbx", Owner: "r",
		LeaseUntil: created.Add(999 * time.Nanosecond)}
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSession(ctx, "old", "s")
	if err != nil {
		t.Fatal(err)
	}
	if !got.LeaseUntil.Equal(created) {
		t.Errorf("lease until %s, want %s", got.LeaseUntil, created)
	}
	if taken, err := s.TakeOver(ctx, "r2", created, created.Add(time.Hour)); err != nil || len(taken) != 0 {
		t.Errorf("take over at the lease's end, in microseconds: %v, %v; want nothing", taken, err)
	}
}
