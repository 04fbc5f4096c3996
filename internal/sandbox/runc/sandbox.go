package runc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/netns"
)

// container is one running sandbox: an OCI container whose init process is
// the agent.
type container struct {
	d      *Driver
	id     string
	pid    int
	limits sandbox.Limits
	// pidfd refers to the agent for as long as the container lives: unlike
	// the pid, it cannot come to mean another process. wait owns it.
	pidfd *os.File
	// netns is the agent's network namespace, held open so that the
	// namespace stays the one dialled even if the pid is reused. It is nil
	// when the agent exited before it could be opened.
	netns *os.File

	done     chan struct{}
	err      error // why the agent exited; written before done is closed
	stopping atomic.Bool

	mu      sync.Mutex // serialises Stop
	stopped bool
}

var _ sandbox.Sandbox = (*container)(nil)

// watch takes hold of the agent with pid that the runtime started for
// sandbox id, and starts waiting for its exit. ns, if not nil, is the
// sandbox's network namespace, which the driver made (for runsc, whose pid
// is its Sentry's); the container owns it from now on. gofer, if not zero,
// is the pid of runsc's gofer, a child of this process to reap when it
// exits.
func (d *Driver) watch(id string, pid int, limits sandbox.Limits, ns *os.File, gofer int) (*container, error) {
	if gofer > 0 {
		gfd, err := unix.PidfdOpen(gofer, unix.PIDFD_NONBLOCK)
		if err == nil {
			// It ends once the gofer does, which it does when the
			// Sentry exits or is killed.
			go reapExited(os.NewFile(uintptr(gfd), "pidfd"), gofer)
		}
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("open pidfd of agent %d: %w", pid, err)
	}
	c := &container{
		d:      d,
		id:     id,
		pid:    pid,
		limits: limits,
		// A non-blocking pidfd goes on Go's netpoller: waiting for the
		// agent parks a goroutine, not a thread.
		pidfd: os.NewFile(uintptr(fd), "pidfd"),
		done:  make(chan struct{}),
	}
	if ns != nil {
		c.netns = ns
		go c.wait()
		return c, nil
	}
	ns, err = os.Open("/proc/" + strconv.Itoa(pid) + "/ns/net")
	switch {
	case err == nil && exited(c.pidfd):
		// The pid may have been reaped and reused before the open: the
		// namespace is not trustworthy, and the agent is gone anyway.
		ns.Close()
	case err == nil:
		c.netns = ns
	case !exitsSoon(c.pidfd):
		c.pidfd.Close()
		return nil, fmt.Errorf("open network namespace of agent %d: %w", pid, err)
	}
	go c.wait()
	return c, nil
}

// ID returns the sandbox's ID.
func (c *container) ID() string { return c.id }

// DialContext connects to addr, an IP literal and port, inside the
// sandbox's network namespace.
func (c *container) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.netns == nil {
		return nil, fmt.Errorf("dial sandbox %q: the agent exited before its network could be reached", c.id)
	}
	conn, err := netns.Dial(ctx, c.netns, network, addr)
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return nil, fmt.Errorf("dial sandbox %q: the sandbox is stopped: %w", c.id, err)
		}
		return nil, fmt.Errorf("dial sandbox %q: %w", c.id, err)
	}
	return conn, nil
}

// Done is closed once the agent has exited.
func (c *container) Done() <-chan struct{} { return c.done }

// Stats implements sandbox.StatsReader from the sandbox's cgroup.
func (c *container) Stats() (sandbox.Stats, error) {
	return c.d.cgroups.stats(c.d.cgroupsPath(c.id))
}

// Err says why the agent exited, once Done is closed.
func (c *container) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Stop kills the agent (and with it every process of the sandbox, which
// dies with its PID namespace's init), waits for it, and removes the
// container, its cgroups and its directory.
func (c *container) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopping.Store(true)
	c.kill()
	select {
	case <-c.done:
	case <-ctx.Done():
		return fmt.Errorf("stop sandbox %q: wait for the agent to exit: %w", c.id, ctx.Err())
	}
	if err := c.d.destroy(ctx, c.id); err != nil {
		return fmt.Errorf("stop sandbox: %w", err)
	}
	if c.netns != nil {
		c.netns.Close()
	}
	c.d.forget(c.id)
	c.stopped = true
	return nil
}

// kill sends SIGKILL to the agent through its pidfd, which cannot hit a
// process that reused the pid. Once wait has closed the pidfd the agent is
// gone and there is nothing to kill.
func (c *container) kill() {
	rc, err := c.pidfd.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0)
	})
}

