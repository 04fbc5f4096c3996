package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/berthrun/berth/internal/artifact"
)

// CodeStore keeps uploaded code bundles.
type CodeStore interface {
	Put(ctx context.Context, bucket, key string, r io.Reader) (artifact.Object, error)
}

// Berth's own calls, under /berth/v1/:
//
//	GET    /berth/v1/health                            liveness
//	PUT    /berth/v1/code/{bucket}/{key...}            upload a code bundle (zip)
//	GET    /berth/v1/sessions[?runtimeId=ID]           list live sessions
//	DELETE /berth/v1/sessions/{runtimeId}/{sessionId}  stop a session
func (s *Server) routeAdmin(w http.ResponseWriter, r *http.Request, segs []string) {
	switch {
	case len(segs) == 1 && segs[0] == "health" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case len(segs) >= 3 && segs[0] == "code" && r.Method == http.MethodPut:
		s.serveJSON(w, r, func(r *http.Request) (int, any, error) {
			return s.putCode(r, segs[1], strings.Join(segs[2:], "/"))
		})
	case len(segs) == 1 && segs[0] == "sessions" && r.Method == http.MethodGet:
		s.serveJSON(w, r, s.listSessions)
	case len(segs) == 3 && segs[0] == "sessions" && r.Method == http.MethodDelete:
		s.serveJSON(w, r, func(r *http.Request) (int, any, error) {
			if err := s.sessions.Stop(r.Context(), segs[1], segs[2]); err != nil {
				return 0, nil, err
			}
			return http.StatusOK, struct{}{}, nil
		})
	default:
		s.unknown(w, r)
	}
}

type codeObject struct {
	Bucket    string    `json:"bucket"`
	Key       string    `json:"key"`
	VersionID string    `json:"versionId"`
	Size      int64     `json:"size"`
	Modified  time.Time `json:"lastModified"`
}

func (s *Server) putCode(r *http.Request, bucket, key string) (int, any, error) {
	obj, err := s.code.Put(r.Context(), bucket, key, r.Body)
	if err != nil {
		msg := err.Error()
		switch {
		case errors.Is(err, artifact.ErrTooLarge):
			return 0, nil, &apiError{Status: http.StatusRequestEntityTooLarge, Type: "ValidationException", Reason: "FieldValidationFailed", Message: msg}
		case errors.Is(err, artifact.ErrInvalid), errors.Is(err, artifact.ErrUnsafe):
			return 0, nil, &apiError{Status: http.StatusBadRequest, Type: "ValidationException", Reason: "FieldValidationFailed", Message: msg}
		}
		return 0, nil, err
	}
	return http.StatusOK, codeObject{Bucket: obj.Bucket, Key: obj.Key, VersionID: obj.Digest, Size: obj.Size, Modified: obj.Modified}, nil
}

type sessionView struct {
	RuntimeID    string    `json:"runtimeId"`
	RuntimeArn   string    `json:"runtimeArn"`
	SessionID    string    `json:"sessionId"`
	Version      string    `json:"version"`
	State        string    `json:"state"`
	CreatedAt    time.Time `json:"createdAt"`
	LastUsedAt   time.Time `json:"lastUsedAt"`
	AgeSeconds   float64   `json:"ageSeconds"`
	IdleSeconds  float64   `json:"idleSeconds"`
	Inflight     int       `json:"inflight"`
	LogDirectory string    `json:"logDirectory"`
}

func (s *Server) listSessions(r *http.Request) (int, any, error) {
	infos := s.sessions.List(r.URL.Query().Get("runtimeId"))
	now := time.Now()
	out := make([]sessionView, 0, len(infos))
	for _, in := range infos {
		idle := now.Sub(in.LastUsed).Seconds()
		if in.Inflight > 0 {
			idle = 0
		}
		out = append(out, sessionView{RuntimeID: in.RuntimeID, RuntimeArn: s.control.RuntimeARN(in.RuntimeID),
			SessionID: in.SessionID, Version: versionString(in.Version), State: in.State, CreatedAt: in.CreatedAt.UTC(),
			LastUsedAt: in.LastUsed.UTC(), AgeSeconds: now.Sub(in.CreatedAt).Seconds(), IdleSeconds: idle,
			Inflight: in.Inflight, LogDirectory: in.LogDir})
	}
	slices.SortFunc(out, func(a, b sessionView) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return http.StatusOK, map[string]any{"sessions": out}, nil
}
