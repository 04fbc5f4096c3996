package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// cgroups locates sandboxes' cgroups. Every server and by-hand driver of a
// run gets its own cgroup parent, under which the runtime makes one cgroup
// per sandbox (PARENT/ID in every hierarchy), so the harness can find a
// session's sandbox, sum the sandboxes' memory and check that nothing is
// left once a server has shut down.
type cgroups struct {
	roots  []string // mount points of every hierarchy
	memory string   // mount point of the memory hierarchy
	v2     bool     // memory is cgroup v2 (memory.current, not memory.usage_in_bytes)
}

func findCgroups() (cgroups, error) {
	infos, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return cgroups{}, fmt.Errorf("find cgroup mounts: %w", err)
	}
	var cg cgroups
	for _, m := range infos {
		if !slices.Contains(cg.roots, m.Mountpoint) {
			cg.roots = append(cg.roots, m.Mountpoint)
		}
		switch {
		case m.FSType == "cgroup2" && m.Mountpoint == "/sys/fs/cgroup":
			cg.memory, cg.v2 = m.Mountpoint, true
		case m.FSType == "cgroup" && slices.Contains(strings.Split(m.VFSOptions, ","), "memory") && cg.memory == "":
			cg.memory = m.Mountpoint
		}
	}
	if cg.memory == "" {
		return cgroups{}, errors.New("find cgroup mounts: no memory controller is mounted")
	}
	return cg, nil
}

// version is the cgroup version the memory controller is under.
func (cg cgroups) version() string {
	if cg.v2 {
		return "v2"
	}
	return "v1"
}

// sandboxes returns the IDs of the cgroups under parent in the memory
// hierarchy: one per live sandbox.
func (cg cgroups) sandboxes(parent string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(cg.memory, parent))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list sandbox cgroups: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// pid returns a process of the sandbox's cgroup.
func (cg cgroups) pid(parent, id string) (int, error) {
	data, err := os.ReadFile(filepath.Join(cg.memory, parent, id, "cgroup.procs"))
	if err != nil {
		return 0, fmt.Errorf("find the process of sandbox %s: %w", id, err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("find the process of sandbox %s: cgroup.procs is %q", id, data)
	}
	return pid, nil
}

// memoryUsage returns the memory charged to the sandbox's cgroup: its
// processes' memory and the page cache and tmpfs pages it touched first.
func (cg cgroups) memoryUsage(parent, id string) (int64, error) {
	file := "memory.usage_in_bytes"
	if cg.v2 {
		file = "memory.current"
	}
	data, err := os.ReadFile(filepath.Join(cg.memory, parent, id, file))
	if err != nil {
		return 0, fmt.Errorf("memory of sandbox %s: %w", id, err)
	}
	return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
}

// leftovers returns the cgroups left under parent in any hierarchy.
func (cg cgroups) leftovers(parent string) []string {
	var left []string
	for _, root := range cg.roots {
		ents, err := os.ReadDir(filepath.Join(root, parent))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				left = append(left, filepath.Join(root, parent, e.Name()))
			}
		}
	}
	return left
}

// removeParent removes parent from every hierarchy once it is empty.
func (cg cgroups) removeParent(parent string) error {
	var errs []error
	for _, root := range cg.roots {
		err := os.Remove(filepath.Join(root, parent))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// mountCgroup mounts the v1 hierarchy of controller at dir.
func mountCgroup(dir, controller string) error {
	return unix.Mount("cgroup", dir, "cgroup", 0, controller)
}
