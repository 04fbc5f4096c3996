// Command bench measures Berth on this machine, side by side in one run, and
// prints the results as tables with a PASS or MISS against each of Berth's
// performance targets; it also writes them, with a description of the
// machine, to bench/RESULTS.md.
//
// Sections (see bench/README.md for how each is measured):
//
//   - warm: the Go example agent called directly in its sandbox, through
//     Berth and through nginx, at several concurrencies;
//   - cold: a new session's first byte, without and with a warm pool, for the
//     Go and the Python agent, per OCI runtime, against the floor: the same
//     agent started by hand in the same runtime;
//   - stream: time to the first SSE frame and the delay Berth adds per frame;
//   - payload: 100 MB in and out, through Berth and direct, and how much the
//     process hosting Berth grows meanwhile;
//   - density: many concurrent idle sessions, their memory and start times;
//   - kubernetes: pod-backed sessions on a Kubernetes cluster (the test
//     cluster of tools/k8s): cold starts with and without a warm pod, warm
//     calls to a pod against a local sandbox, many sessions at once.
//
// Berth runs in-process on loopback. The harness needs root and runc:
//
//	sudo go run ./bench [-quick] [-sections warm,cold,...] [-cpuprofile cpu.pprof]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Section names, in the order they run.
const (
	secWarm    = "warm"
	secCold    = "cold"
	secStream  = "stream"
	secPayload = "payload"
	secDensity = "density"
	secKube    = "kubernetes"
)

var allSections = []string{secWarm, secCold, secStream, secPayload, secDensity, secKube}

// Network modes (BERTH_NETWORK) the harness measures. allowlist costs what
// outbound does to set up (its rules differ, not their number per packet).
const (
	netNone     = "none"
	netOutbound = "outbound"
)

// networkEnv is the environment that gives a runtime network mode mode.
func networkEnv(mode string) map[string]string { return map[string]string{"BERTH_NETWORK": mode} }

// config is everything a run is told.
type config struct {
	Sections []string // which sections to run
	Runtimes []string // OCI runtimes for cold starts
	Primary  string   // OCI runtime of every other section

	Concurrency []int         // warm: concurrent connections
	Duration    time.Duration // warm: measured time per path and concurrency
	Warmup      time.Duration // warm: unmeasured time before each
	Load        string        // warm: load generator: auto, wrk or go
	Install     bool          // install nginx and wrk with apt-get when missing

	Cold         int      // cold: samples per agent, runtime and mode
	ColdNetworks []string // cold: network modes (BERTH_NETWORK) of the no-pool rows and their floors
	WarmSeq      int      // cold: sequential warm calls that the pooled start is compared with
	PoolSize     int      // cold: warm pool size

	Streams      int           // stream: streams per path
	StreamFrames int           // stream: frames per stream
	StreamDelay  time.Duration // stream: agent's delay between frames

	PayloadBytes int64 // payload: request (and so response) size
	PayloadReps  int   // payload: repetitions per path

	Density         []int  // density: session counts to step through
	DensityParallel int    // density: session starts in flight at once
	DensityMemory   int64  // density: each sandbox's memory limit, bytes
	DensityNetwork  string // density: the sessions' network mode (BERTH_NETWORK)

	Kubeconfig   string // kubernetes: the cluster's kubeconfig ("" skips the section)
	KubeHostIP   string // kubernetes: this host's address that pods reach (code bundles)
	KubeCold     int    // kubernetes: cold-start samples per row
	KubeSessions int    // kubernetes: sessions started at once

	Results    string // Markdown file to write ("" for none)
	CPUProfile string // CPU profile of Berth during the c=32 warm run ("" for none)

	Out io.Writer    // where tables and progress go
	Log *slog.Logger // Berth's own logs
}

func (c *config) runs(section string) bool { return slices.Contains(c.Sections, section) }

