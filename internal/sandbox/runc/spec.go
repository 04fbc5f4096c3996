package runc

import (
	"fmt"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"

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

// bundle is everything buildSpec needs to describe one sandbox.
type bundle struct {
	spec   sandbox.Spec   // validated
	limits sandbox.Limits // with defaults filled in
	rootfs string         // the shared skeleton
	system []specs.Mount  // the read-only system view
	// upperDir and workDir are the per-sandbox overlay directories, used
	// when spec.CodeDir is set.
	upperDir, workDir string
	cgroupsPath       string
	// limitSwap sets the memory+swap limit equal to the memory limit; it is
	// false on cgroup v1 hosts without swap accounting, where runc cannot.
	limitSwap bool
}

// buildSpec generates the OCI runtime spec of one sandbox.
func buildSpec(b bundle) *specs.Spec {
	s := b.spec
	caps := defaultCapabilities()
	mounts := kernelMounts()
	mounts = append(mounts, b.system...)
	mounts = append(mounts, specs.Mount{
		Destination: "/tmp",
		Type:        "tmpfs",
		Source:      "tmpfs",
		Options:     []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(b.limits.TmpBytes, 10)},
	})
	if s.CodeDir != "" {
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
		mounts = append(mounts, specs.Mount{
			Destination: s.WorkDir,
			Type:        "tmpfs",
			Source:      "tmpfs",
			Options:     []string{"nosuid", "nodev", "mode=755", "size=" + strconv.FormatInt(b.limits.TmpBytes, 10)},
		})
	}

	memory := b.limits.MemoryBytes
	quota := b.limits.MilliCPUs * cpuPeriod / 1000
	period := uint64(cpuPeriod)
	pids := b.limits.Pids
	res := &specs.LinuxResources{
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

	return &specs.Spec{
		Version: ociVersion,
		Process: &specs.Process{
			Terminal:        false,
			User:            specs.User{UID: 0, GID: 0},
			Args:            s.Args,
			Env:             s.Env,
			Cwd:             s.WorkDir,
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: b.rootfs, Readonly: true},
		Hostname: s.ID,
		Mounts:   mounts,
		Linux: &specs.Linux{
			Resources:   res,
			CgroupsPath: b.cgroupsPath,
			// A new network namespace has only loopback, which the
			// runtime brings up.
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.NetworkNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
				"/sys/firmware", "/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
}

// defaultCapabilities is the capability set of `runc spec`: enough to run as
// root in the sandbox, nothing that reaches outside it.
func defaultCapabilities() []string {
	return []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
}

// kernelMounts are the /proc, /dev and /sys of every sandbox, as in
// `runc spec` (without the host's cgroup tree).
func kernelMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
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
