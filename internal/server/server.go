// Package server assembles a Berth server from its parts: the store, the code
// artifact store, the sandbox driver, the control plane, the session manager
// and the HTTP API, all kept under one data directory.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthrun/berth/internal/api"
	"github.com/berthrun/berth/internal/artifact"
	"github.com/berthrun/berth/internal/auth"
	"github.com/berthrun/berth/internal/console"
	"github.com/berthrun/berth/internal/control"
	"github.com/berthrun/berth/internal/image"
	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/kubernetes"
	"github.com/berthrun/berth/internal/sandbox/network"
	"github.com/berthrun/berth/internal/sandbox/runc"
	"github.com/berthrun/berth/internal/session"
	"github.com/berthrun/berth/internal/store"
	"github.com/berthrun/berth/internal/store/postgres"
	"github.com/berthrun/berth/internal/store/sqlite"
	"github.com/berthrun/berth/internal/telemetry"
)

// DefaultAddr is where Berth listens unless told otherwise: loopback only.
const DefaultAddr = "127.0.0.1:4780"

// Config configures a server.
type Config struct {
	// DataDir holds the database, code bundles, sandbox state and session
	// logs.
	DataDir string
	// Store, if set, is a PostgreSQL connection URL
	// (postgres://user:password@host/db?sslmode=...) of the database to
	// keep state in instead of SQLite in DataDir. It may hold a password,
	// so it is never logged; Describe's form of it is.
	Store string
	// Addr is the TCP address to listen on.
	Addr string
	// Region and AccountID appear in ARNs.
	Region    string
	AccountID string
	// OCIRuntime is the OCI runtime sandboxes run with unless their agent
	// runtime asks for another (control.EnvOCIRuntime): runc, crun or runsc,
	// or the path of one of them. Default runc.
	OCIRuntime string
	// OCIRuntimePaths maps OCI runtime names (runc, crun, runsc) to their
	// binaries, for those not found in PATH under their own name.
	OCIRuntimePaths map[string]string
	// RunscPlatform is how gVisor intercepts system calls: ptrace (the
	// default) or another platform the installed runsc offers.
	RunscPlatform string
	// TLSCert and TLSKey, if set, serve HTTPS with that certificate;
	// TLSSelfSigned serves HTTPS with a self-signed certificate kept in
	// DataDir (see SelfSignedCert), for local use.
	TLSCert, TLSKey string
	TLSSelfSigned   bool
	// Auth requires every API call to be signed with SigV4 by a key Berth
	// issued (keys.json in DataDir). On first start a root admin key is
	// created and printed once to RootKeyOut.
	Auth       bool
	RootKeyOut io.Writer
	// Driver, if set, runs sandboxes instead of the OCI-runtime driver
	// (OCIRuntime and CgroupParent are then unused).
	Driver sandbox.Driver
	// CgroupParent is the cgroup under which every sandbox gets its own
	// (default /berth). Servers sharing a host need different ones.
	CgroupParent string
	// SandboxNetwork is the IPv4 pool sandboxes with outbound access get
	// a /30 from; zero means network.DefaultPool. Servers sharing a host
	// may share it.
	SandboxNetwork netip.Prefix
	// SandboxDNS are the name servers of sandboxes with outbound access;
	// nil means the host's (see network.Options.DNS).
	SandboxDNS []netip.Addr
	// NoOutbound gives sandboxes no network beyond loopback: PUBLIC
	// runtimes get BERTH_NETWORK=none, and runtimes asking for outbound
	// or allowlist fail to deploy. Without it, PUBLIC runtimes get
	// outbound access unless they set BERTH_NETWORK (see control).
	NoOutbound bool
	// Replica names this replica of Berth among those sharing one store
	// and one Kubernetes namespace (made of [A-Za-z0-9_.-]); empty means
	// the host name and a random suffix. It matters only with a driver
	// whose sandboxes any replica can reach (kubernetes): sessions are
	// then recorded in the store and shared (see session.Registry).
	Replica string
	// SessionLease is how long a replica owns its sessions without
	// renewing its claim, with such a driver; zero means 15 seconds.
	SessionLease time.Duration
	// MaxSessions caps live sessions.
	MaxSessions int
	// SessionLimits bound each session's sandbox.
	SessionLimits sandbox.Limits
	// ReadyTimeout bounds how long a new agent may take to become healthy.
	ReadyTimeout time.Duration
	// ReapInterval is how often idle and expired sessions are looked for.
	ReapInterval time.Duration
	// MinLifecycle is the smallest idle timeout and max lifetime a runtime
	// may ask for, in seconds (AgentCore: 60).
	MinLifecycle int
	// LogRetention and LogMaxBytes bound the logs of ended sessions: older
	// ones are removed, then the oldest while all take more than
	// LogMaxBytes.
	LogRetention time.Duration
	LogMaxBytes  int64
	// InsecureRegistries may serve container images over plain HTTP;
	// RegistryAuthFile is a Docker config file with registry credentials;
	// MaxImageBytes bounds an image's compressed size (0: 2 GiB).
	InsecureRegistries []string
	RegistryAuthFile   string
	MaxImageBytes      int64
	Logger             *slog.Logger
}

