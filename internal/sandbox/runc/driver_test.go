package runc_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/network"
	"github.com/berthrun/berth/internal/sandbox/runc"
	"github.com/berthrun/berth/internal/sandbox/sandboxtest"
)

// crunHint is how to make crun accept this kind of host (cgroup v1 hybrid
// without a hugetlb hierarchy).
const crunHint = "on a cgroup v1 hybrid host crun needs a hugetlb hierarchy: mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb"

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, config(t, "runc"))
}

func TestConformanceCrun(t *testing.T) {
	cfg := config(t, "crun")
	probe(t, cfg)
	sandboxtest.Run(t, cfg)
}

// TestConformanceRunsc runs the suite on gVisor: the same isolation
// properties hold, some for other reasons (see sandboxtest's attacks).
func TestConformanceRunsc(t *testing.T) {
	sandboxtest.Run(t, config(t, "runsc"))
}

// runscProcesses returns the host pids of runsc sandbox id: its Sentry
// (runsc-sandbox ... boot ... <id>) first, then its gofer, whose bundle is
// the sandbox's directory.
func runscProcesses(id string) []string {
	var sentry, gofer []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range cmdlines {
		data, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
		pid := filepath.Base(filepath.Dir(c))
		switch {
		case args[0] == "runsc-sandbox" && slices.Contains(args, "boot") && args[len(args)-1] == id:
			sentry = append(sentry, pid)
		case args[0] == "runsc-gofer" && slices.ContainsFunc(args, func(a string) bool { return strings.HasSuffix(a, "/sandboxes/"+id) }):
			gofer = append(gofer, pid)
		}
	}
	return append(sentry, gofer...)
}

// TestConformanceNoUserNamespace runs the suite on sandboxes without a user
// namespace, as on hosts where the state directory is private to root.
func TestConformanceNoUserNamespace(t *testing.T) {
	sandboxtest.Run(t, configWith(t, "runc", runc.Options{NoUserNamespace: true}))
}

