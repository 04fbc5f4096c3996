package runc

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
)

// image turns a spec into one of an image sandbox, then applies edit.
func image(edit func(*sandbox.Spec)) func(*sandbox.Spec) {
	return func(s *sandbox.Spec) {
		s.CodeDir, s.RootLayers = "", []string{"/l/1", "/l/2"}
		if edit != nil {
			edit(s)
		}
	}
}

func TestValidate(t *testing.T) {
	good := sandbox.Spec{ID: "s-1.a_B", Args: []string{"/app/agent"}, Env: []string{"A=b", "EMPTY="}, WorkDir: "/app", CodeDir: "/srv/code/v1"}
	tests := []struct {
		name string
		edit func(*sandbox.Spec)
		want string // "" for valid
	}{
		{"good", func(*sandbox.Spec) {}, ""},
		{"no code dir", func(s *sandbox.Spec) { s.CodeDir = "" }, ""},
		{"nested workdir", func(s *sandbox.Spec) { s.WorkDir = "/home/agent/app" }, ""},
		{"64 character id", func(s *sandbox.Spec) { s.ID = strings.Repeat("a", 64) }, ""},
		{"empty id", func(s *sandbox.Spec) { s.ID = "" }, "invalid id"},
		{"65 character id", func(s *sandbox.Spec) { s.ID = strings.Repeat("a", 65) }, "invalid id"},
		{"dot id", func(s *sandbox.Spec) { s.ID = ".." }, "invalid id"},
		{"id with a slash", func(s *sandbox.Spec) { s.ID = "a/b" }, "invalid id"},
		{"id with a space", func(s *sandbox.Spec) { s.ID = "a b" }, "invalid id"},
		{"no args", func(s *sandbox.Spec) { s.Args = nil }, "no command"},
		{"empty program", func(s *sandbox.Spec) { s.Args = []string{""} }, "no command"},
		{"env without =", func(s *sandbox.Spec) { s.Env = []string{"PATH"} }, "KEY=value"},
		{"env without key", func(s *sandbox.Spec) { s.Env = []string{"=x"} }, "KEY=value"},
		{"no workdir", func(s *sandbox.Spec) { s.WorkDir = "" }, "no workdir"},
		{"relative workdir", func(s *sandbox.Spec) { s.WorkDir = "app" }, "absolute"},
		{"unclean workdir", func(s *sandbox.Spec) { s.WorkDir = "/app/../usr" }, "clean"},
		{"root workdir", func(s *sandbox.Spec) { s.WorkDir = "/" }, "below /"},
		{"image by reference", func(s *sandbox.Spec) { s.CodeDir, s.Image = "", "registry.example/agent@sha256:00" }, "not by reference"},
		{"workdir in usr", func(s *sandbox.Spec) { s.WorkDir = "/usr/src/app" }, "/usr is the sandbox's system view"},
		{"workdir is tmp", func(s *sandbox.Spec) { s.WorkDir = "/tmp" }, "/tmp"},
		{"workdir in proc", func(s *sandbox.Spec) { s.WorkDir = "/proc/1" }, "/proc"},
		{"workdir in a lib symlink", func(s *sandbox.Spec) { s.WorkDir = "/lib64/x" }, "/lib64"},
		{"relative code dir", func(s *sandbox.Spec) { s.CodeDir = "code" }, "absolute"},
		{"code dir with a comma", func(s *sandbox.Spec) { s.CodeDir = "/srv/a,b" }, "overlayfs"},
		{"code dir with a colon", func(s *sandbox.Spec) { s.CodeDir = "/srv/a:b" }, "overlayfs"},
		{"negative memory", func(s *sandbox.Spec) { s.Limits.MemoryBytes = -1 }, "memory limit -1"},
		{"negative pids", func(s *sandbox.Spec) { s.Limits.Pids = -5 }, "pids limit -5"},
		{"negative tmp", func(s *sandbox.Spec) { s.Limits.TmpBytes = -1 }, "tmp limit"},
		{"too little cpu", func(s *sandbox.Spec) { s.Limits.MilliCPUs = 9 }, "smallest is 10"},
		{"least cpu", func(s *sandbox.Spec) { s.Limits.MilliCPUs = 10 }, ""},
		{"image", image(nil), ""},
		{"image in /", image(func(s *sandbox.Spec) { s.WorkDir = "/" }), ""},
		{"image in /usr", image(func(s *sandbox.Spec) { s.WorkDir = "/usr/src/app" }), ""},
		{"image as a user", image(func(s *sandbox.Spec) { s.User = sandbox.User{UID: 65535, GID: 100, AdditionalGids: []uint32{5}} }), ""},
		{"image and code dir", func(s *sandbox.Spec) { s.RootLayers = []string{"/l/1"} }, "takes no code dir"},
		{"image with a relative layer", image(func(s *sandbox.Spec) { s.RootLayers = []string{"l/1"} }), "root layer \"l/1\""},
		{"image with a colon layer", image(func(s *sandbox.Spec) { s.RootLayers = []string{"/l:1"} }), "overlayfs"},
		{"image with many layers", image(func(s *sandbox.Spec) {
			s.RootLayers = slices.Repeat([]string{"/var/lib/berth/images/layers/" + strings.Repeat("a", 64)}, 500)
		}), ""},
		{"image with too many layers", image(func(s *sandbox.Spec) {
			s.RootLayers = slices.Repeat([]string{"/var/lib/berth/images/layers/" + strings.Repeat("a", 64)}, 501)
		}), "more than overlayfs stacks"},
		{"image without workdir", image(func(s *sandbox.Spec) { s.WorkDir = "" }), "workdir"},
		{"image with a relative workdir", image(func(s *sandbox.Spec) { s.WorkDir = "app" }), "workdir"},
		{"image as an unmapped user", image(func(s *sandbox.Spec) { s.User.UID = 65536 }), "below 65536"},
		{"image with an unmapped group", image(func(s *sandbox.Spec) { s.User.AdditionalGids = []uint32{1 << 20} }), "below 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			s.Env = slices.Clone(good.Env)
			tt.edit(&s)
			err := validate(s)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("validate = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("validate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestBuildSpec(t *testing.T) {
	system := []specs.Mount{roBind("/usr", "/usr"), roBind("/etc/passwd", "/etc/passwd")}
	base := bundle{
		spec: sandbox.Spec{
			ID:      "s1",
			Args:    []string{"/app/agent", "-v"},
			Env:     []string{"PATH=/usr/bin", "A=b"},
			CodeDir: "/srv/code",
			WorkDir: "/app",
		},
		limits:      sandbox.Limits{MemoryBytes: 256 << 20, MilliCPUs: 1500, Pids: 100, TmpBytes: 8 << 20},
		rootfs:      "/state/rootfs",
		system:      system,
		upperDir:    "/state/sandboxes/s1/upper",
		workDir:     "/state/sandboxes/s1/work",
		cgroupsPath: "/berth/s1",
		limitSwap:   true,
		ids:         identity{userns: true, hostBase: 1 << 20},
		seccomp:     &specs.LinuxSeccomp{DefaultAction: specs.ActErrno},
	}
	tests := []struct {
		name  string
		edit  func(*bundle)
		check func(t *testing.T, s *specs.Spec)
	}{
		{"code dir is an overlay at the workdir", nil, func(t *testing.T, s *specs.Spec) {
			m := mountAt(t, s, "/app")
			want := []string{"lowerdir=/srv/code", "upperdir=/state/sandboxes/s1/upper", "workdir=/state/sandboxes/s1/work", "nosuid", "nodev"}
			if m.Type != "overlay" || !slices.Equal(m.Options, want) {
				t.Errorf("workdir mount = %+v, want an overlay with %v", m, want)
			}
		}},
		{"no code dir is a tmpfs workdir", func(b *bundle) { b.spec.CodeDir = "" }, func(t *testing.T, s *specs.Spec) {
			m := mountAt(t, s, "/app")
			if m.Type != "tmpfs" || !slices.Contains(m.Options, "size=8388608") {
				t.Errorf("workdir mount = %+v, want a tmpfs of 8 MiB", m)
			}
			if !slices.Contains(m.Options, "uid=1000") || !slices.Contains(m.Options, "gid=1000") {
				t.Errorf("workdir mount = %+v, want it owned by the agent (1000)", m)
			}
		}},
		{"no code dir and no user namespace", func(b *bundle) { b.spec.CodeDir = ""; b.ids.userns = false }, func(t *testing.T, s *specs.Spec) {
			m := mountAt(t, s, "/app")
			if !slices.Contains(m.Options, "uid=1049576") || !slices.Contains(m.Options, "gid=1049576") {
				t.Errorf("workdir mount = %+v, want it owned by the agent's host id 1049576", m)
			}
		}},
		{"tmp is a private tmpfs of the limit's size", nil, func(t *testing.T, s *specs.Spec) {
			m := mountAt(t, s, "/tmp")
			if m.Type != "tmpfs" || !slices.Contains(m.Options, "size=8388608") || !slices.Contains(m.Options, "mode=1777") {
				t.Errorf("/tmp mount = %+v", m)
			}
		}},
		{"limits", nil, func(t *testing.T, s *specs.Spec) {
			r := s.Linux.Resources
			if *r.Memory.Limit != 256<<20 || *r.Memory.Swap != 256<<20 {
				t.Errorf("memory = %d, memory+swap = %d, want both 256 MiB", *r.Memory.Limit, *r.Memory.Swap)
			}
			if *r.CPU.Quota != 150_000 || *r.CPU.Period != 100_000 {
				t.Errorf("cpu quota/period = %d/%d, want 150000/100000", *r.CPU.Quota, *r.CPU.Period)
			}
			if *r.Pids.Limit != 100 {
				t.Errorf("pids = %d, want 100", *r.Pids.Limit)
			}
			if len(r.Devices) != 1 || r.Devices[0].Allow || r.Devices[0].Access != "rwm" {
				t.Errorf("devices = %+v, want all denied", r.Devices)
			}
			if s.Linux.CgroupsPath != "/berth/s1" {
				t.Errorf("cgroups path = %q", s.Linux.CgroupsPath)
			}
		}},
		{"no swap accounting", func(b *bundle) { b.limitSwap = false }, func(t *testing.T, s *specs.Spec) {
			if s.Linux.Resources.Memory.Swap != nil {
				t.Errorf("memory+swap = %d, want unset", *s.Linux.Resources.Memory.Swap)
			}
		}},
		{"process", nil, func(t *testing.T, s *specs.Spec) {
			p := s.Process
			if p.Terminal || !p.NoNewPrivileges || p.Cwd != "/app" {
				t.Errorf("process = %+v", p)
			}
			if !slices.Equal(p.Args, []string{"/app/agent", "-v"}) || !slices.Equal(p.Env, []string{"PATH=/usr/bin", "A=b"}) {
				t.Errorf("args = %v, env = %v", p.Args, p.Env)
			}
			c := p.Capabilities
			if c == nil || len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 {
				t.Errorf("capabilities = %+v, want every set present and empty", c)
			}
			want := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 4096, Soft: 4096}, {Type: "RLIMIT_CORE", Hard: 0, Soft: 0}}
			if !slices.Equal(p.Rlimits, want) {
				t.Errorf("rlimits = %v, want %v", p.Rlimits, want)
			}
		}},
		{"user namespace", nil, func(t *testing.T, s *specs.Spec) {
			if u := s.Process.User; u.UID != 1000 || u.GID != 1000 || len(u.AdditionalGids) != 0 {
				t.Errorf("user = %+v, want 1000:1000", u)
			}
			if !slices.Contains(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace}) {
				t.Errorf("namespaces %v lack a user namespace", s.Linux.Namespaces)
			}
			want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1 << 20, Size: 65536}}
			if !slices.Equal(s.Linux.UIDMappings, want) || !slices.Equal(s.Linux.GIDMappings, want) {
				t.Errorf("id mappings = %v, %v, want %v", s.Linux.UIDMappings, s.Linux.GIDMappings, want)
			}
		}},
		{"no user namespace", func(b *bundle) { b.ids.userns = false }, func(t *testing.T, s *specs.Spec) {
			if u := s.Process.User; u.UID != 1<<20+1000 || u.GID != 1<<20+1000 {
				t.Errorf("user = %+v, want the agent's host id %d", u, 1<<20+1000)
			}
			for _, ns := range s.Linux.Namespaces {
				if ns.Type == specs.UserNamespace {
					t.Errorf("a user namespace")
				}
			}
			if len(s.Linux.UIDMappings)+len(s.Linux.GIDMappings) != 0 {
				t.Errorf("id mappings without a user namespace")
			}
		}},
		{"seccomp", nil, func(t *testing.T, s *specs.Spec) {
			if s.Linux.Seccomp != base.seccomp {
				t.Errorf("seccomp = %+v, want the driver's", s.Linux.Seccomp)
			}
		}},
		{"isolation", nil, func(t *testing.T, s *specs.Spec) {
			if !s.Root.Readonly || s.Root.Path != "/state/rootfs" {
				t.Errorf("root = %+v, want the skeleton read-only", s.Root)
			}
			var ns []specs.LinuxNamespaceType
			for _, n := range s.Linux.Namespaces {
				if n.Path != "" {
					t.Errorf("namespace %s joins %s, want a new one", n.Type, n.Path)
				}
				ns = append(ns, n.Type)
			}
			for _, want := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace} {
				if !slices.Contains(ns, want) {
					t.Errorf("namespaces %v lack %s", ns, want)
				}
			}
			if s.Hostname != "s1" {
				t.Errorf("hostname = %q, want the id", s.Hostname)
			}
			for _, p := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"} {
				if !slices.Contains(s.Linux.MaskedPaths, p) {
					t.Errorf("masked paths %v lack %s", s.Linux.MaskedPaths, p)
				}
			}
			for _, p := range []string{"/proc/sys", "/proc/sysrq-trigger"} {
				if !slices.Contains(s.Linux.ReadonlyPaths, p) {
					t.Errorf("read-only paths %v lack %s", s.Linux.ReadonlyPaths, p)
				}
			}
			if len(s.Linux.Devices) != 0 {
				t.Errorf("devices %v beyond the runtime's defaults", s.Linux.Devices)
			}
		}},
		{"mounts", nil, func(t *testing.T, s *specs.Spec) {
			var dests []string
			for _, m := range s.Mounts {
				dests = append(dests, m.Destination)
				if m.Type == "bind" && !slices.Contains(m.Options, "ro") {
					t.Errorf("bind mount %s is writable", m.Destination)
				}
				if strings.Contains(m.Source, "shadow") || m.Source == "/root" || m.Source == "/home" {
					t.Errorf("mount of %s", m.Source)
				}
			}
			// Kernel file systems first, the workdir last (it may lie
			// below another mount).
			want := []string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/usr", "/etc/passwd", "/tmp", "/app"}
			if !slices.Equal(dests, want) {
				t.Errorf("mounts = %v, want %v", dests, want)
			}
			for _, dest := range []string{"/sys", "/proc"} {
				if m := mountAt(t, s, dest); !slices.Contains(m.Options, "ro") {
					t.Errorf("%s is writable: %v", dest, m.Options)
				}
			}
		}},
		{"runsc", func(b *bundle) {
			b.gvisor, b.netns, b.merged = true, "/proc/7/fd/9", "/state/sandboxes/s1/merged"
			b.ids.userns = false
		}, func(t *testing.T, s *specs.Spec) {
			// The network namespace the driver made, with loopback up.
			if !slices.Contains(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/proc/7/fd/9"}) {
				t.Errorf("namespaces = %v, want the network namespace at /proc/7/fd/9", s.Linux.Namespaces)
			}
			// The overlay mounted on the host, bound in writable.
			if m := mountAt(t, s, "/app"); m.Type != "bind" || m.Source != "/state/sandboxes/s1/merged" || !slices.Contains(m.Options, "rw") {
				t.Errorf("workdir mount = %+v, want a writable bind of the host's overlay", m)
			}
			// Pids: counted by the Sentry, with a host backstop.
			if !slices.Contains(s.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_NPROC", Hard: 100, Soft: 100}) {
				t.Errorf("rlimits = %v, want RLIMIT_NPROC 100", s.Process.Rlimits)
			}
			if got, want := *s.Linux.Resources.Pids.Limit, int64(100*gvisorTasksPerProcess+gvisorTasks); got != want {
				t.Errorf("host pids limit = %d, want %d", got, want)
			}
			if s.Linux.Seccomp == nil {
				t.Error("no seccomp filter: runsc loads it inside the Sentry")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := base
			if tt.edit != nil {
				tt.edit(&b)
			}
			tt.check(t, buildSpec(b))
		})
	}
}

