// Package process is a sandbox.Driver for local development: it runs each
// agent as a plain process on the host.
//
// IT ISOLATES NOTHING. An agent it starts runs as the user running Berth and
// can read and change everything that user can: the host's files (its
// CodeDir included, which it runs in place), its other processes and its
// network. Spec.Network is accepted and ignored too: whatever its mode, the
// agent has the host's network, as any process of that user. No limit
// applies: Spec.Limits are accepted and ignored, so an
// agent can use all the memory, CPU, processes and disk it likes. Use it to
// run your own code on your own machine, as `berth dev` does; never for code
// you do not trust and never on a shared server.
//
// Each agent runs in a process group of its own, with Spec.Env and
// Options.Env plus PORT set to a free loopback port the driver picks
// (replacing any PORT they set), so that agents listen side by side;
// Sandbox.DialContext dials that port on 127.0.0.1 whatever address it is
// given. An agent that listens on a port other than $PORT cannot be reached,
// and one that listens on 0.0.0.0 (as the AgentCore contract asks) is
// reachable from the host's network too.
//
// The agent's working directory is Spec.CodeDir itself, not a copy: changes
// the agent makes there are visible to every other agent using it, and
// last. Spec.WorkDir (the code's path inside an isolated sandbox, such as
// /app) does not exist on the host: an argument that is a path under it is
// mapped to the same path under CodeDir, so ["/app/agent"] runs
// CODEDIR/agent. Without a CodeDir, the agent runs in an empty temporary
// directory removed when it ends.
//
// When the agent exits, or at Stop, the driver kills its whole process group,
// so what the agent started ends with it (unless it left the group, which a
// plain process may do). With Options.StateDir set, the driver records each
// running group there, and Cleanup kills the groups an earlier run left
// behind when it crashed.
package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
)

// Options configure a Driver.
type Options struct {
	// StateDir, if set, is where the driver records the process group of
	// each running agent, so that Cleanup of a driver with the same StateDir
	// can kill the agents of one that crashed. It is created if missing.
	StateDir string
	// Env is added to every agent's environment, after Spec.Env (a later
	// entry wins), for what the host adds to every agent in development:
	// local secrets, say.
	Env []string
	// Logger receives what the driver does on its own (cleaning up).
	Logger *slog.Logger
}

// Driver starts agents as host processes. It is safe for concurrent use.
type Driver struct {
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	live  map[string]bool // ids of sandboxes started and not yet ended
	ports map[int]bool    // ports given to those sandboxes
}

var _ sandbox.Driver = (*Driver)(nil)

// groupTimeout bounds the wait for a killed process group to be gone.
const groupTimeout = 10 * time.Second

// New returns a driver.
func New(opts Options) (*Driver, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StateDir != "" {
		if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("create process driver state directory: %w", err)
		}
	}
	return &Driver{opts: opts, log: opts.Logger, live: map[string]bool{}, ports: map[int]bool{}}, nil
}

// record is what the state directory holds about a running agent: enough to
// find its process group again, and to tell it from a process that reused
// its pid.
type record struct {
	PID int `json:"pid"` // the agent, leader of its process group
	// StartTime is when the agent started, in clock ticks after boot
	// (/proc/PID/stat).
	StartTime uint64 `json:"startTime"`
}

