package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berthrun/berth/internal/artifact"
	"github.com/berthrun/berth/internal/image"
	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/session"
	"github.com/berthrun/berth/internal/telemetry"
)

// CodeStore keeps uploaded code bundles.
type CodeStore interface {
	Put(ctx context.Context, bucket, key string, r io.Reader) (artifact.Object, error)
	Stat(ctx context.Context, bucket, key string) (artifact.Object, error)
	Delete(ctx context.Context, bucket, key string) error
}

// Berth's own calls, under /berth/v1/:
//
//	GET    /berth/v1/health                            liveness
//	PUT    /berth/v1/code/{bucket}/{key...}            upload a code bundle (zip)
//	GET    /berth/v1/code/{bucket}/{key...}            describe an uploaded bundle
//	DELETE /berth/v1/code/{bucket}/{key...}            delete it; unused bundles are collected
//	PUT    /berth/v1/images/{name...}                  upload a container image tarball as berth.local/NAME
//	GET    /berth/v1/images/{name...}                  describe an uploaded image
//	DELETE /berth/v1/images/{name...}                  drop the name; unused images are collected
//	GET    /berth/v1/sessions[?runtimeId=ID]           list live sessions
//	DELETE /berth/v1/sessions/{runtimeId}/{sessionId}  stop a session
//	GET    /berth/v1/pools                             warm pools: size, ready, starting, claimed
//	GET    /berth/v1/logs?runtimeId=ID[&sessionId=&since=&until=&level=&stream=&tail=&follow=]
//	                                                   session logs, as JSON lines
func (s *Server) routeAdmin(w http.ResponseWriter, r *http.Request, segs []string) {
	switch {
	case len(segs) == 1 && segs[0] == "health" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case len(segs) >= 3 && segs[0] == "code":
		bucket, key := segs[1], strings.Join(segs[2:], "/")
		switch r.Method {
		case http.MethodPut:
			s.serveJSON(w, r, func(r *http.Request) (int, any, error) { return s.putCode(r, bucket, key) })
		case http.MethodGet:
			s.serveJSON(w, r, func(r *http.Request) (int, any, error) { return s.statCode(r, bucket, key) })
		case http.MethodDelete:
			s.serveJSON(w, r, func(r *http.Request) (int, any, error) { return s.deleteCode(r, bucket, key) })
		default:
			s.unknown(w, r)
		}
	case len(segs) >= 2 && segs[0] == "images":
		ref := strings.Join(segs[1:], "/")
		switch r.Method {
		case http.MethodPut:
			s.serveJSON(w, r, func(r *http.Request) (int, any, error) { return s.putImage(r, ref) })
		case http.MethodGet:
			s.serveJSON(w, r, func(r *http.Request) (int, any, error) { return s.statImage(r, ref) })
		case http.MethodDelete:
			s.serveJSON(w, r, func(r *http.Request) (int, any, error) { return s.deleteImage(r, ref) })
		default:
			s.unknown(w, r)
		}
	case len(segs) == 1 && segs[0] == "pools" && r.Method == http.MethodGet:
		s.serveJSON(w, r, s.listPools)
	case len(segs) == 1 && segs[0] == "logs" && r.Method == http.MethodGet:
		s.logs(w, r)
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
		return 0, nil, codeError(err)
	}
	return http.StatusOK, codeObject{Bucket: obj.Bucket, Key: obj.Key, VersionID: obj.Digest, Size: obj.Size, Modified: obj.Modified}, nil
}

func codeError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, artifact.ErrTooLarge):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "ValidationException", Reason: "FieldValidationFailed", Message: msg}
	case errors.Is(err, artifact.ErrInvalid), errors.Is(err, artifact.ErrUnsafe):
		return &apiError{Status: http.StatusBadRequest, Type: "ValidationException", Reason: "FieldValidationFailed", Message: msg}
	case errors.Is(err, artifact.ErrNotFound):
		return notFound("%s", msg)
	}
	return err
}

func (s *Server) statCode(r *http.Request, bucket, key string) (int, any, error) {
	obj, err := s.code.Stat(r.Context(), bucket, key)
	if err != nil {
		return 0, nil, codeError(err)
	}
	return http.StatusOK, codeObject{Bucket: obj.Bucket, Key: obj.Key, VersionID: obj.Digest, Size: obj.Size, Modified: obj.Modified}, nil
}

