// Package sandboxtest is the conformance suite every sandbox.Driver must
// pass, with benchmarks of cold start and dialling.
//
// The suite runs a small Go HTTP server (testdata/agent), built by the test
// and given to the driver as the sandbox's CodeDir, and probes through it
// what the sandbox lets the agent see and do: that two agents listen on the
// same port side by side, see only loopback, their own processes, /tmp and
// working directory (a copy-on-write view of the untouched CodeDir), a
// read-only root without the host's secrets; that the memory, pids and /tmp
// limits hold for one sandbox without touching another; that output reaches
// the given files and an agent's exit closes Done with a reason. Then the
// agent attacks (attack.go): from one sandbox it tries to reach another's
// files, processes and sockets, the host's files and Berth's, and the
// kernel (mounts, namespaces, modules, the clock, raw sockets, privileges,
// keyrings, bpf, ...), while bombs of memory, processes and /tmp must stay
// in their sandbox; every attempt's outcome is asserted and Run logs them
// all as a table. It also inspects the host for what a sandbox leaves behind (processes, network
// namespace, cgroups, mounts, driver state) after Stop and after a crash
// followed by Cleanup. It needs what the driver needs (typically root) plus
// the go command.
//
// RunNetwork checks the network modes (sandbox.Network) of drivers that
// have them, against an outside host the test makes in a network namespace,
// with the attacks of a sandbox on other sandboxes and the host.
//
// A driver that isolates nothing (one for local development, which runs
// agents as plain host processes) sets Config.NoIsolation: the suite then
// skips what concerns isolation and limits and checks the rest. A driver
// whose agents run on a kernel in user space (gVisor) sets
// Config.UserSpaceKernel and HostProcesses: every isolation test still runs,
// and asserts the same property where gVisor's outcome differs.
package sandboxtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
)

// Config tells the suite how to make and inspect a driver.
type Config struct {
	// NewDriver returns a driver that keeps its state in stateDir, an
	// existing empty directory the suite owns, which every user may look
	// up (as a user namespace's root must). Drivers made with the same
	// stateDir share their sandboxes: the suite drops one without stopping
	// its sandboxes and expects Cleanup of a new one to remove them.
	NewDriver func(tb testing.TB, stateDir string) sandbox.Driver
	// StatePaths returns the host paths a driver with stateDir keeps for
	// sandbox id while it runs. They must exist while it runs, and be gone
	// after Stop or Cleanup. Optional.
	StatePaths func(stateDir, id string) []string
	// NoIsolation says the driver runs agents without isolation or limits:
	// they share the host's network, processes, file system and hostname,
	// and Limits are not enforced. The suite then skips the tests of
	// isolation and limits and checks only the environment, output, exit
	// reasons, stopping and cleanup. Such a driver must still let two
	// agents listen side by side: it gives each its own PORT, which the
	// test agent honours, and dials that port whatever address it is given.
	NoIsolation bool
	// UserSpaceKernel says the agent runs on a kernel in user space
	// (gVisor's Sentry), not on the host's: its processes are not host
	// processes, and the namespaces and cgroups it sees are the Sentry's
	// emulation. The suite then finds a sandbox on the host through
	// HostProcesses (required), reads its network namespace and cgroups
	// from them, and asserts the same isolation properties where the
	// outcome legitimately differs:
	//   - writing the read-only root may fail with "permission denied"
	//     rather than "read-only file system" (the Sentry checks
	//     permissions first), as long as the agent's mount table marks
	//     the root read-only;
	//   - the victim of the attacks is its host processes (the Sentry),
	//     which must survive them as an agent's own would.
	UserSpaceKernel bool
	// HostProcesses returns the host pids of sandbox id, the main one
	// first. Optional unless UserSpaceKernel: by
	// default they are the processes whose environment carries the
	// suite's mark, which every agent process does.
	HostProcesses func(id string) []string

	// PodNetwork says each sandbox has a network interface of its own on
	// a network shared with the other sandboxes (a Kubernetes pod's),
	// besides loopback, rather than loopback only. LoopbackOnly then
	// checks what still holds: the agent reaches itself on loopback and
	// not the host's loopback. The Network attacks also dial the
	// victim's address (SandboxAddr), which must be refused unless
	// PeersReachable.
	PodNetwork bool
	// SandboxAddr returns the IP address of sandbox sb on the pod
	// network. Required with PodNetwork.
	SandboxAddr func(sb sandbox.Sandbox) string
	// PeersReachable says the pod network lets sandboxes connect to each
	// other (a network plugin that does not enforce NetworkPolicy): the
	// attack of one sandbox on another's address is then reported as a
	// known hole, not failed.
	PeersReachable bool
	// MergedOutput says the driver cannot keep the agent's stdout and
	// stderr apart (Kubernetes merges them into one log) and writes both
	// to Spec.Stdout, after a short delay.
	MergedOutput bool
	// NodePidsLimit is, for a driver that cannot limit one sandbox's
	// processes (Spec.Limits.Pids), the cap the platform puts on every
	// sandbox alike (the kubelet's podPidsLimit); the PidsLimit test then
	// bombs against that cap. Negative means there is none, and the test
	// is skipped saying so. Zero means the driver enforces Limits.Pids.
	NodePidsLimit int64
}

