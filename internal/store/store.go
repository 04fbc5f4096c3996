// Package store defines Berth's durable state: agent runtimes, their
// immutable versions, their endpoints and the idempotency records of the
// control plane, and the registry of live sessions that the replicas of
// Berth share.
//
// Backends (sqlite, the embedded default, and postgres) implement Store in
// sub-packages and pass the conformance suite in storetest. The store knows nothing of the
// wire API: a version's configuration is an opaque document that the control
// package encodes.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors returned by every backend. Callers test them with errors.Is.
var (
	// ErrNotFound reports that the addressed record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists reports that a record with the same key already exists
	// (runtime name or ID, version number, endpoint name, idempotency key).
	ErrExists = errors.New("already exists")
)

// Store is a transactional store. All reads and writes happen inside a
// transaction; a transaction either commits whole or leaves no trace, also
// when the process dies in the middle of it.
type Store interface {
	// Update runs fn in a read-write transaction. If fn returns an error the
	// transaction is rolled back and that error is returned. Backends
	// serialize read-write transactions, so fn sees a consistent snapshot
	// and may read, decide and write without races.
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	// Close releases the store.
	Close() error

	Sessions
}

// Tx is one transaction. Its methods must not be used after the function
// given to Update or View returns.
type Tx interface {
	CreateRuntime(ctx context.Context, r Runtime) error // ErrExists if ID or Name is taken
	GetRuntime(ctx context.Context, id string) (Runtime, error)
	GetRuntimeByName(ctx context.Context, name string) (Runtime, error)
	UpdateRuntime(ctx context.Context, r Runtime) error // replaces the record with r.ID; ErrNotFound
	// DeleteRuntime removes the runtime and all its versions and endpoints,
	// and the records of its sessions.
	DeleteRuntime(ctx context.Context, id string) error
	// ListRuntimes returns up to limit runtimes ordered by ID, starting after
	// the ID afterID ("" for the first page).
	ListRuntimes(ctx context.Context, afterID string, limit int) ([]Runtime, error)

	CreateVersion(ctx context.Context, v Version) error // ErrExists if (RuntimeID, Number) is taken
	GetVersion(ctx context.Context, runtimeID string, number int) (Version, error)
	UpdateVersion(ctx context.Context, v Version) error // replaces the record; ErrNotFound
	DeleteVersion(ctx context.Context, runtimeID string, number int) error
	// ListVersions returns up to limit versions of a runtime, newest first,
	// starting below the version number before (0 for the first page).
	ListVersions(ctx context.Context, runtimeID string, before int, limit int) ([]Version, error)
	// ListVersionsByArtifact returns every version, of any runtime, whose
	// Artifact equals artifact.
	ListVersionsByArtifact(ctx context.Context, artifact string) ([]Version, error)

	CreateEndpoint(ctx context.Context, e Endpoint) error // ErrExists if (RuntimeID, Name) is taken
	GetEndpoint(ctx context.Context, runtimeID, name string) (Endpoint, error)
	UpdateEndpoint(ctx context.Context, e Endpoint) error // ErrNotFound
	DeleteEndpoint(ctx context.Context, runtimeID, name string) error
	// ListEndpoints returns up to limit endpoints of a runtime ordered by
	// name, starting after the name afterName ("" for the first page).
	ListEndpoints(ctx context.Context, runtimeID, afterName string, limit int) ([]Endpoint, error)

	// GetIdempotency returns the record stored under key, or ErrNotFound.
	GetIdempotency(ctx context.Context, key string) (Idempotency, error)
	// PutIdempotency stores a record; ErrExists if key is taken.
	PutIdempotency(ctx context.Context, rec Idempotency) error
	// DeleteIdempotencyBefore removes records created before t.
	DeleteIdempotencyBefore(ctx context.Context, t time.Time) error
}

// Runtime is an agent runtime: a name, an ID and a sequence of versions.
type Runtime struct {
	ID            string // e.g. "MyAgent-a1b2c3d4e5"
	Name          string
	LatestVersion int // number of the newest version
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Deleting      bool // deletion in progress; hidden from new invocations
}

