package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berthrun/berth/internal/image"
	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/session"
	"github.com/berthrun/berth/internal/store"
)

// WorkDir is where an agent's code bundle appears inside its sandbox.
const WorkDir = "/app"

// Deployment is everything the data plane needs to start a session of one
// runtime version.
type Deployment struct {
	RuntimeID  string
	RuntimeARN string
	Version    int
	Config     Config
	// CodeDir is the host directory holding the unpacked code bundle.
	CodeDir string
	// RootLayers are the unpacked layers of a container image, the bottom
	// one first; User and WorkDir are whom and where its agent runs as.
	RootLayers []string
	User       sandbox.User
	WorkDir    string
	// Image is the container image by digest, instead of RootLayers, when
	// the driver's nodes pull images themselves (Options.ImagesByReference).
	Image string
	// Args and Env are the agent's command line and environment.
	Args []string
	Env  []string
	// WarmPool is how many warm sandboxes to keep for the version, and
	// WarmPoolIdle how long without new sessions before they are released
	// (0: never).
	WarmPool     int
	WarmPoolIdle time.Duration
	// Network is what the version's sandboxes may reach.
	Network sandbox.Network
	// OCIRuntime is the OCI runtime its sandboxes run with (EnvOCIRuntime);
	// empty means the server's default.
	OCIRuntime string
}

// Target is what a new session of the deployment runs, with limits.
func (d *Deployment) Target(limits sandbox.Limits) *session.Target {
	return &session.Target{
		RuntimeID: d.RuntimeID, Version: d.Version, Args: d.Args, Env: d.Env, CodeDir: d.CodeDir,
		WorkDir: d.WorkDir, RootLayers: d.RootLayers, Image: d.Image, User: d.User, Port: d.Config.Protocol.Port, Limits: limits,
		Network: d.Network, OCIRuntime: d.OCIRuntime,
		IdleTimeout: time.Duration(d.Config.Lifecycle.IdleTimeout) * time.Second,
		MaxLifetime: time.Duration(d.Config.Lifecycle.MaxLifetime) * time.Second,
	}
}

