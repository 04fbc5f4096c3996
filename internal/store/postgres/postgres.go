// Package postgres implements store.Store on a PostgreSQL database, using
// github.com/jackc/pgx/v5 and its connection pool.
//
// Read-write transactions are serialized, as in the SQLite store, by a
// transaction-scoped advisory lock that every Update takes first: Berth's
// control plane reads, decides and writes inside one Update, and the lock
// makes that safe across every Berth process sharing the database, without
// the serialization failures (and retries of fn, which may have side
// effects) that SERIALIZABLE isolation would bring. Update runs at READ
// COMMITTED, so every statement after the lock sees everything committed
// before the lock was granted; the writers it could miss wait for the lock.
// View runs at REPEATABLE READ, READ ONLY: one snapshot for the whole
// transaction, taken without waiting for writers.
//
// PostgreSQL aborts a whole transaction when one statement fails, where
// SQLite undoes just that statement. Callers of store.Tx may go on after an
// ErrExists or ErrNotFound, so each write runs inside a savepoint, sent in
// the same round trip as the statement.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthrun/berth/internal/store"
)

// migrationFiles holds the schema migrations, applied in the order of their
// names: NNNN_description.sql, numbered from 0001 without gaps.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// Advisory lock keys: the first names Berth, the second the lock. Other
// applications sharing the database are unlikely to use the same pair.
const (
	lockClass   = 0x62657274 // "bert"
	writerLock  = 1          // held by every Update
	migrateLock = 2          // held while migrating the schema
)

// rollbackTimeout bounds the rollback of a transaction whose context is
// done; past it the connection is closed, which rolls back as well.
const rollbackTimeout = 5 * time.Second

// Store is a store.Store kept in a PostgreSQL database. It is safe for
// concurrent use, also by several processes on one database.
type Store struct {
	pool *pgxpool.Pool
}

var _ store.Store = (*Store)(nil)

// Open connects to the database named by dsn, a PostgreSQL connection
// string (postgres://user:password@host:port/db?sslmode=... or
// "host=... dbname=..."), and migrates its schema to the newest version
// this build knows. It refuses a database whose schema is newer than that.
// Errors never hold the password.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgconn's parse errors mask the password.
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	return OpenConfig(ctx, cfg)
}

// OpenConfig is Open with a parsed pool configuration.
func OpenConfig(ctx context.Context, cfg *pgxpool.Config) (*Store, error) {
	where := Describe(cfg.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	if err := migrate(ctx, pool, migrationFS()); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	return &Store{pool: pool}, nil
}

// Describe names the database cfg connects to, as user@host:port/database,
// for logs and errors: it leaves the password and other parameters out.
func Describe(cfg *pgx.ConnConfig) string {
	host := cfg.Host
	if !strings.HasPrefix(host, "/") {
		host = net.JoinHostPort(host, strconv.Itoa(int(cfg.Port)))
	}
	return fmt.Sprintf("%s@%s/%s", cfg.User, host, cfg.Database)
}

// Update implements store.Store. Calling Update again from inside fn waits
// for the writer lock that the outer Update holds, until ctx is done. fn
// may run more than once if its connection is found dead at its first
// statement (see run).
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.run(ctx, fn, true)
}

// View implements store.Store. Writes inside fn fail.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	return s.run(ctx, fn, false)
}

// maxAttempts bounds how often a transaction is tried when its connection
// turns out to be dead.
const maxAttempts = 3

// run runs fn in a transaction (see runOnce). If the transaction could not
// be opened because its connection was gone, which happens to connections
// the pool holds when the server restarts or a proxy drops them, and fn
// passed that error up, nothing ran on the server, so fn is run again on
// another connection.
func (s *Store) run(ctx context.Context, fn func(store.Tx) error, write bool) error {
	for attempt := 1; ; attempt++ {
		err := s.runOnce(ctx, fn, write)
		var oe *openError
		if attempt == maxAttempts || !errors.As(err, &oe) || ctx.Err() != nil || !connectionLost(oe.err) {
			return err
		}
		// What ended one connection (a server restart, a network
		// outage) has most likely ended the pool's others too.
		s.pool.Reset()
	}
}

// connectionLost reports whether err says that the connection failed,
// rather than that the server refused a statement.
func connectionLost(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08 is connection exceptions; 57P01 to 57P03 are the
		// server shutting down, crashed or starting.
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P")
	}
	// Not the server's answer: the network, or a closed connection.
	return true
}

