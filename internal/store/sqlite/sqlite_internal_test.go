package sqlite

import (
	"database/sql"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// openRaw opens a database file for migrate, as Open opens its writer.
func openRaw(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(path, url.Values{"_txlock": {"immediate"}}))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func userVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRowContext(t.Context(), "PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func tables(t *testing.T, db *sql.DB) string {
	t.Helper()
	var names sql.NullString
	err := db.QueryRowContext(t.Context(),
		"SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name)").Scan(&names)
	if err != nil {
		t.Fatal(err)
	}
	return names.String
}

func TestMigrate(t *testing.T) {
	one := &fstest.MapFile{Data: []byte("CREATE TABLE a (x INTEGER); CREATE TABLE b (y INTEGER);")}
	two := &fstest.MapFile{Data: []byte("-- adds c\nCREATE TABLE c (z INTEGER);")}
	broken := &fstest.MapFile{Data: []byte("CREATE TABLE d (z INTEGER); CREATE TABLE oops (")}
	for _, tc := range []struct {
		name        string
		start       fstest.MapFS // applied first, if any
		fsys        fstest.MapFS
		wantErr     string
		wantVersion int
		wantTables  string
	}{
		{
			name:        "fresh",
			fsys:        fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two},
			wantVersion: 2, wantTables: "a,b,c",
		},
		{
			name:        "pending",
			start:       fstest.MapFS{"0001_ab.sql": one},
			fsys:        fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two},
			wantVersion: 2, wantTables: "a,b,c",
		},
		{
			// Applying 0001 again would fail: the tables exist.
			name:        "current",
			start:       fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two},
			fsys:        fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two},
			wantVersion: 2, wantTables: "a,b,c",
		},
		{
			name:        "broken migration applies nothing",
			fsys:        fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two, "0003_broken.sql": broken},
			wantErr:     "apply migration 0003_broken.sql",
			wantVersion: 0, wantTables: "",
		},
		{
			name:        "newer database",
			start:       fstest.MapFS{"0001_ab.sql": one, "0002_c.sql": two},
			fsys:        fstest.MapFS{"0001_ab.sql": one},
			wantErr:     "schema version 2 is newer than version 1",
			wantVersion: 2, wantTables: "a,b,c",
		},
		{
			name:        "gap in numbers",
			fsys:        fstest.MapFS{"0001_ab.sql": one, "0003_c.sql": two},
			wantErr:     "migration 0003_c.sql: name must start with 0002_",
			wantVersion: 0, wantTables: "",
		},
		{
			name:        "no migrations",
			fsys:        fstest.MapFS{},
			wantVersion: 0, wantTables: "",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openRaw(t, filepath.Join(t.TempDir(), "m.db"))
			if tc.start != nil {
				if err := migrate(t.Context(), db, tc.start); err != nil {
					t.Fatalf("first migration: %v", err)
				}
			}
			err := migrate(t.Context(), db, tc.fsys)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("migrate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("migrate: got error %v, want one saying %q", err, tc.wantErr)
			}
			if got := userVersion(t, db); got != tc.wantVersion {
				t.Errorf("schema version %d, want %d", got, tc.wantVersion)
			}
			if got := tables(t, db); got != tc.wantTables {
				t.Errorf("tables %q, want %q", got, tc.wantTables)
			}
		})
	}
}

// TestEmbeddedMigrations checks that the shipped migrations apply and that
// the schema version matches their count.
func TestEmbeddedMigrations(t *testing.T) {
	db := openRaw(t, filepath.Join(t.TempDir(), "m.db"))
	if err := migrate(t.Context(), db, migrationFS()); err != nil {
		t.Fatal(err)
	}
	if got, want := tables(t, db), "endpoints,idempotency,replicas,runtimes,sessions,versions"; got != want {
		t.Errorf("tables %q, want %q", got, want)
	}
	if got := userVersion(t, db); got != 2 {
		t.Errorf("schema version %d, want 2", got)
	}
}

// TestPragmas checks the settings the Store's guarantees rest on.
func TestPragmas(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.w, "journal_mode", "wal"},
		{s.w, "synchronous", "2"}, // FULL
		{s.w, "foreign_keys", "1"},
		{s.w, "busy_timeout", "10000"},
		{s.w, "query_only", "0"},
		{s.r, "journal_mode", "wal"},
		{s.r, "busy_timeout", "10000"},
		{s.r, "query_only", "1"},
	} {
		var got string
		if err := tc.db.QueryRowContext(t.Context(), "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			pool := "writer"
			if tc.db == s.r {
				pool = "reader"
			}
			t.Errorf("%s: PRAGMA %s = %s, want %s", pool, tc.pragma, got, tc.want)
		}
	}
}

func TestTimestamp(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   time.Time
		want string // "" for an error
	}{
		{"zero", time.Time{}, "0001-01-01T00:00:00.000000000Z"},
		{"nanoseconds", time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), "2025-01-02T03:04:05.000000006Z"},
		{"other zone", time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("", -3600)), "2025-01-02T04:04:05.000000000Z"},
		{"last year", time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), "9999-12-31T23:59:59.999999999Z"},
		{"year 10000", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), ""},
		{"before year 1", time.Time{}.Add(-time.Nanosecond), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := timestamp(tc.in).Value()
			if tc.want == "" {
				if err == nil {
					t.Errorf("Value() = %v, want an error", v)
				}
				return
			}
			if err != nil || v != tc.want {
				t.Fatalf("Value() = %v, %v; want %s", v, err, tc.want)
			}
			var back time.Time
			if err := (*timestamp)(&back).Scan(v); err != nil {
				t.Fatal(err)
			}
			if !back.Equal(tc.in) || back.Location() != time.UTC {
				t.Errorf("scanned back %s, want %s in UTC", back, tc.in)
			}
		})
	}
	for _, bad := range []any{int64(0), nil, "2025-01-02", "yesterday"} {
		var tm time.Time
		if err := (*timestamp)(&tm).Scan(bad); err == nil {
			t.Errorf("Scan(%#v): no error", bad)
		}
	}
}

// TestTimestampOrder checks that stored text sorts as the times do, which
// DeleteIdempotencyBefore relies on.
func TestTimestampOrder(t *testing.T) {
	times := []time.Time{
		{},
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2025, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(2025, 1, 1, 0, 0, 0, 10, time.UTC),
		time.Date(2025, 1, 1, 0, 0, 1, 0, time.UTC),
	}
	for i := 1; i < len(times); i++ {
		a, _ := timestamp(times[i-1]).Value()
		b, _ := timestamp(times[i]).Value()
		if a.(string) >= b.(string) {
			t.Errorf("%s sorts at or after %s", a, b)
		}
	}
}