// Resolve returns the deployment a data-plane call reaches: the version the
// qualifier (an endpoint name; "" means DEFAULT) currently serves.
func (s *Service) Resolve(ctx context.Context, runtimeID, qualifier string) (*Deployment, error) {
	if qualifier == "" {
		qualifier = DefaultEndpoint
	}
	key := [2]string{runtimeID, qualifier}
	s.mu.RLock()
	d := s.deployments[key]
	s.mu.RUnlock()
	if d != nil {
		return d, nil
	}
	err := s.st.View(ctx, func(tx store.Tx) error {
		r, err := s.getRuntime(ctx, tx, runtimeID)
		if err != nil {
			return err
		}
		e, err := s.getEndpoint(ctx, tx, runtimeID, qualifier)
		if err != nil {
			return err
		}
		if e.LiveVersion == 0 {
			if e.Status == StatusCreating {
				return fmt.Errorf("agent runtime %s is still being created; retry once it is READY: %w", runtimeID, ErrNotReady)
			}
			return fmt.Errorf("endpoint %s of agent runtime %s has no ready version (%s): %w", qualifier, runtimeID, e.FailureReason, ErrNotReady)
		}
		v, err := s.getVersion(ctx, tx, runtimeID, e.LiveVersion)
		if err != nil {
			return err
		}
		view, err := s.runtimeView(r, v)
		if err != nil {
			return err
		}
		d, err = s.deployment(ctx, view, v.Artifact)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.deployments[key] = d
	s.mu.Unlock()
	return d, nil
}

// Version returns the deployment of one version of a runtime, which must be
// ready, whether or not an endpoint serves it (a live session may outlast
// its endpoint's move to another version).
func (s *Service) Version(ctx context.Context, runtimeID string, version int) (*Deployment, error) {
	var d *Deployment
	err := s.st.View(ctx, func(tx store.Tx) error {
		r, err := s.getRuntime(ctx, tx, runtimeID)
		if err != nil {
			return err
		}
		v, err := s.getVersion(ctx, tx, runtimeID, version)
		if err != nil {
			return err
		}
		if v.Status != StatusReady {
			return fmt.Errorf("agent runtime %s version %d is %s: %w", runtimeID, version, v.Status, ErrNotReady)
		}
		view, err := s.runtimeView(r, v)
		if err != nil {
			return err
		}
		d, err = s.deployment(ctx, view, v.Artifact)
		return err
	})
	return d, err
}

// deployment builds the Deployment of a prepared version.
func (s *Service) deployment(ctx context.Context, rt Runtime, artifact string) (*Deployment, error) {
	c := rt.Config
	// Checked when the version was prepared, but the server may have
	// been restarted with another policy since.
	netw, err := c.SandboxNetwork(s.opts.Network)
	if err != nil {
		return nil, fmt.Errorf("agent runtime %s version %d: %w: %w", rt.ID, rt.Version, err, ErrNotReady)
	}
	if c.Container != nil {
		d, err := s.imageDeployment(ctx, rt, artifact)
		if err != nil {
			return nil, err
		}
		d.Network, d.OCIRuntime = netw, c.Env[EnvOCIRuntime]
		return d, nil
	}
	if c.Code == nil {
		return nil, fmt.Errorf("agent runtime %s version %d has no code bundle: %w", rt.ID, rt.Version, ErrNotReady)
	}
	dir, err := s.arts.Unpack(ctx, artifact)
	if err != nil {
		return nil, fmt.Errorf("unpack code bundle of %s version %d: %w", rt.ID, rt.Version, err)
	}
	args, err := s.command(c.Code, dir)
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"PATH":                    "/usr/local/bin:/usr/bin:/bin",
		"HOME":                    "/tmp",
		"LANG":                    "C.UTF-8",
		"PORT":                    strconv.Itoa(c.Protocol.Port),
		"AWS_REGION":              s.opts.Region,
		"AWS_DEFAULT_REGION":      s.opts.Region,
		"PYTHONUNBUFFERED":        "1",
		"PYTHONDONTWRITEBYTECODE": "1",
	}
	for k, v := range c.Env {
		env[k] = v
	}
	// The Python agent SDK binds 0.0.0.0 only when it believes it runs in a
	// container; the contract requires that.
	env["DOCKER_CONTAINER"] = "1"
	envList := make([]string, 0, len(env))
	for _, k := range sortedKeys(env) {
		envList = append(envList, k+"="+env[k])
	}
	pool, _ := strconv.Atoi(c.Env[EnvWarmPoolSize])
	idle, _ := strconv.Atoi(c.Env[EnvWarmPoolIdle])
	return &Deployment{RuntimeID: rt.ID, RuntimeARN: rt.ARN, Version: rt.Version, Config: c,
		CodeDir: dir, WorkDir: WorkDir, Args: args, Env: envList, WarmPool: pool, WarmPoolIdle: time.Duration(idle) * time.Second,
		Network: netw, OCIRuntime: c.Env[EnvOCIRuntime]}, nil
}

// imageDeployment builds the Deployment of a prepared container image
// version: the image's command, environment (under the runtime's
// environmentVariables), working directory and user.
func (s *Service) imageDeployment(ctx context.Context, rt Runtime, digest string) (*Deployment, error) {
	c := rt.Config
	if s.opts.Images == nil {
		return nil, fmt.Errorf("container image %q: %w", c.Container.URI, errNoImages)
	}
	img, err := s.opts.Images.Get(ctx, digest)
	if err != nil {
		return nil, fmt.Errorf("container image %q of %s version %d: %w", c.Container.URI, rt.ID, rt.Version, err)
	}
	// The node pulls the image, by digest; otherwise its unpacked layers
	// are the sandbox's root.
	var layers []string
	var ref string
	if s.opts.ImagesByReference {
		if ref, err = image.Pinned(c.Container.URI, img.Digest); err != nil {
			return nil, fmt.Errorf("containerConfiguration.containerUri: %w", err)
		}
	} else if layers, err = s.opts.Images.LayerDirs(img); err != nil {
		return nil, err
	}
	args := append(slices.Clone(img.Config.Entrypoint), img.Config.Cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("container image %q has neither Entrypoint nor Cmd: set one (e.g. ENTRYPOINT [\"python\", \"main.py\"] in its Dockerfile)", c.Container.URI)
	}
	user, err := s.opts.Images.ResolveUser(img)
	if err != nil {
		return nil, fmt.Errorf("container image %q: %w", c.Container.URI, err)
	}
	env := map[string]string{
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME": user.Home,
	}
	for _, kv := range img.Config.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			env[k] = v
		}
	}
	env["PORT"] = strconv.Itoa(c.Protocol.Port)
	env["AWS_REGION"] = s.opts.Region
	env["AWS_DEFAULT_REGION"] = s.opts.Region
	for k, v := range c.Env {
		env[k] = v
	}
	env["DOCKER_CONTAINER"] = "1"
	envList := make([]string, 0, len(env))
	for _, k := range sortedKeys(env) {
		envList = append(envList, k+"="+env[k])
	}
	workDir := img.Config.WorkingDir
	if workDir == "" {
		workDir = "/"
	}
	workDir = path.Clean("/" + workDir)
	pool, _ := strconv.Atoi(c.Env[EnvWarmPoolSize])
	idle, _ := strconv.Atoi(c.Env[EnvWarmPoolIdle])
	return &Deployment{RuntimeID: rt.ID, RuntimeARN: rt.ARN, Version: rt.Version, Config: c,
		RootLayers: layers, Image: ref, User: sandbox.User{UID: user.UID, GID: user.GID}, WorkDir: workDir,
		Args: args, Env: envList, WarmPool: pool, WarmPoolIdle: time.Duration(idle) * time.Second}, nil
}

