package sandboxtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
)

// markEnv is the environment variable whose value marks every process of one
// sandbox, so the suite can find them from the host.
const markEnv = "SANDBOXTEST_MARK"

// footprint is what one running sandbox holds on the host, as far as the
// suite can see without knowing the driver.
type footprint struct {
	id      string
	procs   func() []string // the sandbox's host processes
	netns   string          // the agent's network namespace, "net:[inode]"; "" if it is the host's
	cgroups []string        // host directories of the sandbox's own cgroups
	paths   []string        // driver state the Config names
}

// capture records the footprint of the running agent a and checks that it
// is real: the marked processes, the namespace, the cgroups and the paths
// exist now, so that their absence later means something. isolated says
// whether the sandbox has a network namespace of its own to record.
func (s *suite) capture(t testing.TB, statePaths func(id string) []string, a *agent) footprint {
	t.Helper()
	f := footprint{id: a.sb.ID(), procs: func() []string { return s.hostProcesses(a) }}
	pids := f.procs()
	if len(pids) == 0 {
		t.Fatalf("sandbox %s: no host process found (with %s=%s)", f.id, markEnv, a.mark)
	}
	// An agent on a kernel in user space sees that kernel's namespaces and
	// cgroups: the host's are those of its host processes.
	procSelf := func(file string) string { return a.ok(t, "/read", "path", "/proc/self/"+file) }
	if s.cfg.UserSpaceKernel {
		procSelf = func(file string) string {
			data, err := os.ReadFile("/proc/" + pids[0] + "/" + file)
			if err != nil {
				t.Fatalf("sandbox %s: %v", f.id, err)
			}
			return string(data)
		}
	}
	if !s.cfg.NoIsolation {
		f.netns = a.ok(t, "/readlink", "path", "/proc/self/ns/net")
		if s.cfg.UserSpaceKernel {
			ns, err := os.Readlink("/proc/" + pids[0] + "/ns/net")
			if err != nil {
				t.Fatalf("sandbox %s: %v", f.id, err)
			}
			f.netns = ns
		}
		if !strings.HasPrefix(f.netns, "net:[") {
			t.Fatalf("sandbox %s: network namespace is %q", f.id, f.netns)
		}
		if len(namespaceHolders(f.netns, false)) == 0 {
			t.Fatalf("sandbox %s: no host process is in %s", f.id, f.netns)
		}
	}
	dirs, err := cgroupDirs(procSelf("cgroup"))
	if err != nil {
		t.Fatalf("sandbox %s: %v", f.id, err)
	}
	if len(dirs) == 0 {
		t.Logf("sandbox %s: its cgroups are not visible from the host (cgroup namespace?); not checking them", f.id)
	}
	f.cgroups = dirs
	if statePaths != nil {
		f.paths = statePaths(f.id)
	}
	for _, p := range slices.Concat(f.cgroups, f.paths) {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("sandbox %s: %v", f.id, err)
		}
	}
	t.Logf("sandbox %s holds %s, cgroups %v and paths %v", f.id, f.netns, f.cgroups, f.paths)
	return f
}

// assertGone fails the test for everything of the footprint still on the
// host. ownFDs says whether to count this process's open descriptors of the
// sandbox's network namespace.
func (f footprint) assertGone(t testing.TB, ownFDs bool) {
	t.Helper()
	if pids := f.procs(); len(pids) > 0 {
		t.Errorf("sandbox %s: processes %v still run", f.id, pids)
	}
	if f.netns != "" {
		if holders := namespaceHolders(f.netns, ownFDs); len(holders) > 0 {
			t.Errorf("sandbox %s: %s is still held by %v", f.id, f.netns, holders)
		}
	}
	for _, p := range slices.Concat(f.cgroups, f.paths) {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("sandbox %s: %s still exists", f.id, p)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		for _, s := range append([]string{f.id}, f.paths...) {
			if strings.Contains(line, s) {
				t.Errorf("sandbox %s: a mount remains: %s", f.id, line)
			}
		}
	}
}

// markedProcesses returns the host pids whose environment has
// markEnv=mark.
func markedProcesses(mark string) []string {
	want := []byte(markEnv + "=" + mark + "\x00")
	environs, _ := filepath.Glob("/proc/[0-9]*/environ")
	var pids []string
	for _, e := range environs {
		data, err := os.ReadFile(e)
		if err != nil {
			continue // gone meanwhile, or a kernel thread
		}
		if bytes.HasPrefix(data, want) || bytes.Contains(data, append([]byte{0}, want...)) {
			pids = append(pids, filepath.Base(filepath.Dir(e)))
		}
	}
	return pids
}

// namespaceHolders returns what on the host still refers to the namespace
// ns ("net:[inode]"): processes and threads in it and open descriptors of
// this process.
func namespaceHolders(ns string, ownFDs bool) []string {
	patterns := []string{"/proc/[0-9]*/ns/net", "/proc/[0-9]*/task/[0-9]*/ns/net"}
	if ownFDs {
		patterns = append(patterns, "/proc/self/fd/*")
	}
	var links []string
	for _, pattern := range patterns {
		matches, _ := filepath.Glob(pattern)
		links = append(links, matches...)
	}
	var holders []string
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && target == ns {
			holders = append(holders, l)
		}
	}
	return holders
}

// cgroupDirs maps the content of a sandboxed process's /proc/self/cgroup to
// host directories. It skips the entries the sandbox shares with this
// process (the same cgroup, or one of its ancestors such as the root), which
// are not the sandbox's own.
func cgroupDirs(procCgroup string) ([]string, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	ownPath := make(map[string]string)
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 {
			ownPath[parts[1]] = parts[2]
		}
	}
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(procCgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("bad /proc/self/cgroup line %q", line)
		}
		controllers, p := parts[1], parts[2]
		if mine := ownPath[controllers]; p == "/" || mine == p || strings.HasPrefix(mine, p+"/") {
			continue
		}
		m := cgroupMount(mounts, controllers)
		if m == nil {
			return nil, fmt.Errorf("no mount for cgroup hierarchy %q", controllers)
		}
		rel, err := filepath.Rel(m.Root, p)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // outside what this process sees of the hierarchy
		}
		dirs = append(dirs, filepath.Join(m.Mountpoint, rel))
	}
	return dirs, nil
}

// cgroupMount finds the mount of the hierarchy with the given controllers
// (as in /proc/self/cgroup: "memory", "cpu,cpuacct", "name=systemd", or ""
// for cgroup v2).
func cgroupMount(mounts []*mountinfo.Info, controllers string) *mountinfo.Info {
	for _, m := range mounts {
		if controllers == "" {
			if m.FSType == "cgroup2" {
				return m
			}
			continue
		}
		if m.FSType != "cgroup" {
			continue
		}
		opts := strings.Split(m.VFSOptions, ",")
		all := true
		for _, c := range strings.Split(controllers, ",") {
			all = all && slices.Contains(opts, c)
		}
		if all {
			return m
		}
	}
	return nil
}