// Version is one immutable version of a runtime. Only its Status,
// FailureReason and UpdatedAt change after it is created.
type Version struct {
	RuntimeID     string
	Number        int // 1, 2, ...
	Status        string
	FailureReason string
	// Artifact identifies the content the version runs (e.g. a code bundle's
	// digest), so unused artifacts can be found and collected.
	Artifact string
	// Config is the version's configuration, encoded by the control package.
	Config    []byte
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Endpoint is a named pointer at one version of a runtime. The DEFAULT
// endpoint follows the newest version.
type Endpoint struct {
	RuntimeID     string
	Name          string
	ID            string
	Description   string
	LiveVersion   int // version served now (0 while none is)
	TargetVersion int // version being moved to
	Status        string
	FailureReason string
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Idempotency remembers the outcome of a request made with a client token, so
// a retry with the same token returns the same result.
type Idempotency struct {
	Key         string // operation and client token
	RequestHash string // hash of the request's parameters
	Result      []byte // the encoded result
	CreatedAt   time.Time
}

// Session records a live session: where its sandbox runs and which replica owns its lifecycle.
type Session struct {
	RuntimeID  string
	SessionID  string
	Version    int       // the runtime version the session runs; 1 or more
	SandboxID  string    // the sandbox driver's id of the session's sandbox
	Owner      string    // id of the replica that owns the session's lifecycle
	LeaseUntil time.Time // the owner's claim ends then unless renewed
	CreatedAt  time.Time
	LastUsed   time.Time // the latest time any replica reported a call on the session
}

// SessionKey names a session.
type SessionKey struct{ RuntimeID, SessionID string }

// Touch reports that a session was in use at At.
type Touch struct {
	SessionKey
	At time.Time
}

// Sessions is the registry of live sessions shared by the replicas of Berth. Each method is one atomic operation
// of its own, outside Update and View, and does not wait for their writer lock: the registry is written on the
// invocation path and by every replica's heartbeat.
//
// Times keep the precision of the backend's other timestamps (nanoseconds in SQLite, microseconds in PostgreSQL,
// which drops the rest), and every comparison the registry makes is exact at that precision. A session's record
// does not need its runtime to exist; DeleteRuntime removes the records of the runtime's sessions.
type Sessions interface {
	// CreateSession adds s; ErrExists if the session already has a record. RuntimeID, SessionID, SandboxID and
	// Owner must not be empty, and Version must be 1 or more.
	CreateSession(ctx context.Context, s Session) error
	// GetSession returns a session's record, or ErrNotFound.
	GetSession(ctx context.Context, runtimeID, sessionID string) (Session, error)
	// ListSessions returns every record, or those of one runtime when runtimeID is not empty, ordered by
	// runtime and session id.
	ListSessions(ctx context.Context, runtimeID string) ([]Session, error)
	// DeleteSession removes a session's record if it names sandboxID, so that a replica acting on stale
	// knowledge cannot remove the record of a newer sandbox; ErrNotFound if there is no such record.
	DeleteSession(ctx context.Context, runtimeID, sessionID, sandboxID string) error
	// TouchSessions raises each named session's LastUsed to its At, never lowering it; unknown sessions are
	// skipped, and of several touches of one session the latest counts. One round trip for the whole slice
	// (it is called with hundreds of entries).
	TouchSessions(ctx context.Context, touches []Touch) error
	// Heartbeat records replica as live until until, extends to until the lease of every session it owns,
	// and returns the keys of those sessions (so a replica learns which ones it no longer owns), ordered by
	// runtime and session id. The lease is set to until, not raised to it: a replica that stops can hand its
	// sessions over at once by a last Heartbeat with a time already past. Heartbeat may forget replicas whose
	// heartbeat ended long before until.
	Heartbeat(ctx context.Context, replica string, until time.Time) ([]SessionKey, error)
	// TakeOver makes replica the owner, until until, of every session whose lease ended before now, and
	// returns their records as updated, ordered by runtime and session id. Two replicas taking over at once
	// never get the same session. A session that another call is writing at that moment may be left for the
	// next TakeOver rather than waited for.
	TakeOver(ctx context.Context, replica string, now, until time.Time) ([]Session, error)
	// LiveReplicas returns the ids of the replicas whose heartbeat lasts beyond now, in order.
	LiveReplicas(ctx context.Context, now time.Time) ([]string, error)
}

// Validate checks the fields of a session record that CreateSession requires, and names the first one at
// fault.
func (s Session) Validate() error {
	switch {
	case s.RuntimeID == "":
		return errors.New("session: RuntimeID must not be empty")
	case s.SessionID == "":
		return errors.New("session: SessionID must not be empty")
	case s.SandboxID == "":
		return errors.New("session: SandboxID must not be empty")
	case s.Owner == "":
		return errors.New("session: Owner must not be empty")
	case s.Version < 1:
		return fmt.Errorf("session: Version %d must be 1 or more", s.Version)
	}
	return nil
}