// errNoImages says why a server without an image store cannot run images.
var errNoImages = errors.New("this Berth server cannot run container images (they need the runc driver and root); use codeConfiguration")

// command returns the agent's command line: a script entry point runs with
// the runtime's interpreter; anything else runs as it is, relative to the
// bundle if it names a file there.
func (s *Service) command(code *CodeArtifact, dir string) ([]string, error) {
	entry := code.EntryPoint
	first := entry[0]
	python := strings.HasPrefix(code.Runtime, "PYTHON_")
	script := (python && strings.HasSuffix(first, ".py")) ||
		(!python && (strings.HasSuffix(first, ".js") || strings.HasSuffix(first, ".mjs") || strings.HasSuffix(first, ".cjs")))
	if script {
		if err := checkInBundle(dir, first); err != nil {
			return nil, err
		}
		interp, err := s.interpreter(code.Runtime)
		if err != nil {
			return nil, err
		}
		return append([]string{interp}, entry...), nil
	}
	if !strings.Contains(first, "/") {
		if _, err := os.Stat(filepath.Join(dir, first)); err == nil {
			first = WorkDir + "/" + first
		}
	} else if !strings.HasPrefix(first, "/") {
		first = WorkDir + "/" + strings.TrimPrefix(first, "./")
	}
	return append([]string{first}, entry[1:]...), nil
}

func checkInBundle(dir, name string) error {
	if _, err := os.Stat(filepath.Join(dir, filepath.Clean("/"+name))); err != nil {
		return fmt.Errorf("entryPoint %q is not in the code bundle (is the zip's top level the project folder?)", name)
	}
	return nil
}

// interpreter finds the host interpreter for a code runtime, preferring the
// exact version (python3.12 for PYTHON_3_12) and falling back to the generic
// one, in the directories sandboxes can see.
func (s *Service) interpreter(runtime string) (string, error) {
	var names []string
	if v, ok := strings.CutPrefix(runtime, "PYTHON_"); ok {
		names = []string{"python" + strings.ReplaceAll(v, "_", "."), "python3"}
	} else {
		names = []string{"node", "nodejs"}
	}
	for _, n := range names {
		for _, d := range s.opts.SystemDirs {
			p := filepath.Join(d, n)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("no interpreter for %s on this host (looked for %s in %s); install it (e.g. apt-get install %s)",
		runtime, strings.Join(names, ", "), strings.Join(s.opts.SystemDirs, ", "), map[bool]string{true: "python3", false: "nodejs"}[strings.HasPrefix(runtime, "PYTHON_")])
}

// startPreparation prepares a version in the background.
func (s *Service) startPreparation(runtimeID string, version int) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.prepare(s.ctx, runtimeID, version)
	}()
}

