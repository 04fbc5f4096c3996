package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/berthrun/berth/internal/store"
)

// The session registry runs each operation as one statement on a pooled
// connection, outside the writer lock of Update: every replica writes it on
// its invocation path and at each heartbeat, and row locks are all the
// exclusion it needs.
//
// Statements that lock several sessions' rows and may wait for them
// (TouchSessions, Heartbeat, DeleteRuntime) lock them in key order, through
// a SELECT ... ORDER BY ... FOR UPDATE, so that two of them never wait for
// each other in a cycle, which PostgreSQL would break by failing one with a
// deadlock error. TakeOver waits for no lock: it skips locked rows.
//
// Times are truncated to microseconds, which is what timestamptz keeps, in
// Go before they are sent, so that a comparison never depends on how a
// driver rounds.

// replicaRetention is how long after its heartbeat ended a replica's row is
// kept, for LiveReplicas' callers that look back a little; Heartbeat prunes
// older rows.
const replicaRetention = 24 * time.Hour

const sessionColumns = `runtime_id, session_id, version, sandbox_id, owner, lease_until, created_at, last_used`

// sessionColumnsOf is sessionColumns qualified by the table alias s.
const sessionColumnsOf = `s.runtime_id, s.session_id, s.version, s.sandbox_id, s.owner, s.lease_until, s.created_at, s.last_used`

func scanSession(row pgx.CollectableRow) (store.Session, error) {
	var r store.Session
	err := row.Scan(&r.RuntimeID, &r.SessionID, &r.Version, &r.SandboxID, &r.Owner, &r.LeaseUntil, &r.CreatedAt, &r.LastUsed)
	utc(&r.LeaseUntil)
	utc(&r.CreatedAt)
	utc(&r.LastUsed)
	return r, err
}

// micro returns t truncated to the microseconds that timestamptz keeps.
func micro(t time.Time) time.Time {
	return t.Truncate(time.Microsecond)
}

// retry runs a statement, again on another connection if the error says
// that nothing reached the server: a pooled connection that the server or
// the network ended while it sat idle.
func (s *Store) retry(ctx context.Context, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || attempt == maxAttempts || ctx.Err() != nil || !pgconn.SafeToRetry(err) {
			return err
		}
	}
}

// querySessions runs a query that returns session rows.
func (s *Store) querySessions(ctx context.Context, query string, args ...any) ([]store.Session, error) {
	var out []store.Session
	err := s.retry(ctx, func() error {
		rows, err := s.pool.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, scanSession)
		return err
	})
	return out, err
}

// CreateSession implements store.Sessions.
func (s *Store) CreateSession(ctx context.Context, r store.Session) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("create %w", err)
	}
	args := []any{r.RuntimeID, r.SessionID, r.Version, r.SandboxID, r.Owner,
		micro(r.LeaseUntil), micro(r.CreatedAt), micro(r.LastUsed)}
	if err := checkText(args); err != nil {
		return fmt.Errorf("create session %q of runtime %q: %w", r.SessionID, r.RuntimeID, err)
	}
	err := s.retry(ctx, func() error {
		tag, err := s.pool.Exec(ctx, `INSERT INTO sessions (`+sessionColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (runtime_id, session_id) DO NOTHING`, args...)
		if err == nil && tag.RowsAffected() == 0 {
			err = store.ErrExists
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create session %q of runtime %q: %w", r.SessionID, r.RuntimeID, err)
	}
	return nil
}

// GetSession implements store.Sessions.
func (s *Store) GetSession(ctx context.Context, runtimeID, sessionID string) (store.Session, error) {
	// No row can hold a key that checkText refuses to write.
	err := store.ErrNotFound
	var rs []store.Session
	if checkText([]any{runtimeID, sessionID}) == nil {
		rs, err = s.querySessions(ctx, `SELECT `+sessionColumns+` FROM sessions
			WHERE runtime_id = $1 AND session_id = $2`, runtimeID, sessionID)
		if err == nil && len(rs) == 0 {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		return store.Session{}, fmt.Errorf("get session %q of runtime %q: %w", sessionID, runtimeID, err)
	}
	return rs[0], nil
}

// ListSessions implements store.Sessions.
func (s *Store) ListSessions(ctx context.Context, runtimeID string) ([]store.Session, error) {
	if runtimeID == "" {
		rs, err := s.querySessions(ctx, `SELECT `+sessionColumns+` FROM sessions ORDER BY runtime_id, session_id`)
		if err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		return rs, nil
	}
	if checkText([]any{runtimeID}) != nil {
		return nil, nil
	}
	rs, err := s.querySessions(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE runtime_id = $1 ORDER BY session_id`, runtimeID)
	if err != nil {
		return nil, fmt.Errorf("list sessions of runtime %q: %w", runtimeID, err)
	}
	return rs, nil
}

// DeleteSession implements store.Sessions.
func (s *Store) DeleteSession(ctx context.Context, runtimeID, sessionID, sandboxID string) error {
	// No row can hold a key that checkText refuses to write.
	err := store.ErrNotFound
	if checkText([]any{runtimeID, sessionID, sandboxID}) == nil {
		err = s.retry(ctx, func() error {
			tag, err := s.pool.Exec(ctx, `DELETE FROM sessions WHERE runtime_id = $1 AND session_id = $2 AND sandbox_id = $3`,
				runtimeID, sessionID, sandboxID)
			if err == nil && tag.RowsAffected() == 0 {
				err = store.ErrNotFound
			}
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("delete session %q of runtime %q with sandbox %q: %w", sessionID, runtimeID, sandboxID, err)
	}
	return nil
}

// touchQuery raises last_used from three parallel arrays of runtime ids,
// session ids and times. Several touches of one session become their
// latest, since UPDATE ... FROM would apply just one, chosen at random. Rows
// already used as late are neither locked nor written.
const touchQuery = `WITH t AS (
		SELECT r, s, max(a) AS a FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS u (r, s, a) GROUP BY r, s
	), l AS (
		SELECT sessions.runtime_id, sessions.session_id, t.a FROM sessions
		JOIN t ON sessions.runtime_id = t.r AND sessions.session_id = t.s
		WHERE sessions.last_used < t.a
		ORDER BY sessions.runtime_id, sessions.session_id
		FOR UPDATE OF sessions
	)
	UPDATE sessions SET last_used = greatest(sessions.last_used, l.a) FROM l
	WHERE sessions.runtime_id = l.runtime_id AND sessions.session_id = l.session_id`

// TouchSessions implements store.Sessions in one statement.
func (s *Store) TouchSessions(ctx context.Context, touches []store.Touch) error {
	runtimes := make([]string, 0, len(touches))
	sessions := make([]string, 0, len(touches))
	ats := make([]time.Time, 0, len(touches))
	for _, t := range touches {
		if checkText([]any{t.RuntimeID, t.SessionID}) != nil {
			continue // no such session can exist
		}
		runtimes = append(runtimes, t.RuntimeID)
		sessions = append(sessions, t.SessionID)
		ats = append(ats, micro(t.At))
	}
	if len(runtimes) == 0 {
		return nil
	}
	err := s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, touchQuery, runtimes, sessions, ats)
		return err
	})
	if err != nil {
		return fmt.Errorf("touch %d sessions: %w", len(touches), err)
	}
	return nil
}

