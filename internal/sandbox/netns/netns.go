// Package netns dials connections inside another network namespace.
//
// A socket belongs to the network namespace of the thread that created it and
// keeps it for life, so a process can reach a server that listens on loopback
// inside a sandbox by creating the socket on a thread that has briefly entered
// the sandbox's namespace. The connection that comes back is an ordinary
// net.Conn, usable from any goroutine.
package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Dial connects to address on the named network inside the network namespace
// that ns refers to (an open /proc/<pid>/ns/net, or a bind mount of one).
//
// The network must be one of "tcp", "tcp4", "tcp6", "udp", "udp4" and "udp6",
// and address's host an IP literal ("127.0.0.1:8080", "[::1]:8080"): Dial
// never resolves names, because a lookup would run inside the foreign
// namespace with the host's resolver configuration.
//
// The dial honours ctx's deadline and cancellation. The caller keeps
// ownership of ns; Dial does not close it.
func Dial(ctx context.Context, ns *os.File, network, address string) (net.Conn, error) {
	if err := checkAddress(network, address); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	raw, err := ns.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("netns: dial %s: namespace file: %w", address, err)
	}

	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	// The dial runs on a goroutine of its own so that, if the thread cannot
	// return to its namespace, the goroutine can end still locked: Go then
	// retires the thread instead of reusing it in the wrong namespace.
	go func() {
		runtime.LockOSThread()
		t := thread{locked: true}
		conn, err := t.dial(ctx, raw, network, address)
		if t.locked && !t.lost {
			runtime.UnlockOSThread()
		}
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.conn, r.err
}

// thread is the locked OS thread one dial runs on.
type thread struct {
	home   int  // the thread's own network namespace
	away   bool // the thread is in the target namespace
	locked bool // the goroutine is locked to the thread
	lost   bool // the thread could not return home and must be retired
}

// dial creates the socket after moving the thread into the namespace behind
// raw, and connects it.
func (t *thread) dial(ctx context.Context, raw syscall.RawConn, network, address string) (net.Conn, error) {
	home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netns: dial %s: open own namespace: %w", address, err)
	}
	defer unix.Close(home)
	t.home = home

	var conn net.Conn
	// Control keeps the namespace descriptor open (and its number from being
	// reused) until the function returns, even if the caller closes ns.
	ctlErr := raw.Control(func(fd uintptr) {
		if err = unix.Setns(int(fd), unix.CLONE_NEWNET); err != nil {
			err = fmt.Errorf("netns: dial %s: enter namespace: %w", address, err)
			return
		}
		t.away = true
		d := net.Dialer{
			// ControlContext runs on this thread right after the socket
			// is created and before it connects. The socket belongs to the
			// namespace from now on, so the thread can go home and the
			// connect, which may park the goroutine, runs unlocked.
			ControlContext: func(context.Context, string, string, syscall.RawConn) error {
				t.goHome()
				return nil
			},
		}
		conn, err = d.DialContext(ctx, network, address)
		t.goHome() // if the dial failed before it created a socket
	})
	if ctlErr != nil {
		// Control fails only when ns has been closed.
		return nil, fmt.Errorf("netns: dial %s: namespace file: %w", address, os.ErrClosed)
	}
	return conn, err
}

// goHome moves the thread back to its own namespace and unlocks it, or marks
// it lost.
func (t *thread) goHome() {
	if !t.away {
		return
	}
	t.away = false
	if err := unix.Setns(t.home, unix.CLONE_NEWNET); err != nil {
		t.lost = true
		return
	}
	t.locked = false
	runtime.UnlockOSThread()
}

// checkAddress rejects networks Dial does not support and hosts that are not
// IP literals.
func checkAddress(network, address string) error {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return fmt.Errorf("netns: unsupported network %q", network)
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("netns: address %q: %w", address, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("netns: address %q: host %q is not an IP literal", address, host)
	}
	return nil
}

// NewLoopback creates a network namespace that has only a loopback
// interface, brought up, and returns an open file that refers to it. The
// namespace lives for as long as the file is open or a process is in it.
//
// It is for runtimes that run a sandbox in a namespace they are given rather
// than one they create and set up themselves (gVisor's runsc with its host
// network: its Sentry cannot bring an interface up).
func NewLoopback() (*os.File, error) {
	type result struct {
		ns  *os.File
		err error
	}
	ch := make(chan result, 1)
	// As in Dial, a thread that cannot return to its namespace ends locked
	// and is retired with its goroutine.
	go func() {
		runtime.LockOSThread()
		ns, lost, err := newLoopback()
		if !lost {
			runtime.UnlockOSThread()
		}
		ch <- result{ns, err}
	}()
	r := <-ch
	return r.ns, r.err
}

// newLoopback does NewLoopback's work on a locked thread. lost reports that
// the thread is left in another namespace.
func newLoopback() (ns *os.File, lost bool, err error) {
	home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, fmt.Errorf("netns: create namespace: open own namespace: %w", err)
	}
	defer unix.Close(home)
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, false, fmt.Errorf("netns: create namespace: %w", err)
	}
	defer func() {
		if serr := unix.Setns(home, unix.CLONE_NEWNET); serr != nil {
			lost = true
			if ns != nil {
				ns.Close()
			}
			ns, err = nil, fmt.Errorf("netns: create namespace: return to own namespace: %w", serr)
		}
	}()
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, fmt.Errorf("netns: create namespace: open it: %w", err)
	}
	f := os.NewFile(uintptr(fd), "netns")
	if err := loopbackUp(); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("netns: create namespace: bring lo up: %w", err)
	}
	return f, false, nil
}

// loopbackUp sets the IFF_UP flag of lo in the calling thread's namespace.
func loopbackUp() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr)
}
