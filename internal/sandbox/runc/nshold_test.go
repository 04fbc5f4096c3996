package runc

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHoldNamespaces checks the namespaces a holder makes: the network
// namespace belongs to the holder's user namespace, mapped as a sandbox's
// (or, without one, to the host's), setgroups stays allowed, and release
// ends the holder.
func TestHoldNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces)")
	}
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("needs cat")
	}
	for _, ids := range []identity{{userns: true, hostBase: 1 << 30}, {}} {
		h, err := holdNamespaces(cat, ids)
		if err != nil {
			t.Fatal(err)
		}
		owner := nsOwner(t, h.net)
		host := inode(t, "/proc/self/ns/user")
		pid := h.cmd.Process.Pid
		if ids.userns {
			if owner != inode(t, h.user) || owner == host {
				t.Errorf("the network namespace belongs to user namespace %d, want the holder's %d (the host's is %d)", owner, inode(t, h.user), host)
			}
			for _, f := range []string{"uid_map", "gid_map"} {
				data, err := os.ReadFile(h.user[:len(h.user)-len("ns/user")] + f)
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.Join(strings.Fields(string(data)), " "); got != "0 1073741824 65536" {
					t.Errorf("%s = %q, want 0 1073741824 65536", f, got)
				}
			}
			if data, err := os.ReadFile(h.user[:len(h.user)-len("ns/user")] + "setgroups"); err != nil || strings.TrimSpace(string(data)) != "allow" {
				t.Errorf("setgroups = %q, %v: want allow", data, err)
			}
		} else if h.user != "" || owner != host {
			t.Errorf("without a user namespace: user %q, network namespace owned by %d, want the host's %d", h.user, owner, host)
		}
		if err := h.release(); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("the holder %d is left after release: %v", pid, err)
		}
	}
}

// nsOwner returns the inode of the user namespace that owns namespace ns.
func nsOwner(t *testing.T, ns string) uint64 {
	t.Helper()
	f, err := os.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		t.Fatalf("NS_GET_USERNS of %s: %v", ns, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// BenchmarkHoldNamespaces measures what holding a networked sandbox's
// namespaces costs its start: the holder's start and release (which
// replace a second call of the OCI runtime, create then start).
func BenchmarkHoldNamespaces(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (namespaces)")
	}
	cat, err := exec.LookPath("cat")
	if err != nil {
		b.Skip("needs cat")
	}
	for b.Loop() {
		h, err := holdNamespaces(cat, identity{userns: true, hostBase: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		if err := h.release(); err != nil {
			b.Fatal(err)
		}
	}
}
