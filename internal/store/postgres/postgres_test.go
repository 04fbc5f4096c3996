package postgres_test

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/berthrun/berth/internal/store"
	"github.com/berthrun/berth/internal/store/postgres"
	"github.com/berthrun/berth/internal/store/postgres/pgtest"
	"github.com/berthrun/berth/internal/store/storetest"
)

// pg returns the PostgreSQL server of this package's tests, which TestMain,
// in the internal tests, makes.
func pg() *pgtest.Server { return postgres.Server() }

func open(t testing.TB, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, pg().Database(t))
	})
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		return open(b, pg().Database(b))
	})
}

// TestCrash kills writers mid-transaction; PostgreSQL must roll back what
// they left open and keep what they committed.
func TestCrash(t *testing.T) {
	dsn := pg().Database(t)
	storetest.Crash(t, dsn, func(t *testing.T) store.Store { return open(t, dsn) }, func(t *testing.T) {
		checkOrphans(t, dsn)
	})
}

// TestServerCrash kills the PostgreSQL server, with all its processes,
// while a child process writes, then the child: what the child saw
// committed must survive the server's recovery, and nothing half-written
// may.
func TestServerCrash(t *testing.T) {
	dsn := pg().Database(t)
	storetest.CrashServer(t, dsn, func(t *testing.T) store.Store { return open(t, dsn) },
		func(t *testing.T) { checkOrphans(t, dsn) },
		func(t *testing.T) { pg().Crash(t) })
}

// checkOrphans checks, behind the store's back, that no version or endpoint
// lacks its runtime.
func checkOrphans(t *testing.T, dsn string) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var orphans int
	err = conn.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM versions v WHERE NOT EXISTS (SELECT 1 FROM runtimes r WHERE r.id = v.runtime_id)) +
		(SELECT count(*) FROM endpoints e WHERE NOT EXISTS (SELECT 1 FROM runtimes r WHERE r.id = e.runtime_id))`).Scan(&orphans)
	if err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Errorf("%d versions and endpoints have no runtime", orphans)
	}
}

// TestTwoStores runs read-modify-write transactions from two Stores on one
// database, as two Berth processes would: the writer lock keeps every
// increment.
func TestTwoStores(t *testing.T) {
	dsn := pg().Database(t)
	storetest.TwoStores(t, func(t *testing.T) store.Store { return open(t, dsn) })
}

// TestConcurrentOpen opens several stores on an empty database at once, as
// Berth replicas starting together do: the migration lock lets exactly one
// create the schema and the others find it current.
func TestConcurrentOpen(t *testing.T) {
	dsn := pg().Database(t)
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			s, err := postgres.Open(t.Context(), dsn)
			if err != nil {
				errs <- err
				return
			}
			errs <- s.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got, want := migrationRows(t, dsn), shippedMigrations(t); got != want {
		t.Errorf("schema_migrations holds %q, want one row per migration: %q", got, want)
	}
}

// shippedMigrations returns the migrations in migrations/ as version:name
// pairs, as migrationRows does.
func shippedMigrations(t *testing.T) string {
	t.Helper()
	names, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("no migrations (%v)", err)
	}
	var rows []string
	for _, p := range names {
		name := filepath.Base(p)
		n, err := strconv.Atoi(name[:4])
		if err != nil {
			t.Fatalf("migration %s: %v", name, err)
		}
		rows = append(rows, fmt.Sprintf("%d:%s", n, name))
	}
	return strings.Join(rows, ",")
}

// migrationRows returns schema_migrations as version:name pairs.
func migrationRows(t *testing.T, dsn string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var rows string
	err = conn.QueryRow(t.Context(),
		`SELECT coalesce(string_agg(version || ':' || name, ',' ORDER BY version), '') FROM schema_migrations`).Scan(&rows)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestOpenErrors(t *testing.T) {
	newer := pg().Database(t)
	s := open(t, newer)
	s.Close()
	conn, err := pgx.Connect(t.Context(), newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `INSERT INTO schema_migrations (version, name) VALUES (99, '0099_future.sql')`); err != nil {
		t.Fatal(err)
	}
	conn.Close(t.Context())

	u, err := url.Parse(newer)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "wrong-secret")
	wrongPassword := u.String()
	for _, tc := range []struct {
		name, dsn, want string
	}{
		{"not a DSN", "postgres://[::1", "cannot parse"},
		{"newer schema", newer, "schema version 99 is newer"},
		{"missing database", strings.Replace(newer, "/berth_test_", "/missing_", 1), "does not exist"},
		{"wrong password", wrongPassword, "password authentication failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "wrong password" && pg().Password() == "" {
				t.Skip("the server of $" + pgtest.EnvDSN + " may not ask for passwords")
			}
			s, err := postgres.Open(t.Context(), tc.dsn)
			if err == nil {
				s.Close()
				t.Fatalf("Open: no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v, want an error saying %q", err, tc.want)
			}
			if pw := pg().Password(); pw != "" && strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "wrong-secret") {
				t.Errorf("Open: error %q holds the password", err)
			}
		})
	}
}

// TestConnectionsDropped ends every connection of the store from the
// server's side, as a server restart or a proxy would: the store's next
// transactions run on new connections.
func TestConnectionsDropped(t *testing.T) {
	ctx := t.Context()
	dsn := pg().Database(t)
	s := open(t, dsn)
	defer s.Close()
	create := func(id string) error {
		return s.Update(ctx, func(tx store.Tx) error {
			return tx.CreateRuntime(ctx, store.Runtime{ID: id, Name: id})
		})
	}
	if err := create("before"); err != nil {
		t.Fatal(err)
	}
	// Views that wait for each other fill the pool with connections.
	const views = 4
	var wg sync.WaitGroup
	all := make(chan struct{})
	var in atomic.Int32
	for range views {
		wg.Go(func() {
			err := s.View(ctx, func(tx store.Tx) error {
				if _, err := tx.GetRuntime(ctx, "before"); err != nil {
					return err
				}
				if in.Add(1) == views {
					close(all)
				}
				<-all
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ended int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()) AS t`, strings.TrimPrefix(u.Path, "/")).Scan(&ended)
	if err != nil {
		t.Fatal(err)
	}
	if ended == 0 {
		t.Fatal("the store has no connection to end")
	}
	// The pool's connections are dead; the store finds out at the
	// first statement and runs the transaction again on a new one.
	if err := create("after"); err != nil {
		t.Fatalf("update after the connections were ended: %v", err)
	}
	err = s.View(ctx, func(tx store.Tx) error {
		_, err := tx.GetRuntime(ctx, "before")
		return err
	})
	if err != nil {
		t.Errorf("view after the connections were ended: %v", err)
	}
}