// Test agent layout inside a sandbox.
const (
	workDir   = "/workspace"
	agentPath = workDir + "/agent"
	dataFile  = "data.txt" // a file of the code directory
	dataValue = "original"
)

// waitTimeout bounds every wait for a sandbox to end.
const waitTimeout = 20 * time.Second

// suite is one run of the conformance suite.
type suite struct {
	cfg    Config
	code   string // the code directory, shared by every sandbox
	prefix string // makes sandbox ids unique to the run
	report report // the attacks tried and what came of them
}

// Run runs the conformance suite against the drivers cfg makes.
func Run(t *testing.T, cfg Config) {
	s := &suite{cfg: cfg, code: BuildAgent(t), prefix: randomHex(3)}
	if err := os.WriteFile(filepath.Join(s.code, dataFile), []byte(dataValue), 0o644); err != nil {
		t.Fatal(err)
	}
	state := TempDir(t)
	d := cfg.NewDriver(t, state)
	if err := d.Cleanup(t.Context()); err != nil {
		t.Fatalf("Cleanup of an empty state: %v", err)
	}

	// Two sandboxes that run side by side for the isolation tests.
	var a, b *agent
	var wg sync.WaitGroup
	wg.Go(func() { a = s.startFatal(t, d, "a", nil) })
	wg.Go(func() { b = s.startFatal(t, d, "b", nil) })
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	a.waitReady(t)
	b.waitReady(t)

	t.Run("TwoOnOnePort", func(t *testing.T) { s.testTwoOnOnePort(t, a, b) })
	t.Run("Stats", func(t *testing.T) { s.testStats(t, a) })
	t.Run("LoopbackOnly", s.isolated(func(t *testing.T) { s.testLoopbackOnly(t, a) }))
	t.Run("PrivateTmp", s.isolated(func(t *testing.T) { s.testPrivateTmp(t, a, b) }))
	t.Run("PrivateWorkDir", s.isolated(func(t *testing.T) { s.testPrivateWorkDir(t, a, b) }))
	t.Run("PIDNamespace", s.isolated(func(t *testing.T) { s.testPIDNamespace(t, a, b) }))
	t.Run("ReadOnlyRoot", s.isolated(func(t *testing.T) { s.testReadOnlyRoot(t, a) }))
	t.Run("HostHidden", s.isolated(func(t *testing.T) { s.testHostHidden(t, a, state) }))
	t.Run("Attacks", s.isolated(func(t *testing.T) { s.testAttacks(t, a, b, state) }))
	t.Run("BadSpecs", func(t *testing.T) { s.testBadSpecs(t, d, a) })
	t.Run("Output", func(t *testing.T) { s.testOutput(t, d) })
	t.Run("MemoryLimit", s.isolated(func(t *testing.T) { s.testMemoryLimit(t, d, a) }))
	t.Run("PidsLimit", s.isolated(func(t *testing.T) { s.testPidsLimit(t, d, a) }))
	t.Run("TmpLimit", s.isolated(func(t *testing.T) { s.testTmpLimit(t, d) }))
	t.Run("ExitAtStart", func(t *testing.T) { s.testExitAtStart(t, d) })
	t.Run("ExitLater", func(t *testing.T) { s.testExitLater(t, d) })
	t.Run("Stop", func(t *testing.T) { s.testStop(t, d, state) })
	t.Run("CleanupAfterCrash", func(t *testing.T) { s.testCleanupAfterCrash(t) })
	s.report.log(t)
}

