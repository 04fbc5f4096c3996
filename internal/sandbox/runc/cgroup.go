package runc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
)

// cgroupHost describes the host's cgroup file systems. The runtime creates
// and removes a sandbox's cgroups; the driver reads the memory cgroup to tell
// an OOM kill apart and removes what a crash left behind.
type cgroupHost struct {
	// unified is true on a pure cgroup v2 host. On a v1 or hybrid host the
	// controllers are v1 hierarchies (hybrid hosts also mount an empty
	// cgroup2 at /sys/fs/cgroup/unified).
	unified bool
	// mounts are the mount points of every cgroup hierarchy (v1
	// controllers, named hierarchies and cgroup2).
	mounts []string
	// memory is the mount point of the hierarchy that has the memory
	// controller, and cpuacct the one that accounts CPU time (the same
	// on v2).
	memory, cpuacct string
	// swap reports whether a memory+swap limit can be set.
	swap bool
}

// detectCgroups inspects /sys/fs/cgroup and the mount table.
func detectCgroups() (cgroupHost, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return cgroupHost{}, fmt.Errorf("detect cgroups: %w", err)
	}
	h := cgroupHost{unified: st.Type == unix.CGROUP2_SUPER_MAGIC}
	infos, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return cgroupHost{}, fmt.Errorf("detect cgroups: %w", err)
	}
	for _, m := range infos {
		if slices.Contains(h.mounts, m.Mountpoint) {
			continue
		}
		h.mounts = append(h.mounts, m.Mountpoint)
		isMemory := h.unified && m.FSType == "cgroup2" && m.Mountpoint == "/sys/fs/cgroup" ||
			!h.unified && m.FSType == "cgroup" && slices.Contains(strings.Split(m.VFSOptions, ","), "memory")
		if isMemory && h.memory == "" {
			h.memory = m.Mountpoint
		}
		isCPU := h.unified && m.FSType == "cgroup2" && m.Mountpoint == "/sys/fs/cgroup" ||
			!h.unified && m.FSType == "cgroup" && slices.Contains(strings.Split(m.VFSOptions, ","), "cpuacct")
		if isCPU && h.cpuacct == "" {
			h.cpuacct = m.Mountpoint
		}
	}
	if h.memory == "" {
		return cgroupHost{}, errors.New("detect cgroups: no memory controller is mounted")
	}
	if h.unified {
		controllers, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		if err != nil {
			return cgroupHost{}, fmt.Errorf("detect cgroups: %w", err)
		}
		if !slices.Contains(strings.Fields(string(controllers)), "memory") {
			return cgroupHost{}, errors.New("detect cgroups: the cgroup v2 root does not offer the memory controller")
		}
		// runc leaves swap alone when memory.swap.max does not exist.
		h.swap = true
	} else {
		_, err := os.Stat(filepath.Join(h.memory, "memory.memsw.limit_in_bytes"))
		h.swap = err == nil
	}
	return h, nil
}

// version is 2 on a pure cgroup v2 host and 1 otherwise.
func (h cgroupHost) version() int {
	if h.unified {
		return 2
	}
	return 1
}

// oomKills returns how many processes the kernel's OOM killer has killed in
// the cgroup at cgroupsPath.
func (h cgroupHost) oomKills(cgroupsPath string) (int, error) {
	file := "memory.oom_control"
	if h.unified {
		file = "memory.events"
	}
	data, err := os.ReadFile(filepath.Join(h.memory, cgroupsPath, file))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == "oom_kill" {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("%s: no oom_kill counter", file)
}

// stats reads the memory in use and the CPU time consumed by the cgroup at
// cgroupsPath.
func (h cgroupHost) stats(cgroupsPath string) (sandbox.Stats, error) {
	var st sandbox.Stats
	memFile, cpuFile := "memory.usage_in_bytes", "cpuacct.usage"
	if h.unified {
		memFile, cpuFile = "memory.current", "cpu.stat"
	}
	mem, err := readInt(filepath.Join(h.memory, cgroupsPath, memFile))
	if err != nil {
		return st, err
	}
	st.MemoryBytes = mem
	if h.cpuacct == "" {
		return st, nil
	}
	if !h.unified {
		ns, err := readInt(filepath.Join(h.cpuacct, cgroupsPath, cpuFile))
		st.CPUSeconds = float64(ns) / 1e9
		return st, err
	}
	data, err := os.ReadFile(filepath.Join(h.cpuacct, cgroupsPath, cpuFile))
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(v, 10, 64)
			st.CPUSeconds = float64(us) / 1e6
			return st, err
		}
	}
	return st, fmt.Errorf("%s: no usage_usec", cpuFile)
}

func readInt(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
}

// remove removes the cgroup at cgroupsPath from every hierarchy, killing
// what still runs in it. The runtime normally does this on delete; this
// catches what a crash or a runtime that skips a hierarchy left behind.
func (h cgroupHost) remove(ctx context.Context, cgroupsPath string) error {
	var errs []error
	for _, mnt := range h.mounts {
		if err := removeCgroupDir(ctx, filepath.Join(mnt, cgroupsPath)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroupDir removes one cgroup directory, which the kernel allows only
// once no process is left in it.
func removeCgroupDir(ctx context.Context, dir string) error {
	for delay := time.Millisecond; ; delay *= 2 {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		killCgroup(dir)
		if delay > 500*time.Millisecond {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove cgroup %s: %w", dir, ctx.Err())
		case <-time.After(delay):
		}
	}
}

// killCgroup sends SIGKILL to every process in the cgroup dir.
func killCgroup(dir string) {
	if os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0) == nil {
		return // cgroup v2 kills the whole subtree at once
	}
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}
