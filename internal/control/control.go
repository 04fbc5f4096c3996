// Package control implements Berth's control plane: agent runtimes, their
// immutable versions and the endpoints that point at them, kept in a
// store.Store. It knows the semantics (IDs and ARNs, DEFAULT following the
// newest version, idempotent client tokens, preparing a version's artifact
// in the background) but not the wire format, which lives in package api.
package control

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berthrun/berth/internal/image"
	"github.com/berthrun/berth/internal/store"
)

// Errors the control plane returns, wrapped with details. The API maps each
// to its AgentCore error shape.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrQuota    = errors.New("quota exceeded")
	// ErrNotReady reports a runtime or endpoint that cannot serve yet (still
	// being created, or failed); retrying may succeed.
	ErrNotReady = errors.New("not ready")
)

// Statuses of runtimes, versions and endpoints (AgentCore's enum).
const (
	StatusCreating     = "CREATING"
	StatusCreateFailed = "CREATE_FAILED"
	StatusUpdating     = "UPDATING"
	StatusUpdateFailed = "UPDATE_FAILED"
	StatusReady        = "READY"
	StatusDeleting     = "DELETING"
)

// DefaultEndpoint is the endpoint every runtime has; it follows the newest
// version.
const DefaultEndpoint = "DEFAULT"

// Artifacts is where code bundles come from.
type Artifacts interface {
	// Resolve returns the digest of the bundle a location names.
	Resolve(ctx context.Context, bucket, key, versionID string) (string, error)
	// Unpack returns a directory holding the bundle's files, unpacked once
	// and never modified afterwards.
	Unpack(ctx context.Context, digest string) (string, error)
	// Digests lists every bundle held.
	Digests(ctx context.Context) ([]string, error)
	// Remove deletes a bundle, unless it is still the current object of
	// some location (then it returns an error and keeps it).
	Remove(ctx context.Context, digest string) error
}

// Options configure a Service.
type Options struct {
	Region    string // e.g. us-east-1, used in ARNs and given to agents
	AccountID string // 12 digits, used in ARNs
	// MinLifecycle is the smallest idle timeout or max lifetime accepted, in
	// seconds: 60 as in AgentCore unless lowered (for tests).
	MinLifecycle int
	// SystemDirs are the host directories, visible read-only inside every
	// sandbox, where language interpreters are looked up.
	SystemDirs []string
	// Network is what the server lets runtimes' sandboxes reach.
	Network NetworkPolicy
	// CheckOCIRuntime, if set, reports whether this server can run
	// sandboxes with the OCI runtime a configuration asks for (EnvOCIRuntime):
	// nil, or an error saying what is missing. A runtime it refuses makes
	// creating or updating the agent runtime fail on that field. Nil
	// accepts every runtime (for servers whose driver has no choice).
	CheckOCIRuntime func(name string) error
	// Images pulls and keeps the container images of runtimes with a
	// containerConfiguration. Nil means this server runs code bundles
	// only.
	Images *image.Store
	// ImagesByReference says the sandbox driver's nodes pull container
	// images themselves (kubernetes): a version's image is inspected
	// (platform, size, config; see image.Store.Inspect), not unpacked,
	// and its sessions run it by digest (Deployment.Image). Images
	// uploaded to this server (image.LocalRegistry) are refused then.
	ImagesByReference bool
	Logger            *slog.Logger
}

// Service is the control plane.
type Service struct {
	st   store.Store
	arts Artifacts
	opts Options
	log  *slog.Logger

	// ctx bounds background preparation; cancel and wg stop it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// deployments caches what the data plane resolves, keyed by runtime
	// ID and qualifier. Every write through the Service clears it, so it
	// never serves a stale endpoint.
	mu          sync.RWMutex
	deployments map[[2]string]*Deployment

	// generation counts writes; see Generation.
	generation atomic.Uint64

	// gcMu keeps garbage collection from removing a bundle between its
	// resolution and its recording in a version.
	gcMu sync.RWMutex
}

