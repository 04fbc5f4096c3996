// Package sqlite implements store.Store on a SQLite database file, using the
// pure-Go driver modernc.org/sqlite.
//
// The database runs in WAL mode with synchronous=FULL: WAL keeps a crash in
// the middle of a write from leaving a half-written transaction behind, and
// FULL makes every commit reach the disk before Update returns, so a
// transaction the caller saw succeed survives a power loss as well as a
// process crash (NORMAL would keep the database consistent but could lose the
// last commits on power loss, and the control plane acknowledges requests
// after commit).
//
// SQLite allows one writer at a time. The Store holds a pool of exactly one
// read-write connection, which serializes Update calls inside the process,
// and starts each read-write transaction with BEGIN IMMEDIATE, which takes
// the write lock up front so a transaction never fails half-way with
// SQLITE_BUSY because another process wrote first. View runs on a separate
// pool of read-only connections that, thanks to WAL, read concurrently with
// each other and with the writer.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/berthrun/berth/internal/store"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// migrationFiles holds the schema migrations, applied in the order of their
// names: NNNN_description.sql, numbered from 0001 without gaps.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// busyTimeout is how long a connection waits for a lock held by another
// process (or by a checkpoint) before giving up with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// Store is a store.Store kept in one SQLite database file. It is safe for
// concurrent use.
type Store struct {
	w *sql.DB // one read-write connection; serializes Update
	r *sql.DB // read-only connections for View
}

var _ store.Store = (*Store)(nil)

// Open opens the SQLite database at path, creating the file if it does not
// exist, and migrates its schema to the newest version this build knows. It
// refuses a database whose schema is newer than that.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || path == ":memory:" {
		// An in-memory database would be private to each connection,
		// and the Store uses several.
		return nil, fmt.Errorf("open sqlite store: path %q is not a file path", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	timeout := fmt.Sprint(busyTimeout.Milliseconds())
	w, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_busy_timeout": {timeout},
		"_txlock":       {"immediate"},
		"_pragma":       {"journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(1)"},
	}))
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	if err := migrate(ctx, w, migrationFS()); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_busy_timeout": {timeout},
		"_pragma":       {"foreign_keys(1)"},
		// View must not write: query_only turns any write into an error.
		"_query_only": {"1"},
	}))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	// WAL readers do not block each other, but a connection per CPU is
	// all the parallelism there is; the floor covers Views that wait on
	// the caller rather than on SQLite.
	r.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	return &Store{w: w, r: r}, nil
}

// dsn returns the driver's name for the database file at the absolute path
// abs with the given driver parameters. It is a file: URI, so that a path
// holding '?', '#' or '%' reaches SQLite intact.
func dsn(abs string, params url.Values) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: params.Encode()}
	return u.String()
}

// Update implements store.Store. Calling Update again from inside fn
// deadlocks until ctx is done, because the one writer connection is busy.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	return run(ctx, s.w, fn, true)
}

// View implements store.Store. Writes inside fn fail.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	return run(ctx, s.r, fn, false)
}

// run runs fn in a transaction on db, committing it if write is set and fn
// succeeds, and rolling it back otherwise, including when fn panics: the
// deferred rollback runs while the panic goes on up the stack.
func run(ctx context.Context, db *sql.DB, fn func(store.Tx) error, write bool) error {
	sqlTx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: !write})
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			// The error is of no use: fn's error or panic is what the
			// caller needs, and an unfinished transaction is dropped by
			// SQLite anyway.
			_ = sqlTx.Rollback()
		}
	}()
	if err := fn(&tx{tx: sqlTx}); err != nil {
		return err
	}
	if !write {
		return nil
	}
	committed = true
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// Close implements store.Store.
func (s *Store) Close() error {
	// The writer closes last, so that it checkpoints the WAL into the
	// database file once no reader holds the WAL open.
	return errors.Join(s.r.Close(), s.w.Close())
}

// migrationFS returns the embedded migrations, rooted at their directory.
func migrationFS() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		// fs.Sub fails only on an invalid path, and this one is constant.
		panic(err)
	}
	return sub
}

// migrate brings the schema of db up to the newest migration in fsys, whose
// files are named NNNN_description.sql and numbered from 0001 without gaps.
//
// The schema version is PRAGMA user_version, which SQLite keeps in the
// database header and changes inside the transaction: the pending
// migrations and the new version commit together or not at all, and the
// BEGIN IMMEDIATE of the writer keeps two processes from migrating at once.
func migrate(ctx context.Context, db *sql.DB, fsys fs.FS) error {
	names, err := fs.Glob(fsys, "*.sql") // sorted
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	for i, name := range names {
		if want := fmt.Sprintf("%04d_", i+1); !strings.HasPrefix(name, want) {
			return fmt.Errorf("migration %s: name must start with %s", name, want)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback()
	var have int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&have); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if have > len(names) {
		return fmt.Errorf("database schema version %d is newer than version %d that this build knows; use a newer Berth", have, len(names))
	}
	if have == len(names) {
		return nil
	}
	for _, name := range names[have:] {
		script, err := fs.ReadFile(fsys, name)
		if err != nil {
			return fmt.Errorf("read migration: %w", err)
		}
		if _, err := tx.ExecContext(ctx, string(script)); err != nil {
			return fmt.Errorf("apply migration %s: %w", name, err)
		}
	}
	// PRAGMA takes no bound parameters; the number is ours, not input.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(names))); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migration: %w", err)
	}
	return nil
}

// classify maps SQLite's constraint errors to the store's: a taken primary
// key or unique column is store.ErrExists, a missing parent row of a
// foreign key is store.ErrNotFound. Other errors pass through.
func classify(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return store.ErrExists
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return store.ErrNotFound
	}
	return err
}

// timeLayout is how timestamps are stored: UTC, fixed width, so that text
// order is time order, with nanoseconds so that they round-trip exactly.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// timestamp stores a time.Time as text in timeLayout. Convert a time to
// timestamp to bind it and a *time.Time to *timestamp to scan into it.
type timestamp time.Time

// Value implements driver.Valuer.
func (ts timestamp) Value() (driver.Value, error) {
	t := time.Time(ts).UTC()
	if y := t.Year(); y < 1 || y > 9999 {
		// Outside these years the text would not be fixed width.
		return nil, fmt.Errorf("time %s is outside the years 1 to 9999", t)
	}
	return t.Format(timeLayout), nil
}

// Scan implements sql.Scanner.
func (ts *timestamp) Scan(src any) error {
	var s string
	switch v := src.(type) {
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		return fmt.Errorf("scan time: got %T, want text", src)
	}
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return fmt.Errorf("scan time: %w", err)
	}
	*ts = timestamp(t)
	return nil
}
