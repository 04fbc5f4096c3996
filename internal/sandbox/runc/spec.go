package runc

import (
	"fmt"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthrun/berth/internal/sandbox"
)

// DefaultLimits returns the limits a sandbox gets for the zero fields of its
// sandbox.Limits when Options.Defaults does not say otherwise.
func DefaultLimits() sandbox.Limits {
	return sandbox.Limits{
		MemoryBytes: 2 << 30,
		MilliCPUs:   2000,
		Pids:        512,
		TmpBytes:    64 << 20,
	}
}

// ociVersion is the runtime spec version the generated specs claim: they
// use nothing newer, and crun 1.8 refuses any version but 1.0.x.
const ociVersion = "1.0.2"

// cpuPeriod is the CFS period the CPU quota is expressed in (100 ms, the
// kernel's default).
const cpuPeriod = 100_000

// minMilliCPUs is the smallest CPU share a sandbox can have: the kernel
// refuses a CFS quota below 1 ms per period.
const minMilliCPUs = 10

// idPattern is what sandbox.Spec.ID allows.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// validate checks a spec before anything is created for it. It does not
// touch the file system.
func validate(s sandbox.Spec) error {
	if !idPattern.MatchString(s.ID) || s.ID == "." || s.ID == ".." {
		return fmt.Errorf("invalid id %q: want 1 to 64 characters of [A-Za-z0-9_.-]", s.ID)
	}
	if len(s.Args) == 0 || s.Args[0] == "" {
		return fmt.Errorf("no command: args is empty")
	}
	for _, kv := range s.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("env entry %q: want KEY=value", kv)
		}
	}
	if err := checkWorkDir(s.WorkDir); err != nil {
		return err
	}
	if s.CodeDir != "" {
		if !path.IsAbs(s.CodeDir) {
			return fmt.Errorf("code dir %q: want an absolute path", s.CodeDir)
		}
		// overlayfs reads its lower directory from a mount option string.
		if strings.ContainsAny(s.CodeDir, ",:\\\n") {
			return fmt.Errorf("code dir %q: overlayfs cannot take a path with ',', ':' or '\\'", s.CodeDir)
		}
	}
	if err := s.Network.Validate(); err != nil {
		return err
	}
	l := s.Limits
	for _, f := range []struct {
		name string
		v    int64
	}{{"memory", l.MemoryBytes}, {"cpu", l.MilliCPUs}, {"pids", l.Pids}, {"tmp", l.TmpBytes}} {
		if f.v < 0 {
			return fmt.Errorf("%s limit %d: must not be negative", f.name, f.v)
		}
	}
	if l.MilliCPUs != 0 && l.MilliCPUs < minMilliCPUs {
		return fmt.Errorf("cpu limit %d millicpus: the smallest is %d", l.MilliCPUs, minMilliCPUs)
	}
	return nil
}

// checkWorkDir requires an absolute, clean working directory outside the
// skeleton's system and kernel directories.
func checkWorkDir(dir string) error {
	if dir == "" {
		return fmt.Errorf("no workdir")
	}
	if !path.IsAbs(dir) || path.Clean(dir) != dir || dir == "/" {
		return fmt.Errorf("workdir %q: want a clean absolute path below /, such as /workspace", dir)
	}
	first, _, _ := strings.Cut(dir[1:], "/")
	for _, r := range reservedDirs {
		if first == r {
			return fmt.Errorf("workdir %q: /%s is the sandbox's system view; use another directory, such as /workspace", dir, r)
		}
	}
	return nil
}

// withDefaults fills the zero fields of l from def.
func withDefaults(l, def sandbox.Limits) sandbox.Limits {
	if l.MemoryBytes == 0 {
		l.MemoryBytes = def.MemoryBytes
	}
	if l.MilliCPUs == 0 {
		l.MilliCPUs = def.MilliCPUs
	}
	if l.Pids == 0 {
		l.Pids = def.Pids
	}
	if l.TmpBytes == 0 {
		l.TmpBytes = def.TmpBytes
	}
	return l
}