// resumePreparation restarts the preparation of versions an earlier run left
// unfinished.
func (s *Service) resumePreparation(ctx context.Context) error {
	var pending []store.Version
	err := s.st.View(ctx, func(tx store.Tx) error {
		after := ""
		for {
			rs, err := tx.ListRuntimes(ctx, after, 100)
			if err != nil {
				return err
			}
			if len(rs) == 0 {
				return nil
			}
			for _, r := range rs {
				vs, err := tx.ListVersions(ctx, r.ID, 0, 0)
				if err != nil {
					return err
				}
				for _, v := range vs {
					if v.Status == StatusCreating || v.Status == StatusUpdating {
						pending = append(pending, v)
					}
				}
			}
			after = rs[len(rs)-1].ID
		}
	})
	if err != nil {
		return fmt.Errorf("find unprepared versions: %w", err)
	}
	for _, v := range pending {
		s.startPreparation(v.RuntimeID, v.Number)
	}
	return nil
}

// prepare fetches and checks a version's artifact, then marks the version
// READY (moving the endpoints that wait for it) or failed with a reason.
func (s *Service) prepare(ctx context.Context, runtimeID string, number int) {
	log := s.log.With("runtime", runtimeID, "version", number)
	var rt Runtime
	err := s.st.View(ctx, func(tx store.Tx) error {
		r, err := tx.GetRuntime(ctx, runtimeID)
		if err != nil {
			return err
		}
		v, err := tx.GetVersion(ctx, runtimeID, number)
		if err != nil {
			return err
		}
		rt, err = s.runtimeView(r, v)
		return err
	})
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
			log.Error("prepare version", "err", err)
		}
		return
	}
	start := time.Now()
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	artifact, perr := s.fetch(ctx, rt)
	if ctx.Err() != nil {
		return // shutting down: the next start resumes
	}
	if perr == nil {
		_, perr = s.deployment(ctx, rt, artifact)
	}
	err = s.update(ctx, func(tx store.Tx) error {
		v, err := tx.GetVersion(ctx, runtimeID, number)
		if err != nil {
			return err
		}
		v.Artifact = artifact
		v.UpdatedAt = time.Now().UTC()
		if perr != nil {
			v.Status = StatusCreateFailed
			if number > 1 {
				v.Status = StatusUpdateFailed
			}
			v.FailureReason = perr.Error()
		} else {
			v.Status = StatusReady
		}
		if err := tx.UpdateVersion(ctx, v); err != nil {
			return err
		}
		eps, err := tx.ListEndpoints(ctx, runtimeID, "", 0)
		if err != nil {
			return err
		}
		for _, e := range eps {
			if e.TargetVersion != number {
				continue
			}
			settle(&e, v)
			e.UpdatedAt = v.UpdatedAt
			if err := tx.UpdateEndpoint(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Deleted while being prepared.
	case err != nil:
		log.Error("record preparation", "err", err)
	case perr != nil:
		log.Warn("version failed", "reason", perr)
	default:
		log.Info("version ready", "artifact", artifact, "took", time.Since(start))
	}
}

// fetch resolves and unpacks the version's artifact and returns its digest.
func (s *Service) fetch(ctx context.Context, rt Runtime) (string, error) {
	c := rt.Config
	if _, err := c.SandboxNetwork(s.opts.Network); err != nil {
		return "", err
	}
	if c.Container != nil {
		if s.opts.Images == nil {
			return "", fmt.Errorf("container image %q: %w", c.Container.URI, errNoImages)
		}
		pull := s.opts.Images.Pull
		if s.opts.ImagesByReference {
			if strings.HasPrefix(c.Container.URI, image.LocalRegistry+"/") {
				return "", fmt.Errorf("containerConfiguration.containerUri %q: this server's sandboxes run on Kubernetes nodes, which pull images from registries themselves and cannot reach images uploaded to Berth (%s/...): push the image to a registry the nodes can pull from and use its URI", c.Container.URI, image.LocalRegistry)
			}
			pull = s.opts.Images.Inspect
		}
		img, err := pull(ctx, c.Container.URI)
		if err != nil {
			return "", fmt.Errorf("containerConfiguration.containerUri: %w", err)
		}
		return img.Digest, nil
	}
	digest, err := s.arts.Resolve(ctx, c.Code.Bucket, c.Code.Key, c.Code.VersionID)
	if err != nil {
		return "", fmt.Errorf("code bundle s3://%s/%s: %w (upload it first, e.g. PUT /berth/v1/code/%s/%s)", c.Code.Bucket, c.Code.Key, err, c.Code.Bucket, c.Code.Key)
	}
	if _, err := s.arts.Unpack(ctx, digest); err != nil {
		return digest, fmt.Errorf("code bundle s3://%s/%s: %w", c.Code.Bucket, c.Code.Key, err)
	}
	return digest, nil
}

// CollectArtifacts removes the code bundles that no version refers to and
// that are no longer the current object of any location, and returns their
// digests.
func (s *Service) CollectArtifacts(ctx context.Context) ([]string, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	digests, err := s.arts.Digests(ctx)
	if err != nil {
		return nil, fmt.Errorf("list code bundles: %w", err)
	}
	var removed []string
	for _, d := range digests {
		used, err := s.artifactUsed(ctx, d)
		if err != nil {
			return removed, err
		}
		if used {
			continue
		}
		if err := s.arts.Remove(ctx, d); err != nil {
			continue // still current somewhere, or already gone
		}
		removed = append(removed, d)
	}
	if len(removed) > 0 {
		s.log.Info("removed unused code bundles", "count", len(removed))
	}
	images, err := s.collectImages(ctx)
	return append(removed, images...), err
}

// artifactUsed says whether any version refers to the artifact digest.
func (s *Service) artifactUsed(ctx context.Context, digest string) (bool, error) {
	var users []store.Version
	err := s.st.View(ctx, func(tx store.Tx) error {
		var err error
		users, err = tx.ListVersionsByArtifact(ctx, digest)
		return err
	})
	return len(users) > 0, err
}

// collectImages removes the container images no version refers to, then
// the layers no image needs, and returns the images' digests. The caller
// holds gcMu.
func (s *Service) collectImages(ctx context.Context) ([]string, error) {
	if s.opts.Images == nil {
		return nil, nil
	}
	digests, err := s.opts.Images.Digests(ctx)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, d := range digests {
		used, err := s.artifactUsed(ctx, d)
		if err != nil {
			return removed, err
		}
		if used {
			continue
		}
		if err := s.opts.Images.Remove(ctx, d); errors.Is(err, image.ErrInUse) {
			continue // an upload's name still refers to it
		} else if err != nil {
			return removed, err
		}
		removed = append(removed, d)
	}
	if len(removed) > 0 {
		s.log.Info("removed unused container images", "count", len(removed))
	}
	if _, err := s.opts.Images.CollectLayers(ctx); err != nil {
		return removed, err
	}
	return removed, nil
}

// Generation changes whenever the control plane's state may have changed, so
// that watchers know when to look again.
func (s *Service) Generation() uint64 { return s.generation.Load() }

// Served returns the deployments that some endpoint serves now: every
// endpoint's live version, each once.
func (s *Service) Served(ctx context.Context) ([]*Deployment, error) {
	var pairs [][2]string // runtime ID, endpoint
	err := s.st.View(ctx, func(tx store.Tx) error {
		rs, err := tx.ListRuntimes(ctx, "", 0)
		if err != nil {
			return err
		}
		for _, r := range rs {
			eps, err := tx.ListEndpoints(ctx, r.ID, "", 0)
			if err != nil {
				return err
			}
			for _, e := range eps {
				if e.LiveVersion > 0 {
					pairs = append(pairs, [2]string{r.ID, e.Name})
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list served versions: %w", err)
	}
	seen := map[[2]any]bool{}
	var out []*Deployment
	for _, p := range pairs {
		d, err := s.Resolve(ctx, p[0], p[1])
		if err != nil {
			if errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotReady) {
				continue // changed meanwhile
			}
			return nil, err
		}
		if k := [2]any{d.RuntimeID, d.Version}; !seen[k] {
			seen[k] = true
			out = append(out, d)
		}
	}
	return out, nil
}