// Start starts the agent of spec as a host process. See the package
// documentation for how it differs from an isolated sandbox.
func (d *Driver) Start(ctx context.Context, spec sandbox.Spec) (_ sandbox.Sandbox, err error) {
	if err := validate(spec); err != nil {
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}
	if spec.CodeDir != "" {
		if fi, err := os.Stat(spec.CodeDir); err != nil {
			return nil, fmt.Errorf("start sandbox %q: code directory: %w", spec.ID, err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("start sandbox %q: code directory %s is not a directory", spec.ID, spec.CodeDir)
		}
	}
	prog, args, err := command(spec)
	if err != nil {
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}

	port, err := d.reserve(spec.ID)
	if err != nil {
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}
	a := &agent{d: d, id: spec.ID, port: port, done: make(chan struct{})}
	defer func() {
		if err != nil {
			a.release()
		}
	}()
	var state *os.File
	if d.opts.StateDir != "" {
		a.statePath = filepath.Join(d.opts.StateDir, spec.ID+".json")
		// O_EXCL makes the id unique among drivers sharing the directory
		// too; an earlier run's record is Cleanup's to remove.
		state, err = os.OpenFile(a.statePath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			a.statePath = ""
			return nil, fmt.Errorf("start sandbox %q: record it: %w", spec.ID, err)
		}
		defer state.Close()
	}
	dir := spec.CodeDir
	if dir == "" {
		if a.tmpDir, err = os.MkdirTemp("", "berth-process-"+spec.ID+"-"); err != nil {
			return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
		}
		dir = a.tmpDir
	}

	cmd := exec.Command(prog, args[1:]...)
	cmd.Args[0] = args[0]
	cmd.Dir, cmd.Env = dir, d.environment(spec.Env, port)
	// Nil *os.Files must stay nil interfaces: exec then uses /dev/null.
	if spec.Stdout != nil {
		cmd.Stdout = spec.Stdout
	}
	if spec.Stderr != nil {
		cmd.Stderr = spec.Stderr
	}
	// A group of its own: the agent and what it starts are killed
	// together, and the terminal's Ctrl-C reaches Berth only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}
	a.cmd, a.pgid = cmd, cmd.Process.Pid
	if state != nil {
		// The agent is not reaped before wait runs, so its /proc entry is
		// there even if it exited already.
		rec := record{PID: a.pgid}
		if p, err := procfs.NewProc(a.pgid); err == nil {
			if st, err := p.Stat(); err == nil {
				rec.StartTime = st.Starttime
			}
		}
		if err := json.NewEncoder(state).Encode(rec); err != nil {
			d.log.Warn("record sandbox", "sandbox", spec.ID, "err", err)
		}
	}
	go a.wait()
	return a, nil
}

// validate checks what the driver needs of a spec.
func validate(spec sandbox.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	switch {
	case len(spec.RootLayers) > 0 || spec.Image != "":
		return errors.New("this driver runs code bundles on the host and cannot run container images (RootLayers, Image): use the runc or kubernetes driver")
	case spec.WorkDir != "" && !path.IsAbs(spec.WorkDir):
		return fmt.Errorf("WorkDir %q is not an absolute path", spec.WorkDir)
	}
	return nil
}

// command returns the program to run and its arguments, with paths under
// the spec's WorkDir mapped to CodeDir.
func command(spec sandbox.Spec) (string, []string, error) {
	args := make([]string, len(spec.Args))
	for i, arg := range spec.Args {
		args[i] = hostPath(arg, spec.WorkDir, spec.CodeDir)
	}
	prog := args[0]
	switch {
	case strings.Contains(prog, "/"):
		if !filepath.IsAbs(prog) && spec.CodeDir != "" {
			prog = filepath.Join(spec.CodeDir, prog)
		}
	default:
		var err error
		if prog, err = lookPath(prog, spec.Env); err != nil {
			return "", nil, err
		}
	}
	fi, err := os.Stat(prog)
	switch {
	case err != nil:
		return "", nil, fmt.Errorf("program %s: %w", spec.Args[0], err)
	case !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0:
		return "", nil, fmt.Errorf("program %s (%s) is not an executable file", spec.Args[0], prog)
	}
	return prog, args, nil
}

// hostPath maps arg, if it is workDir or a path under it, to the same path
// under codeDir.
func hostPath(arg, workDir, codeDir string) string {
	if workDir == "" || codeDir == "" {
		return arg
	}
	workDir = path.Clean(workDir)
	if workDir == "/" {
		return arg // every absolute path would be "under" it
	}
	if arg == workDir {
		return codeDir
	}
	if rest, ok := strings.CutPrefix(arg, workDir+"/"); ok {
		return filepath.Join(codeDir, filepath.FromSlash(rest))
	}
	return arg
}

// defaultPath is the search path when the agent's environment has none.
const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// lookPath finds the executable name in the PATH of env (the agent's, not
// Berth's: that is where an isolated sandbox looks too).
func lookPath(name string, env []string) (string, error) {
	search := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			search = v
		}
	}
	for _, dir := range filepath.SplitList(search) {
		if !filepath.IsAbs(dir) {
			continue // relative to what? Not the agent's directory.
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("program %s: not found in PATH %s", name, search)
}

// environment is the agent's environment: spec's, the driver's, and the
// port it listens on.
func (d *Driver) environment(spec []string, port int) []string {
	env := make([]string, 0, len(spec)+len(d.opts.Env)+1)
	for _, kv := range slices.Concat(spec, d.opts.Env) {
		if !strings.HasPrefix(kv, "PORT=") {
			env = append(env, kv)
		}
	}
	return append(env, "PORT="+strconv.Itoa(port))
}

// reserve claims id and a port for a new sandbox.
func (d *Driver) reserve(id string) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.live[id] {
		return 0, errors.New("a sandbox with this id is running")
	}
	// The kernel may hand a closed port out again: retry if it is one an
	// agent of this driver was given but may not be listening on yet.
	for range 16 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("pick a port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !d.ports[port] {
			d.live[id], d.ports[port] = true, true
			return port, nil
		}
	}
	return 0, errors.New("pick a port: no free loopback port")
}