// hostProcesses returns the host pids of a's sandbox (see
// Config.HostProcesses).
func (s *suite) hostProcesses(a *agent) []string {
	if s.cfg.HostProcesses != nil {
		return s.cfg.HostProcesses(a.sb.ID())
	}
	return markedProcesses(a.mark)
}

// isolated wraps a test of isolation or limits, which is skipped for a
// driver without them.
func (s *suite) isolated(test func(t *testing.T)) func(t *testing.T) {
	return func(t *testing.T) {
		if s.cfg.NoIsolation {
			t.Skip("the driver does not isolate agents nor enforce limits (Config.NoIsolation)")
		}
		test(t)
	}
}

// spec returns the spec of a test agent called name, marked with mark.
func (s *suite) spec(name, mark string) sandbox.Spec {
	return sandbox.Spec{
		ID:   s.id(name),
		Args: []string{agentPath},
		Env: []string{
			"PATH=/usr/local/bin:/usr/bin:/bin",
			"AGENT_NAME=" + name,
			"GREETING=hello from " + name,
			markEnv + "=" + mark,
		},
		CodeDir: s.code,
		WorkDir: workDir,
	}
}

// id is the sandbox id of the agent called name.
func (s *suite) id(name string) string { return "st-" + s.prefix + "-" + name }

// start starts a test agent called name (edit, if not nil, changes its spec)
// and stops it when the test ends. It does not wait for the agent to be
// ready.
func (s *suite) start(t testing.TB, d sandbox.Driver, name string, edit func(*sandbox.Spec)) (*agent, string, error) {
	mark := randomHex(8)
	spec := s.spec(name, mark)
	if edit != nil {
		edit(&spec)
	}
	sb, err := d.Start(t.Context(), spec)
	if err != nil {
		return nil, "", err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := sb.Stop(ctx); err != nil {
			t.Errorf("stop sandbox %s: %v", sb.ID(), err)
		}
	})
	a := newAgent(sb)
	a.mark = mark
	return a, mark, nil
}

// startFatal is start that fails the test on error. It may run on another
// goroutine than the test's.
func (s *suite) startFatal(t testing.TB, d sandbox.Driver, name string, edit func(*sandbox.Spec)) *agent {
	a, _, err := s.start(t, d, name, edit)
	if err != nil {
		t.Errorf("start sandbox %s: %v", name, err)
		return nil
	}
	return a
}

// startReady starts a test agent and waits until it answers.
func (s *suite) startReady(t testing.TB, d sandbox.Driver, name string, edit func(*sandbox.Spec)) (*agent, string) {
	t.Helper()
	a, mark, err := s.start(t, d, name, edit)
	if err != nil {
		t.Fatalf("start sandbox %s: %v", name, err)
	}
	a.waitReady(t)
	return a, mark
}

func (s *suite) testTwoOnOnePort(t *testing.T, a, b *agent) {
	for name, ag := range map[string]*agent{"a": a, "b": b} {
		if got, want := ag.ok(t, "/env", "key", "GREETING"), "hello from "+name; got != want {
			t.Errorf("sandbox %s: GREETING=%q, want %q", name, got, want)
		}
		if code, body := ag.get(t, "/env", "key", "HOME_OF_THE_TEST"); code != http.StatusNotFound {
			t.Errorf("sandbox %s: a variable the spec does not set is visible: %d %s", name, code, body)
		}
	}
	if s.cfg.NoIsolation {
		return
	}
	host, _ := os.Hostname()
	if got := a.ok(t, "/hostname"); got == host {
		t.Errorf("sandbox a has the host's hostname %q: no UTS namespace", got)
	}
}

