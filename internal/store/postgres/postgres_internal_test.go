package postgres

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthrun/berth/internal/store"
	"github.com/berthrun/berth/internal/store/postgres/pgtest"
	"github.com/berthrun/berth/internal/store/storetest"
)

// testPG is the PostgreSQL server of this package's tests, started by the
// first test that asks for a database.
var testPG *pgtest.Server

func TestMain(m *testing.M) {
	// A child of the crash test writes instead of testing.
	if code, ok := storetest.CrashChild(func(ctx context.Context, dsn string) (store.Store, error) {
		return Open(ctx, dsn)
	}); ok {
		os.Exit(code)
	}
	os.Exit(pgtest.Main(m, &testPG))
}

// rawPool opens a pool on a new test database, without migrating it.
func rawPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), testPG.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// schema returns the applied migrations as version:name pairs and the
// tables of the public schema, comma-separated.
func schema(t *testing.T, pool *pgxpool.Pool) (migrations, tables string) {
	t.Helper()
	err := pool.QueryRow(t.Context(), `SELECT coalesce(string_agg(table_name, ',' ORDER BY table_name), '')
		FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> 'schema_migrations'`).Scan(&tables)
	if err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := pool.QueryRow(t.Context(), `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		err = pool.QueryRow(t.Context(),
			`SELECT coalesce(string_agg(version || ':' || name, ',' ORDER BY version), '') FROM schema_migrations`).Scan(&migrations)
		if err != nil {
			t.Fatal(err)
		}
	}
	return migrations, tables
}

func TestMigrate(t *testing.T) {
	one := &fstest.MapFile{Data: []byte("CREATE TABLE a (x integer); CREATE TABLE b (y integer);")}
	two := &fstest.MapFile{Data: []byte("-- adds c\nCREATE TABLE c (z integer);")}
	three := &fstest.MapFile{Data: []byte("CREATE TABLE e (w integer);")}
	broken := &fstest.MapFile{Data: []byte("CREATE TABLE d (z integer); CREATE TABLE oops (")}
	for _, tc := range []struct {
		name           string
		start          fstest.MapFS // applied first, if any
		fsys           fstest.MapFS
		wantErr        string
		wantMigrations string
		wantTables     string
	}{
		{
			name:           "fresh",
			fsys:           fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two},
			wantMigrations: "1:0001_ab.sql,2:0002_c.sql", wantTables: "a,b,c",
		},
		{
			name:           "pending",
			start:          fstest.MapFS{"0001_ab.sql": one},
			fsys:           fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two},
			wantMigrations: "1:0001_ab.sql,2:0002_c.sql", wantTables: "a,b,c",
		},
		{
			// Applying 0001 again would fail: the tables exist.
			name:           "current",
			start:          fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two},
			fsys:           fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two},
			wantMigrations: "1:0001_ab.sql,2:0002_c.sql", wantTables: "a,b,c",
		},
		{
			// DDL is transactional: the tables of 0001 and 0002 go too.
			name:    "broken migration applies nothing",
			fsys:    fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two, "0003_broken.sql": broken},
			wantErr: "apply migration 0003_broken.sql",
		},
		{
			name:           "newer database",
			start:          fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two},
			fsys:           fstest.MapFS{"0001_ab.sql": one},
			wantErr:        "schema version 2 is newer than version 1",
			wantMigrations: "1:0001_ab.sql,2:0002_c.sql", wantTables: "a,b,c",
		},
		{
			// Migrations from branches written at the same time.
			name:           "gap in numbers",
			fsys:           fstest.MapFS{"0001_ab.sql": one, "0003_c.sql": two},
			wantMigrations: "1:0001_ab.sql,3:0003_c.sql", wantTables: "a,b,c",
		},
		{
			name:           "gap filled later",
			start:          fstest.MapFS{"0001_ab.sql": one, "0003_c.sql": two},
			fsys:           fstest.MapFS{"0001_ab.sql": one, "0002_e.sql": three, "0003_c.sql": two},
			wantMigrations: "1:0001_ab.sql,2:0002_e.sql,3:0003_c.sql", wantTables: "a,b,c,e",
		},
		{
			name:           "unknown migration in the database",
			start:          fstest.MapFS{"0001_ab.sql": one, "0002_e.sql": three, "0003_c.sql": two},
			fsys:           fstest.MapFS{"0001_ab.sql": one, "0003_c.sql": two},
			wantErr:        "has migration 2, which this build does not know",
			wantMigrations: "1:0001_ab.sql,2:0002_e.sql,3:0003_c.sql", wantTables: "a,b,c,e",
		},
		{
			name:    "same number twice",
			fsys:    fstest.MapFS{"0001_ab.sql": one, "0001_c.sql": two},
			wantErr: "migrations 0001_ab.sql and 0001_c.sql have the same number",
		},
		{
			name:    "bad name",
			fsys:    fstest.MapFS{"0001_ab.sql": one, "+002_c.sql": two},
			wantErr: "migration +002_c.sql: name must be NNNN_description.sql",
		},
		{
			name:    "number zero",
			fsys:    fstest.MapFS{"0000_ab.sql": one},
			wantErr: "migration 0000_ab.sql: name must be",
		},
		{
			name: "no migrations",
			fsys: fstest.MapFS{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := rawPool(t)
			if tc.start != nil {
				if err := migrate(t.Context(), pool, tc.start); err != nil {
					t.Fatalf("first migration: %v", err)
				}
			}
			err := migrate(t.Context(), pool, tc.fsys)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("migrate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("migrate: got error %v, want one saying %q", err, tc.wantErr)
			}
			migrations, tables := schema(t, pool)
			if migrations != tc.wantMigrations || tables != tc.wantTables {
				t.Errorf("migrations %q and tables %q, want %q and %q", migrations, tables, tc.wantMigrations, tc.wantTables)
			}
		})
	}
}

// TestEmbeddedMigrations checks that the shipped migrations apply.
func TestEmbeddedMigrations(t *testing.T) {
	pool := rawPool(t)
	if err := migrate(t.Context(), pool, migrationFS()); err != nil {
		t.Fatal(err)
	}
	migrations, tables := schema(t, pool)
	if want := "artifact_blobs,artifact_chunks,artifact_refs,endpoints,idempotency,replicas,runtimes,sessions,versions"; tables != want {
		t.Errorf("tables %q, want %q", tables, want)
	}
	if want := "1:0001_init.sql,2:0002_sessions.sql,3:0003_artifacts.sql"; migrations != want {
		t.Errorf("migrations %q, want %q", migrations, want)
	}
}

// TestCommitAborted checks that an Update whose transaction a failed
// statement aborted reports an error, though fn returned nil: COMMIT then
// rolls back and says so only in its tag.
func TestCommitAborted(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, testPG.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Update(ctx, func(stx store.Tx) error {
		if err := stx.CreateRuntime(ctx, store.Runtime{ID: "rt", Name: "rt"}); err != nil {
			return err
		}
		// A statement outside the store's savepoints, failing.
		if _, err := stx.(*tx).conn.Exec(ctx, `SELECT 1/0`); err == nil {
			return errors.New("SELECT 1/0: no error")
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "aborted") {
		t.Errorf("update: got error %v, want one saying the transaction was aborted", err)
	}
	err = s.View(ctx, func(stx store.Tx) error {
		_, err := stx.GetRuntime(ctx, "rt")
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("runtime of the aborted transaction: got error %v, want %v", err, store.ErrNotFound)
	}
}