// Cleanup kills the agents that an earlier run with the same StateDir
// recorded and did not stop, and removes their records. Without a
// StateDir it does nothing.
func (d *Driver) Cleanup(ctx context.Context) error {
	if d.opts.StateDir == "" {
		return nil
	}
	entries, err := os.ReadDir(d.opts.StateDir)
	if err != nil {
		return fmt.Errorf("clean up sandboxes: %w", err)
	}
	var errs []error
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		d.mu.Lock()
		mine := d.live[id]
		d.mu.Unlock()
		if mine {
			continue
		}
		file := filepath.Join(d.opts.StateDir, e.Name())
		if err := d.cleanup(ctx, id, file); err != nil {
			errs = append(errs, fmt.Errorf("clean up sandbox %q: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// cleanup kills the process group recorded in file and removes the file.
func (d *Driver) cleanup(ctx context.Context, id, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil || rec.PID <= 0 {
		// A run that crashed between recording the id and the pid: the
		// agent never started.
		d.log.Warn("removing an unreadable sandbox record", "sandbox", id, "file", file)
		return os.Remove(file)
	}
	if ours(rec) {
		// While any process of the group lives, its id cannot be given
		// to a new process, so the group is the agent's.
		if err := unix.Kill(-rec.PID, unix.SIGKILL); err == nil {
			d.log.Info("killed the agent of a sandbox an earlier run left", "sandbox", id, "pid", rec.PID)
		}
		ctx, cancel := context.WithTimeout(ctx, groupTimeout)
		defer cancel()
		if err := WaitGroupGone(ctx, rec.PID); err != nil {
			return err
		}
	}
	// The crashed run may be alive after all, and have removed it.
	if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// ours reports whether the process group of a recorded agent may still be
// the agent's: the agent runs still, or has exited (and the group may live
// on without it). A process of another start time under the agent's pid
// means the pid was reused after the whole group ended.
func ours(rec record) bool {
	p, err := procfs.NewProc(rec.PID)
	if err != nil {
		return true
	}
	st, err := p.Stat()
	return err != nil || st.Starttime == rec.StartTime
}

// groupMembers returns the processes of group pgid that have not exited
// (zombies are done: they hold no resources and will be reaped), with what
// they use.
func groupMembers(pgid int) ([]procfs.ProcStat, error) {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var members []procfs.ProcStat
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil || st.PGRP != pgid || st.State == "Z" || st.State == "X" {
			continue // gone meanwhile, or not the group's
		}
		members = append(members, st)
	}
	return members, nil
}

// WaitGroupGone waits until no process of group pgid is left (zombies aside),
// or ctx ends. Killing a group is asynchronous; this makes it complete.
func WaitGroupGone(ctx context.Context, pgid int) error {
	delay := time.Millisecond
	for {
		members, err := groupMembers(pgid)
		if err != nil {
			return err
		}
		if len(members) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("process group %d: %d processes still run after SIGKILL: %w", pgid, len(members), ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
}