// The identity agents run as. A sandbox with a user namespace maps its ids
// 0 to idMapSize-1 to the host's hostIDBase and up; its agent is agentID
// inside, hostIDBase+agentID on the host. A sandbox without one runs its
// agent as hostIDBase+agentID directly, so the agent's files on the host are
// owned by the same ids either way.
const (
	// DefaultHostIDBase is the first host id sandboxes use when
	// Options.HostIDBase is zero: 0x70000000, in the range that systemd's
	// UID/GID allocation leaves unused, far from users and from the
	// container ranges of /etc/subuid and systemd-nspawn.
	DefaultHostIDBase = 0x70000000
	// agentID is the uid and gid of the agent inside a user namespace: an
	// ordinary user, neither root nor the overflow id 65534 that files of
	// unmapped owners (the host's root) show as.
	agentID = 1000
	// idMapSize is how many ids a sandbox's user namespace maps.
	idMapSize = 65536
)

// openFilesLimit is every agent process's limit on open files (soft and
// hard): plenty for a server, and bounded, as cgroups do not bound it.
const openFilesLimit = 4096

// identity is how a sandbox's processes are mapped to host users.
type identity struct {
	// userns says whether the sandbox gets a user namespace.
	userns bool
	// hostBase is the host id of the sandbox's root (with userns) and the
	// base of the agent's host id (always).
	hostBase uint32
}

// agent returns the uid (= gid) the agent runs as, as seen inside the
// sandbox.
func (id identity) agent() uint32 {
	if id.userns {
		return agentID
	}
	return id.hostBase + agentID
}

// agentOnHost returns the uid (= gid) the agent runs as, as seen on the
// host: the owner its writable directories need.
func (id identity) agentOnHost() uint32 { return id.hostBase + agentID }

// bundle is everything buildSpec needs to describe one sandbox.
type bundle struct {
	spec   sandbox.Spec   // validated
	limits sandbox.Limits // with defaults filled in
	rootfs string         // the shared skeleton
	system []specs.Mount  // the read-only system view
	// upperDir and workDir are the per-sandbox overlay directories, used
	// when spec.CodeDir is set. They must be owned by ids.agentOnHost().
	upperDir, workDir string
	cgroupsPath       string
	// limitSwap sets the memory+swap limit equal to the memory limit; it is
	// false on cgroup v1 hosts without swap accounting, where runc cannot.
	limitSwap bool
	ids       identity
	// seccomp is the system call filter, shared by every sandbox of a
	// driver; nil means none (only in tests).
	seccomp *specs.LinuxSeccomp
	// etc are bind mounts over the system view's /etc files (the
	// network's resolv.conf and hosts).
	etc []specs.Mount
	// netns and userns, if set, are the paths of namespaces the sandbox
	// joins rather than gets new ones (see nsHolder); userns must have
	// the mappings ids gives.
	netns, userns string
}