// quickFlags are the values -quick gives flags not set on the command line:
// small enough for a smoke run of under a minute.
var quickFlags = [][2]string{
	{"concurrency", "1,32"}, {"duration", "1s"}, {"warmup", "1s"},
	{"cold", "3"}, {"warm-seq", "30"}, {"pool-size", "2"},
	{"streams", "2"}, {"stream-frames", "20"}, {"stream-delay", "5ms"},
	{"payload-mb", "10"}, {"payload-reps", "1"},
	{"density", "20"}, {"runtimes", "runc"},
	{"kube-cold", "3"}, {"kube-sessions", "10"},
}

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fatalf("%v", err)
	}
	if os.Geteuid() != 0 {
		fatalf("bench needs root: it starts sandboxes with %s. Run it as root, e.g. sudo go run ./bench", cfg.Primary)
	}
	if _, err := exec.LookPath(cfg.Primary); err != nil {
		fatalf("bench needs the OCI runtime %s: install it with apt-get install %s", cfg.Primary, cfg.Primary)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

// parseConfig reads the command line. Tables go to out, Berth's logs and
// flag errors to errOut.
func parseConfig(args []string, out, errOut io.Writer) (config, error) {
	cfg := config{
		Sections:     slices.Clone(allSections),
		Runtimes:     []string{"runc", "crun", "runsc"},
		ColdNetworks: []string{netNone, netOutbound},
		Concurrency:  []int{1, 8, 32, 128},
		Density:      []int{100, 500, 1000},
		Out:          out,
	}
	var payloadMB, densityMiB int64
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(errOut)
	quick := fs.Bool("quick", false, "small counts for a smoke run (< 1 minute); explicit flags still win")
	logLevel := fs.String("log-level", "warn", "level of Berth's own logs: debug, info, warn or error")
	fs.Var(listFlag{&cfg.Sections}, "sections", "sections to run, comma-separated: "+strings.Join(allSections, ","))
	fs.Var(listFlag{&cfg.Runtimes}, "runtimes", "OCI runtimes to measure cold starts with (those not installed are skipped)")
	fs.StringVar(&cfg.Primary, "oci-runtime", "runc", "OCI runtime of the warm, stream, payload and density sections")
	fs.Var(intsFlag{&cfg.Concurrency}, "concurrency", "warm: concurrencies, comma-separated")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "warm: measured time per path and concurrency (whole seconds with wrk)")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "warm: unmeasured load before each measurement")
	fs.StringVar(&cfg.Load, "load", "auto", "warm: load generator: wrk, go, or auto (wrk when installed)")
	fs.BoolVar(&cfg.Install, "install", true, "install nginx-light and wrk with apt-get when they are missing")
	fs.IntVar(&cfg.Cold, "cold", 20, "cold: samples per agent, runtime and mode")
	fs.Var(listFlag{&cfg.ColdNetworks}, "cold-networks", "cold: network modes (BERTH_NETWORK) to measure starts without pool in, Berth and floor alike: none, outbound; the warm-pool rows use the first")
	fs.IntVar(&cfg.WarmSeq, "warm-seq", 300, "cold: sequential warm calls per agent (the pooled start's yardstick)")
	fs.IntVar(&cfg.PoolSize, "pool-size", 4, "cold: warm pool size (BERTH_WARM_POOL_SIZE)")
	fs.IntVar(&cfg.Streams, "streams", 5, "stream: streams per path")
	fs.IntVar(&cfg.StreamFrames, "stream-frames", 50, "stream: frames per stream")
	fs.DurationVar(&cfg.StreamDelay, "stream-delay", 10*time.Millisecond, "stream: the agent's delay between frames")
	fs.Int64Var(&payloadMB, "payload-mb", 100, "payload: request and response size, MB (10^6 bytes)")
	fs.IntVar(&cfg.PayloadReps, "payload-reps", 3, "payload: repetitions per path")
	fs.Var(intsFlag{&cfg.Density}, "density", "density: numbers of concurrent sessions to step through, comma-separated")
	fs.IntVar(&cfg.DensityParallel, "density-parallel", 16, "density: session starts in flight at once")
	fs.StringVar(&cfg.DensityNetwork, "density-network", netNone, "density: the sessions' network mode (BERTH_NETWORK): none or outbound")
	fs.Int64Var(&densityMiB, "density-memory", 64, "density: memory limit of each sandbox, MiB")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", os.Getenv("BERTH_TEST_KUBECONFIG"), "kubernetes: kubeconfig of the cluster; empty skips the section (env BERTH_TEST_KUBECONFIG, which tools/k8s/k8s-up.sh's env file sets)")
	fs.StringVar(&cfg.KubeHostIP, "kube-host-ip", envOr("BERTH_TEST_KUBE_HOST_IP", "10.244.0.1"), "kubernetes: this host's address that pods reach, where code bundles are served (env BERTH_TEST_KUBE_HOST_IP)")
	fs.IntVar(&cfg.KubeCold, "kube-cold", 10, "kubernetes: cold-start samples per row")
	fs.IntVar(&cfg.KubeSessions, "kube-sessions", 100, "kubernetes: sessions (pods) started at once")
	fs.StringVar(&cfg.Results, "results", "bench/RESULTS.md", "Markdown file to write the results to (empty: none)")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the process hosting Berth during the c=32 warm run to this file")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, kv := range quickFlags {
			if !set[kv[0]] {
				if err := fs.Set(kv[0], kv[1]); err != nil {
					return config{}, fmt.Errorf("-quick: %s=%s: %w", kv[0], kv[1], err)
				}
			}
		}
	}
	cfg.PayloadBytes = payloadMB * 1_000_000
	cfg.DensityMemory = densityMiB << 20
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return config{}, fmt.Errorf("-log-level %q: want debug, info, warn or error", *logLevel)
	}
	cfg.Log = slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: level}))
	return cfg, cfg.check()
}

