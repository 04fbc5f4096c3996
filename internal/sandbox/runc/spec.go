package runc

import (
	"fmt"
	"os"
	"path"
	"slices"
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

// A runsc sandbox's host pids limit allows gvisorTasksPerProcess host
// processes and threads per agent process or thread, and gvisorTasks more
// for the Sentry and gofer themselves (about 30 at rest).
const (
	gvisorTasksPerProcess = 4
	gvisorTasks           = 128
)

// validate checks a spec before anything is created for it. It does not
// touch the file system.
func validate(s sandbox.Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.Image != "" {
		return fmt.Errorf("image %q: this driver runs container images from their unpacked layers (RootLayers), not by reference", s.Image)
	}
	if len(s.RootLayers) > 0 {
		if err := validateImage(s); err != nil {
			return err
		}
	} else if err := checkWorkDir(s.WorkDir); err != nil {
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

// maxLayers is the most layers an image sandbox's root may have: overlayfs
// stacks up to 500 lower directories.
const maxLayers = 500

// validateImage checks the fields of a spec with RootLayers.
func validateImage(s sandbox.Spec) error {
	if s.CodeDir != "" {
		return fmt.Errorf("code dir %q: a sandbox with root layers (an image) takes no code dir", s.CodeDir)
	}
	if len(s.RootLayers) > maxLayers {
		return fmt.Errorf("root layers: %d, more than overlayfs stacks (%d)", len(s.RootLayers), maxLayers)
	}
	for _, l := range s.RootLayers {
		if !path.IsAbs(l) || path.Clean(l) != l {
			return fmt.Errorf("root layer %q: want a clean absolute path", l)
		}
		if strings.ContainsAny(l, ",:\\\n") {
			return fmt.Errorf("root layer %q: overlayfs cannot take a path with ',', ':' or '\\'", l)
		}
	}
	if s.WorkDir == "" || !path.IsAbs(s.WorkDir) || path.Clean(s.WorkDir) != s.WorkDir {
		return fmt.Errorf("workdir %q: want a clean absolute path", s.WorkDir)
	}
	for _, id := range append([]uint32{s.User.UID, s.User.GID}, s.User.AdditionalGids...) {
		if id >= idMapSize {
			return fmt.Errorf("user %d:%d: ids must be below %d, the ids a sandbox maps", s.User.UID, s.User.GID, idMapSize)
		}
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

// imageUser maps the user of an image sandbox to the process user: as it is
// inside a user namespace, shifted to the same host ids without one (so
// the image's files, unpacked with that shift, belong to the same users
// either way).
func (id identity) imageUser(u sandbox.User) specs.User {
	shift := uint32(0)
	if !id.userns {
		shift = id.hostBase
	}
	out := specs.User{UID: u.UID + shift, GID: u.GID + shift}
	for _, g := range u.AdditionalGids {
		out.AdditionalGids = append(out.AdditionalGids, g+shift)
	}
	return out
}

// bundle is everything buildSpec needs to describe one sandbox.
type bundle struct {
	spec   sandbox.Spec   // validated
	limits sandbox.Limits // with defaults filled in
	rootfs string         // the shared skeleton, or the sandbox's own root for an image
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
	// joins rather than gets new ones: a holder's (see nsHolder; userns
	// must have the mappings ids gives), or for gVisor, which runs without
	// a user namespace of the driver's, the network namespace the driver
	// made.
	netns, userns string
	// gvisor says the runtime is runsc. Its sandboxes bind the overlay the
	// driver mounted at merged (when spec.CodeDir is set) as their working
	// directory.
	gvisor bool
	merged string
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
	image := len(s.RootLayers) > 0
	mounts := kernelMounts()
	if !image {
		mounts = append(mounts, b.system...)
	} else {
		// As other container runtimes do, the host's name resolution
		// files replace the image's: images often ship none, and
		// localhost must resolve.
		for _, m := range b.system {
			if m.Destination == "/etc/hosts" || m.Destination == "/etc/resolv.conf" {
				mounts = append(mounts, m)
			}
		}
	}
	mounts = append(mounts, b.etc...)
	// runc gives a tmpfs the mode of the directory it is mounted on, so the
	// skeleton's /tmp is 1777 as this mode says.
	mounts = append(mounts, specs.Mount{
		Destination: "/tmp",
		Type:        "tmpfs",
		Source:      "tmpfs",
		Options:     []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(b.limits.TmpBytes, 10)},
	})
	switch {
	case image:
		// The image's own files, in the writable root, are the
		// working directory.
	case s.CodeDir != "" && b.gvisor:
		mounts = append(mounts, specs.Mount{
			Destination: s.WorkDir,
			Type:        "bind",
			Source:      b.merged,
			Options:     []string{"rbind", "rw", "nosuid", "nodev"},
		})
	case s.CodeDir != "":
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
	default:
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
	rlimits := []specs.POSIXRlimit{
		{Type: "RLIMIT_NOFILE", Hard: openFilesLimit, Soft: openFilesLimit},
		{Type: "RLIMIT_CORE", Hard: 0, Soft: 0},
	}
	if b.gvisor {
		// The agent's processes are the Sentry's tasks, and the Sentry
		// counts them against RLIMIT_NPROC within its sandbox: a fork
		// past the limit fails with EAGAIN, as under a pids cgroup.
		// (On the host kernel this limit would count every sandbox's
		// agent, as they share a host uid.)
		rlimits = append(rlimits, specs.POSIXRlimit{Type: "RLIMIT_NPROC", Hard: uint64(pids), Soft: uint64(pids)})
		// The host cgroup's limit is then a backstop. It holds the Sentry,
		// the gofer and, on the ptrace platform, host processes and
		// threads standing for the agent's, several per agent process:
		// were it reached, the Sentry would fail rather than the fork.
		pids = pids*gvisorTasksPerProcess + gvisorTasks
	}
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
	// Never for runsc (see New): the agent's ids are the Sentry's, which
	// runsc runs unprivileged in a user namespace of its own.
	if b.ids.userns {
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: b.userns})
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: b.ids.hostBase, Size: idMapSize}}
		uidMap, gidMap = m, m
	}

	user := specs.User{UID: agent, GID: agent}
	if image {
		user = b.ids.imageUser(s.User)
	}
	return &specs.Spec{
		Version: ociVersion,
		Process: &specs.Process{
			Terminal: false,
			User:     user,
			Args:     s.Args,
			Env:      s.Env,
			Cwd:      s.WorkDir,
			// Every set empty: the runtime drops all capabilities (a
			// nil set would leave them as they are).
			Capabilities:    &specs.LinuxCapabilities{},
			Rlimits:         rlimits,
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: b.rootfs, Readonly: !image},
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

// gvisorSeccomp adapts filter for runsc, which loads it inside its Sentry
// but (as of its 2022 release) ignores errnoRet and refuses with EPERM.
// Docker's profile refuses clone3 with ENOSYS so that the C library falls
// back to clone, whose namespace flags the filter can check; from EPERM it
// does not fall back, and no thread starts (Python cannot serve a request).
// So runsc sandboxes may call clone3. Its flags are then unchecked, but they
// reach the Sentry's emulated clone, not the host's, and the agent holds no
// capability inside it either.
func gvisorSeccomp(filter *specs.LinuxSeccomp) *specs.LinuxSeccomp {
	f := *filter
	f.Syscalls = slices.Clone(filter.Syscalls)
	for i, sc := range f.Syscalls {
		if slices.Equal(sc.Names, []string{"clone3"}) && sc.Action == specs.ActErrno {
			f.Syscalls[i] = specs.LinuxSyscall{Names: sc.Names, Action: specs.ActAllow}
		}
	}
	return &f
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
