package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/berthrun/berth/internal/store"
)

// tx implements store.Tx on a connection, opening the transaction with its
// first statement.
type tx struct {
	conn  *pgx.Conn
	write bool // an Update's transaction, else a View's
	begun bool // the opening statements are sent
}

// batch returns a batch that first opens the transaction, if that is not
// done yet, and the number of opening statements it holds. They go in one
// round trip with the transaction's first statement rather than in one of
// their own: a read-write transaction begins and takes the writer lock, a
// read-only one begins.
func (t *tx) batch() (*pgx.Batch, int) {
	b := &pgx.Batch{}
	if t.begun {
		return b, 0
	}
	t.begun = true
	if !t.write {
		b.Queue(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`)
		return b, 1
	}
	b.Queue(`BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE`)
	b.Queue(`SELECT pg_advisory_xact_lock($1, $2)`, lockClass, writerLock)
	return b, 2
}

// opened reads the results of the n opening statements of a batch.
func opened(br pgx.BatchResults, n int) error {
	for range n {
		if _, err := br.Exec(); err != nil {
			return &openError{err: err}
		}
	}
	return nil
}

// openError reports that a transaction could not be opened, so that no
// statement of it ran.
type openError struct{ err error }

func (e *openError) Error() string { return "begin transaction: " + e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

// exec runs a write inside a savepoint, so that a failing statement leaves
// the transaction usable, as it does in SQLite, and maps constraint errors
// to the store's. The savepoint, the statement and its release go in one
// round trip. It returns the number of rows the statement affected.
func (t *tx) exec(ctx context.Context, query string, args ...any) (int64, error) {
	if err := checkText(args); err != nil {
		return 0, err
	}
	b, n := t.batch()
	b.Queue(`SAVEPOINT berth_stmt`)
	b.Queue(query, args...)
	b.Queue(`RELEASE SAVEPOINT berth_stmt`)
	br := t.conn.SendBatch(ctx, b)
	if err := opened(br, n); err != nil {
		br.Close()
		return 0, err
	}
	_, spErr := br.Exec()
	tag, err := br.Exec()
	_, relErr := br.Exec()
	closeErr := br.Close()
	if spErr != nil {
		return 0, spErr
	}
	if err != nil {
		// The release failed too, since the transaction is in error;
		// undo the statement alone.
		if _, rbErr := t.conn.Exec(ctx, `ROLLBACK TO SAVEPOINT berth_stmt; RELEASE SAVEPOINT berth_stmt`); rbErr != nil {
			return 0, errors.Join(classify(err), fmt.Errorf("roll back the failed statement: %w", rbErr))
		}
		return 0, classify(err)
	}
	if err := errors.Join(relErr, closeErr); err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// execOne runs a write that addresses one row by its key, and reports
// store.ErrNotFound if there is no such row.
func (t *tx) execOne(ctx context.Context, query string, args ...any) error {
	n, err := t.exec(ctx, query, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// query runs a query, in the batch that opens the transaction if it is the
// first statement, and calls each with its rows.
func (t *tx) query(ctx context.Context, each func(pgx.Rows) error, query string, args ...any) error {
	if t.begun {
		rows, err := t.conn.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		return each(rows)
	}
	b, n := t.batch()
	b.Queue(query, args...)
	br := t.conn.SendBatch(ctx, b)
	if err := opened(br, n); err != nil {
		br.Close()
		return err
	}
	rows, err := br.Query()
	if err != nil {
		br.Close()
		return err
	}
	err = each(rows)
	rows.Close()
	return errors.Join(err, br.Close())
}

// checkText refuses string arguments that PostgreSQL's text cannot hold:
// invalid UTF-8 and NUL bytes, which SQLite stores. Sent to the server they
// would fail the statement and abort the transaction.
func checkText(args []any) error {
	for _, a := range args {
		if s, ok := a.(string); ok && (!utf8.ValidString(s) || strings.ContainsRune(s, 0)) {
			return fmt.Errorf("text %q is not valid UTF-8 without NUL bytes, as PostgreSQL requires", s)
		}
	}
	return nil
}

// get runs a query for one row and scans it, reporting store.ErrNotFound if
// there is none.
func get[T any](ctx context.Context, t *tx, scan func(pgx.Row) (T, error), query string, args ...any) (T, error) {
	var v T
	if checkText(args) != nil {
		// No row can hold a key that checkText refuses to write.
		return v, store.ErrNotFound
	}
	err := t.query(ctx, func(rows pgx.Rows) error {
		if !rows.Next() {
			if err := rows.Err(); err != nil {
				return err
			}
			return store.ErrNotFound
		}
		var err error
		if v, err = scan(rows); err != nil {
			return err
		}
		rows.Close()
		return rows.Err()
	}, query, args...)
	return v, err
}

// list runs a query and scans every row.
func list[T any](ctx context.Context, t *tx, scan func(pgx.Row) (T, error), query string, args ...any) ([]T, error) {
	if err := checkText(args); err != nil {
		return nil, err
	}
	var out []T
	err := t.query(ctx, func(rows pgx.Rows) error {
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return rows.Err()
	}, query, args...)
	return out, err
}

// sqlLimit turns a page size into a LIMIT argument, where NULL means none.
func sqlLimit(limit int) *int {
	if limit <= 0 {
		return nil
	}
	return &limit
}

// utc returns tm in UTC: pgx returns timestamptz values in time.Local.
func utc(tm *time.Time) {
	*tm = tm.UTC()
}

const runtimeColumns = `id, name, latest_version, created_at, updated_at, deleting`

func scanRuntime(s pgx.Row) (store.Runtime, error) {
	var r store.Runtime
	err := s.Scan(&r.ID, &r.Name, &r.LatestVersion, &r.CreatedAt, &r.UpdatedAt, &r.Deleting)
	utc(&r.CreatedAt)
	utc(&r.UpdatedAt)
	return r, err
}

func (t *tx) CreateRuntime(ctx context.Context, r store.Runtime) error {
	if r.ID == "" || r.Name == "" {
		return fmt.Errorf("create runtime %q named %q: ID and name must not be empty", r.ID, r.Name)
	}
	_, err := t.exec(ctx, `INSERT INTO runtimes (`+runtimeColumns+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		r.ID, r.Name, r.LatestVersion, r.CreatedAt, r.UpdatedAt, r.Deleting)
	if err != nil {
		return fmt.Errorf("create runtime %q named %q: %w", r.ID, r.Name, err)
	}
	return nil
}

func (t *tx) GetRuntime(ctx context.Context, id string) (store.Runtime, error) {
	r, err := get(ctx, t, scanRuntime, `SELECT `+runtimeColumns+` FROM runtimes WHERE id = $1`, id)
	if err != nil {
		return r, fmt.Errorf("get runtime %q: %w", id, err)
	}
	return r, nil
}

func (t *tx) GetRuntimeByName(ctx context.Context, name string) (store.Runtime, error) {
	r, err := get(ctx, t, scanRuntime, `SELECT `+runtimeColumns+` FROM runtimes WHERE name = $1`, name)
	if err != nil {
		return r, fmt.Errorf("get runtime named %q: %w", name, err)
	}
	return r, nil
}

func (t *tx) UpdateRuntime(ctx context.Context, r store.Runtime) error {
	if r.Name == "" {
		return fmt.Errorf("update runtime %q: name must not be empty", r.ID)
	}
	err := t.execOne(ctx, `UPDATE runtimes SET name = $1, latest_version = $2, created_at = $3, updated_at = $4, deleting = $5
		WHERE id = $6`,
		r.Name, r.LatestVersion, r.CreatedAt, r.UpdatedAt, r.Deleting, r.ID)
	if err != nil {
		return fmt.Errorf("update runtime %q: %w", r.ID, err)
	}
	return nil
}

func (t *tx) DeleteRuntime(ctx context.Context, id string) error {
	// The foreign keys' ON DELETE CASCADE removes versions and endpoints;
	// session records have no foreign key (see migration 0002), so the
	// statement removes them too, locking them in key order as the
	// registry's statements do (see sessions.go).
	if err := t.execOne(ctx, `WITH l AS (
			SELECT session_id FROM sessions WHERE runtime_id = $1 ORDER BY session_id FOR UPDATE
		), s AS (
			DELETE FROM sessions USING l WHERE sessions.runtime_id = $1 AND sessions.session_id = l.session_id
		)
		DELETE FROM runtimes WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete runtime %q: %w", id, err)
	}
	return nil
}

func (t *tx) ListRuntimes(ctx context.Context, afterID string, limit int) ([]store.Runtime, error) {
	rs, err := list(ctx, t, scanRuntime, `SELECT `+runtimeColumns+` FROM runtimes WHERE id > $1 ORDER BY id LIMIT $2`,
		afterID, sqlLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list runtimes after %q: %w", afterID, err)
	}
	return rs, nil
}

const versionColumns = `runtime_id, number, status, failure_reason, artifact, config, created_at, updated_at`

func scanVersion(s pgx.Row) (store.Version, error) {
	var v store.Version
	err := s.Scan(&v.RuntimeID, &v.Number, &v.Status, &v.FailureReason, &v.Artifact, &v.Config, &v.CreatedAt, &v.UpdatedAt)
	utc(&v.CreatedAt)
	utc(&v.UpdatedAt)
	return v, err
}

func (t *tx) CreateVersion(ctx context.Context, v store.Version) error {
	if v.Number < 1 {
		return fmt.Errorf("create version %d of runtime %q: number must be 1 or more", v.Number, v.RuntimeID)
	}
	_, err := t.exec(ctx, `INSERT INTO versions (`+versionColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		v.RuntimeID, v.Number, v.Status, v.FailureReason, v.Artifact, v.Config, v.CreatedAt, v.UpdatedAt)
	if err != nil {
		// A missing runtime breaks the foreign key: ErrNotFound.
		return fmt.Errorf("create version %d of runtime %q: %w", v.Number, v.RuntimeID, err)
	}
	return nil
}

func (t *tx) GetVersion(ctx context.Context, runtimeID string, number int) (store.Version, error) {
	v, err := get(ctx, t, scanVersion, `SELECT `+versionColumns+` FROM versions WHERE runtime_id = $1 AND number = $2`,
		runtimeID, number)
	if err != nil {
		return v, fmt.Errorf("get version %d of runtime %q: %w", number, runtimeID, err)
	}
	return v, nil
}

func (t *tx) UpdateVersion(ctx context.Context, v store.Version) error {
	err := t.execOne(ctx, `UPDATE versions SET status = $1, failure_reason = $2, artifact = $3, config = $4, created_at = $5,
		updated_at = $6 WHERE runtime_id = $7 AND number = $8`,
		v.Status, v.FailureReason, v.Artifact, v.Config, v.CreatedAt, v.UpdatedAt, v.RuntimeID, v.Number)
	if err != nil {
		return fmt.Errorf("update version %d of runtime %q: %w", v.Number, v.RuntimeID, err)
	}
	return nil
}

func (t *tx) DeleteVersion(ctx context.Context, runtimeID string, number int) error {
	if err := t.execOne(ctx, `DELETE FROM versions WHERE runtime_id = $1 AND number = $2`, runtimeID, number); err != nil {
		return fmt.Errorf("delete version %d of runtime %q: %w", number, runtimeID, err)
	}
	return nil
}

func (t *tx) ListVersions(ctx context.Context, runtimeID string, before int, limit int) ([]store.Version, error) {
	below := before
	if below <= 0 {
		below = math.MaxInt64
	}
	vs, err := list(ctx, t, scanVersion, `SELECT `+versionColumns+` FROM versions
		WHERE runtime_id = $1 AND number < $2 ORDER BY number DESC LIMIT $3`,
		runtimeID, below, sqlLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list versions of runtime %q before %d: %w", runtimeID, before, err)
	}
	return vs, nil
}

// ListVersionsByArtifact implements store.Tx. The versions come ordered by
// runtime ID, then number.
func (t *tx) ListVersionsByArtifact(ctx context.Context, artifact string) ([]store.Version, error) {
	vs, err := list(ctx, t, scanVersion, `SELECT `+versionColumns+` FROM versions
		WHERE artifact = $1 ORDER BY runtime_id, number`, artifact)
	if err != nil {
		return nil, fmt.Errorf("list versions of artifact %q: %w", artifact, err)
	}
	return vs, nil
}

const endpointColumns = `runtime_id, name, id, description, live_version, target_version, status, failure_reason, created_at, updated_at`

func scanEndpoint(s pgx.Row) (store.Endpoint, error) {
	var e store.Endpoint
	err := s.Scan(&e.RuntimeID, &e.Name, &e.ID, &e.Description, &e.LiveVersion, &e.TargetVersion, &e.Status,
		&e.FailureReason, &e.CreatedAt, &e.UpdatedAt)
	utc(&e.CreatedAt)
	utc(&e.UpdatedAt)
	return e, err
}

func (t *tx) CreateEndpoint(ctx context.Context, e store.Endpoint) error {
	if e.Name == "" {
		return fmt.Errorf("create endpoint of runtime %q: name must not be empty", e.RuntimeID)
	}
	_, err := t.exec(ctx, `INSERT INTO endpoints (`+endpointColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		e.RuntimeID, e.Name, e.ID, e.Description, e.LiveVersion, e.TargetVersion, e.Status, e.FailureReason,
		e.CreatedAt, e.UpdatedAt)
	if err != nil {
		// A missing runtime breaks the foreign key: ErrNotFound.
		return fmt.Errorf("create endpoint %q of runtime %q: %w", e.Name, e.RuntimeID, err)
	}
	return nil
}

func (t *tx) GetEndpoint(ctx context.Context, runtimeID, name string) (store.Endpoint, error) {
	e, err := get(ctx, t, scanEndpoint, `SELECT `+endpointColumns+` FROM endpoints WHERE runtime_id = $1 AND name = $2`,
		runtimeID, name)
	if err != nil {
		return e, fmt.Errorf("get endpoint %q of runtime %q: %w", name, runtimeID, err)
	}
	return e, nil
}

func (t *tx) UpdateEndpoint(ctx context.Context, e store.Endpoint) error {
	err := t.execOne(ctx, `UPDATE endpoints SET id = $1, description = $2, live_version = $3, target_version = $4,
		status = $5, failure_reason = $6, created_at = $7, updated_at = $8 WHERE runtime_id = $9 AND name = $10`,
		e.ID, e.Description, e.LiveVersion, e.TargetVersion, e.Status, e.FailureReason,
		e.CreatedAt, e.UpdatedAt, e.RuntimeID, e.Name)
	if err != nil {
		return fmt.Errorf("update endpoint %q of runtime %q: %w", e.Name, e.RuntimeID, err)
	}
	return nil
}

func (t *tx) DeleteEndpoint(ctx context.Context, runtimeID, name string) error {
	if err := t.execOne(ctx, `DELETE FROM endpoints WHERE runtime_id = $1 AND name = $2`, runtimeID, name); err != nil {
		return fmt.Errorf("delete endpoint %q of runtime %q: %w", name, runtimeID, err)
	}
	return nil
}

func (t *tx) ListEndpoints(ctx context.Context, runtimeID, afterName string, limit int) ([]store.Endpoint, error) {
	es, err := list(ctx, t, scanEndpoint, `SELECT `+endpointColumns+` FROM endpoints
		WHERE runtime_id = $1 AND name > $2 ORDER BY name LIMIT $3`,
		runtimeID, afterName, sqlLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list endpoints of runtime %q after %q: %w", runtimeID, afterName, err)
	}
	return es, nil
}

func scanIdempotency(s pgx.Row) (store.Idempotency, error) {
	var rec store.Idempotency
	err := s.Scan(&rec.Key, &rec.RequestHash, &rec.Result, &rec.CreatedAt)
	utc(&rec.CreatedAt)
	return rec, err
}

func (t *tx) GetIdempotency(ctx context.Context, key string) (store.Idempotency, error) {
	rec, err := get(ctx, t, scanIdempotency, `SELECT key, request_hash, result, created_at FROM idempotency WHERE key = $1`, key)
	if err != nil {
		return rec, fmt.Errorf("get idempotency record %q: %w", key, err)
	}
	return rec, nil
}

func (t *tx) PutIdempotency(ctx context.Context, rec store.Idempotency) error {
	if rec.Key == "" {
		return errors.New("put idempotency record: key must not be empty")
	}
	_, err := t.exec(ctx, `INSERT INTO idempotency (key, request_hash, result, created_at) VALUES ($1, $2, $3, $4)`,
		rec.Key, rec.RequestHash, rec.Result, rec.CreatedAt)
	if err != nil {
		return fmt.Errorf("put idempotency record %q: %w", rec.Key, err)
	}
	return nil
}

func (t *tx) DeleteIdempotencyBefore(ctx context.Context, before time.Time) error {
	if _, err := t.exec(ctx, `DELETE FROM idempotency WHERE created_at < $1`, before); err != nil {
		return fmt.Errorf("delete idempotency records before %s: %w", before.UTC().Format(time.RFC3339Nano), err)
	}
	return nil
}