// testStats: a driver that reports resource use reports the agent's.
func (s *suite) testStats(t *testing.T, a *agent) {
	sr, ok := a.sb.(sandbox.StatsReader)
	if !ok {
		t.Skip("the driver does not report resource use")
	}
	st, err := sr.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// A running Go agent uses at least a megabyte and has used some CPU.
	if st.MemoryBytes < 1<<20 || st.CPUSeconds <= 0 {
		t.Errorf("Stats = %+v, want the agent's memory and CPU time", st)
	}
}

func (s *suite) testLoopbackOnly(t *testing.T, a *agent) {
	got := a.ok(t, "/ifaces")
	switch {
	case s.cfg.PodNetwork:
		// lo and the pod's own interface.
		if ifaces := strings.Fields(got); len(ifaces) != 2 || !slices.Contains(ifaces, "lo") {
			t.Errorf("network interfaces are %q, want lo and the pod's interface", got)
		}
	case got != "lo":
		t.Errorf("network interfaces are %q, want only lo", got)
	}
	if got := a.ok(t, "/self"); got != "pong" {
		t.Errorf("the agent reaching itself on %s got %q", agentAddr, got)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if code, body := a.get(t, "/dial", "addr", ln.Addr().String()); code == http.StatusOK {
		t.Errorf("the sandbox reached the host's loopback listener %s: %s", ln.Addr(), body)
	}
}

func (s *suite) testPrivateTmp(t *testing.T, a, b *agent) {
	a.ok(t, "/write", "path", "/tmp/probe", "data", "from a")
	if got := a.ok(t, "/read", "path", "/tmp/probe"); got != "from a" {
		t.Errorf("sandbox a reads back %q from its /tmp", got)
	}
	if code, body := b.get(t, "/read", "path", "/tmp/probe"); code != http.StatusNotFound {
		t.Errorf("sandbox b sees a's /tmp/probe: %d %s", code, body)
	}
}

func (s *suite) testPrivateWorkDir(t *testing.T, a, b *agent) {
	data := workDir + "/" + dataFile
	a.ok(t, "/write", "path", workDir+"/new.txt", "data", "from a")
	// The code's files may belong to another user than the agent's: it
	// replaces them, as editors do, rather than write them in place.
	a.ok(t, "/replace", "path", data, "data", "changed by a")
	if got := a.ok(t, "/read", "path", data); got != "changed by a" {
		t.Errorf("sandbox a reads back %q from %s", got, data)
	}
	if code, body := b.get(t, "/read", "path", workDir+"/new.txt"); code != http.StatusNotFound {
		t.Errorf("sandbox b sees a's new.txt: %d %s", code, body)
	}
	if got := b.ok(t, "/read", "path", data); got != dataValue {
		t.Errorf("sandbox b reads %q from %s, want %q", got, data, dataValue)
	}
	host, err := os.ReadFile(filepath.Join(s.code, dataFile))
	if err != nil || string(host) != dataValue {
		t.Errorf("the code directory's %s now holds %q (%v), want %q", dataFile, host, err, dataValue)
	}
	entries, err := os.ReadDir(s.code)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"agent", dataFile}; !slices.Equal(names, want) {
		t.Errorf("the code directory holds %v, want %v", names, want)
	}
}

func (s *suite) testPIDNamespace(t *testing.T, a, b *agent) {
	for _, ag := range []*agent{a, b} {
		if got := ag.ok(t, "/pids"); got != "1" {
			t.Errorf("sandbox %s sees processes %q, want only its agent as 1", ag.sb.ID(), got)
		}
	}
}

