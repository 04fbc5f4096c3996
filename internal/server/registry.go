package server

import (
	"context"
	"errors"
	"time"

	"github.com/berthrun/berth/internal/control"
	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/session"
	"github.com/berthrun/berth/internal/store"
)

// registry is the session manager's Registry on the store's session table.
// The store and the session manager each keep their own vocabulary; this is
// where the two meet.
type registry struct{ st store.Sessions }

func (r registry) Create(ctx context.Context, rec session.Record) error {
	err := r.st.CreateSession(ctx, store.Session(rec))
	if errors.Is(err, store.ErrExists) {
		return session.ErrRegistered
	}
	return err
}

func (r registry) Get(ctx context.Context, runtimeID, sessionID string) (session.Record, error) {
	s, err := r.st.GetSession(ctx, runtimeID, sessionID)
	return session.Record(s), notFound(err)
}

func (r registry) List(ctx context.Context, runtimeID string) ([]session.Record, error) {
	ss, err := r.st.ListSessions(ctx, runtimeID)
	return records(ss), err
}

func (r registry) Delete(ctx context.Context, runtimeID, sessionID, sandboxID string) error {
	return notFound(r.st.DeleteSession(ctx, runtimeID, sessionID, sandboxID))
}

func (r registry) Touch(ctx context.Context, touches []session.Touch) error {
	ts := make([]store.Touch, len(touches))
	for i, t := range touches {
		ts[i] = store.Touch{SessionKey: store.SessionKey(t.Key), At: t.At}
	}
	return r.st.TouchSessions(ctx, ts)
}

func (r registry) Heartbeat(ctx context.Context, replica string, until time.Time) ([]session.Key, error) {
	keys, err := r.st.Heartbeat(ctx, replica, until)
	out := make([]session.Key, len(keys))
	for i, k := range keys {
		out[i] = session.Key(k)
	}
	return out, err
}

func (r registry) TakeOver(ctx context.Context, replica string, now, until time.Time) ([]session.Record, error) {
	ss, err := r.st.TakeOver(ctx, replica, now, until)
	return records(ss), err
}

func (r registry) LiveReplicas(ctx context.Context, now time.Time) ([]string, error) {
	return r.st.LiveReplicas(ctx, now)
}

func records(ss []store.Session) []session.Record {
	out := make([]session.Record, len(ss))
	for i, s := range ss {
		out[i] = session.Record(s)
	}
	return out
}

func notFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return session.ErrNotFound
	}
	return err
}

// targets tells the session manager what the sessions it takes over run.
type targets struct {
	control *control.Service
	limits  sandbox.Limits
}

func (t targets) Target(ctx context.Context, runtimeID string, version int) (*session.Target, error) {
	d, err := t.control.Version(ctx, runtimeID, version)
	if err != nil {
		return nil, err
	}
	return d.Target(t.limits), nil
}