// runOnce runs fn in a transaction, committing it if write is set and fn
// succeeds, and rolling it back otherwise, including when fn panics: the
// deferred rollback runs while the panic goes on up the stack.
func (s *Store) runOnce(ctx context.Context, fn func(store.Tx) error, write bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	// Release drops, rather than pools, a connection left inside a
	// transaction or broken.
	defer conn.Release()
	t := &tx{conn: conn.Conn(), write: write}
	done := false
	defer func() {
		if !done && t.begun {
			// fn's error or panic is what the caller needs; if the
			// rollback fails, closing the connection rolls back too.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
			defer cancel()
			if _, err := t.conn.Exec(rctx, `ROLLBACK`); err != nil {
				t.conn.Close(rctx)
			}
		}
	}()
	if err := fn(t); err != nil {
		return err
	}
	if !write || !t.begun {
		// Nothing to commit: a View's snapshot, or an Update that
		// ran no statement.
		return nil
	}
	// A context that ended while fn ran must not let its writes commit.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	done = true
	tag, err := t.conn.Exec(ctx, `COMMIT`)
	if err != nil {
		t.conn.Close(context.WithoutCancel(ctx))
		return fmt.Errorf("commit transaction: %w", err)
	}
	// COMMIT of a transaction that a failed statement aborted rolls it
	// back and says so only in its tag.
	if tag.String() != "COMMIT" {
		return fmt.Errorf("commit transaction: the transaction was aborted by an earlier error (%s)", tag)
	}
	return nil
}

// Close implements store.Store. It waits for connections in use to be
// returned to the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
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

// migrate brings the schema up to date with the migrations in fsys, whose
// files are named NNNN_description.sql, each with a number of its own.
//
// Applied migrations are rows of schema_migrations. Each migration is
// applied once, in the order of the numbers. Numbers may have gaps, and a
// migration numbered below one already applied is still applied: migrations
// written at the same time on different branches, independent of each
// other, then apply whichever reached a database first. A database with a
// migration this build does not know is refused.
//
// The pending migrations and their rows commit in one transaction
// (PostgreSQL's DDL is transactional), which first takes an advisory lock,
// so that two Berth processes starting at once on an empty database migrate
// one after the other: the second finds the schema current.
func migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) error {
	names, err := fs.Glob(fsys, "*.sql") // sorted
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	known := make(map[int]string, len(names))
	numbers := make([]int, 0, len(names))
	for _, name := range names {
		n, err := migrationNumber(name)
		if err != nil {
			return err
		}
		if other, ok := known[n]; ok {
			return fmt.Errorf("migrations %s and %s have the same number", other, name)
		}
		known[n] = name
		numbers = append(numbers, n) // ascending: names sort by their number
	}
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		_ = tx.Rollback(rctx) // no-op after commit
	}()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, migrateLock); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	_, err = tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer     NOT NULL PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`)
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	newest := 0
	if len(numbers) > 0 {
		newest = numbers[len(numbers)-1]
	}
	done := make(map[int]bool, len(applied))
	for _, v := range applied {
		if v > newest {
			return fmt.Errorf("database schema version %d is newer than version %d that this build knows; use a newer Berth", v, newest)
		}
		if _, ok := known[v]; !ok {
			return fmt.Errorf("database schema has migration %d, which this build does not know; use a newer Berth", v)
		}
		done[v] = true
	}
	pending := 0
	for _, n := range numbers {
		if done[n] {
			continue
		}
		pending++
		name := known[n]
		script, err := fs.ReadFile(fsys, name)
		if err != nil {
			return fmt.Errorf("read migration: %w", err)
		}
		// Without arguments pgx sends the script with the simple
		// protocol, which runs several statements.
		if _, err := tx.Exec(ctx, string(script)); err != nil {
			return fmt.Errorf("apply migration %s: %w", name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, n, name); err != nil {
			return fmt.Errorf("record migration %s: %w", name, err)
		}
	}
	if pending == 0 {
		return nil
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit migration: %w", err)
	}
	return nil
}

// migrationNumber returns the number that a migration's file name,
// NNNN_description.sql, starts with.
func migrationNumber(name string) (int, error) {
	num, desc, ok := strings.Cut(name, "_")
	n, err := strconv.Atoi(num)
	if !ok || len(num) != 4 || strings.Trim(num, "0123456789") != "" || err != nil || n < 1 || desc == ".sql" {
		return 0, fmt.Errorf("migration %s: name must be NNNN_description.sql, numbered from 0001", name)
	}
	return n, nil
}

// classify maps PostgreSQL's constraint errors to the store's: a taken
// primary key or unique column is store.ErrExists, a missing parent row of
// a foreign key is store.ErrNotFound. Other errors pass through.
func classify(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Code {
	case "23505": // unique_violation
		return store.ErrExists
	case "23503": // foreign_key_violation
		return store.ErrNotFound
	}
	return err
}
