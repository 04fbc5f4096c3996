package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/berthrun/berth/internal/store"
)

// tx implements store.Tx on a database/sql transaction.
type tx struct {
	tx *sql.Tx
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// exec runs a statement and maps constraint errors to the store's.
func (t *tx) exec(ctx context.Context, query string, args ...any) error {
	_, err := t.tx.ExecContext(ctx, query, args...)
	return classify(err)
}

// execOne runs a statement that addresses one row by its key, and reports
// store.ErrNotFound if there is no such row.
func (t *tx) execOne(ctx context.Context, query string, args ...any) error {
	res, err := t.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return classify(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// get runs a query for one row and scans it, reporting store.ErrNotFound if
// there is none.
func get[T any](ctx context.Context, t *tx, scan func(scanner) (T, error), query string, args ...any) (T, error) {
	v, err := scan(t.tx.QueryRowContext(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return v, store.ErrNotFound
	}
	return v, err
}

// list runs a query and scans every row.
func list[T any](ctx context.Context, t *tx, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := t.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// sqlLimit turns a page size into a LIMIT, where SQLite reads -1 as none.
func sqlLimit(limit int) int {
	if limit <= 0 {
		return -1
	}
	return limit
}

const runtimeColumns = `id, name, latest_version, created_at, updated_at, deleting`

func scanRuntime(s scanner) (store.Runtime, error) {
	var r store.Runtime
	err := s.Scan(&r.ID, &r.Name, &r.LatestVersion, (*timestamp)(&r.CreatedAt), (*timestamp)(&r.UpdatedAt), &r.Deleting)
	return r, err
}

func (t *tx) CreateRuntime(ctx context.Context, r store.Runtime) error {
	if r.ID == "" || r.Name == "" {
		return fmt.Errorf("create runtime %q named %q: ID and name must not be empty", r.ID, r.Name)
	}
	err := t.exec(ctx, `INSERT INTO runtimes (`+runtimeColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
		r.ID, r.Name, r.LatestVersion, timestamp(r.CreatedAt), timestamp(r.UpdatedAt), r.Deleting)
	if err != nil {
		return fmt.Errorf("create runtime %q named %q: %w", r.ID, r.Name, err)
	}
	return nil
}

func (t *tx) GetRuntime(ctx context.Context, id string) (store.Runtime, error) {
	r, err := get(ctx, t, scanRuntime, `SELECT `+runtimeColumns+` FROM runtimes WHERE id = ?`, id)
	if err != nil {
		return r, fmt.Errorf("get runtime %q: %w", id, err)
	}
	return r, nil
}

func (t *tx) GetRuntimeByName(ctx context.Context, name string) (store.Runtime, error) {
	r, err := get(ctx, t, scanRuntime, `SELECT `+runtimeColumns+` FROM runtimes WHERE name = ?`, name)
	if err != nil {
		return r, fmt.Errorf("get runtime named %q: %w", name, err)
	}
	return r, nil
}

func (t *tx) UpdateRuntime(ctx context.Context, r store.Runtime) error {
	if r.Name == "" {
		return fmt.Errorf("update runtime %q: name must not be empty", r.ID)
	}
	err := t.execOne(ctx, `UPDATE runtimes SET name = ?, latest_version = ?, created_at = ?, updated_at = ?, deleting = ? WHERE id = ?`,
		r.Name, r.LatestVersion, timestamp(r.CreatedAt), timestamp(r.UpdatedAt), r.Deleting, r.ID)
	if err != nil {
		return fmt.Errorf("update runtime %q: %w", r.ID, err)
	}
	return nil
}

func (t *tx) DeleteRuntime(ctx context.Context, id string) error {
	// The foreign keys' ON DELETE CASCADE removes versions and endpoints;
	// session records have no foreign key (see migration 0002).
	if err := t.exec(ctx, `DELETE FROM sessions WHERE runtime_id = ?`, id); err != nil {
		return fmt.Errorf("delete runtime %q: delete its sessions: %w", id, err)
	}
	if err := t.execOne(ctx, `DELETE FROM runtimes WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete runtime %q: %w", id, err)
	}
	return nil
}

func (t *tx) ListRuntimes(ctx context.Context, afterID string, limit int) ([]store.Runtime, error) {
	rs, err := list(ctx, t, scanRuntime, `SELECT `+runtimeColumns+` FROM runtimes WHERE id > ? ORDER BY id LIMIT ?`,
		afterID, sqlLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list runtimes after %q: %w", afterID, err)
	}
	return rs, nil
}

const versionColumns = `runtime_id, number, status, failure_reason, artifact, config, created_at, updated_at`

func scanVersion(s scanner) (store.Version, error) {
	var v store.Version
	err := s.Scan(&v.RuntimeID, &v.Number, &v.Status, &v.FailureReason, &v.Artifact, &v.Config,
		(*timestamp)(&v.CreatedAt), (*timestamp)(&v.UpdatedAt))
	return v, err
}

func (t *tx) CreateVersion(ctx context.Context, v store.Version) error {
	if v.Number < 1 {
		return fmt.Errorf("create version %d of runtime %q: number must be 1 or more", v.Number, v.RuntimeID)
	}
	err := t.exec(ctx, `INSERT INTO versions (`+versionColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		v.RuntimeID, v.Number, v.Status, v.FailureReason, v.Artifact, v.Config, timestamp(v.CreatedAt), timestamp(v.UpdatedAt))
	if err != nil {
		// A missing runtime breaks the foreign key: ErrNotFound.
		return fmt.Errorf("create version %d of runtime %q: %w", v.Number, v.RuntimeID, err)
	}
	return nil
}

func (t *tx) GetVersion(ctx context.Context, runtimeID string, number int) (store.Version, error) {
	v, err := get(ctx, t, scanVersion, `SELECT `+versionColumns+` FROM versions WHERE runtime_id = ? AND number = ?`,
		runtimeID, number)
	if err != nil {
		return v, fmt.Errorf("get version %d of runtime %q: %w", number, runtimeID, err)
	}
	return v, nil
}

func (t *tx) UpdateVersion(ctx context.Context, v store.Version) error {
	err := t.execOne(ctx, `UPDATE versions SET status = ?, failure_reason = ?, artifact = ?, config = ?, created_at = ?, updated_at = ?
		WHERE runtime_id = ? AND number = ?`,
		v.Status, v.FailureReason, v.Artifact, v.Config, timestamp(v.CreatedAt), timestamp(v.UpdatedAt), v.RuntimeID, v.Number)
	if err != nil {
		return fmt.Errorf("update version %d of runtime %q: %w", v.Number, v.RuntimeID, err)
	}
	return nil
}

func (t *tx) DeleteVersion(ctx context.Context, runtimeID string, number int) error {
	if err := t.execOne(ctx, `DELETE FROM versions WHERE runtime_id = ? AND number = ?`, runtimeID, number); err != nil {
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
		WHERE runtime_id = ? AND number < ? ORDER BY number DESC LIMIT ?`,
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
		WHERE artifact = ? ORDER BY runtime_id, number`, artifact)
	if err != nil {
		return nil, fmt.Errorf("list versions of artifact %q: %w", artifact, err)
	}
	return vs, nil
}

const endpointColumns = `runtime_id, name, id, description, live_version, target_version, status, failure_reason, created_at, updated_at`

func scanEndpoint(s scanner) (store.Endpoint, error) {
	var e store.Endpoint
	err := s.Scan(&e.RuntimeID, &e.Name, &e.ID, &e.Description, &e.LiveVersion, &e.TargetVersion, &e.Status,
		&e.FailureReason, (*timestamp)(&e.CreatedAt), (*timestamp)(&e.UpdatedAt))
	return e, err
}

func (t *tx) CreateEndpoint(ctx context.Context, e store.Endpoint) error {
	if e.Name == "" {
		return fmt.Errorf("create endpoint of runtime %q: name must not be empty", e.RuntimeID)
	}
	err := t.exec(ctx, `INSERT INTO endpoints (`+endpointColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.RuntimeID, e.Name, e.ID, e.Description, e.LiveVersion, e.TargetVersion, e.Status, e.FailureReason,
		timestamp(e.CreatedAt), timestamp(e.UpdatedAt))
	if err != nil {
		// A missing runtime breaks the foreign key: ErrNotFound.
		return fmt.Errorf("create endpoint %q of runtime %q: %w", e.Name, e.RuntimeID, err)
	}
	return nil
}

func (t *tx) GetEndpoint(ctx context.Context, runtimeID, name string) (store.Endpoint, error) {
	e, err := get(ctx, t, scanEndpoint, `SELECT `+endpointColumns+` FROM endpoints WHERE runtime_id = ? AND name = ?`,
		runtimeID, name)
	if err != nil {
		return e, fmt.Errorf("get endpoint %q of runtime %q: %w", name, runtimeID, err)
	}
	return e, nil
}

func (t *tx) UpdateEndpoint(ctx context.Context, e store.Endpoint) error {
	err := t.execOne(ctx, `UPDATE endpoints SET id = ?, description = ?, live_version = ?, target_version = ?, status = ?,
		failure_reason = ?, created_at = ?, updated_at = ? WHERE runtime_id = ? AND name = ?`,
		e.ID, e.Description, e.LiveVersion, e.TargetVersion, e.Status, e.FailureReason,
		timestamp(e.CreatedAt), timestamp(e.UpdatedAt), e.RuntimeID, e.Name)
	if err != nil {
		return fmt.Errorf("update endpoint %q of runtime %q: %w", e.Name, e.RuntimeID, err)
	}
	return nil
}

func (t *tx) DeleteEndpoint(ctx context.Context, runtimeID, name string) error {
	if err := t.execOne(ctx, `DELETE FROM endpoints WHERE runtime_id = ? AND name = ?`, runtimeID, name); err != nil {
		return fmt.Errorf("delete endpoint %q of runtime %q: %w", name, runtimeID, err)
	}
	return nil
}

func (t *tx) ListEndpoints(ctx context.Context, runtimeID, afterName string, limit int) ([]store.Endpoint, error) {
	es, err := list(ctx, t, scanEndpoint, `SELECT `+endpointColumns+` FROM endpoints
		WHERE runtime_id = ? AND name > ? ORDER BY name LIMIT ?`,
		runtimeID, afterName, sqlLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list endpoints of runtime %q after %q: %w", runtimeID, afterName, err)
	}
	return es, nil
}

func scanIdempotency(s scanner) (store.Idempotency, error) {
	var rec store.Idempotency
	err := s.Scan(&rec.Key, &rec.RequestHash, &rec.Result, (*timestamp)(&rec.CreatedAt))
	return rec, err
}

func (t *tx) GetIdempotency(ctx context.Context, key string) (store.Idempotency, error) {
	rec, err := get(ctx, t, scanIdempotency, `SELECT key, request_hash, result, created_at FROM idempotency WHERE key = ?`, key)
	if err != nil {
		return rec, fmt.Errorf("get idempotency record %q: %w", key, err)
	}
	return rec, nil
}

func (t *tx) PutIdempotency(ctx context.Context, rec store.Idempotency) error {
	if rec.Key == "" {
		return errors.New("put idempotency record: key must not be empty")
	}
	err := t.exec(ctx, `INSERT INTO idempotency (key, request_hash, result, created_at) VALUES (?, ?, ?, ?)`,
		rec.Key, rec.RequestHash, rec.Result, timestamp(rec.CreatedAt))
	if err != nil {
		return fmt.Errorf("put idempotency record %q: %w", rec.Key, err)
	}
	return nil
}

func (t *tx) DeleteIdempotencyBefore(ctx context.Context, before time.Time) error {
	if err := t.exec(ctx, `DELETE FROM idempotency WHERE created_at < ?`, timestamp(before)); err != nil {
		return fmt.Errorf("delete idempotency records before %s: %w", before.UTC().Format(time.RFC3339Nano), err)
	}
	return nil
}