// DefaultDataDir returns the data directory used when none is given:
// /var/lib/berth for root, else $XDG_DATA_HOME/berth or ~/.local/share/berth.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/berth"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "berth")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "berth-data"
	}
	return filepath.Join(home, ".local", "share", "berth")
}

// Server is a running Berth.
type Server struct {
	cfg      Config
	control  *control.Service
	log      *slog.Logger
	ln       net.Listener
	http     *http.Server
	closers  []func()
	sessions *session.Manager
	// cancelRequests ends the contexts of requests in flight.
	cancelRequests context.CancelFunc
	logDir         string
	// storeName says where the state is, without secrets, for the log.
	storeName string
}

// New opens everything under cfg.DataDir and listens on cfg.Addr; Serve
// starts answering.
func New(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir()
	}
	if cfg.LogRetention <= 0 {
		cfg.LogRetention = 7 * 24 * time.Hour
	}
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = 1 << 30
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	// Others may traverse the data directory but not list it: sandboxes in
	// user namespaces must reach their state and code below it. What is
	// private in it is private by its own mode (the database 0600, session
	// logs 0700).
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o711); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}

	st, where, err := openStore(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.closers = append(s.closers, func() { st.Close() })
	s.storeName = where

	var artOpts artifact.Options
	if pst, ok := st.(*postgres.Store); ok {
		// Replicas on one database share their code bundles through it,
		// so that any replica can serve a bundle uploaded through another.
		artOpts.Shared = pst
	}
	arts, err := artifact.Open(filepath.Join(cfg.DataDir, "artifacts"), artOpts)
	if err != nil {
		return nil, fmt.Errorf("open artifact store: %w", err)
	}
	s.closers = append(s.closers, func() { arts.Close() })

	driver := cfg.Driver
	policy := control.NetworkPolicy{NoOutbound: cfg.NoOutbound}
	var checkOCIRuntime func(string) error // nil: the driver has no choice
	if driver == nil {
		var runtimes *runc.Runtimes
		if runtimes, policy, err = newRuncDriver(cfg); err != nil {
			return nil, err
		}
		driver, checkOCIRuntime = runtimes, runtimes.Check
	}
	// Sandboxes that outlive Berth belong to sessions in the store, which
	// this replica or another may serve: the session manager removes only
	// those no session or live replica accounts for (session.Reconcile).
	_, shared := driver.(sandbox.Shared)
	if !shared {
		if err := driver.Cleanup(ctx); err != nil {
			return nil, fmt.Errorf("clean up sandboxes of an earlier run: %w", err)
		}
	}

	// Container images run in the OCI-runtime driver from their unpacked
	// layers (unpacking them, owners and whiteouts, needs root), and in
	// the kubernetes driver by reference: its nodes pull them, and Berth
	// only checks their manifest and config at deploy time. Uploads
	// (tarballs) are for the OCI-runtime driver only: nodes cannot pull
	// them from Berth.
	var images, uploads *image.Store
	byReference := false
	switch driver.(type) {
	case *runc.Driver, *runc.Runtimes:
		images, err = image.Open(filepath.Join(cfg.DataDir, "images"), image.Options{
			AuthFile: cfg.RegistryAuthFile, Insecure: cfg.InsecureRegistries, MaxCompressedBytes: cfg.MaxImageBytes,
			IDShift: runc.DefaultHostIDBase, Logger: cfg.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
		uploads = images
	case *kubernetes.Driver:
		images, err = image.Open(filepath.Join(cfg.DataDir, "images"), image.Options{
			AuthFile: cfg.RegistryAuthFile, Insecure: cfg.InsecureRegistries, MaxCompressedBytes: cfg.MaxImageBytes,
			Logger: cfg.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
		byReference = true
	}

	ctl, err := control.New(ctx, st, arts, control.Options{
		Region: cfg.Region, AccountID: cfg.AccountID, MinLifecycle: cfg.MinLifecycle, Network: policy, Images: images,
		ImagesByReference: byReference, CheckOCIRuntime: checkOCIRuntime, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, ctl.Close)
	s.control = ctl

	tracer, stopTracing, err := telemetry.NewTracer(ctx)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopTracing(ctx) // flushes spans not yet exported
	})

	logDir := filepath.Join(cfg.DataDir, "sessions")
	s.logDir = logDir
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, fmt.Errorf("create session log directory: %w", err)
	}
	if err := os.Chmod(logDir, 0o700); err != nil {
		return nil, fmt.Errorf("session log directory: %w", err)
	}
	metrics := telemetry.NewMetrics()
	sessOpts := session.Options{
		MaxSessions: cfg.MaxSessions, ReadyTimeout: cfg.ReadyTimeout, ReapInterval: cfg.ReapInterval,
		LogDir: logDir, Observer: metrics, Tracer: tracer, Logger: cfg.Logger,
	}
	if shared {
		replica := cfg.Replica
		if replica == "" {
			replica = defaultReplica()
		}
		sessOpts.Registry, sessOpts.Targets, sessOpts.Replica = registry{st}, targets{ctl, cfg.SessionLimits}, replica
		sessOpts.Lease = cfg.SessionLease
	}
	s.sessions = session.New(driver, sessOpts)
	metrics.ObserveSessions(func() []telemetry.SessionSample {
		var out []telemetry.SessionSample
		for _, in := range s.sessions.List("") {
			out = append(out, telemetry.SessionSample{RuntimeID: in.RuntimeID, SessionID: in.SessionID,
				MemoryBytes: in.MemoryBytes, CPUSeconds: in.CPUSeconds})
		}
		return out
	}, func() []telemetry.PoolSample {
		var out []telemetry.PoolSample
		for _, p := range s.sessions.Pools() {
			out = append(out, telemetry.PoolSample{RuntimeID: p.RuntimeID, Version: p.Version, Ready: p.Ready, Starting: p.Starting})
		}
		return out
	})
	s.closers = append(s.closers, s.sessions.Close)

	var verifier *auth.Verifier
	if cfg.Auth {
		if verifier, err = s.openKeys(); err != nil {
			return nil, err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler())
	mux.Handle("/console/", console.Handler())
	mux.Handle("/", api.New(ctl, s.sessions, arts, api.Options{SessionLimits: cfg.SessionLimits, LogDir: logDir,
		Metrics: metrics, Tracer: tracer, Verifier: verifier, Images: uploads, Logger: cfg.Logger}))
	tlsCfg, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	s.ln, err = net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if tlsCfg != nil {
		s.ln = tls.NewListener(s.ln, tlsCfg)
	}
	// Requests' contexts end at shutdown, so that long-lived calls
	// (following logs, say) do not hold it up.
	base, cancelBase := context.WithCancel(context.Background())
	s.closers = append(s.closers, cancelBase)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base },
		ErrorLog:    slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
	s.cancelRequests = cancelBase
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until ctx ends, then shuts down gracefully: it stops
// accepting calls, ends every session and closes the store.
func (s *Server) Serve(ctx context.Context) error {
	s.log.Info("berth serving", "addr", s.ln.Addr().String(), "data_dir", s.cfg.DataDir, "store", s.storeName)
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()
	poolCtx, stopPools := context.WithCancel(ctx)
	pools, pruned := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(pools)
		s.reconcilePools(poolCtx)
	}()
	go func() {
		defer close(pruned)
		s.pruneLogs(poolCtx)
	}()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	stopPools()
	<-pools
	<-pruned
	// Ending the sessions and requests first ends streams in flight, so
	// Shutdown does not wait for them.
	s.sessions.Close()
	s.cancelRequests()
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := s.http.Shutdown(shutCtx); serr != nil {
		s.http.Close()
	}
	s.close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// reconcilePools keeps the session manager's warm pools those the served
// versions ask for, looking again whenever the control plane changes, until
// ctx ends.
func (s *Server) reconcilePools(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	seen := ^uint64(0)
	for {
		if g := s.control.Generation(); g != seen {
			served, err := s.control.Served(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Error("reconcile warm pools", "err", err)
				}
			} else {
				var specs []session.PoolSpec
				for _, d := range served {
					if d.WarmPool > 0 {
						specs = append(specs, session.PoolSpec{Target: d.Target(s.cfg.SessionLimits), Size: d.WarmPool, IdleTimeout: d.WarmPoolIdle})
					}
				}
				s.sessions.SetPools(specs)
				seen = g
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pruneLogs applies the log retention policy every minute, until ctx ends.
func (s *Server) pruneLogs(ctx context.Context) {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		live := map[string]bool{}
		for _, in := range s.sessions.List("") {
			live[in.LogDir] = true
		}
		n, err := telemetry.Prune(s.logDir, s.cfg.LogRetention, s.cfg.LogMaxBytes, func(dir string) bool { return live[dir] })
		if err != nil {
			s.log.Warn("prune session logs", "err", err)
		} else if n > 0 {
			s.log.Info("pruned session logs", "sessions", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// newRuncDriver returns the driver of every OCI runtime, whose default is
// cfg.OCIRuntime, with sandbox networks unless cfg.NoOutbound says otherwise
// or the host cannot have them, and the network policy that follows.
func newRuncDriver(cfg Config) (*runc.Runtimes, control.NetworkPolicy, error) {
	policy := control.NetworkPolicy{NoOutbound: cfg.NoOutbound}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var netw *network.Manager
	if !cfg.NoOutbound {
		var err error
		netw, err = network.New(network.Options{Pool: cfg.SandboxNetwork, DNS: cfg.SandboxDNS, Logger: cfg.Logger})
		switch {
		case errors.Is(err, network.ErrUnavailable):
			log.Warn("sandboxes get no network access (PUBLIC runtimes run with BERTH_NETWORK=none)", "reason", err)
			policy.NoOutbound = true
		case err != nil:
			return nil, policy, fmt.Errorf("sandbox network: %w", err)
		default:
			log.Debug("sandbox network ready", "pool", netw.Pool())
		}
	}
	def := cfg.OCIRuntime
	if def == "" {
		def = "runc"
	}
	paths := maps.Clone(cfg.OCIRuntimePaths)
	if strings.ContainsRune(def, '/') {
		// A path: its runtime is the default, at that path.
		name := runc.RuntimeName(def)
		if paths == nil {
			paths = map[string]string{}
		}
		paths[name], def = def, name
	}
	d, err := runc.NewRuntimes(def, paths, runc.Options{
		StateDir:     filepath.Join(cfg.DataDir, "sandboxes"),
		CgroupParent: cfg.CgroupParent,
		Platform:     cfg.RunscPlatform,
		Network:      netw,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return nil, policy, fmt.Errorf("sandbox driver: %w", err)
	}
	return d, policy, nil
}

// KeysFile is where a server keeps its access keys, under its data directory.
func KeysFile(dataDir string) string { return filepath.Join(dataDir, "keys.json") }

// openKeys opens the key file, creating the root key on first start.
func (s *Server) openKeys() (*auth.Verifier, error) {
	keys, err := auth.OpenKeys(KeysFile(s.cfg.DataDir))
	if err != nil {
		return nil, err
	}
	list, err := keys.List()
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(list, func(k auth.Key) bool { return k.Role == auth.RoleAdmin && !k.Revoked }) {
		root, err := keys.Create(auth.RoleAdmin, nil, true)
		if err != nil {
			return nil, err
		}
		out := s.cfg.RootKeyOut
		if out == nil {
			out = os.Stderr
		}
		fmt.Fprintf(out, "Berth created its root access key; it is shown only this once:\n"+
			"  AWS_ACCESS_KEY_ID=%s\n  AWS_SECRET_ACCESS_KEY=%s\n"+
			"More keys: berth keys create --data-dir %s [--role invoke]\n", root.ID, root.Secret, s.cfg.DataDir)
	}
	spool := filepath.Join(s.cfg.DataDir, "tmp") // large signed bodies wait here while hashed
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, fmt.Errorf("create spool directory: %w", err)
	}
	return &auth.Verifier{Keys: keys, TempDir: spool}, nil
}

// openStore opens the store cfg names: the PostgreSQL database of
// cfg.Store, or else the SQLite database in cfg.DataDir. It also returns
// where the store is, in a form without secrets.
func openStore(ctx context.Context, cfg Config) (store.Store, string, error) {
	if cfg.Store != "" {
		// The URL may hold a password: errors name only its scheme.
		scheme, _, ok := strings.Cut(cfg.Store, "://")
		if !ok || (scheme != "postgres" && scheme != "postgresql") {
			return nil, "", errors.New("store: want a postgres:// or postgresql:// URL, or none for SQLite in the data directory")
		}
		pcfg, err := pgxpool.ParseConfig(cfg.Store)
		if err != nil {
			// pgx masks the password in parse errors.
			return nil, "", fmt.Errorf("store: %w", err)
		}
		where := "postgres " + postgres.Describe(pcfg.ConnConfig)
		st, err := postgres.OpenConfig(ctx, pcfg)
		if err != nil {
			return nil, "", err
		}
		return st, where, nil
	}
	path := filepath.Join(cfg.DataDir, "berth.db")
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		return nil, "", err
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Chmod(path+suffix, 0o600); err != nil && !os.IsNotExist(err) {
			st.Close()
			return nil, "", fmt.Errorf("protect the database: %w", err)
		}
	}
	return st, "sqlite " + path, nil
}

// defaultReplica is a replica id unique to this process: the host name (a
// pod's name, in Kubernetes) and a random suffix.
func defaultReplica() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r == '-' || r == '.' || r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' {
			return r
		}
		return -1
	}, host)
	if host == "" {
		host = "berth"
	}
	return host[:min(len(host), 40)] + "-" + strings.ToLower(rand.Text()[:8])
}