// heartbeatQuery records replica $1 as live until $2, forgets replicas
// whose heartbeat ended before $3 (never $1's own row: two changes of one
// row in one statement are not allowed), and sets the lease of $1's
// sessions to $2.
const heartbeatQuery = `WITH r AS (
		INSERT INTO replicas (id, live_until) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET live_until = excluded.live_until
	), p AS (
		DELETE FROM replicas WHERE live_until < $3 AND id <> $1
	), l AS (
		SELECT runtime_id, session_id FROM sessions WHERE owner = $1
		ORDER BY runtime_id, session_id
		FOR UPDATE
	), u AS (
		UPDATE sessions s SET lease_until = $2 FROM l
		WHERE s.runtime_id = l.runtime_id AND s.session_id = l.session_id
		RETURNING s.runtime_id, s.session_id
	)
	SELECT runtime_id, session_id FROM u ORDER BY runtime_id, session_id`

// Heartbeat implements store.Sessions in one statement.
func (s *Store) Heartbeat(ctx context.Context, replica string, until time.Time) ([]store.SessionKey, error) {
	if replica == "" {
		return nil, errors.New("heartbeat: replica must not be empty")
	}
	if err := checkText([]any{replica}); err != nil {
		return nil, fmt.Errorf("heartbeat: replica: %w", err)
	}
	until = micro(until)
	var keys []store.SessionKey
	err := s.retry(ctx, func() error {
		rows, err := s.pool.Query(ctx, heartbeatQuery, replica, until, until.Add(-replicaRetention))
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.SessionKey, error) {
			var k store.SessionKey
			err := row.Scan(&k.RuntimeID, &k.SessionID)
			return k, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("heartbeat of replica %q: %w", replica, err)
	}
	return keys, nil
}

// takeOverQuery gives replica $1, until $2, the sessions whose lease ended
// before $3. SKIP LOCKED makes concurrent takers split the expired
// sessions: each locks the rows no other holds, and a row another taker
// changed and committed meanwhile is read again, no longer expired, and
// left out.
const takeOverQuery = `WITH c AS (
		SELECT runtime_id, session_id FROM sessions WHERE lease_until < $3
		FOR UPDATE SKIP LOCKED
	), u AS (
		UPDATE sessions s SET owner = $1, lease_until = $2 FROM c
		WHERE s.runtime_id = c.runtime_id AND s.session_id = c.session_id
		RETURNING ` + sessionColumnsOf + `
	)
	SELECT ` + sessionColumns + ` FROM u ORDER BY runtime_id, session_id`

// TakeOver implements store.Sessions in one statement.
func (s *Store) TakeOver(ctx context.Context, replica string, now, until time.Time) ([]store.Session, error) {
	if replica == "" {
		return nil, errors.New("take over sessions: replica must not be empty")
	}
	if err := checkText([]any{replica}); err != nil {
		return nil, fmt.Errorf("take over sessions: replica: %w", err)
	}
	taken, err := s.querySessions(ctx, takeOverQuery, replica, micro(until), micro(now))
	if err != nil {
		return nil, fmt.Errorf("take over sessions for replica %q: %w", replica, err)
	}
	return taken, nil
}

// LiveReplicas implements store.Sessions.
func (s *Store) LiveReplicas(ctx context.Context, now time.Time) ([]string, error) {
	var ids []string
	err := s.retry(ctx, func() error {
		rows, err := s.pool.Query(ctx, `SELECT id FROM replicas WHERE live_until > $1 ORDER BY id`, micro(now))
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list live replicas: %w", err)
	}
	return ids, nil
}