func (s *suite) testReadOnlyRoot(t *testing.T, a *agent) {
	// gVisor's Sentry checks permissions before it checks for a read-only
	// mount: there the mount table must say that the root is read-only.
	refusal := "read-only"
	if s.cfg.UserSpaceKernel {
		refusal = "permission denied"
		if opts := rootMountOptions(a.ok(t, "/read", "path", "/proc/self/mountinfo")); !slices.Contains(opts, "ro") {
			t.Errorf("the sandbox's root is mounted with %v, want ro", opts)
		}
	}
	for _, p := range []string{"/sandboxtest", "/usr/sandboxtest", "/usr/bin/sandboxtest", "/bin/sandboxtest", "/etc/sandboxtest", "/etc/passwd"} {
		code, body := a.get(t, "/write", "path", p, "data", "x")
		if code == http.StatusOK {
			t.Errorf("writing %s succeeded", p)
		} else if code != http.StatusNotFound && !containsFold(body, "read-only") && !containsFold(body, refusal) {
			t.Errorf("writing %s failed for another reason than a read-only file system: %s", p, body)
		}
	}
	a.ok(t, "/write", "path", workDir+"/writable", "data", "x")
}

// rootMountOptions returns the per-mount options of the last mount on "/"
// in a /proc/<pid>/mountinfo, or nil.
func rootMountOptions(mountinfo string) []string {
	var opts []string
	for _, line := range strings.Split(mountinfo, "\n") {
		// id parent major:minor root mount-point options ...
		if f := strings.Fields(line); len(f) >= 6 && f[4] == "/" {
			opts = strings.Split(f[5], ",")
		}
	}
	return opts
}

func (s *suite) testHostHidden(t *testing.T, a *agent, state string) {
	hidden := []string{"/etc/shadow", "/etc/gshadow", "/root", "/home", "/var/lib", s.code, state}
	if s.cfg.StatePaths != nil {
		hidden = append(hidden, s.cfg.StatePaths(state, a.sb.ID())...)
	}
	for _, p := range hidden {
		if code, body := a.get(t, "/stat", "path", p); code != http.StatusNotFound {
			t.Errorf("the sandbox sees the host's %s: %d %s", p, code, body)
		}
	}
}

func (s *suite) testBadSpecs(t *testing.T, d sandbox.Driver, a *agent) {
	tests := []struct {
		name string
		edit func(*sandbox.Spec)
	}{
		{"empty id", func(sp *sandbox.Spec) { sp.ID = "" }},
		{"id with a slash", func(sp *sandbox.Spec) { sp.ID = "a/b" }},
		{"id too long", func(sp *sandbox.Spec) { sp.ID = strings.Repeat("x", 65) }},
		{"no args", func(sp *sandbox.Spec) { sp.Args = nil }},
		{"duplicate id", func(sp *sandbox.Spec) { sp.ID = a.sb.ID() }},
		{"missing code dir", func(sp *sandbox.Spec) { sp.CodeDir = filepath.Join(s.code, "missing") }},
		{"missing program", func(sp *sandbox.Spec) { sp.Args = []string{workDir + "/missing"} }},
	}
	for _, tt := range tests {
		sp := s.spec("bad", randomHex(4))
		tt.edit(&sp)
		sb, err := d.Start(t.Context(), sp)
		if err == nil {
			sb.Stop(t.Context())
			t.Errorf("%s: Start succeeded", tt.name)
			continue
		}
		t.Logf("%s: %v", tt.name, err)
	}
	// Failing to start a duplicate must not harm the original.
	if got := a.ok(t, "/ping"); got != "pong" {
		t.Errorf("sandbox a answers %q after a duplicate Start", got)
	}
	// A failed start leaves nothing behind that a new one trips on.
	s.startReady(t, d, "bad", nil)
}