// envOr returns the environment variable key, or def when it is unset.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(2)
}

// check reports the first setting that cannot work.
func (c *config) check() error {
	for _, s := range c.Sections {
		if !slices.Contains(allSections, s) {
			return fmt.Errorf("-sections: unknown section %q (want some of %s)", s, strings.Join(allSections, ","))
		}
	}
	for _, m := range c.ColdNetworks {
		if m != netNone && m != netOutbound {
			return fmt.Errorf("-cold-networks: unknown network mode %q (want none or outbound)", m)
		}
	}
	if c.DensityNetwork != netNone && c.DensityNetwork != netOutbound {
		return fmt.Errorf("-density-network %q: want none or outbound", c.DensityNetwork)
	}
	for _, n := range c.Concurrency {
		if n < 1 || n > 10_000 {
			return fmt.Errorf("-concurrency %d: want 1 to 10000", n)
		}
	}
	for _, n := range c.Density {
		if n < 1 || n > 100_000 {
			return fmt.Errorf("-density %d: want 1 to 100000", n)
		}
	}
	switch {
	case !slices.IsSorted(c.Density):
		return fmt.Errorf("-density %v: want increasing steps", c.Density)
	case c.Load != "auto" && c.Load != "wrk" && c.Load != "go":
		return fmt.Errorf("-load %q: want wrk, go or auto", c.Load)
	case c.Duration <= 0 || c.Warmup < 0:
		return errors.New("-duration must be positive and -warmup not negative")
	case c.Cold < 1 || c.WarmSeq < 10 || c.Streams < 1 || c.StreamFrames < 1 || c.PayloadReps < 1:
		return errors.New("-cold, -streams, -stream-frames and -payload-reps must be at least 1, -warm-seq at least 10")
	case c.PoolSize < 1 || c.PoolSize > 1000:
		return fmt.Errorf("-pool-size %d: want 1 to 1000", c.PoolSize)
	case c.PayloadBytes < 1 || c.PayloadBytes > 100<<20:
		return fmt.Errorf("-payload-mb: %d bytes is outside 1 byte to Berth's limit of 100 MiB", c.PayloadBytes)
	case c.DensityParallel < 1:
		return fmt.Errorf("-density-parallel %d: want at least 1", c.DensityParallel)
	case c.DensityMemory < 16<<20:
		return errors.New("-density-memory: want at least 16 MiB")
	case c.KubeCold < 1:
		return fmt.Errorf("-kube-cold %d: want at least 1", c.KubeCold)
	case c.KubeSessions < 1 || c.KubeSessions > 10_000:
		return fmt.Errorf("-kube-sessions %d: want 1 to 10000", c.KubeSessions)
	case c.runs(secKube) && c.Kubeconfig != "" && net.ParseIP(c.KubeHostIP) == nil:
		return fmt.Errorf("-kube-host-ip %q: want an IP address", c.KubeHostIP)
	}
	return nil
}

// listFlag is a comma-separated list of words.
type listFlag struct{ p *[]string }

func (f listFlag) String() string {
	if f.p == nil {
		return ""
	}
	return strings.Join(*f.p, ",")
}

func (f listFlag) Set(s string) error {
	*f.p = nil
	for w := range strings.SplitSeq(s, ",") {
		if w = strings.TrimSpace(w); w != "" {
			*f.p = append(*f.p, w)
		}
	}
	if len(*f.p) == 0 {
		return errors.New("empty list")
	}
	return nil
}

// intsFlag is a comma-separated list of integers.
type intsFlag struct{ p *[]int }

func (f intsFlag) String() string {
	if f.p == nil {
		return ""
	}
	s := make([]string, len(*f.p))
	for i, n := range *f.p {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (f intsFlag) Set(s string) error {
	ns, err := parseInts(s)
	if err != nil {
		return err
	}
	*f.p = ns
	return nil
}

func parseInts(s string) ([]int, error) {
	var ns []int
	for w := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil {
			return nil, fmt.Errorf("%q is not a list of integers", s)
		}
		ns = append(ns, n)
	}
	return ns, nil
}