// mountAt returns the spec's mount at dest.
func mountAt(t *testing.T, s *specs.Spec, dest string) specs.Mount {
	t.Helper()
	for _, m := range s.Mounts {
		if m.Destination == dest {
			return m
		}
	}
	t.Fatalf("no mount at %s", dest)
	return specs.Mount{}
}

// TestInspectHost builds a fake host: merged /usr with symlinks, one real
// library directory, and /etc entries of every kind.
func TestInspectHost(t *testing.T) {
	host := t.TempDir()
	for _, d := range []string{"usr/bin", "usr/share/zoneinfo", "lib32", "etc/ssl/certs", "etc/ssl/private", "run"} {
		mkdir(t, filepath.Join(host, d))
	}
	for _, f := range []string{"etc/passwd", "etc/shadow", "run/resolv.conf", "usr/share/zoneinfo/UTC"} {
		write(t, filepath.Join(host, f))
	}
	symlink(t, "usr/bin", filepath.Join(host, "bin"))
	symlink(t, "/usr/share/zoneinfo/UTC", filepath.Join(host, "etc/localtime"))
	symlink(t, "../run/resolv.conf", filepath.Join(host, "etc/resolv.conf"))
	symlink(t, "../run/missing", filepath.Join(host, "etc/hosts"))
	if err := unix.Mkfifo(filepath.Join(host, "etc/group"), 0o600); err != nil {
		t.Fatal(err)
	}

	v, err := inspectHost(host, []string{"passwd", "localtime", "resolv.conf", "hosts", "group", "ssl/certs", "nsswitch.conf"})
	if err != nil {
		t.Fatal(err)
	}
	wantEntries := []entry{
		{path: "/proc", kind: kindDir}, {path: "/dev", kind: kindDir}, {path: "/sys", kind: kindDir},
		{path: "/tmp", kind: kindDir, sticky: true}, {path: "/etc", kind: kindDir},
		{path: "/usr", kind: kindDir},
		{path: "/bin", kind: kindSymlink, target: "usr/bin"},
		{path: "/lib32", kind: kindDir},
		{path: "/etc/passwd", kind: kindFile},
		{path: "/etc/localtime", kind: kindSymlink, target: "/usr/share/zoneinfo/UTC"},
		{path: "/etc/resolv.conf", kind: kindFile},
		{path: "/etc/ssl/certs", kind: kindDir},
	}
	if !slices.Equal(v.entries, wantEntries) {
		t.Errorf("entries:\n got %v\nwant %v", v.entries, wantEntries)
	}
	var got []string
	for _, m := range v.mounts {
		got = append(got, m.Source+" -> "+m.Destination)
	}
	want := []string{
		host + "/usr -> /usr",
		host + "/lib32 -> /lib32",
		host + "/etc/passwd -> /etc/passwd",
		host + "/run/resolv.conf -> /etc/resolv.conf",
		host + "/etc/ssl/certs -> /etc/ssl/certs",
	}
	if !slices.Equal(got, want) {
		t.Errorf("mounts:\n got %v\nwant %v", got, want)
	}

	for _, bad := range []string{"shadow", "gshadow", "ssh/ssh_host_rsa_key", "ssl", "ssl/private/x.key", "../root", "/etc/passwd", "a/../b", ""} {
		if _, err := inspectHost(host, []string{bad}); err == nil {
			t.Errorf("inspectHost accepted the etc entry %q", bad)
		}
	}
	if _, err := inspectHost(t.TempDir(), nil); err == nil {
		t.Errorf("inspectHost accepted a host without /usr")
	}
}

