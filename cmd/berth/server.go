package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthrun/berth/internal/sandbox/network"
	"github.com/berthrun/berth/internal/server"
)

func serverCommand() *cobra.Command {
	var (
		cfg                              server.Config
		logFormat, logLevel              string
		memMiB, tmpMiB, logMiB, imageMiB int64
		insecure, outbound               bool
		cpus                             float64
		pool, dns                        string
		kube                             kubeFlags
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Berth server",
		Long: `Run the Berth server: the AgentCore-compatible control and data planes on one
HTTP listener, with state in a SQLite database under the data directory (or, with
--store postgres://..., in PostgreSQL) and each agent session in its own sandbox.

Point the AWS SDKs at it with AWS_ENDPOINT_URL_BEDROCK_AGENTCORE and
AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL set to http://ADDR.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logFormat, logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = log
			if cfg.Store == "" {
				cfg.Store = os.Getenv("BERTH_STORE")
			}
			// Every call must be signed (SigV4, or a runtime's JWT) unless
			// the operator says, loudly, otherwise.
			cfg.Auth = !insecure
			if insecure {
				log.Warn("AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach " + cfg.Addr + " can deploy and run code; use this for local experiments only")
			}
			cfg.SessionLimits.MemoryBytes = memMiB << 20
			cfg.SessionLimits.TmpBytes = tmpMiB << 20
			cfg.SessionLimits.MilliCPUs = int64(cpus * 1000)
			cfg.LogMaxBytes = logMiB << 20
			if imageMiB < 1 {
				return fmt.Errorf("--max-image-size %d: want at least 1 MiB", imageMiB)
			}
			cfg.MaxImageBytes = imageMiB << 20
			if cfg.MinLifecycle < 1 {
				return fmt.Errorf("--min-session-timeout %d: want at least 1 second", cfg.MinLifecycle)
			}
			if cfg.MaxSessions < 1 {
				return fmt.Errorf("--max-sessions %d: want at least 1", cfg.MaxSessions)
			}
			if cfg.SessionLease < time.Second {
				return fmt.Errorf("--session-lease %s: want at least 1s", cfg.SessionLease)
			}
			if err := parseNetworkFlags(&cfg, outbound, pool, dns); err != nil {
				return err
			}
			switch kube.driver {
			case "oci":
			case "kubernetes":
				d, err := kube.newDriver(cfg.SessionLimits, log)
				if err != nil {
					return err
				}
				defer d.Close()
				cfg.Driver = d
			default:
				return fmt.Errorf("--driver %q: want oci or kubernetes", kube.driver)
			}
			srv, err := server.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return srv.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	kube.register(f)
	f.StringVar(&cfg.DataDir, "data-dir", envOr("BERTH_DATA_DIR", server.DefaultDataDir()), "directory for the database, code bundles, sandboxes and session logs (env BERTH_DATA_DIR)")
	// No env default here: help would print it, password and all.
	f.StringVar(&cfg.Store, "store", "", "PostgreSQL URL (postgres://user@host:5432/db?sslmode=require) to keep state in; empty for SQLite in the data directory (env BERTH_STORE; the password is best given in PGPASSWORD or ~/.pgpass)")
	f.StringVar(&cfg.Addr, "listen", envOr("BERTH_LISTEN", server.DefaultAddr), "address to serve the API on (env BERTH_LISTEN)")
	f.StringVar(&cfg.Region, "region", envOr("BERTH_REGION", "us-east-1"), "region used in ARNs and given to agents as AWS_REGION (env BERTH_REGION)")
	f.StringVar(&cfg.AccountID, "account-id", envOr("BERTH_ACCOUNT_ID", "000000000000"), "12-digit account ID used in ARNs (env BERTH_ACCOUNT_ID)")
	f.StringVar(&cfg.OCIRuntime, "oci-runtime", envOr("BERTH_OCI_RUNTIME", "runc"), "default OCI runtime of sandboxes: runc, crun or runsc (gVisor); an agent runtime may ask for another with its environment variable BERTH_OCI_RUNTIME (env BERTH_OCI_RUNTIME)")
	f.StringVar(&cfg.RunscPlatform, "runsc-platform", envOr("BERTH_RUNSC_PLATFORM", "ptrace"), "how gVisor (runsc) intercepts system calls: ptrace, or another platform of the installed runsc (runsc help platforms) (env BERTH_RUNSC_PLATFORM)")
	f.StringToStringVar(&cfg.OCIRuntimePaths, "oci-runtime-path", nil, "binaries of OCI runtimes not in PATH under their own name, e.g. runsc=/opt/gvisor/runsc")
	f.StringVar(&cfg.TLSCert, "tls-cert", envOr("BERTH_TLS_CERT", ""), "serve HTTPS with this certificate (PEM; with --tls-key)")
	f.StringVar(&cfg.TLSKey, "tls-key", envOr("BERTH_TLS_KEY", ""), "the TLS certificate's private key (PEM)")
	f.BoolVar(&cfg.TLSSelfSigned, "tls-self-signed", false, "serve HTTPS with a self-signed certificate kept in DATA/tls/ (trust DATA/tls/cert.pem)")
	f.BoolVar(&insecure, "insecure-no-auth", envOr("BERTH_INSECURE_NO_AUTH", "") == "true", "accept unsigned calls from anyone who can reach the listener: for local experiments only (env BERTH_INSECURE_NO_AUTH=true)")
	f.StringVar(&cfg.CgroupParent, "cgroup-parent", envOr("BERTH_CGROUP_PARENT", "/berth"), "cgroup under which each sandbox gets its own; servers sharing a host need different ones (env BERTH_CGROUP_PARENT)")
	f.BoolVar(&outbound, "sandbox-outbound", envOr("BERTH_SANDBOX_OUTBOUND", "true") != "false",
		"let sandboxes have network access: PUBLIC runtimes get outbound access through NAT unless their BERTH_NETWORK says none or allowlist; "+
			"false gives every sandbox loopback only and refuses runtimes that ask for more (env BERTH_SANDBOX_OUTBOUND)")
	f.StringVar(&pool, "sandbox-network", envOr("BERTH_SANDBOX_NETWORK", network.DefaultPool.String()),
		"IPv4 range from which each networked sandbox gets a /30 (its address and its gateway); must not overlap the host's networks (env BERTH_SANDBOX_NETWORK)")
	f.StringVar(&dns, "sandbox-dns", envOr("BERTH_SANDBOX_DNS", ""),
		"comma-separated name servers for networked sandboxes' /etc/resolv.conf; default: the host's, less loopback ones (env BERTH_SANDBOX_DNS)")
	f.StringVar(&cfg.Replica, "replica", envOr("BERTH_REPLICA", ""), "id of this replica among servers sharing one store and one --driver kubernetes namespace; default: the host name and a random suffix (env BERTH_REPLICA)")
	f.DurationVar(&cfg.SessionLease, "session-lease", 15*time.Second, "with --driver kubernetes: how long a replica owns its sessions without renewing its claim; a dead replica's sessions pass to another after this")
	f.IntVar(&cfg.MaxSessions, "max-sessions", envInt("BERTH_MAX_SESSIONS", 100), "most live sessions at once; more get ServiceQuotaExceededException (env BERTH_MAX_SESSIONS)")
	f.Int64Var(&memMiB, "session-memory", 2048, "memory limit of each session, MiB")
	f.Float64Var(&cpus, "session-cpus", 2, "CPU limit of each session, in CPUs")
	f.Int64Var(&cfg.SessionLimits.Pids, "session-pids", 512, "process and thread limit of each session")
	f.Int64Var(&tmpMiB, "session-tmp", 256, "size of each session's private /tmp, MiB")
	f.StringArrayVar(&cfg.InsecureRegistries, "insecure-registry", nil, "registry (host:port) that may serve container images over plain HTTP; repeat for more")
	f.StringVar(&cfg.RegistryAuthFile, "registry-auth", envOr("BERTH_REGISTRY_AUTH", defaultRegistryAuth()), "Docker config file whose \"auths\" give registry credentials (env BERTH_REGISTRY_AUTH)")
	f.Int64Var(&imageMiB, "max-image-size", 2048, "largest container image accepted, MiB compressed")
	f.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 60*time.Second, "how long a new session's agent may take to answer GET /ping")
	f.DurationVar(&cfg.ReapInterval, "reap-interval", time.Second, "how often idle and expired sessions are looked for")
	f.IntVar(&cfg.MinLifecycle, "min-session-timeout", envInt("BERTH_MIN_SESSION_TIMEOUT", 60), "smallest idleRuntimeSessionTimeout and maxLifetime accepted, seconds (AgentCore: 60)")
	f.DurationVar(&cfg.LogRetention, "session-log-retention", 7*24*time.Hour, "how long ended sessions' logs are kept")
	f.Int64Var(&logMiB, "session-log-max", 1024, "most disk, MiB, all sessions' logs may take; the oldest ended ones go first")
	f.StringVar(&logFormat, "log-format", "text", "server log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "server log level: debug, info, warn or error")
	return cmd
}

// parseNetworkFlags sets cfg's sandbox network from the flags' values.
func parseNetworkFlags(cfg *server.Config, outbound bool, pool, dns string) error {
	cfg.NoOutbound = !outbound
	p, err := netip.ParsePrefix(pool)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("--sandbox-network %q: want an IPv4 CIDR such as %s", pool, network.DefaultPool)
	}
	cfg.SandboxNetwork = p
	if dns == "" {
		return nil
	}
	cfg.SandboxDNS = []netip.Addr{}
	for s := range strings.SplitSeq(dns, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !a.Is4() || a.IsLoopback() {
			return fmt.Errorf("--sandbox-dns: %q is not an IPv4 address a sandbox can reach (loopback is the sandbox's own)", s)
		}
		cfg.SandboxDNS = append(cfg.SandboxDNS, a)
	}
	return nil
}

// defaultRegistryAuth is the Docker config file registry credentials are
// read from by default: $DOCKER_CONFIG/config.json, else
// ~/.docker/config.json.
func defaultRegistryAuth() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".docker", "config.json")
}