// wait waits for the agent to exit, collects its status and closes done.
func (c *container) wait() {
	var (
		ws      unix.WaitStatus
		reaped  bool
		waitErr error
	)
	rc, err := c.pidfd.SyscallConn()
	if err == nil {
		// The callback runs first at once, then each time the netpoller
		// sees the pidfd readable, which it becomes when the agent exits.
		err = rc.Read(func(fd uintptr) bool {
			if !exited1(fd, 0) {
				return false
			}
			reaped = reap(int(fd), c.pid, &ws)
			return true
		})
	}
	if err != nil {
		waitErr = fmt.Errorf("wait for agent: %w", err)
	}
	c.pidfd.Close()

	switch {
	case waitErr != nil:
		c.err = waitErr
	case c.stopping.Load():
		c.err = errors.New("sandbox stopped")
	case !reaped:
		c.err = errors.New("agent exited (its status went to another process)")
	default:
		oom := false
		if ws.Signaled() && ws.Signal() == unix.SIGKILL {
			n, err := c.d.cgroups.oomKills(c.d.cgroupsPath(c.id))
			oom = err == nil && n > 0
		}
		if c.d.rt.gvisor {
			ws = sentryStatus(ws)
		}
		c.err = exitReason(ws, oom, c.limits.MemoryBytes)
	}
	close(c.done)
}

// sentryStatus turns the wait status of runsc's Sentry into its agent's:
// the Sentry exits with the agent's status, or with 128+n when the agent was
// killed by signal n (as a shell reports it). A Sentry killed by a signal
// itself (by the OOM killer, or by Stop) is reported as it is.
func sentryStatus(ws unix.WaitStatus) unix.WaitStatus {
	if !ws.Exited() || ws.ExitStatus() <= 128 || ws.ExitStatus() > 128+64 {
		return ws
	}
	// A wait status with the signal in the low 7 bits means "killed by".
	return unix.WaitStatus(ws.ExitStatus() - 128)
}

// reapExited waits for the child process behind pidfd f to exit, reaps it
// and closes f.
func reapExited(f *os.File, pid int) {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Read(func(fd uintptr) bool {
		if !exited1(fd, 0) {
			return false
		}
		var ws unix.WaitStatus
		reap(int(fd), pid, &ws)
		return true
	})
}

// reap collects the exit status of the exited process behind pidfd, if it
// is a child of this process. It is, through the subreaper, unless the
// runtime's own process reaped it first (crun's intermediate process can,
// when the agent exits at once).
func reap(pidfd, pid int, ws *unix.WaitStatus) bool {
	for {
		// Ask about exactly the process behind the pidfd, without reaping
		// it: ECHILD means it is not ours.
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false
		}
		break
	}
	// An unreaped child's pid cannot be reused, so wait4 on it is exact.
	for {
		_, err := unix.Wait4(pid, ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		return err == nil
	}
}

// exitReason describes how the agent exited.
func exitReason(ws unix.WaitStatus, oom bool, memoryLimit int64) error {
	switch {
	case ws.Exited():
		return fmt.Errorf("agent exited with status %d", ws.ExitStatus())
	case oom:
		return fmt.Errorf("agent killed: out of memory (limit %d bytes)", memoryLimit)
	case ws.Signaled():
		return fmt.Errorf("agent killed by signal %s", unix.SignalName(ws.Signal()))
	default:
		return fmt.Errorf("agent ended with wait status %#x", uint32(ws))
	}
}

// exited reports whether the process behind pidfd f has exited.
func exited(f *os.File) bool { return pollExit(f, 0) }

// exitsSoon reports whether the process behind pidfd f has exited or does
// so within a second. An exiting process drops its namespaces a moment
// before its pidfd becomes readable.
func exitsSoon(f *os.File) bool { return pollExit(f, time.Second) }

// pollExit waits up to timeout for the process behind pidfd f to exit, and
// reports whether it has. A closed f counts as exited.
func pollExit(f *os.File, timeout time.Duration) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	var done bool
	if rc.Control(func(fd uintptr) { done = exited1(fd, timeout) }) != nil {
		return true
	}
	return done
}

// exited1 reports whether the pidfd fd becomes readable, which it does once
// its process has exited, within timeout.
func exited1(fd uintptr, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		ms := int(time.Until(deadline).Milliseconds())
		n, err := unix.Poll(fds, max(ms, 0))
		if err == unix.EINTR {
			continue
		}
		return err != nil || n > 0
	}
}

// writeJSON writes v to file as JSON.
func writeJSON(file string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", file, err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}