func (s *Server) deleteCode(r *http.Request, bucket, key string) (int, any, error) {
	if err := s.code.Delete(r.Context(), bucket, key); err != nil {
		return 0, nil, codeError(err)
	}
	removed, err := s.control.CollectArtifacts(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"removedVersionIds": removed}, nil
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
	MemoryBytes  int64     `json:"memoryBytes"`
	CPUSeconds   float64   `json:"cpuSeconds"`
	Replica      string    `json:"replica,omitempty"` // the replica that owns it, when several share sessions
}

func (s *Server) listSessions(r *http.Request) (int, any, error) {
	infos, err := s.sessions.ListAll(r.Context(), r.URL.Query().Get("runtimeId"))
	if err != nil {
		return 0, nil, err
	}
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
			Inflight: in.Inflight, LogDirectory: in.LogDir, MemoryBytes: in.MemoryBytes, CPUSeconds: in.CPUSeconds,
			Replica: in.Replica})
	}
	slices.SortFunc(out, func(a, b sessionView) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return http.StatusOK, map[string]any{"sessions": out}, nil
}

// logs serves session logs: the selected history as JSON lines, then, with
// follow, new lines as they are written until the caller goes away.
func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	runtimeID := q.Get("runtimeId")
	if runtimeID == "" {
		s.writeError(w, r, validationError("runtimeId", "is required"))
		return
	}
	if _, err := s.control.GetRuntime(r.Context(), runtimeID, 0); err != nil {
		s.writeError(w, r, err)
		return
	}
	query := telemetry.Query{Stream: q.Get("stream")}
	if query.Stream != "" && query.Stream != telemetry.Stdout && query.Stream != telemetry.Stderr {
		s.writeError(w, r, validationError("stream", "%q is not stdout or stderr", query.Stream))
		return
	}
	for _, bound := range []struct {
		name string
		t    *time.Time
	}{{"since", &query.Since}, {"until", &query.Until}} {
		v := q.Get(bound.name)
		if v == "" {
			continue
		}
		if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			*bound.t = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			*bound.t = t
		} else {
			s.writeError(w, r, validationError(bound.name, "%q is neither a duration ago (10m) nor an RFC 3339 time", v))
			return
		}
	}
	if query.Level = q.Get("level"); query.Level != "" && !telemetry.ValidLevel(query.Level) {
		s.writeError(w, r, validationError("level", "%q is not debug, info, warn or error", query.Level))
		return
	}
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.writeError(w, r, validationError("tail", "%q is not a number of lines", v))
			return
		}
		query.Tail = n
	}
	sessionID := q.Get("sessionId")
	dirs := func() map[string]string {
		all := telemetry.SessionDirs(s.opts.LogDir, runtimeID)
		if sessionID == "" {
			return all
		}
		if d, ok := all[sessionID]; ok {
			return map[string]string{sessionID: d}
		}
		return nil
	}
	query.Dirs = dirs()
	if sessionID != "" && len(query.Dirs) == 0 {
		// Another replica started the session and has its log file; its
		// sandbox's driver may keep the output too.
		s.sandboxLogs(w, r, runtimeID, sessionID, query, q.Get("follow") == "true")
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	if q.Get("follow") != "true" {
		lines, err := telemetry.Read(query)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		for _, l := range lines {
			enc.Encode(l)
		}
		return
	}
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	rc.Flush()
	err := telemetry.Follow(r.Context(), query, dirs, 250*time.Millisecond, func(l telemetry.Line) error {
		if err := enc.Encode(l); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil && r.Context().Err() == nil {
		s.log.Warn("follow logs", "request_id", requestID(r.Context()), "err", err)
	}
}

// sandboxLogs serves the logs of a live session with no log file here from
// its sandbox's driver (sandbox.LogSource), as logs does from files.
func (s *Server) sandboxLogs(w http.ResponseWriter, r *http.Request, runtimeID, sessionID string, query telemetry.Query, follow bool) {
	open := func(ctx context.Context, since time.Time, tail int, follow bool) (io.ReadCloser, error) {
		return s.sessions.SandboxLogs(ctx, runtimeID, sessionID, sandbox.LogOptions{Follow: follow, Since: since, Tail: tail})
	}
	hist, err := telemetry.ReadStream(r.Context(), sessionID, query, open)
	if errors.Is(err, session.ErrNotFound) {
		s.writeError(w, r, notFound("no logs of session %s of agent runtime %s", sessionID, runtimeID))
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for _, l := range hist.Lines {
		enc.Encode(l)
	}
	if !follow {
		return
	}
	rc.Flush()
	err = hist.Follow(r.Context(), func(l telemetry.Line) error {
		if err := enc.Encode(l); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil && r.Context().Err() == nil {
		s.log.Warn("follow logs", "request_id", requestID(r.Context()), "session", sessionID, "err", err)
	}
}

type poolView struct {
	RuntimeID string `json:"runtimeId"`
	Version   string `json:"version"`
	Size      int    `json:"size"`
	Ready     int    `json:"ready"`
	Starting  int    `json:"starting"`
	Claimed   int    `json:"claimed"`
}

func (s *Server) listPools(r *http.Request) (int, any, error) {
	out := []poolView{}
	for _, p := range s.sessions.Pools() {
		out = append(out, poolView{RuntimeID: p.RuntimeID, Version: versionString(p.Version), Size: p.Size,
			Ready: p.Ready, Starting: p.Starting, Claimed: p.Claimed})
	}
	return http.StatusOK, map[string]any{"pools": out}, nil
}

// imageObject describes an uploaded container image.
type imageObject struct {
	ContainerURI   string `json:"containerUri"`
	Digest         string `json:"digest"`
	Architecture   string `json:"architecture"`
	Layers         int    `json:"layers"`
	CompressedSize int64  `json:"compressedSize"`
}

func describeImage(uri string, img *image.Image) imageObject {
	return imageObject{ContainerURI: uri, Digest: img.Digest, Architecture: img.OS + "/" + img.Architecture,
		Layers: len(img.Layers), CompressedSize: img.CompressedSize}
}

// noImages is the error of image calls on a server without an image store.
func noImages() error {
	return &apiError{Status: http.StatusBadRequest, Type: "ValidationException", Reason: "FieldValidationFailed",
		Message: "this Berth server takes no image uploads (they need the runc driver and root; with the kubernetes driver, push images to a registry the nodes can pull from)"}
}

func (s *Server) putImage(r *http.Request, ref string) (int, any, error) {
	if s.opts.Images == nil {
		return 0, nil, noImages()
	}
	img, tag, err := s.opts.Images.Import(r.Context(), ref, r.Body)
	if err != nil {
		return 0, nil, imageError(err)
	}
	// The name may have referred to another image, now unused.
	if _, err := s.control.CollectArtifacts(r.Context()); err != nil {
		s.log.Warn("collect unused images", "err", err)
	}
	return http.StatusOK, describeImage(tag.String(), img), nil
}

func (s *Server) statImage(r *http.Request, ref string) (int, any, error) {
	if s.opts.Images == nil {
		return 0, nil, noImages()
	}
	img, uri, err := s.opts.Images.Lookup(r.Context(), ref)
	if err != nil {
		return 0, nil, imageError(err)
	}
	return http.StatusOK, describeImage(uri, img), nil
}

func (s *Server) deleteImage(r *http.Request, ref string) (int, any, error) {
	if s.opts.Images == nil {
		return 0, nil, noImages()
	}
	if err := s.opts.Images.Untag(r.Context(), ref); err != nil {
		return 0, nil, imageError(err)
	}
	removed, err := s.control.CollectArtifacts(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"removed": removed}, nil
}

func imageError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, image.ErrTooLarge):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "ValidationException", Reason: "FieldValidationFailed", Message: msg}
	case errors.Is(err, image.ErrInvalid), errors.Is(err, image.ErrPlatform):
		return &apiError{Status: http.StatusBadRequest, Type: "ValidationException", Reason: "FieldValidationFailed", Message: msg}
	case errors.Is(err, image.ErrNotFound):
		return notFound("%s", msg)
	}
	return err
}
