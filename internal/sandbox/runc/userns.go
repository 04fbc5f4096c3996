package runc

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// maxUserNamespaces is the kernel's limit on user namespaces per user; 0
// disables them.
const maxUserNamespaces = "/proc/sys/user/max_user_namespaces"

// userNamespaceUsable reports why sandboxes cannot get a user namespace
// whose root is the host's uid and gid base, with their skeleton and
// overlay directories in state, or nil if they can.
//
// runc and crun set a sandbox up from inside its user namespace, as its
// root: that root must be able to look up the skeleton and overlay
// directories by their paths. The driver makes the state directory
// searchable; the directories above it are the host's.
func userNamespaceUsable(state string, base uint32) error {
	data, err := os.ReadFile(maxUserNamespaces)
	if err == nil && strings.TrimSpace(string(data)) == "0" {
		return fmt.Errorf("the kernel disables user namespaces (%s is 0)", maxUserNamespaces)
	}
	if err := checkReachable(state, base, false); err != nil {
		return fmt.Errorf("the sandboxes' root (host uid %d) cannot reach the state directory %s: %w", base, state, err)
	}
	return nil
}

// checkReachable returns an error unless a process whose uid and gid are id
// (and that has no supplementary groups nor capabilities over the host's
// files) may look up dir and every directory above it, and, if read is set,
// list dir. It reads mode bits only; an ACL may say otherwise.
func checkReachable(dir string, id uint32, read bool) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	want := uint32(1) // search (x)
	if read {
		want |= 4
	}
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !permits(fi, id, want) {
			return fmt.Errorf("%s (mode %v, owner %s) does not let others %s it: make it so with chmod o+%s %s",
				p, fi.Mode().Perm(), owner(fi), verb(want), letters(want), p)
		}
		if p == "/" {
			return nil
		}
		want = 1 // directories above need only be searchable
	}
}

// permits reports whether the mode bits of fi grant the access bits want
// (4 read, 2 write, 1 search) to the user and group id.
func permits(fi fs.FileInfo, id, want uint32) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	perm := uint32(fi.Mode().Perm())
	switch {
	case st.Uid == id:
		perm >>= 6
	case st.Gid == id:
		perm >>= 3
	}
	return perm&want == want
}

// owner describes who owns fi as "uid:gid".
func owner(fi fs.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "unknown"
	}
	return strconv.FormatUint(uint64(st.Uid), 10) + ":" + strconv.FormatUint(uint64(st.Gid), 10)
}

func verb(bits uint32) string {
	if bits&4 != 0 {
		return "list and search"
	}
	return "search"
}

func letters(bits uint32) string {
	if bits&4 != 0 {
		return "rx"
	}
	return "x"
}
