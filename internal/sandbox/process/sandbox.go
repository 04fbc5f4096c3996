package process

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
)

// agent is one sandbox: a host process leading a process group of its own.
type agent struct {
	d         *Driver
	id        string
	port      int
	statePath string // its record in the state directory, if any
	tmpDir    string // its working directory if the spec had no CodeDir

	cmd  *exec.Cmd
	pgid int // the agent's pid, which is its group's id

	done     chan struct{}
	err      error // why the agent exited; written before done is closed
	stopping atomic.Bool

	// mu orders killing the group against reaping the agent: once the
	// agent is reaped its pid, and so the group id, may name another
	// process.
	mu     sync.Mutex
	reaped bool
}

var (
	_ sandbox.Sandbox     = (*agent)(nil)
	_ sandbox.StatsReader = (*agent)(nil)
)

// ID returns the sandbox's ID.
func (a *agent) ID() string { return a.id }

// DialContext connects to the agent on 127.0.0.1 at the port it was given
// in PORT. The address asked for is ignored: inside an isolated sandbox it
// would name that same listener.
func (a *agent) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" {
		return nil, fmt.Errorf("dial sandbox %q: network %q: the agent is reached over tcp only", a.id, network)
	}
	select {
	case <-a.done:
		// Its port may be another agent's by now.
		return nil, fmt.Errorf("dial sandbox %q: the agent has exited (%v)", a.id, a.err)
	default:
	}
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(a.port)))
	if err != nil {
		return nil, fmt.Errorf("dial sandbox %q: %w", a.id, err)
	}
	return c, nil
}

// Done is closed once the agent has exited and its group is gone.
func (a *agent) Done() <-chan struct{} { return a.done }

// Err says why the agent exited, once Done is closed.
func (a *agent) Err() error {
	select {
	case <-a.done:
		return a.err
	default:
		return nil
	}
}

// Stats implements sandbox.StatsReader: the resident memory and CPU time of
// the processes in the agent's group. Memory shared between them is counted
// once per process.
func (a *agent) Stats() (sandbox.Stats, error) {
	members, err := groupMembers(a.pgid)
	if err != nil {
		return sandbox.Stats{}, fmt.Errorf("stats of sandbox %q: %w", a.id, err)
	}
	var st sandbox.Stats
	for _, m := range members {
		st.MemoryBytes += int64(m.ResidentMemory())
		st.CPUSeconds += cpuSeconds(m)
	}
	return st, nil
}

// cpuSeconds is the CPU time process p has used: the greater of the
// kernel's total, which counts threads that have exited but only in whole
// clock ticks (10 ms, so a process that has barely run shows none), and the
// nanosecond sum over its live threads.
func cpuSeconds(p procfs.ProcStat) float64 {
	var ns uint64
	threads, _ := procfs.AllThreads(p.PID)
	for _, t := range threads {
		if s, err := t.Schedstat(); err == nil {
			ns += s.RunningNanoseconds
		}
	}
	return max(p.CPUTime(), float64(ns)/1e9)
}

// Stop kills the agent's process group and waits until the agent has exited
// and the driver has released what it held. It is safe to call more than
// once and after the agent exited.
func (a *agent) Stop(ctx context.Context) error {
	a.stopping.Store(true)
	a.kill()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop sandbox %q: wait for the agent to exit: %w", a.id, ctx.Err())
	}
}

// kill sends SIGKILL to the agent's group, unless the agent was reaped.
func (a *agent) kill() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.reaped {
		unix.Kill(-a.pgid, unix.SIGKILL)
	}
}

// wait waits for the agent to exit, kills what is left of its group,
// releases what the sandbox held and closes done.
func (a *agent) wait() {
	// Wait without reaping: the agent's zombie keeps its pid, and so its
	// group's id, from being reused while the group is killed.
	var info unix.Siginfo
	for {
		if err := unix.Waitid(unix.P_PID, a.pgid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != unix.EINTR {
			break
		}
	}
	unix.Kill(-a.pgid, unix.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	if err := WaitGroupGone(ctx, a.pgid); err != nil {
		a.d.log.Warn("agent's processes outlive it", "sandbox", a.id, "err", err)
	}
	cancel()

	a.mu.Lock()
	waitErr := a.cmd.Wait()
	a.reaped = true
	a.mu.Unlock()

	a.release()
	switch {
	case a.stopping.Load():
		a.err = errors.New("sandbox stopped")
	default:
		a.err = exitReason(waitErr)
	}
	close(a.done)
}

// release gives back the sandbox's id, port, record and directory.
func (a *agent) release() {
	if a.statePath != "" {
		// Only its own: after a Cleanup by another driver, the record may
		// be a new agent's under the same id.
		if data, err := os.ReadFile(a.statePath); err == nil && recordsPID(data, a.pgid) {
			os.Remove(a.statePath)
		}
	}
	if a.tmpDir != "" {
		os.RemoveAll(a.tmpDir)
	}
	a.d.mu.Lock()
	delete(a.d.live, a.id)
	delete(a.d.ports, a.port)
	a.d.mu.Unlock()
}

// recordsPID reports whether a record names pid, or none yet (a start that
// failed before the agent ran).
func recordsPID(data []byte, pid int) bool {
	if len(bytes.TrimSpace(data)) == 0 {
		return true
	}
	var rec record
	return json.Unmarshal(data, &rec) == nil && rec.PID == pid
}

// exitReason describes how the agent exited, from exec.Cmd.Wait's error.
func exitReason(err error) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		if err == nil {
			return errors.New("agent exited with status 0")
		}
		return fmt.Errorf("wait for agent: %w", err)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return fmt.Errorf("agent ended: %w", err)
	case ws.Exited():
		return fmt.Errorf("agent exited with status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Errorf("agent killed by signal %s", unix.SignalName(ws.Signal()))
	}
	return fmt.Errorf("agent ended with wait status %#x", uint32(ws))
}