func (s *suite) testOutput(t *testing.T, d sandbox.Driver) {
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	s.startReady(t, d, "out", func(sp *sandbox.Spec) { sp.Stdout, sp.Stderr = stdout, stderr })
	// The caller may close its copies once Start returned.
	stdout.Close()
	stderr.Close()
	want := map[string][]string{"stdout": {"agent out: hello on stdout"}, "stderr": {"agent out: hello on stderr"}}
	deadline := time.Now()
	if s.cfg.MergedOutput {
		want = map[string][]string{"stdout": {"agent out: hello on stdout", "agent out: hello on stderr"}}
		// The output travels through the platform's log, a little later.
		deadline = deadline.Add(waitTimeout)
	}
	for file, lines := range want {
		for {
			data, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				t.Fatal(err)
			}
			missing := slices.DeleteFunc(slices.Clone(lines), func(l string) bool { return strings.Contains(string(data), l) })
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s holds %q, want lines %q", file, data, missing)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (s *suite) testMemoryLimit(t *testing.T, d sandbox.Driver, a *agent) {
	m, _ := s.startReady(t, d, "mem", func(sp *sandbox.Spec) { sp.Limits.MemoryBytes = 64 << 20 })
	if code, body, err := m.try(t, "/alloc", "mb", "512"); err == nil && code == http.StatusOK {
		t.Fatalf("the agent allocated 512 MiB under a 64 MiB limit: %s", body)
	}
	reason := waitDone(t, m)
	t.Logf("the sandbox ended: %v", reason)
	held := true
	if !containsFold(reason.Error(), "memory") {
		t.Errorf("Err = %q, want it to mention memory", reason)
		held = false
	}
	if got := a.ok(t, "/ping"); got != "pong" {
		t.Errorf("sandbox a answers %q after another sandbox ran out of memory", got)
		held = false
	}
	s.report.add("memory bomb: 512 MiB under a 64 MiB limit", held, fmt.Sprintf("%v; another sandbox answers", reason))
}

func (s *suite) testPidsLimit(t *testing.T, d sandbox.Driver, a *agent) {
	limit := int64(48)
	switch {
	case s.cfg.NodePidsLimit < 0:
		t.Skip("the driver cannot limit a sandbox's processes and the platform puts no cap on them (Config.NodePidsLimit)")
	case s.cfg.NodePidsLimit > 0:
		limit = s.cfg.NodePidsLimit // the platform's cap, whatever the spec says
	}
	bomb := max(1000, 4*int(limit))
	p, _ := s.startReady(t, d, "pids", func(sp *sandbox.Spec) { sp.Limits.Pids = limit })
	started, errText := p.fork(t, bomb)
	t.Logf("the fork bomb started %d processes, then: %s", started, errText)
	if started >= bomb || !containsFold(errText, "resource temporarily unavailable") {
		t.Errorf("a fork bomb under a limit of %d started %d processes (error %q), want it stopped by EAGAIN", limit, started, errText)
	}
	if got := p.ok(t, "/ping"); got != "pong" {
		t.Errorf("the bombed sandbox answers %q afterwards", got)
	}
	other, otherErr := a.fork(t, 20)
	if other != 20 || otherErr != "" {
		t.Errorf("another sandbox started %d of 20 processes (%s) next to the bomb", other, otherErr)
	}
	s.report.add(fmt.Sprintf("fork bomb: %d processes under a limit of %d", bomb, limit), started < bomb && other == 20,
		fmt.Sprintf("stopped after %d (%s); it still answers; another sandbox forks %d of 20", started, lastPart(errText), other))
}

func (s *suite) testTmpLimit(t *testing.T, d sandbox.Driver) {
	tmp, _ := s.startReady(t, d, "tmp", func(sp *sandbox.Spec) { sp.Limits.TmpBytes = 4 << 20 })
	for _, fill := range []struct{ path, mb, what string }{
		{"/tmp/big", "16", "fill /tmp: 16 MiB into its 4 MiB"},
		// /dev/shm is a tmpfs of the runtime's default size (64 MiB).
		{"/dev/shm/big", "80", "fill /dev/shm: 80 MiB"},
	} {
		code, body := tmp.get(t, "/fill", "path", fill.path, "mb", fill.mb)
		held := code != http.StatusOK && containsFold(body, "no space left")
		if !held {
			t.Errorf("writing %s MiB to %s: %d %s, want no space left", fill.mb, fill.path, code, body)
		}
		s.report.add(fill.what, held, "stopped: "+lastPart(strings.TrimSpace(body)))
	}
	tmp.ok(t, "/fill", "path", "/tmp/small", "mb", "1")
}

func (s *suite) testExitAtStart(t *testing.T, d sandbox.Driver) {
	x, _, err := s.start(t, d, "exit3", func(sp *sandbox.Spec) { sp.Env = append(sp.Env, "AGENT_EXIT=3") })
	if err != nil {
		t.Fatalf("start an agent that exits at once: %v", err)
	}
	reason := waitDone(t, x)
	t.Logf("the sandbox ended: %v", reason)
	if !strings.Contains(reason.Error(), "3") {
		t.Errorf("Err = %q, want it to give the status 3", reason)
	}
}

func (s *suite) testExitLater(t *testing.T, d sandbox.Driver) {
	x, _ := s.startReady(t, d, "exit7", nil)
	x.ok(t, "/exit", "code", "7")
	reason := waitDone(t, x)
	t.Logf("the sandbox ended: %v", reason)
	if !strings.Contains(reason.Error(), "7") {
		t.Errorf("Err = %q, want it to give the status 7", reason)
	}
	if c, err := x.sb.DialContext(t.Context(), "tcp", agentAddr); err == nil {
		c.Close()
		t.Errorf("dialling an exited agent succeeded")
	}
	if err := x.sb.Stop(t.Context()); err != nil {
		t.Errorf("Stop after the agent exited: %v", err)
	}
}

func (s *suite) testStop(t *testing.T, d sandbox.Driver, state string) {
	x, _ := s.startReady(t, d, "stop", nil)
	// A child process too: it must die with the agent.
	x.ok(t, "/spawn")
	fp := s.capture(t, s.statePaths(state), x)
	if pids := s.hostProcesses(x); len(pids) < 2 && !s.cfg.UserSpaceKernel {
		t.Fatalf("the sandbox runs processes %v, want the agent and its child", pids)
	}
	if got := x.ok(t, "/pids"); got == "1" {
		t.Fatalf("the sandbox runs only its agent (%s), want its child too", got)
	}
	if err := x.sb.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-x.sb.Done():
	default:
		t.Errorf("Done is open after Stop")
	}
	if x.sb.Err() == nil {
		t.Errorf("Err is nil after Stop")
	}
	if err := x.sb.Stop(t.Context()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if c, err := x.sb.DialContext(t.Context(), "tcp", agentAddr); err == nil {
		c.Close()
		t.Errorf("dialling a stopped sandbox succeeded")
	}
	fp.assertGone(t, true)
}

func (s *suite) testCleanupAfterCrash(t *testing.T) {
	state := TempDir(t)
	old := s.cfg.NewDriver(t, state)
	x, _ := s.startReady(t, old, "crash", nil)
	fp := s.capture(t, s.statePaths(state), x)

	// The old driver is dropped without Stop, as if Berth had crashed.
	d := s.cfg.NewDriver(t, state)
	if err := d.Cleanup(t.Context()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	// The dropped sandbox's own descriptors are this process's, not the
	// crashed one's: ignore them until it is stopped.
	fp.assertGone(t, false)
	reason := waitDone(t, x)
	t.Logf("the dropped sandbox ended: %v", reason)
	if err := x.sb.Stop(t.Context()); err != nil {
		t.Logf("Stop of the dropped sandbox after Cleanup: %v", err)
	}
	fp.assertGone(t, true)

	// The cleaned state is usable again, with the same id.
	s.startReady(t, d, "crash", nil)
}

// statePaths adapts Config.StatePaths to one state directory.
func (s *suite) statePaths(state string) func(id string) []string {
	if s.cfg.StatePaths == nil {
		return nil
	}
	return func(id string) []string { return s.cfg.StatePaths(state, id) }
}

// waitDone waits for a's sandbox to end and returns its Err, which must not
// be nil.
func waitDone(t testing.TB, a *agent) error {
	t.Helper()
	select {
	case <-a.sb.Done():
	case <-time.After(waitTimeout):
		t.Fatalf("sandbox %s: Done not closed after %v", a.sb.ID(), waitTimeout)
	}
	err := a.sb.Err()
	if err == nil {
		t.Fatalf("sandbox %s: Err is nil after Done", a.sb.ID())
	}
	return err
}

// TempDir returns a new directory, removed when the test ends, that every
// user may look up but only root may list: as a state directory it lets
// drivers use user namespaces, whose root must reach the sandbox's files by
// their paths. (testing.TB.TempDir's are private to root.)
func TempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "sandboxtest-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			tb.Error(err)
		}
	})
	if err := os.Chmod(dir, 0o711); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