// TestUserNamespaceFallback checks that a driver whose state directory the
// sandboxes' root cannot reach runs them without a user namespace, says why,
// and still runs agents unprivileged.
func TestUserNamespaceFallback(t *testing.T) {
	skipUnlessAvailable(t, "runc")
	private := filepath.Join(sandboxtest.TempDir(t), "data")
	if err := os.Mkdir(private, 0o700); err != nil { // like a data directory of root's
		t.Fatal(err)
	}
	var logs strings.Builder
	d, err := runc.New(runc.Options{
		StateDir:     filepath.Join(private, "state"),
		CgroupParent: "/berth-test-" + randomHex(4),
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if d.UserNamespace() {
		t.Fatalf("the driver uses user namespaces with its state below %s (mode 0700)", private)
	}
	if !strings.Contains(logs.String(), "without a user namespace") || !strings.Contains(logs.String(), "chmod o+x "+private) {
		t.Errorf("the driver's warning does not say why and what to do: %s", logs.String())
	}
	if uid, gid := d.AgentOwner(); uid != runc.DefaultHostIDBase+1000 || gid != uid {
		t.Errorf("AgentOwner = %d, %d, want %d for both", uid, gid, runc.DefaultHostIDBase+1000)
	}
}

// TestStartUnreachableCodeDir checks that a sandbox with a user namespace
// refuses a code directory its root cannot read, naming it.
func TestStartUnreachableCodeDir(t *testing.T) {
	cfg := config(t, "runc")
	d := cfg.NewDriver(t, sandboxtest.TempDir(t))
	code := filepath.Join(t.TempDir(), "code") // below a 0700 directory
	if err := os.Mkdir(code, 0o755); err != nil {
		t.Fatal(err)
	}
	sb, err := d.Start(t.Context(), sandbox.Spec{ID: "unreachable", Args: []string{"/bin/true"}, WorkDir: "/workspace", CodeDir: code})
	if err == nil {
		sb.Stop(t.Context())
		t.Fatal("Start succeeded")
	}
	if !strings.Contains(err.Error(), code) || !strings.Contains(err.Error(), "chmod o+x") {
		t.Errorf("Start = %v, want an error naming the code dir and the fix", err)
	}
}

func TestNewUnavailable(t *testing.T) {
	_, err := runc.New(runc.Options{Binary: "berth-no-such-runtime", StateDir: t.TempDir()})
	if !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("New with a missing runtime = %v, want sandbox.ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "berth-no-such-runtime") {
		t.Errorf("error %q does not name the runtime", err)
	}
}

func TestNewBadOptions(t *testing.T) {
	skipUnlessAvailable(t, "runc")
	tests := []struct {
		name string
		opts runc.Options
		want string
	}{
		{"no state dir", runc.Options{}, "no state directory"},
		{"state dir with a colon", runc.Options{StateDir: t.TempDir() + "/a:b"}, "overlayfs"},
		{"relative cgroup parent", runc.Options{StateDir: t.TempDir(), CgroupParent: "berth"}, "cgroup parent"},
		{"secret etc file", runc.Options{StateDir: t.TempDir(), EtcFiles: []string{"shadow"}}, "secrets"},
		{"tiny cpu default", runc.Options{StateDir: t.TempDir(), Defaults: sandbox.Limits{MilliCPUs: 1}}, "cpu"},
		{"host ids among the host's users", runc.Options{StateDir: t.TempDir(), HostIDBase: 1000}, "host id base 1000"},
		{"host ids past the last id", runc.Options{StateDir: t.TempDir(), HostIDBase: 1<<32 - 1000}, "host id base"},
		{"a platform for runc", runc.Options{StateDir: t.TempDir(), Platform: "kvm"}, "only runsc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runc.New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestStartBadSpec checks the errors of specs the driver refuses before it
// creates anything.
func TestStartBadSpec(t *testing.T) {
	cfg := config(t, "runc")
	d := cfg.NewDriver(t, sandboxtest.TempDir(t))
	good := sandbox.Spec{ID: "bad-spec", Args: []string{"/bin/true"}, WorkDir: "/workspace"}
	tests := []struct {
		name string
		edit func(*sandbox.Spec)
		want string
	}{
		{"relative workdir", func(s *sandbox.Spec) { s.WorkDir = "workspace" }, "workdir"},
		{"workdir in the system", func(s *sandbox.Spec) { s.WorkDir = "/usr/local/app" }, "system view"},
		{"code dir is a file", func(s *sandbox.Spec) { s.CodeDir = "/etc/hostname" }, "not a directory"},
		{"negative memory", func(s *sandbox.Spec) { s.Limits.MemoryBytes = -1 }, "negative"},
		{"env without =", func(s *sandbox.Spec) { s.Env = []string{"PATH"} }, "KEY=value"},
		{"allowlist without entries", func(s *sandbox.Spec) { s.Network.Mode = sandbox.NetworkAllowlist }, "at least one allowed destination"},
		{"unknown network mode", func(s *sandbox.Spec) { s.Network.Mode = "bridge" }, `network mode "bridge"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := good
			tt.edit(&spec)
			sb, err := d.Start(t.Context(), spec)
			if err == nil {
				sb.Stop(t.Context())
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), spec.ID) {
				t.Fatalf("Start = %v, want an error naming the sandbox and containing %q", err, tt.want)
			}
		})
	}
}

func BenchmarkColdStart(b *testing.B) {
	sandboxtest.BenchmarkColdStart(b, config(b, "runc"))
}

// BenchmarkColdStartOutbound is BenchmarkColdStart with outbound network
// access: the difference is what setting up a sandbox's network costs.
func BenchmarkColdStartOutbound(b *testing.B) {
	sandboxtest.BenchmarkColdStartNetwork(b, networkConfig(b, "runc", runc.Options{}), sandbox.Network{Mode: sandbox.NetworkOutbound})
}

// BenchmarkColdStartAllowlist is BenchmarkColdStartOutbound with an allow
// list of four addresses (no host name, so no lookup is measured).
func BenchmarkColdStartAllowlist(b *testing.B) {
	allow, err := sandbox.ParseDestinations("192.0.2.10:443,198.51.100.0/24,203.0.113.5,203.0.113.6:8443")
	if err != nil {
		b.Fatal(err)
	}
	sandboxtest.BenchmarkColdStartNetwork(b, networkConfig(b, "runc", runc.Options{}), sandbox.Network{Mode: sandbox.NetworkAllowlist, Allow: allow})
}

func BenchmarkDial(b *testing.B) {
	sandboxtest.BenchmarkDial(b, config(b, "runc"))
}

// BenchmarkRuntimeFloor is what BenchmarkColdStart compares to: the same
// agent in a minimal runc bundle, started by hand.
func BenchmarkRuntimeFloor(b *testing.B) {
	skipUnlessAvailable(b, "runc")
	sandboxtest.BenchmarkRuntimeFloor(b, "runc")
}

// config returns the conformance suite's configuration for drivers on the
// runtime binary, with a cgroup parent of their own that is removed when the
// test ends. It skips the test if the driver cannot run here.
func config(tb testing.TB, binary string) sandboxtest.Config {
	return configWith(tb, binary, runc.Options{})
}

// configWith is config for drivers with other options too. Their sandboxes
// must get a user namespace unless opts.NoUserNamespace says otherwise (the
// suite's state directories allow them).
func configWith(tb testing.TB, binary string, opts runc.Options) sandboxtest.Config {
	skipUnlessAvailable(tb, binary)
	parent := "/berth-test-" + randomHex(4)
	tb.Cleanup(func() { removeCgroupParent(tb, parent) })
	var hostProcesses func(string) []string
	if binary == "runsc" {
		hostProcesses = runscProcesses
	}
	return sandboxtest.Config{
		UserSpaceKernel: binary == "runsc",
		HostProcesses:   hostProcesses,
		NewDriver: func(tb testing.TB, state string) sandbox.Driver {
			o := opts
			o.Binary, o.StateDir, o.CgroupParent = binary, state, parent
			d, err := runc.New(o)
			if err != nil {
				tb.Fatal(err)
			}
			// runsc isolates its sandboxes with user namespaces of its
			// own, never the driver's.
			if want := !opts.NoUserNamespace && binary != "runsc"; d.UserNamespace() != want {
				tb.Fatalf("the driver over %s uses user namespaces: %v, want %v", state, d.UserNamespace(), want)
			}
			return d
		},
		StatePaths: func(state, id string) []string {
			runtimeState := filepath.Join(state, "runtime", id)
			if binary == "runsc" {
				runtimeState = filepath.Join(state, "runtime", id+"_sandbox:"+id+".state")
			}
			return []string{filepath.Join(state, "sandboxes", id), runtimeState}
		},
	}
}

// skipUnlessAvailable skips the test when the driver is unavailable (not
// root, or the runtime is not installed).
func skipUnlessAvailable(tb testing.TB, binary string) {
	tb.Helper()
	_, err := runc.New(runc.Options{Binary: binary, StateDir: tb.TempDir(), NoUserNamespace: true})
	if errors.Is(err, sandbox.ErrUnavailable) {
		tb.Skipf("driver unavailable: %v", err)
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// probe skips the test if the runtime cannot start a container on this
// host.
func probe(t testing.TB, cfg sandboxtest.Config) {
	t.Helper()
	d := cfg.NewDriver(t, sandboxtest.TempDir(t))
	sb, err := d.Start(t.Context(), sandbox.Spec{ID: "probe", Args: []string{"/bin/true"}, WorkDir: "/probe"})
	if err != nil {
		t.Skipf("the runtime cannot start containers here (%s): %v", crunHint, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// removeCgroupParent removes the cgroup parent the test's drivers used from
// every hierarchy; by then it must be empty.
func removeCgroupParent(tb testing.TB, parent string) {
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		tb.Error(err)
		return
	}
	for _, m := range mounts {
		dir := filepath.Join(m.Mountpoint, parent)
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			tb.Errorf("remove cgroup parent %s: %v", dir, err)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TestNetwork checks the network modes against a host outside made by the
// test (see sandboxtest.RunNetwork).
func TestNetwork(t *testing.T) {
	sandboxtest.RunNetwork(t, networkConfig(t, "runc", runc.Options{}))
}

func TestNetworkCrun(t *testing.T) {
	probe(t, config(t, "crun"))
	sandboxtest.RunNetwork(t, networkConfig(t, "crun", runc.Options{}))
}

// TestNetworkRunsc runs the network tests on gVisor, whose network namespace
// the driver makes and sets up before the runtime runs.
func TestNetworkRunsc(t *testing.T) {
	probe(t, config(t, "runsc"))
	cfg := networkConfig(t, "runsc", runc.Options{})
	cfg.UserSpaceKernel = true
	sandboxtest.RunNetwork(t, cfg)
}

// TestNetworkNoUserNamespace runs the network tests on sandboxes without a
// user namespace, whose network namespace then belongs to the host's.
func TestNetworkNoUserNamespace(t *testing.T) {
	sandboxtest.RunNetwork(t, networkConfig(t, "runc", runc.Options{NoUserNamespace: true}))
}

// TestNetworkRefusedWithoutManager checks that a driver without sandbox
// networks refuses the modes that need one, naming it.
func TestNetworkRefusedWithoutManager(t *testing.T) {
	cfg := config(t, "runc")
	d := cfg.NewDriver(t, sandboxtest.TempDir(t))
	_, err := d.Start(t.Context(), sandbox.Spec{ID: "no-network", Args: []string{"/bin/true"}, WorkDir: "/workspace",
		Network: sandbox.Network{Mode: sandbox.NetworkOutbound}})
	if err == nil || !strings.Contains(err.Error(), "network mode outbound") {
		t.Fatalf("Start = %v, want an error naming the network mode", err)
	}
}

// networkConfig is configWith for sandboxtest.RunNetwork: its drivers get a
// network Manager over the given pool, with a lock file of the test's own.
func networkConfig(tb testing.TB, binary string, opts runc.Options) sandboxtest.NetworkConfig {
	skipUnlessAvailable(tb, binary)
	parent := "/berth-test-" + randomHex(4)
	tb.Cleanup(func() { removeCgroupParent(tb, parent) })
	lock := filepath.Join(tb.TempDir(), "network.lock")
	return sandboxtest.NetworkConfig{
		NewDriver: func(tb testing.TB, state string, host sandboxtest.NetworkHost) sandbox.Driver {
			m, err := network.New(network.Options{Pool: host.Pool, Resolver: host.Resolver, LockFile: lock})
			if errors.Is(err, network.ErrUnavailable) {
				tb.Skipf("sandbox networks unavailable: %v", err)
			}
			if err != nil {
				tb.Fatal(err)
			}
			o := opts
			o.Binary, o.StateDir, o.CgroupParent, o.Network = binary, state, parent, m
			d, err := runc.New(o)
			if err != nil {
				tb.Fatal(err)
			}
			return d
		},
		Link: func(state, id string) string {
			return network.LinkName(filepath.Join(state, "sandboxes", id))
		},
		StatePaths: func(state, id string) []string {
			return []string{filepath.Join(state, "sandboxes", id), filepath.Join(state, "runtime", id)}
		},
	}
}

// TestRuntimes runs one sandbox per runtime through one Runtimes, checks that
// each ran on the runtime it asked for, and that a runtime that is not
// installed is refused with a clear error.
func TestRuntimes(t *testing.T) {
	skipUnlessAvailable(t, "runc")
	skipUnlessAvailable(t, "runsc")
	state := sandboxtest.TempDir(t)
	parent := "/berth-test-" + randomHex(4)
	t.Cleanup(func() {
		for _, name := range runc.RuntimeNames() {
			removeCgroupParent(t, parent+"/"+name)
		}
		removeCgroupParent(t, parent)
	})
	missing := filepath.Join(t.TempDir(), "runsc")
	if _, err := runc.NewRuntimes("runsc", map[string]string{"runsc": missing}, runc.Options{StateDir: state, CgroupParent: parent}); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("NewRuntimes with a missing default runtime = %v, want sandbox.ErrUnavailable", err)
	}
	if _, err := runc.NewRuntimes("kata", nil, runc.Options{StateDir: state}); err == nil || !strings.Contains(err.Error(), "kata") {
		t.Fatalf("NewRuntimes with an unknown default runtime = %v, want an error naming it", err)
	}

	rs, err := runc.NewRuntimes("runc", nil, runc.Options{StateDir: state, CgroupParent: parent})
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		runtime string
		sentry  bool // the agent runs on gVisor's Sentry
	}{{"", false}, {"runsc", true}, {"runc", false}} {
		id := "rts-" + randomHex(4)
		sb, err := rs.Start(t.Context(), sandbox.Spec{ID: id, Runtime: tt.runtime, Args: []string{"/bin/sleep", "60"}, WorkDir: "/workspace"})
		if err != nil {
			t.Fatalf("start on %q: %v", tt.runtime, err)
		}
		if got := len(runscProcesses(id)) > 0; got != tt.sentry {
			t.Errorf("sandbox on %q runs on gVisor: %v, want %v", tt.runtime, got, tt.sentry)
		}
		if err := sb.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
	}

	broken, err := runc.NewRuntimes("runc", map[string]string{"runsc": missing}, runc.Options{StateDir: sandboxtest.TempDir(t), CgroupParent: parent})
	if err != nil {
		t.Fatal(err)
	}
	err = broken.Check("runsc")
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "apt-get install runsc") {
		t.Errorf("Check of a missing runsc = %v, want sandbox.ErrUnavailable naming %s and the package", err, missing)
	}
	if _, err := broken.Start(t.Context(), sandbox.Spec{ID: "rts-missing", Runtime: "runsc", Args: []string{"/bin/true"}, WorkDir: "/workspace"}); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("Start on a missing runsc = %v, want sandbox.ErrUnavailable", err)
	}
	if err := broken.Check("kata"); err == nil {
		t.Error("Check of an unknown runtime succeeded")
	}
}

// TestNoSessionKeyringPerSandbox checks that a sandbox gets no session
// keyring of its own. Every sandbox's root is the same host user, whose
// kernel key quota (200 keys by default) a keyring per sandbox would exhaust
// after a few hundred sandboxes, failing every start after that.
func TestNoSessionKeyringPerSandbox(t *testing.T) {
	for _, binary := range []string{"runc", "crun"} {
		t.Run(binary, func(t *testing.T) {
			cfg := config(t, binary)
			if binary == "crun" {
				probe(t, cfg)
			}
			d := cfg.NewDriver(t, sandboxtest.TempDir(t))
			before := sandboxKeys(t)
			id := "keyring-" + randomHex(4)
			sb, err := d.Start(t.Context(), sandbox.Spec{ID: id, Args: []string{"/bin/sleep", "60"}, WorkDir: "/workspace"})
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Stop(context.Background())
			if after := sandboxKeys(t); after > before {
				t.Errorf("the sandboxes' host users hold %d keys with sandbox %s running, %d before", after, id, before)
			}
			// A runtime may make the keyring before it switches users.
			keys, _ := os.ReadFile("/proc/keys")
			for _, line := range strings.Split(string(keys), "\n") {
				if strings.Contains(line, id) {
					t.Errorf("sandbox %s has a keyring of its own: %s", id, line)
				}
			}
		})
	}
}

// sandboxKeys is how many kernel keys the host users of sandboxes hold, from
// /proc/key-users ("uid: usage nkeys/nikeys ...").
func sandboxKeys(t *testing.T) int {
	data, err := os.ReadFile("/proc/key-users")
	if err != nil {
		t.Skipf("the kernel does not report key users: %v", err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		uid, err := strconv.ParseUint(strings.TrimSuffix(f[0], ":"), 10, 32)
		if err != nil || uid < runc.DefaultHostIDBase {
			continue
		}
		keys, _, _ := strings.Cut(f[2], "/")
		k, _ := strconv.Atoi(keys)
		n += k
	}
	return n
}