// buildSpec generates the OCI runtime spec of one sandbox.
//
// The agent runs as an unprivileged user (in a user namespace when ids says
// so) with no capabilities at all, no_new_privs and Docker's default seccomp
// profile; it cannot gain privileges by executing anything. It can write only
// its private /tmp, /dev/shm and working directory.
func buildSpec(b bundle) *specs.Spec {
	s := b.spec
	agent := b.ids.agent()
	mounts := kernelMounts()
	mounts = append(mounts, b.system...)
	mounts = append(mounts, b.etc...)
	// runc gives a tmpfs the mode of the directory it is mounted on, so the
	// skeleton's /tmp is 1777 as this mode says.
	mounts = append(mounts, specs.Mount{
		Destination: "/tmp",
		Type:        "tmpfs",
		Source:      "tmpfs",
		Options:     []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(b.limits.TmpBytes, 10)},
	})
	if s.CodeDir != "" {
		// The merged directory takes its owner from upperDir, which
		// belongs to the agent: it can add files; the code's own files
		// keep their owner and mode.
		mounts = append(mounts, specs.Mount{
			Destination: s.WorkDir,
			Type:        "overlay",
			Source:      "overlay",
			Options: []string{
				"lowerdir=" + s.CodeDir,
				"upperdir=" + b.upperDir,
				"workdir=" + b.workDir,
				"nosuid", "nodev",
			},
		})
	} else {
		id := strconv.FormatUint(uint64(agent), 10)
		mounts = append(mounts, specs.Mount{
			Destination: s.WorkDir,
			Type:        "tmpfs",
			Source:      "tmpfs",
			Options:     []string{"nosuid", "nodev", "mode=755", "uid=" + id, "gid=" + id, "size=" + strconv.FormatInt(b.limits.TmpBytes, 10)},
		})
	}

	memory := b.limits.MemoryBytes
	quota := b.limits.MilliCPUs * cpuPeriod / 1000
	period := uint64(cpuPeriod)
	pids := b.limits.Pids
	res := &specs.LinuxResources{
		// Deny every device; the runtime allows its default ones (null,
		// zero, full, random, urandom, tty, ptmx) on top.
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
		Memory:  &specs.LinuxMemory{Limit: &memory},
		CPU:     &specs.LinuxCPU{Quota: &quota, Period: &period},
		Pids:    &specs.LinuxPids{Limit: &pids},
	}
	if b.limitSwap {
		// memory+swap = memory: the agent cannot escape the limit by
		// swapping. On cgroup v2 runc turns this into memory.swap.max=0.
		swap := memory
		res.Memory.Swap = &swap
	}

	namespaces := []specs.LinuxNamespace{
		// A new network namespace has only loopback, which the runtime
		// brings up.
		{Type: specs.PIDNamespace},
		{Type: specs.NetworkNamespace, Path: b.netns},
		{Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace},
		{Type: specs.MountNamespace},
	}
	var uidMap, gidMap []specs.LinuxIDMapping
	if b.ids.userns {
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: b.userns})
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: b.ids.hostBase, Size: idMapSize}}
		uidMap, gidMap = m, m
	}

	return &specs.Spec{
		Version: ociVersion,
		Process: &specs.Process{
			Terminal: false,
			User:     specs.User{UID: agent, GID: agent},
			Args:     s.Args,
			Env:      s.Env,
			Cwd:      s.WorkDir,
			// Every set empty: the runtime drops all capabilities (a
			// nil set would leave them as they are).
			Capabilities: &specs.LinuxCapabilities{},
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_NOFILE", Hard: openFilesLimit, Soft: openFilesLimit},
				{Type: "RLIMIT_CORE", Hard: 0, Soft: 0},
			},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: b.rootfs, Readonly: true},
		Hostname: s.ID,
		Mounts:   mounts,
		Linux: &specs.Linux{
			Resources:     res,
			CgroupsPath:   b.cgroupsPath,
			Namespaces:    namespaces,
			UIDMappings:   uidMap,
			GIDMappings:   gidMap,
			Seccomp:       b.seccomp,
			MaskedPaths:   maskedPaths(),
			ReadonlyPaths: readonlyPaths(),
		},
	}
}

// maskedPaths are hidden from the agent (bound over with /dev/null or an
// empty read-only tmpfs): Docker's list, kernel state that leaks the host's
// secrets or hardware.
func maskedPaths() []string {
	return []string{
		"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
}

// readonlyPaths are read-only for the agent: Docker's list. /proc and /sys
// are mounted read-only as a whole as well; these also hold when a runtime
// remounts them.
func readonlyPaths() []string {
	return []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
}

// defaultSeccomp returns Docker's default seccomp profile for a process
// without capabilities, for this host's architecture and kernel.
func defaultSeccomp() (*specs.LinuxSeccomp, error) {
	// The profile allows some system calls only to processes holding a
	// capability: it looks at the bounding set, which is empty here.
	p, err := seccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}})
	if err != nil {
		return nil, fmt.Errorf("default seccomp profile: %w", err)
	}
	return p, nil
}

// kernelMounts are the /proc, /dev and /sys of every sandbox, as in
// `runc spec` (without the host's cgroup tree), with /proc read-only too.
func kernelMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
}

// isDir reports whether p is an existing directory, with an error that names
// what is wrong otherwise.
func isDir(what, p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s %s: not a directory", what, p)
	}
	return nil
}
