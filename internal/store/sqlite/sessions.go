package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berthrun/berth/internal/store"
)

// The session registry writes through the Store's one writer connection, in
// short transactions of its own that begin with BEGIN IMMEDIATE like
// Update's: one process holds the registry, so there is no one to share the
// lease work with, and the writer keeps the order of writes simple. Calling
// a registry method that writes from inside Update's fn therefore waits for
// the writer that fn holds, until ctx is done. Reads use the reader pool.

// replicaRetention is how long after its heartbeat ended a replica's row is
// kept, for LiveReplicas' callers that look back a little; Heartbeat prunes
// older rows.
const replicaRetention = 24 * time.Hour

const sessionColumns = `runtime_id, session_id, version, sandbox_id, owner, lease_until, created_at, last_used`

func scanSession(s scanner) (store.Session, error) {
	var r store.Session
	err := s.Scan(&r.RuntimeID, &r.SessionID, &r.Version, &r.SandboxID, &r.Owner,
		(*timestamp)(&r.LeaseUntil), (*timestamp)(&r.CreatedAt), (*timestamp)(&r.LastUsed))
	return r, err
}

func sessionKeyCompare(a, b store.SessionKey) int {
	if c := strings.Compare(a.RuntimeID, b.RuntimeID); c != 0 {
		return c
	}
	return strings.Compare(a.SessionID, b.SessionID)
}

// write runs fn in a read-write transaction on the writer connection and
// commits it if fn succeeds.
func (s *Store) write(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		// The statement's error is the one to report; SQLite drops an
		// unfinished transaction anyway.
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// CreateSession implements store.Sessions.
func (s *Store) CreateSession(ctx context.Context, r store.Session) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("create %w", err)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO sessions (`+sessionColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			r.RuntimeID, r.SessionID, r.Version, r.SandboxID, r.Owner,
			timestamp(r.LeaseUntil), timestamp(r.CreatedAt), timestamp(r.LastUsed))
		return classify(err)
	})
	if err != nil {
		return fmt.Errorf("create session %q of runtime %q: %w", r.SessionID, r.RuntimeID, err)
	}
	return nil
}

// GetSession implements store.Sessions.
func (s *Store) GetSession(ctx context.Context, runtimeID, sessionID string) (store.Session, error) {
	r, err := scanSession(s.r.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions
		WHERE runtime_id = ? AND session_id = ?`, runtimeID, sessionID))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Session{}, fmt.Errorf("get session %q of runtime %q: %w", sessionID, runtimeID, err)
	}
	return r, nil
}

// ListSessions implements store.Sessions.
func (s *Store) ListSessions(ctx context.Context, runtimeID string) ([]store.Session, error) {
	query := `SELECT ` + sessionColumns + ` FROM sessions ORDER BY runtime_id, session_id`
	var args []any
	if runtimeID != "" {
		query = `SELECT ` + sessionColumns + ` FROM sessions WHERE runtime_id = ? ORDER BY session_id`
		args = append(args, runtimeID)
	}
	rs, err := collect(s.r.QueryContext(ctx, query, args...))
	if err != nil {
		if runtimeID == "" {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		return nil, fmt.Errorf("list sessions of runtime %q: %w", runtimeID, err)
	}
	return rs, nil
}

// collect scans the sessions that a query returned.
func collect(rows *sql.Rows, err error) ([]store.Session, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Session
	for rows.Next() {
		r, err := scanSession(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// DeleteSession implements store.Sessions.
func (s *Store) DeleteSession(ctx context.Context, runtimeID, sessionID, sandboxID string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE runtime_id = ? AND session_id = ? AND sandbox_id = ?`,
			runtimeID, sessionID, sandboxID)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err == nil && n == 0 {
			err = store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete session %q of runtime %q with sandbox %q: %w", sessionID, runtimeID, sandboxID, err)
	}
	return nil
}

// TouchSessions implements store.Sessions, with one statement per touch in
// one transaction: in process, a statement costs no round trip.
func (s *Store) TouchSessions(ctx context.Context, touches []store.Touch) error {
	if len(touches) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE sessions SET last_used = ?1
			WHERE runtime_id = ?2 AND session_id = ?3 AND last_used < ?1`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, t := range touches {
			if _, err := stmt.ExecContext(ctx, timestamp(t.At), t.RuntimeID, t.SessionID); err != nil {
				return fmt.Errorf("session %q of runtime %q: %w", t.SessionID, t.RuntimeID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("touch %d sessions: %w", len(touches), err)
	}
	return nil
}

// Heartbeat implements store.Sessions.
func (s *Store) Heartbeat(ctx context.Context, replica string, until time.Time) ([]store.SessionKey, error) {
	if replica == "" {
		return nil, errors.New("heartbeat: replica must not be empty")
	}
	var keys []store.SessionKey
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO replicas (id, live_until) VALUES (?, ?)
			ON CONFLICT (id) DO UPDATE SET live_until = excluded.live_until`, replica, timestamp(until))
		if err != nil {
			return fmt.Errorf("record the replica: %w", err)
		}
		// A cutoff before the year 1 has no timestamp, and no row.
		if cutoff := until.Add(-replicaRetention); cutoff.Year() >= 1 {
			if _, err := tx.ExecContext(ctx, `DELETE FROM replicas WHERE live_until < ?`, timestamp(cutoff)); err != nil {
				return fmt.Errorf("prune replicas: %w", err)
			}
		}
		rows, err := tx.QueryContext(ctx, `UPDATE sessions SET lease_until = ? WHERE owner = ?
			RETURNING runtime_id, session_id`, timestamp(until), replica)
		if err != nil {
			return fmt.Errorf("extend leases: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k store.SessionKey
			if err := rows.Scan(&k.RuntimeID, &k.SessionID); err != nil {
				return fmt.Errorf("extend leases: %w", err)
			}
			keys = append(keys, k)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("extend leases: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("heartbeat of replica %q: %w", replica, err)
	}
	// RETURNING gives no order.
	slices.SortFunc(keys, sessionKeyCompare)
	return keys, nil
}

// TakeOver implements store.Sessions. The writer serializes takers, in this
// process and, through the database's write lock, in others.
func (s *Store) TakeOver(ctx context.Context, replica string, now, until time.Time) ([]store.Session, error) {
	if replica == "" {
		return nil, errors.New("take over sessions: replica must not be empty")
	}
	var taken []store.Session
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		taken, err = collect(tx.QueryContext(ctx, `UPDATE sessions SET owner = ?, lease_until = ? WHERE lease_until < ?
			RETURNING `+sessionColumns, replica, timestamp(until), timestamp(now)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("take over sessions for replica %q: %w", replica, err)
	}
	slices.SortFunc(taken, func(a, b store.Session) int {
		return sessionKeyCompare(store.SessionKey{RuntimeID: a.RuntimeID, SessionID: a.SessionID},
			store.SessionKey{RuntimeID: b.RuntimeID, SessionID: b.SessionID})
	})
	return taken, nil
}

// LiveReplicas implements store.Sessions.
func (s *Store) LiveReplicas(ctx context.Context, now time.Time) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM replicas WHERE live_until > ? ORDER BY id`, timestamp(now))
	if err != nil {
		return nil, fmt.Errorf("list live replicas: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list live replicas: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list live replicas: %w", err)
	}
	return ids, nil
}