func TestBuildSkeleton(t *testing.T) {
	// Whatever the umask, the skeleton is world-readable.
	defer unix.Umask(unix.Umask(0o077))
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	v := systemView{entries: []entry{
		{path: "/tmp", kind: kindDir, sticky: true},
		{path: "/usr", kind: kindDir},
		{path: "/bin", kind: kindSymlink, target: "usr/bin"},
		{path: "/etc/ssl", kind: kindDir},
		{path: "/etc/passwd", kind: kindFile},
	}}
	if err := v.build(rootfs); err != nil {
		t.Fatal(err)
	}
	// The host changed: /bin is now a directory, /usr a symlink; someone
	// changed /tmp's mode.
	v.entries[1] = entry{path: "/usr", kind: kindSymlink, target: "opt/usr"}
	v.entries[2] = entry{path: "/bin", kind: kindDir}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := v.build(rootfs); err != nil {
		t.Fatal(err)
	}
	if err := v.build(rootfs); err != nil { // and again, unchanged
		t.Fatal(err)
	}
	checks := []struct {
		path string
		mode os.FileMode
	}{
		{"usr", os.ModeSymlink}, {"bin", os.ModeDir | 0o755}, {"etc", os.ModeDir | 0o755}, {"etc/ssl", os.ModeDir | 0o755},
		{"etc/passwd", 0o644}, {"tmp", os.ModeDir | os.ModeSticky | 0o777}, {".", os.ModeDir | 0o755},
	}
	for _, c := range checks {
		fi, err := os.Lstat(filepath.Join(rootfs, c.path))
		if err != nil {
			t.Fatal(err)
		}
		got := fi.Mode() &^ fs.ModePerm
		if c.mode.Type() != os.ModeSymlink {
			got = fi.Mode()
		}
		if got != c.mode {
			t.Errorf("%s has mode %v, want %v", c.path, got, c.mode)
		}
	}
	if target, _ := os.Readlink(filepath.Join(rootfs, "usr")); target != "opt/usr" {
		t.Errorf("usr -> %q, want opt/usr", target)
	}
}

