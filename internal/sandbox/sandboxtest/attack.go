package sandboxtest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
)

// report is the list of attacks the suite tried and what came of each,
// which Run logs as a table at its end.
type report struct {
	rows []reportRow
}

type reportRow struct {
	attack  string
	outcome string
	held    bool // the sandbox held: the attack failed as it should
}

// add records one attack.
func (r *report) add(attack string, held bool, outcome string) {
	r.rows = append(r.rows, reportRow{attack: attack, outcome: outcome, held: held})
}

// log logs the table of attacks, if any was tried.
func (r *report) log(t testing.TB) {
	if len(r.rows) == 0 {
		return
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\n#\tattack\tresult\toutcome\n")
	held := 0
	for i, row := range r.rows {
		result := "HELD"
		if row.held {
			held++
		} else {
			result = "BROKEN"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", i+1, row.attack, result, row.outcome)
	}
	w.Flush()
	t.Logf("isolation: %d of %d attacks held%s", held, len(r.rows), b.String())
}

// attackResult is what the test agent's /attack answers.
type attackResult struct {
	Error string `json:"error"` // "" if the attack worked
	Errno string `json:"errno"` // the error's name, such as EPERM
}

// describe is the outcome of a refused attack for the report.
func (r attackResult) describe() string {
	if r.Errno != "" {
		return "refused: " + r.Errno + " (" + lastPart(r.Error) + ")"
	}
	return "refused: " + r.Error
}

// lastPart drops the "op path: " prefixes of an error text.
func lastPart(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// attacker runs attacks from one agent and records them.
type attacker struct {
	t *testing.T
	a *agent
	r *report
}

// refused runs the agent's attack name (with kv parameters) and fails the
// test unless it fails.
func (at attacker) refused(attack, name string, kv ...string) {
	at.t.Helper()
	at.refusedAt(attack, "", name, kv...)
}

// refusedAt is refused for an attack on the file p, which the report says
// when it is missing on the host too (the kernel may lack it).
func (at attacker) refusedAt(attack, p, name string, kv ...string) {
	at.t.Helper()
	var res attackResult
	body := at.a.ok(at.t, "/attack", append([]string{"name", name}, kv...)...)
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		at.t.Fatalf("attack %s: %v: %s", name, err, body)
	}
	if res.Error == "" {
		at.t.Errorf("attack %q succeeded", attack)
		at.r.add(attack, false, "SUCCEEDED")
		return
	}
	at.r.add(attack, true, res.describe()+missingOnHost(p, res.Errno == "ENOENT"))
}

// missingOnHost is the report's note for a path p that was not found in the
// sandbox (notFound) and does not exist on the host either.
func missingOnHost(p string, notFound bool) string {
	if p == "" || !notFound {
		return ""
	}
	if _, err := os.Stat(p); err == nil {
		return ""
	}
	return "; the host has none either"
}

// hidden fails the test unless host path p (or a path of the sandbox's
// own) is missing inside the sandbox.
func (at attacker) hidden(attack, p string) {
	at.t.Helper()
	code, body := at.a.get(at.t, "/stat", "path", p)
	if code != http.StatusNotFound {
		at.t.Errorf("%s: %s is visible: %d %s", attack, p, code, body)
		at.r.add(attack, false, "VISIBLE")
		return
	}
	at.r.add(attack, true, "not there: "+lastPart(strings.TrimSpace(body)))
}

// unreadable fails the test if path p reads as anything but nothing.
func (at attacker) unreadable(attack, p string) {
	at.t.Helper()
	code, body := at.a.get(at.t, "/read", "path", p)
	switch {
	case code == http.StatusOK && body != "":
		at.t.Errorf("%s: %s reads as %d bytes", attack, p, len(body))
		at.r.add(attack, false, fmt.Sprintf("READ %d bytes", len(body)))
	case code == http.StatusOK:
		at.r.add(attack, true, "masked: reads empty")
	default:
		at.r.add(attack, true, "refused: "+lastPart(strings.TrimSpace(body))+missingOnHost(p, code == http.StatusNotFound))
	}
}

// unreachable fails the test if the agent can connect to addr over TCP.
func (at attacker) unreachable(attack, addr string) {
	at.t.Helper()
	code, body := at.a.get(at.t, "/dial", "addr", addr)
	if code == http.StatusOK {
		at.t.Errorf("%s: connected to %s", attack, addr)
		at.r.add(attack, false, "CONNECTED")
		return
	}
	at.r.add(attack, true, "refused: "+lastPart(strings.TrimSpace(body)))
}

// testAttacks runs escape attempts from sandbox a (the attacker) against
// sandbox b (the victim), the host and the kernel, and checks that each
// fails and that the victim is unharmed.
func (s *suite) testAttacks(t *testing.T, a, b *agent, state string) {
	at := attacker{t: t, a: a, r: &s.report}

	// The victim holds a secret in its /tmp and working directory and on
	// an abstract unix socket (private to its network namespace).
	secret := "sandboxtest-secret-" + randomHex(6)
	victimTmp, victimWork := "/tmp/"+secret, workDir+"/"+secret
	b.ok(t, "/write", "path", victimTmp, "data", "victim's tmp")
	b.ok(t, "/write", "path", victimWork, "data", "victim's workdir")
	b.ok(t, "/listen-unix", "name", secret)
	victimPIDs := s.hostProcesses(b)
	if len(victimPIDs) == 0 {
		t.Fatalf("no host process of the victim sandbox %s", b.sb.ID())
	}
	victimPID := victimPIDs[0]

	// Berth's own secrets: a data directory with a database and keys, all
	// world-readable, so that only the sandbox keeps them out of sight.
	data := TempDir(t)
	db, keys := filepath.Join(data, "berth.db"), filepath.Join(data, "keys")
	if err := os.WriteFile(db, []byte("SQLite format 3\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, "root.key"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("Identity", func(t *testing.T) { s.attackIdentity(t, at) })
	t.Run("OtherSession", func(t *testing.T) {
		at := attacker{t: t, a: a, r: at.r}
		at.hidden("read the victim's /tmp file at its path", victimTmp)
		at.hidden("read the victim's workdir file at its path", victimWork)
		at.hidden("read the victim's /tmp through /proc/<victim's host pid>/root", "/proc/"+victimPID+"/root"+victimTmp)
		if s.cfg.StatePaths != nil {
			for _, p := range s.cfg.StatePaths(state, b.sb.ID()) {
				at.hidden("reach the victim's state on the host ("+filepath.Base(filepath.Dir(p))+"/"+filepath.Base(p)+")", p)
			}
		}
		if found := a.ok(t, "/find", "name", secret); found != "" {
			t.Errorf("searching the file tree finds the victim's files: %s", found)
			at.r.add("search every visible file for the victim's", false, "FOUND "+found)
		} else {
			at.r.add("search every visible file for the victim's", true, "nothing found")
		}
		// Writing at the victim's paths writes the attacker's own files.
		a.ok(t, "/write", "path", victimTmp, "data", "attacker")
		a.ok(t, "/write", "path", victimWork, "data", "attacker")
		tmp, work := b.ok(t, "/read", "path", victimTmp), b.ok(t, "/read", "path", victimWork)
		held := tmp == "victim's tmp" && work == "victim's workdir"
		if !held {
			t.Errorf("the attacker changed the victim's files: /tmp %q, workdir %q", tmp, work)
		}
		at.r.add("write the victim's /tmp and workdir files at their paths", held, "lands in the attacker's own files; the victim's are unchanged")
	})
	t.Run("OtherProcesses", func(t *testing.T) {
		at := attacker{t: t, a: a, r: at.r}
		if got := a.ok(t, "/pids"); got != "1" {
			t.Errorf("/proc lists %q, want only the agent as 1", got)
			at.r.add("list /proc", false, "SEES "+got)
		} else {
			at.r.add("list /proc", true, "only its own agent (pid 1)")
		}
		const maxPID = 65535
		if found := a.ok(t, "/scan-pids", "max", strconv.Itoa(maxPID)); found != "" {
			t.Errorf("kill(pid, 0) finds processes that are not the agent's: %s", found)
			at.r.add(fmt.Sprintf("probe pids 1-%d with kill(pid, 0)", maxPID), false, "FOUND "+found)
		} else {
			at.r.add(fmt.Sprintf("probe pids 1-%d with kill(pid, 0)", maxPID), true, "none but its own")
		}
		at.refused("kill -9 the victim's host pid", "signal", "pid", victimPID, "sig", "9")
		at.refused("kill -9 this test's pid", "signal", "pid", strconv.Itoa(os.Getpid()), "sig", "9")
		at.refused("ptrace the victim's host pid", "ptrace", "pid", victimPID)
		at.refused("ptrace this test's pid", "ptrace", "pid", strconv.Itoa(os.Getpid()))
		// kill -9 -1 hits every process the agent may signal: only its
		// own, of which there are none besides itself.
		a.ok(t, "/attack", "name", "kill-all")
		held := slices.Contains(s.hostProcesses(b), victimPID) && b.ok(t, "/ping") == "pong"
		if !held {
			t.Errorf("the victim did not survive kill -9 -1 in the attacker")
		}
		at.r.add("kill -9 -1 (every process it may signal)", held, "the victim lives on")
	})
	t.Run("Network", func(t *testing.T) {
		at := attacker{t: t, a: a, r: at.r}
		whoami := a.ok(t, "/env", "key", "AGENT_NAME")
		if got := a.ok(t, "/peer"); got != whoami {
			t.Errorf("127.0.0.1:%d inside the attacker is answered by %q, want itself (%q)", AgentPort, got, whoami)
			at.r.add("connect to the victim's :8080", false, "REACHED "+got)
		} else {
			at.r.add("connect to the victim's :8080", true, "127.0.0.1:8080 is the attacker itself")
		}
		code, body := a.get(t, "/dial-unix", "name", secret)
		if code == http.StatusOK {
			t.Errorf("connected to the victim's abstract unix socket")
			at.r.add("connect to the victim's abstract unix socket", false, "CONNECTED")
		} else {
			at.r.add("connect to the victim's abstract unix socket", true, "refused: "+lastPart(strings.TrimSpace(body)))
		}
		if s.cfg.PodNetwork {
			victim := net.JoinHostPort(s.cfg.SandboxAddr(b.sb), strconv.Itoa(AgentPort))
			code, body := a.get(t, "/dial", "addr", victim)
			switch {
			case code != http.StatusOK:
				at.r.add("connect to the victim's pod address "+victim, true, "refused: "+lastPart(strings.TrimSpace(body)))
			case s.cfg.PeersReachable:
				t.Logf("KNOWN HOLE: the attacker connects to the victim's pod address %s: the pod network does not enforce network policies (Config.PeersReachable)", victim)
				at.r.add("connect to the victim's pod address "+victim, false, "CONNECTED: the network plugin does not enforce NetworkPolicy (known)")
			default:
				t.Errorf("connected to the victim's pod address %s", victim)
				at.r.add("connect to the victim's pod address "+victim, false, "CONNECTED")
			}
		}
		for _, network := range []struct{ net, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
			ln, err := net.Listen(network.net, network.addr)
			if err != nil {
				t.Logf("no host listener on %s: %v", network.addr, err)
				continue
			}
			defer ln.Close()
			at.unreachable("connect to a listener on the host's "+ln.Addr().String(), ln.Addr().String())
		}
	})
	t.Run("HostFiles", func(t *testing.T) {
		at := attacker{t: t, a: a, r: at.r}
		for _, p := range []string{"/etc/shadow", "/root", "/home", "/var/lib", state} {
			at.hidden("read the host's "+p, p)
		}
		at.hidden("read Berth's data directory", data)
		at.hidden("read Berth's database", db)
		at.hidden("read Berth's keys", keys)
		at.hidden("climb to Berth's database with ../", workDir+"/../../.."+db)
		at.hidden("reach Berth's database through /proc/1/root", "/proc/1/root"+db)
		at.refused("open a host inode by handle (open_by_handle_at, \"shocker\")", "open-by-handle")
		for _, p := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list"} {
			at.unreadable("read "+p, p)
		}
	})
	t.Run("Kernel", func(t *testing.T) {
		at := attacker{t: t, a: a, r: at.r}
		type attack struct{ attack, name string }
		mknod := attack{"mknod /dev/mem (c 1 1) in /tmp", "mknod"}
		if s.cfg.UserSpaceKernel {
			// gVisor lets the node be made in its own tmpfs; it must not
			// reach the host's memory.
			mknod = attack{"mknod /dev/mem (c 1 1) in /tmp and read it", "mknod-read"}
		}
		for _, tt := range []attack{
			{"mount a tmpfs", "mount-tmpfs"},
			{"bind-mount /usr", "mount-bind"},
			{"mount a proc", "mount-proc"},
			{"pivot_root", "pivot-root"},
			{"unshare mount, network, UTS and IPC namespaces", "unshare"},
			{"start a child in new user, mount and PID namespaces", "clone-namespaces"},
			{"setns into a mount namespace", "setns"},
			{"chroot (to climb out of it)", "chroot"},
			{"load a kernel module (init_module)", "init-module"},
			{"load a kernel module (finit_module)", "finit-module"},
			{"set the clock (settimeofday)", "settimeofday"},
			{"set the clock (clock_settime)", "clock-settime"},
			{"open an AF_PACKET raw socket", "packet-socket"},
			{"open an AF_INET SOCK_RAW socket", "raw-socket"},
			mknod,
			{"setuid(0)", "setuid"},
			{"setgid(0)", "setgid"},
			{"setgroups([0])", "setgroups"},
			{"keyctl (join a session keyring)", "keyctl"},
			{"add_key", "add-key"},
			{"bpf (create a map)", "bpf"},
			{"perf_event_open", "perf-event-open"},
			{"io_uring_setup", "io-uring"},
			{"userfaultfd", "userfaultfd"},
		} {
			at.refused(tt.attack, tt.name)
		}
		// Opened for writing and closed unwritten, so that a failure of the
		// sandbox would harm nothing.
		for _, p := range []string{
			"/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sysrq-trigger",
			"/sys/kernel/uevent_helper", "/sys/class/net/lo/mtu", "/proc/self/exe",
		} {
			at.refusedAt("open "+p+" for writing", p, "open-write", "path", p)
		}
		for _, p := range []string{"/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg"} {
			at.refusedAt("open "+p, p, "open-read", "path", p)
		}
	})

	// The victim is unharmed.
	tmp, work := b.ok(t, "/read", "path", victimTmp), b.ok(t, "/read", "path", victimWork)
	started, errText := b.fork(t, 5)
	healthy := b.ok(t, "/ping") == "pong" && tmp == "victim's tmp" && work == "victim's workdir" &&
		started == 5 && slices.Contains(s.hostProcesses(b), victimPID)
	if !healthy {
		t.Errorf("the victim after the attacks: /tmp %q, workdir %q, forked %d of 5 (%s), host processes %v (want %s)",
			tmp, work, started, errText, s.hostProcesses(b), victimPID)
	}
	s.report.add("the victim after all attacks", healthy, "answers, forks, its files and processes intact")
}

// attackIdentity checks, from inside, that the agent runs unprivileged:
// not as root, without capabilities, with no_new_privs and a seccomp
// filter.
func (s *suite) attackIdentity(t *testing.T, at attacker) {
	status := at.a.ok(t, "/read", "path", "/proc/self/status")
	fields := make(map[string]string)
	for _, line := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	// "0 0 4294967295" is the host's own user namespace.
	uidMap := strings.Join(strings.Fields(at.a.ok(t, "/read", "path", "/proc/self/uid_map")), " ")
	checks := []struct {
		attack string
		field  string
		ok     func(string) bool
	}{
		{"run as root (uid)", "Uid", func(v string) bool { return !slices.Contains(strings.Fields(v), "0") }},
		{"run as root (gid)", "Gid", func(v string) bool { return !slices.Contains(strings.Fields(v), "0") }},
		{"hold a capability (effective)", "CapEff", isZero},
		{"hold a capability (permitted)", "CapPrm", isZero},
		{"hold a capability (inheritable)", "CapInh", isZero},
		{"hold a capability (bounding)", "CapBnd", isZero},
		{"hold a capability (ambient)", "CapAmb", isZero},
		// The runtime's own groups (root's) must not be left to the agent;
		// in a user namespace an unmapped group shows as the overflow
		// group, 65534.
		{"keep a supplementary group of the host's root", "Groups", func(v string) bool {
			return !slices.Contains(strings.Fields(v), "0") && !slices.Contains(strings.Fields(v), "65534")
		}},
		{"gain privileges by exec (no_new_privs)", "NoNewPrivs", func(v string) bool { return v == "1" }},
		{"make system calls unfiltered (seccomp)", "Seccomp", func(v string) bool { return v == "2" }},
	}
	// gVisor's /proc/self/status lacks these two; prctl tells them.
	fromPrctl := map[string]string{"CapAmb": "cap_ambient", "NoNewPrivs": "no_new_privs"}
	for _, c := range checks {
		v, found := fields[c.field]
		if what := fromPrctl[c.field]; !found && s.cfg.UserSpaceKernel && what != "" {
			v, found = at.a.ok(t, "/prctl", "what", what), true
		}
		held := found && c.ok(v)
		if !held {
			t.Errorf("%s: /proc/self/status has %s: %q", c.attack, c.field, v)
		}
		outcome := c.field + ": " + v
		if c.field == "Uid" {
			outcome += " (uid_map: " + uidMap + ")"
		}
		at.r.add(c.attack, held, outcome)
	}
}

// isZero reports whether a capability set of /proc/self/status is empty.
func isZero(v string) bool { return strings.Trim(v, "0") == "" && v != "" }
