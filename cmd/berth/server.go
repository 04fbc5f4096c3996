package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthrun/berth/internal/server"
)

func serverCommand() *cobra.Command {
	var (
		cfg                              server.Config
		logFormat, logLevel              string
		memMiB, tmpMiB, logMiB, imageMiB int64
		insecure                         bool
		cpus                             float64
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Berth server",
		Long: `Run the Berth server: the AgentCore-compatible control and data planes on one
HTTP listener, with state in a SQLite database under the data directory and each
agent session in its own sandbox.

Point the AWS SDKs at it with AWS_ENDPOINT_URL_BEDROCK_AGENTCORE and
AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL set to http://ADDR.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logFormat, logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = log
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
			srv, err := server.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return srv.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", envOr("BERTH_DATA_DIR", server.DefaultDataDir()), "directory for the database, code bundles, sandboxes and session logs (env BERTH_DATA_DIR)")
	f.StringVar(&cfg.Addr, "listen", envOr("BERTH_LISTEN", server.DefaultAddr), "address to serve the API on (env BERTH_LISTEN)")
	f.StringVar(&cfg.Region, "region", envOr("BERTH_REGION", "us-east-1"), "region used in ARNs and given to agents as AWS_REGION (env BERTH_REGION)")
	f.StringVar(&cfg.AccountID, "account-id", envOr("BERTH_ACCOUNT_ID", "000000000000"), "12-digit account ID used in ARNs (env BERTH_ACCOUNT_ID)")
	f.StringVar(&cfg.OCIRuntime, "oci-runtime", envOr("BERTH_OCI_RUNTIME", "runc"), "OCI runtime that runs sandboxes: runc or crun (env BERTH_OCI_RUNTIME)")
	f.StringVar(&cfg.TLSCert, "tls-cert", envOr("BERTH_TLS_CERT", ""), "serve HTTPS with this certificate (PEM; with --tls-key)")
	f.StringVar(&cfg.TLSKey, "tls-key", envOr("BERTH_TLS_KEY", ""), "the TLS certificate's private key (PEM)")
	f.BoolVar(&cfg.TLSSelfSigned, "tls-self-signed", false, "serve HTTPS with a self-signed certificate kept in DATA/tls/ (trust DATA/tls/cert.pem)")
	f.BoolVar(&insecure, "insecure-no-auth", envOr("BERTH_INSECURE_NO_AUTH", "") == "true", "accept unsigned calls from anyone who can reach the listener: for local experiments only (env BERTH_INSECURE_NO_AUTH=true)")
	f.StringVar(&cfg.CgroupParent, "cgroup-parent", envOr("BERTH_CGROUP_PARENT", "/berth"), "cgroup under which each sandbox gets its own; servers sharing a host need different ones (env BERTH_CGROUP_PARENT)")
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