func TestExitReason(t *testing.T) {
	tests := []struct {
		name string
		ws   unix.WaitStatus
		oom  bool
		want string
	}{
		{"exit 0", 0, false, "agent exited with status 0"},
		{"exit 3", 3 << 8, false, "agent exited with status 3"},
		{"killed", unix.WaitStatus(unix.SIGKILL), false, "agent killed by signal SIGKILL"},
		{"oom", unix.WaitStatus(unix.SIGKILL), true, "agent killed: out of memory (limit 1024 bytes)"},
		{"segfault with core", unix.WaitStatus(unix.SIGSEGV) | 0x80, false, "agent killed by signal SIGSEGV"},
	}
	for _, tt := range tests {
		if got := exitReason(tt.ws, tt.oom, 1024).Error(); got != tt.want {
			t.Errorf("%s: exitReason = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestLogError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "log.json")
	lines := `{"level":"info","msg":"starting"}
not json
{"level":"error","msg":"first failure"}
{"level":"error","msg":"runc run failed: unable to start container process: exec: \"x\": not found"}
{"level":"warning","msg":"late warning"}
`
	if err := os.WriteFile(file, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := logError(file), `runc run failed: unable to start container process: exec: "x": not found`; got != want {
		t.Errorf("logError = %q, want %q", got, want)
	}
	if got := logError(filepath.Join(t.TempDir(), "missing")); got != "" {
		t.Errorf("logError of a missing file = %q", got)
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// TestGVisorSeccomp checks that runsc's filter lets clone3 through, where
// Docker's refuses it with an errno runsc cannot return, and leaves the
// driver's filter for the other runtimes as it was.
func TestGVisorSeccomp(t *testing.T) {
	filter, err := defaultSeccomp()
	if err != nil {
		t.Fatal(err)
	}
	action := func(f *specs.LinuxSeccomp, name string) specs.LinuxSeccompAction {
		for _, sc := range f.Syscalls {
			if slices.Contains(sc.Names, name) {
				return sc.Action
			}
		}
		return f.DefaultAction
	}
	g := gvisorSeccomp(filter)
	if got := action(g, "clone3"); got != specs.ActAllow {
		t.Errorf("runsc's filter: clone3 %s, want allowed", got)
	}
	if got := action(filter, "clone3"); got != specs.ActErrno {
		t.Errorf("the other runtimes' filter: clone3 %s, want refused", got)
	}
	if len(g.Syscalls) != len(filter.Syscalls) || g.DefaultAction != filter.DefaultAction {
		t.Errorf("runsc's filter has %d rules and default %s, want the %d and %s of Docker's", len(g.Syscalls), g.DefaultAction, len(filter.Syscalls), filter.DefaultAction)
	}
}

// TestBuildSpecImage checks an image sandbox's spec: its own writable root,
// no host system view, the image's user (shifted without a user namespace)
// and the same hardening as other sandboxes.
func TestBuildSpecImage(t *testing.T) {
	for _, userns := range []bool{true, false} {
		b := bundle{
			spec: sandbox.Spec{ID: "i1", Args: []string{"/agent"}, WorkDir: "/", RootLayers: []string{"/l/1"},
				User: sandbox.User{UID: 1000, GID: 100, AdditionalGids: []uint32{5}}},
			limits: DefaultLimits(), rootfs: "/state/sandboxes/i1/rootfs",
			system: []specs.Mount{roBind("/usr", "/usr"), roBind("/run/resolv.conf", "/etc/resolv.conf"), roBind("/etc/hosts", "/etc/hosts"),
				roBind("/etc/passwd", "/etc/passwd")},
			ids: identity{userns: userns, hostBase: 1 << 20},
		}
		s := buildSpec(b)
		if s.Root.Path != b.rootfs || s.Root.Readonly {
			t.Errorf("userns %v: root %+v, want %s writable", userns, s.Root, b.rootfs)
		}
		etc := 0
		for _, m := range s.Mounts {
			switch m.Destination {
			case "/usr", "/", "/etc/passwd":
				t.Errorf("userns %v: mount %+v in an image sandbox", userns, m)
			case "/etc/hosts", "/etc/resolv.conf":
				etc++
			}
		}
		if etc != 2 {
			t.Errorf("userns %v: the image sandbox gets %d of the host's /etc/hosts and /etc/resolv.conf, want both", userns, etc)
		}
		shift := uint32(0)
		if !userns {
			shift = 1 << 20
		}
		want := specs.User{UID: 1000 + shift, GID: 100 + shift, AdditionalGids: []uint32{5 + shift}}
		if u := s.Process.User; u.UID != want.UID || u.GID != want.GID || !slices.Equal(u.AdditionalGids, want.AdditionalGids) {
			t.Errorf("userns %v: user %+v, want %+v", userns, u, want)
		}
		if s.Process.Cwd != "/" || !s.Process.NoNewPrivileges || len(s.Process.Capabilities.Bounding) != 0 || len(s.Linux.MaskedPaths) == 0 {
			t.Errorf("userns %v: process %+v lost its hardening", userns, s.Process)
		}
	}
}