// New returns a Service over st and resumes preparing any version an earlier
// run left half-prepared.
func New(ctx context.Context, st store.Store, arts Artifacts, opts Options) (*Service, error) {
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.AccountID == "" {
		opts.AccountID = "000000000000"
	}
	if opts.MinLifecycle <= 0 {
		opts.MinLifecycle = 60
	}
	if len(opts.SystemDirs) == 0 {
		opts.SystemDirs = []string{"/usr/local/bin", "/usr/bin"}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	bg, cancel := context.WithCancel(context.Background())
	s := &Service{st: st, arts: arts, opts: opts, log: opts.Logger, ctx: bg, cancel: cancel,
		deployments: map[[2]string]*Deployment{}}
	if err := s.resumePreparation(ctx); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// Close stops background work and waits for it.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// Runtime is a runtime as seen at one of its versions.
type Runtime struct {
	ID            string
	Name          string
	ARN           string
	Version       int
	Status        string
	FailureReason string
	Config        Config
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Endpoint is a runtime endpoint.
type Endpoint struct {
	store.Endpoint
	ARN        string
	RuntimeARN string
}

// RuntimeARN returns the ARN of the runtime with that ID.
func (s *Service) RuntimeARN(id string) string {
	return fmt.Sprintf("arn:aws:bedrock-agentcore:%s:%s:runtime/%s", s.opts.Region, s.opts.AccountID, id)
}

// AccountID returns the account ID used in ARNs.
func (s *Service) AccountID() string { return s.opts.AccountID }

// Region returns the region used in ARNs.
func (s *Service) Region() string { return s.opts.Region }

func (s *Service) endpointView(e store.Endpoint) Endpoint {
	arn := s.RuntimeARN(e.RuntimeID)
	return Endpoint{Endpoint: e, RuntimeARN: arn, ARN: arn + "/runtime-endpoint/" + e.Name}
}

func (s *Service) runtimeView(r store.Runtime, v store.Version) (Runtime, error) {
	var c Config
	if err := json.Unmarshal(v.Config, &c); err != nil {
		return Runtime{}, fmt.Errorf("decode config of %s version %d: %w", r.ID, v.Number, err)
	}
	// Fail closed: a version whose authorizer no longer parses serves
	// nobody rather than everybody.
	if err := c.decodeAuthorizer(); err != nil {
		return Runtime{}, fmt.Errorf("decode authorizer of %s version %d: %w", r.ID, v.Number, err)
	}
	return Runtime{ID: r.ID, Name: r.Name, ARN: s.RuntimeARN(r.ID), Version: v.Number, Status: v.Status,
		FailureReason: v.FailureReason, Config: c, CreatedAt: r.CreatedAt, UpdatedAt: v.UpdatedAt}, nil
}

// checkOCIRuntime refuses a configuration whose EnvOCIRuntime this server
// cannot run. It leaves values that are not runtimes at all to normalize.
func (s *Service) checkOCIRuntime(cfg Config) error {
	name, ok := cfg.Env[EnvOCIRuntime]
	if !ok || s.opts.CheckOCIRuntime == nil || !slices.Contains(OCIRuntimes(), name) {
		return nil
	}
	if err := s.opts.CheckOCIRuntime(name); err != nil {
		return &ValidationError{Fields: []FieldError{{Field: "environmentVariables." + EnvOCIRuntime,
			Message: fmt.Sprintf("%q cannot run on this server: %v", name, err)}}}
	}
	return nil
}

// CreateRuntime creates a runtime with version 1 and its DEFAULT endpoint,
// and starts preparing the version in the background.
func (s *Service) CreateRuntime(ctx context.Context, name string, cfg Config, clientToken string) (Runtime, error) {
	var v validator
	validateName(&v, "agentRuntimeName", name)
	if err := errors.Join(v.err(), cfg.normalize(s.opts.MinLifecycle), s.checkOCIRuntime(cfg)); err != nil {
		return Runtime{}, mergeValidation(err)
	}
	var out Runtime
	err := s.update(ctx, func(tx store.Tx) error {
		return s.idempotent(ctx, tx, "CreateAgentRuntime:"+clientToken, clientToken != "", []any{name, cfg}, &out, func() error {
			if _, err := tx.GetRuntimeByName(ctx, name); err == nil {
				return fmt.Errorf("an agent runtime named %q already exists: %w", name, ErrConflict)
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			now := time.Now().UTC()
			r := store.Runtime{ID: name + "-" + randomAlnum(10), Name: name, LatestVersion: 1, CreatedAt: now, UpdatedAt: now}
			if err := tx.CreateRuntime(ctx, r); err != nil {
				return fmt.Errorf("create runtime: %w", err)
			}
			ver, err := s.newVersion(ctx, tx, r.ID, 1, cfg, now)
			if err != nil {
				return err
			}
			ep := store.Endpoint{RuntimeID: r.ID, Name: DefaultEndpoint, ID: DefaultEndpoint + "-" + randomAlnum(10),
				TargetVersion: 1, Status: StatusCreating, CreatedAt: now, UpdatedAt: now}
			if err := tx.CreateEndpoint(ctx, ep); err != nil {
				return fmt.Errorf("create DEFAULT endpoint: %w", err)
			}
			out, err = s.runtimeView(r, ver)
			return err
		})
	})
	if err != nil {
		return Runtime{}, err
	}
	s.startPreparation(out.ID, out.Version)
	return out, nil
}

// UpdateRuntime creates a new version of a runtime with cfg; DEFAULT moves to
// it once it is prepared.
func (s *Service) UpdateRuntime(ctx context.Context, id string, cfg Config, clientToken string) (Runtime, error) {
	if err := errors.Join(cfg.normalize(s.opts.MinLifecycle), s.checkOCIRuntime(cfg)); err != nil {
		return Runtime{}, mergeValidation(err)
	}
	var out Runtime
	err := s.update(ctx, func(tx store.Tx) error {
		return s.idempotent(ctx, tx, "UpdateAgentRuntime:"+id+":"+clientToken, clientToken != "", cfg, &out, func() error {
			r, err := s.getRuntime(ctx, tx, id)
			if err != nil {
				return err
			}
			if r.LatestVersion >= maxVersions {
				return fmt.Errorf("runtime %s has %d versions, the most allowed: %w", id, maxVersions, ErrQuota)
			}
			now := time.Now().UTC()
			r.LatestVersion++
			r.UpdatedAt = now
			if err := tx.UpdateRuntime(ctx, r); err != nil {
				return fmt.Errorf("update runtime: %w", err)
			}
			ver, err := s.newVersion(ctx, tx, r.ID, r.LatestVersion, cfg, now)
			if err != nil {
				return err
			}
			def, err := tx.GetEndpoint(ctx, r.ID, DefaultEndpoint)
			if err != nil {
				return fmt.Errorf("get DEFAULT endpoint: %w", err)
			}
			def.TargetVersion = r.LatestVersion
			def.Status = StatusUpdating
			def.FailureReason = ""
			def.UpdatedAt = now
			if err := tx.UpdateEndpoint(ctx, def); err != nil {
				return fmt.Errorf("update DEFAULT endpoint: %w", err)
			}
			out, err = s.runtimeView(r, ver)
			return err
		})
	})
	if err != nil {
		return Runtime{}, err
	}
	s.startPreparation(out.ID, out.Version)
	return out, nil
}

func (s *Service) newVersion(ctx context.Context, tx store.Tx, runtimeID string, n int, cfg Config, now time.Time) (store.Version, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return store.Version{}, fmt.Errorf("encode config: %w", err)
	}
	status := StatusCreating
	if n > 1 {
		status = StatusUpdating
	}
	v := store.Version{RuntimeID: runtimeID, Number: n, Status: status, Config: raw, CreatedAt: now, UpdatedAt: now}
	if err := tx.CreateVersion(ctx, v); err != nil {
		return store.Version{}, fmt.Errorf("create version %d: %w", n, err)
	}
	return v, nil
}

// GetRuntime returns a runtime at version (0 for the newest).
func (s *Service) GetRuntime(ctx context.Context, id string, version int) (Runtime, error) {
	var out Runtime
	err := s.st.View(ctx, func(tx store.Tx) error {
		r, err := s.getRuntime(ctx, tx, id)
		if err != nil {
			return err
		}
		if version == 0 {
			version = r.LatestVersion
		}
		v, err := s.getVersion(ctx, tx, id, version)
		if err != nil {
			return err
		}
		out, err = s.runtimeView(r, v)
		return err
	})
	return out, err
}

// DeleteRuntime deletes a runtime with its versions and endpoints, or, if
// version is not 0, only that version (which no endpoint may use).
func (s *Service) DeleteRuntime(ctx context.Context, id string, version int) error {
	return s.update(ctx, func(tx store.Tx) error {
		r, err := s.getRuntime(ctx, tx, id)
		if err != nil {
			return err
		}
		if version == 0 {
			return tx.DeleteRuntime(ctx, id)
		}
		if _, err := s.getVersion(ctx, tx, id, version); err != nil {
			return err
		}
		if version == r.LatestVersion {
			return fmt.Errorf("version %d is the newest version of %s and DEFAULT follows it: %w", version, id, ErrConflict)
		}
		eps, err := tx.ListEndpoints(ctx, id, "", 0)
		if err != nil {
			return err
		}
		for _, e := range eps {
			if e.LiveVersion == version || e.TargetVersion == version {
				return fmt.Errorf("version %d is used by endpoint %s: %w", version, e.Name, ErrConflict)
			}
		}
		return tx.DeleteVersion(ctx, id, version)
	})
}

// ListRuntimes returns a page of runtimes, each at its newest version.
func (s *Service) ListRuntimes(ctx context.Context, token string, max int) ([]Runtime, string, error) {
	after, err := decodeToken(token)
	if err != nil {
		return nil, "", err
	}
	var out []Runtime
	next := ""
	err = s.st.View(ctx, func(tx store.Tx) error {
		rs, err := tx.ListRuntimes(ctx, after, max+1)
		if err != nil {
			return err
		}
		if len(rs) > max {
			rs = rs[:max]
			next = encodeToken(rs[max-1].ID)
		}
		for _, r := range rs {
			v, err := tx.GetVersion(ctx, r.ID, r.LatestVersion)
			if err != nil {
				return fmt.Errorf("get version %d of %s: %w", r.LatestVersion, r.ID, err)
			}
			view, err := s.runtimeView(r, v)
			if err != nil {
				return err
			}
			out = append(out, view)
		}
		return nil
	})
	return out, next, err
}

// ListVersions returns a page of a runtime's versions, newest first.
func (s *Service) ListVersions(ctx context.Context, id, token string, max int) ([]Runtime, string, error) {
	before := 0
	if token != "" {
		t, err := decodeToken(token)
		if err != nil {
			return nil, "", err
		}
		if before, err = strconv.Atoi(t); err != nil || before < 1 {
			return nil, "", &ValidationError{Fields: []FieldError{{Field: "nextToken", Message: "is not a token this server issued"}}}
		}
	}
	var out []Runtime
	next := ""
	err := s.st.View(ctx, func(tx store.Tx) error {
		r, err := s.getRuntime(ctx, tx, id)
		if err != nil {
			return err
		}
		vs, err := tx.ListVersions(ctx, id, before, max+1)
		if err != nil {
			return err
		}
		if len(vs) > max {
			vs = vs[:max]
			next = encodeToken(strconv.Itoa(vs[max-1].Number))
		}
		for _, v := range vs {
			view, err := s.runtimeView(r, v)
			if err != nil {
				return err
			}
			out = append(out, view)
		}
		return nil
	})
	return out, next, err
}

// CreateEndpoint creates a named endpoint pinned to version (0 for the
// newest).
func (s *Service) CreateEndpoint(ctx context.Context, runtimeID, name string, version int, description, clientToken string) (Endpoint, error) {
	var v validator
	validateName(&v, "name", name)
	if name == DefaultEndpoint {
		v.add("name", "DEFAULT is created with the runtime and cannot be created again")
	}
	if n := len(description); n > 256 {
		v.add("description", "is %d characters; at most 256 are allowed", n)
	}
	if err := v.err(); err != nil {
		return Endpoint{}, err
	}
	var out Endpoint
	err := s.update(ctx, func(tx store.Tx) error {
		return s.idempotent(ctx, tx, "CreateAgentRuntimeEndpoint:"+runtimeID+":"+clientToken, clientToken != "",
			[]any{name, version, description}, &out, func() error {
				r, err := s.getRuntime(ctx, tx, runtimeID)
				if err != nil {
					return err
				}
				if version == 0 {
					version = r.LatestVersion
				}
				ver, err := s.getVersion(ctx, tx, runtimeID, version)
				if err != nil {
					return err
				}
				eps, err := tx.ListEndpoints(ctx, runtimeID, "", 0)
				if err != nil {
					return err
				}
				if len(eps) >= maxEndpoints {
					return fmt.Errorf("runtime %s has %d endpoints, the most allowed: %w", runtimeID, maxEndpoints, ErrQuota)
				}
				now := time.Now().UTC()
				e := store.Endpoint{RuntimeID: runtimeID, Name: name, ID: name + "-" + randomAlnum(10), Description: description,
					TargetVersion: version, Status: StatusCreating, CreatedAt: now, UpdatedAt: now}
				settle(&e, ver)
				if err := tx.CreateEndpoint(ctx, e); err != nil {
					if errors.Is(err, store.ErrExists) {
						return fmt.Errorf("endpoint %q already exists on runtime %s: %w", name, runtimeID, ErrConflict)
					}
					return fmt.Errorf("create endpoint: %w", err)
				}
				out = s.endpointView(e)
				return nil
			})
	})
	return out, err
}

// UpdateEndpoint points an endpoint at another version (0 keeps its version)
// and, if description is not nil, changes its description.
func (s *Service) UpdateEndpoint(ctx context.Context, runtimeID, name string, version int, description *string, clientToken string) (Endpoint, error) {
	if description != nil && len(*description) > 256 {
		return Endpoint{}, &ValidationError{Fields: []FieldError{{Field: "description", Message: "is longer than 256 characters"}}}
	}
	var out Endpoint
	err := s.update(ctx, func(tx store.Tx) error {
		return s.idempotent(ctx, tx, "UpdateAgentRuntimeEndpoint:"+runtimeID+":"+name+":"+clientToken, clientToken != "",
			[]any{version, description}, &out, func() error {
				e, err := s.getEndpoint(ctx, tx, runtimeID, name)
				if err != nil {
					return err
				}
				if version != 0 {
					if name == DefaultEndpoint {
						return &ValidationError{Fields: []FieldError{{Field: "agentRuntimeVersion", Message: "DEFAULT always follows the newest version and cannot be pinned"}}}
					}
					ver, err := s.getVersion(ctx, tx, runtimeID, version)
					if err != nil {
						return err
					}
					e.TargetVersion = version
					e.Status = StatusUpdating
					e.FailureReason = ""
					settle(&e, ver)
				}
				if description != nil {
					e.Description = *description
				}
				e.UpdatedAt = time.Now().UTC()
				if err := tx.UpdateEndpoint(ctx, e); err != nil {
					return fmt.Errorf("update endpoint: %w", err)
				}
				out = s.endpointView(e)
				return nil
			})
	})
	return out, err
}

// settle moves an endpoint to its target version if that version is already
// prepared (or marks it failed if it failed); otherwise the background
// preparation of the version does it later.
func settle(e *store.Endpoint, v store.Version) {
	switch v.Status {
	case StatusReady:
		e.LiveVersion = v.Number
		e.Status = StatusReady
		e.FailureReason = ""
	case StatusCreateFailed, StatusUpdateFailed:
		e.Status = StatusUpdateFailed
		if e.LiveVersion == 0 {
			e.Status = StatusCreateFailed
		}
		e.FailureReason = fmt.Sprintf("version %d failed: %s", v.Number, v.FailureReason)
	}
}

// GetEndpoint returns one endpoint.
func (s *Service) GetEndpoint(ctx context.Context, runtimeID, name string) (Endpoint, error) {
	var out Endpoint
	err := s.st.View(ctx, func(tx store.Tx) error {
		if _, err := s.getRuntime(ctx, tx, runtimeID); err != nil {
			return err
		}
		e, err := s.getEndpoint(ctx, tx, runtimeID, name)
		out = s.endpointView(e)
		return err
	})
	return out, err
}

// DeleteEndpoint deletes a named endpoint; DEFAULT cannot be deleted.
func (s *Service) DeleteEndpoint(ctx context.Context, runtimeID, name string) error {
	if name == DefaultEndpoint {
		return fmt.Errorf("the DEFAULT endpoint is deleted only with its runtime: %w", ErrConflict)
	}
	return s.update(ctx, func(tx store.Tx) error {
		if _, err := s.getEndpoint(ctx, tx, runtimeID, name); err != nil {
			return err
		}
		return tx.DeleteEndpoint(ctx, runtimeID, name)
	})
}

// ListEndpoints returns a page of a runtime's endpoints.
func (s *Service) ListEndpoints(ctx context.Context, runtimeID, token string, max int) ([]Endpoint, string, error) {
	after, err := decodeToken(token)
	if err != nil {
		return nil, "", err
	}
	var out []Endpoint
	next := ""
	err = s.st.View(ctx, func(tx store.Tx) error {
		if _, err := s.getRuntime(ctx, tx, runtimeID); err != nil {
			return err
		}
		eps, err := tx.ListEndpoints(ctx, runtimeID, after, max+1)
		if err != nil {
			return err
		}
		if len(eps) > max {
			eps = eps[:max]
			next = encodeToken(eps[max-1].Name)
		}
		for _, e := range eps {
			out = append(out, s.endpointView(e))
		}
		return nil
	})
	return out, next, err
}

// update runs fn in a write transaction and then forgets every cached
// deployment, since fn may have moved an endpoint.
func (s *Service) update(ctx context.Context, fn func(store.Tx) error) error {
	err := s.st.Update(ctx, fn)
	s.mu.Lock()
	clear(s.deployments)
	s.mu.Unlock()
	s.generation.Add(1)
	return err
}

func (s *Service) getRuntime(ctx context.Context, tx store.Tx, id string) (store.Runtime, error) {
	r, err := tx.GetRuntime(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return r, fmt.Errorf("agent runtime %s: %w", id, ErrNotFound)
	}
	return r, err
}

func (s *Service) getVersion(ctx context.Context, tx store.Tx, id string, n int) (store.Version, error) {
	v, err := tx.GetVersion(ctx, id, n)
	if errors.Is(err, store.ErrNotFound) {
		return v, fmt.Errorf("version %d of agent runtime %s: %w", n, id, ErrNotFound)
	}
	return v, err
}

func (s *Service) getEndpoint(ctx context.Context, tx store.Tx, runtimeID, name string) (store.Endpoint, error) {
	e, err := tx.GetEndpoint(ctx, runtimeID, name)
	if errors.Is(err, store.ErrNotFound) {
		return e, fmt.Errorf("endpoint %s of agent runtime %s: %w", name, runtimeID, ErrNotFound)
	}
	return e, err
}

// idempotent runs do unless a request with the same key already ran, in
// which case it decodes that request's result into out. A reused key with
// different parameters is a conflict. It must run inside the write
// transaction tx so that concurrent retries cannot both run do.
func (s *Service) idempotent(ctx context.Context, tx store.Tx, key string, enabled bool, params, out any, do func() error) error {
	if !enabled {
		return do()
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	sum := sha256.Sum256(raw)
	hash := hex.EncodeToString(sum[:])
	rec, err := tx.GetIdempotency(ctx, key)
	switch {
	case err == nil:
		if rec.RequestHash != hash {
			return fmt.Errorf("clientToken was already used with different parameters: %w", ErrConflict)
		}
		return json.Unmarshal(rec.Result, out)
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	if err := do(); err != nil {
		return err
	}
	result, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	return tx.PutIdempotency(ctx, store.Idempotency{Key: key, RequestHash: hash, Result: result, CreatedAt: time.Now().UTC()})
}

// mergeValidation turns a join of validation errors into one.
func mergeValidation(err error) error {
	var all ValidationError
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var ve *ValidationError
		if errors.As(e, &ve) {
			all.Fields = append(all.Fields, ve.Fields...)
		}
	}
	walk(err)
	if len(all.Fields) == 0 {
		return err
	}
	return &all
}

func encodeToken(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func decodeToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", &ValidationError{Fields: []FieldError{{Field: "nextToken", Message: "is not a token this server issued"}}}
	}
	return string(b), nil
}

// randomAlnum returns n random letters and digits (n <= 26).
func randomAlnum(n int) string { return rand.Text()[:n] }

func sortedKeys[M ~map[string]V, V any](m M) []string {
	return slices.Sorted(maps.Keys(m))
}
