package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
	"github.com/spf13/cobra"

	"github.com/berthrun/berth/internal/sandbox/process"
)

// Files of a detached `berth dev`, relative to the project root.
const (
	devLogFile = "agentcore/.cli/dev.log"
	devPIDFile = "agentcore/.cli/dev.pid"
	devBinDir  = "agentcore/.cli/dev"
)

// Timings of berth dev.
const (
	devReadyTimeout = 60 * time.Second       // for GET /ping to answer after a start
	devStopGrace    = 5 * time.Second        // between SIGTERM and SIGKILL
	devDebounce     = 250 * time.Millisecond // quiet time after a change before restarting
)

type devOptions struct {
	runtime     string
	port        int
	consolePort int // 0: the agent's port + 1 if free, else any free one
	noConsole   bool
	detach      bool
	stop        bool
	// child marks the background process --detach starts.
	child bool
}

func (a *app) devCommand() *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the project's agent locally, restarting it when its code changes",
		Long: `Run the project's agent on this machine as a plain process with the
container contract's environment (PORT, DOCKER_CONTAINER=1, AWS_REGION,
LOCAL_DEV=1, the runtime's envVars and agentcore/.env.local), restart it when
a file under its code location changes, and say where to reach it once
GET /ping answers. Ctrl-C stops the agent and everything it started.

It also serves the web console (and Berth's whole API) on a second local
port: an in-process Berth to which the runtime is deployed as berth deploy
would, again on every change (ending the sessions of the older version, so
that the next call runs the new code). Its sessions run as plain processes
too, without isolation or limits; its data is in agentcore/.cli/dev-berth.
--no-console leaves it out.

Python agents run with .venv/bin/python if the code location has one, else
the host's python; JavaScript with node; Go projects are built with go build
and rebuilt on every change.

--detach runs it in the background with its output in agentcore/.cli/dev.log;
berth dev --stop stops it.`,
		Example: `  berth dev
  berth dev --port 9000 --console-port 9100
  berth dev --detach && curl -s localhost:8080/ping && berth dev --stop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.settings()
			if err != nil {
				return err
			}
			if o.port < 1 || o.port > 65535 {
				return usageError("--port %d is not a TCP port", o.port)
			}
			if o.noConsole && cmd.Flags().Changed("console-port") {
				return usageError("--console-port and --no-console do not go together")
			}
			p, err := findProject()
			if err != nil {
				return err
			}
			out := newOutput(cmd, s.Output.Value == "json")
			switch {
			case o.stop:
				return stopDetached(cmd.Context(), out, p)
			case o.detach:
				return startDetached(cmd.Context(), out, p, o, s)
			}
			spec, err := p.Runtime(o.runtime)
			if err != nil {
				return err
			}
			d := &devRunner{out: out, project: p, spec: spec, port: o.port, region: s.Region.Value, child: o.child, settings: s}
			if !o.noConsole {
				if d.consolePort, err = pickConsolePort(o.consolePort, o.port); err != nil {
					return err
				}
			}
			return d.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.runtime, "runtime", "r", "", "runtime name in agentcore.json (default: the project's only runtime)")
	cmd.RegisterFlagCompletionFunc("runtime", completeRuntimes)
	f.IntVarP(&o.port, "port", "p", 8080, "local port the agent listens on")
	f.IntVar(&o.consolePort, "console-port", 0, "local port of the web console and its Berth API (default: --port + 1 if free, else any free port)")
	f.BoolVar(&o.noConsole, "no-console", false, "do not serve the web console")
	f.BoolVarP(&o.detach, "detach", "d", false, "run in the background, output in "+devLogFile)
	f.BoolVar(&o.stop, "stop", false, "stop the agent a --detach run started")
	f.BoolVar(&o.child, "detached-child", false, "")
	f.MarkHidden("detached-child")
	cmd.MarkFlagsMutuallyExclusive("detach", "stop")
	return cmd
}

// devRunner runs one runtime's agent locally and restarts it on changes.
type devRunner struct {
	out     *output
	project *Project
	spec    *RuntimeSpec
	port    int
	region  string
	child   bool
	hinted  bool // the curl example was shown

	// settings are the client's, for the console's deployments.
	settings Settings
	// consolePort is where the console is served; 0 for none.
	consolePort int
	// consoleURL is the console's, once it is served; consoleShown says
	// it was printed.
	consoleURL   string
	consoleShown bool
}

func (d *devRunner) logf(format string, args ...any) {
	fmt.Fprintf(d.out.errw, "berth dev: "+format+"\n", args...)
}

func (d *devRunner) url() string { return fmt.Sprintf("http://127.0.0.1:%d", d.port) }

func (d *devRunner) run(ctx context.Context) error {
	dir := d.project.CodeDir(d.spec)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fail(ExitUsage, "Fix codeLocation in agentcore/agentcore.json.", "code location %s is not a directory", d.spec.CodeLocation)
	}
	if d.child {
		defer removePIDFile(d.project, os.Getpid())
	}
	if err := checkPortFree(d.port); err != nil {
		return err
	}
	env, err := d.environment()
	if err != nil {
		return err
	}
	ignore, err := ignoreMatcher(dir)
	if err != nil {
		return err
	}
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	defer watcher.Close()
	if err := watchTree(watcher, dir, ignore); err != nil {
		return err
	}
	changes := make(chan string)
	go debounce(ctx, watcher, dir, ignore, changes)

	var console *devConsole
	if d.consolePort != 0 {
		local, err := d.localEnvironment()
		if err != nil {
			return err
		}
		if console, err = d.startConsole(ctx, d.consolePort, local); err != nil {
			return err
		}
		defer console.close()
		d.consoleURL = console.consoleURL()
	}

	reason := ""
	for {
		if reason != "" {
			d.logf("%s changed: restarting", reason)
			if console != nil {
				console.changed()
			}
		}
		agent, err := d.start(ctx, dir, env)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.logf("%v", err)
			d.logf("waiting for a change to %s", d.spec.CodeLocation)
			d.showConsole()
		}
		reason, err = d.supervise(ctx, agent, changes)
		if err != nil || reason == "" {
			return err
		}
	}
}

// supervise watches a started agent (nil if it failed to start) until the
// code changes, returning what changed, or until ctx is done, returning "".
func (d *devRunner) supervise(ctx context.Context, agent *devProcess, changes <-chan string) (string, error) {
	var exited <-chan struct{}
	ready := make(chan error, 1)
	readyCtx, cancelReady := context.WithCancel(ctx)
	defer cancelReady()
	if agent != nil {
		exited = agent.done
		go func() { ready <- waitPing(readyCtx, d.url(), agent.done, devReadyTimeout) }()
	}
	for {
		select {
		case <-ctx.Done():
			if agent != nil && exited != nil {
				d.logf("stopping the agent")
			}
			if agent != nil {
				agent.stop()
			}
			return "", nil
		case path := <-changes:
			if agent != nil {
				agent.stop()
			}
			return path, nil
		case err := <-ready:
			if errors.Is(err, errExited) {
				continue // reported below
			}
			if err != nil {
				d.logf("%v", err)
				continue
			}
			d.logf("%s ready at %s/invocations (GET /ping answers; Ctrl-C stops it)", d.spec.Name, d.url())
			d.showConsole()
			if !d.child && !d.hinted {
				d.logf(`try:  curl -s %s/invocations -d '{"prompt": "Hello"}'`, d.url())
				d.hinted = true
			}
		case <-exited:
			exited = nil
			d.logf("the agent exited (%v): waiting for a change to %s", agent.err, d.spec.CodeLocation)
			d.showConsole()
		}
	}
}

// showConsole says where the console is, the first time it is called.
func (d *devRunner) showConsole() {
	if d.consoleURL == "" || d.consoleShown {
		return
	}
	d.logf("Console: %s  (the agent deployed to a local Berth, whose sessions run as plain processes)", d.consoleURL)
	d.consoleShown = true
}

// start starts the agent, building it first if it is Go.
func (d *devRunner) start(ctx context.Context, dir string, env []string) (*devProcess, error) {
	entry, _, _ := strings.Cut(d.spec.Entrypoint, ":")
	var argv []string
	_, err := os.Stat(filepath.Join(dir, "go.mod"))
	switch {
	case d.spec.Build == "Container" && err == nil:
		goTool, err := exec.LookPath("go")
		if err != nil {
			return nil, errors.New("running a Go agent needs the Go toolchain (go) on PATH")
		}
		bin := filepath.Join(d.project.Dir, devBinDir, d.spec.Name)
		if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
			return nil, err
		}
		d.logf("building %s", d.spec.CodeLocation)
		build := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".")
		build.Dir = dir
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build failed: %v\n%s", err, bytes.TrimSpace(out))
		}
		argv = []string{bin}
	case strings.HasSuffix(entry, ".py"):
		argv = []string{pythonFor(ctx, dir, d.spec.RuntimeVersion), entry}
	case strings.HasSuffix(entry, ".ts"):
		if tsx := filepath.Join(dir, "node_modules", ".bin", "tsx"); fileExists(tsx) {
			argv = []string{tsx, entry}
		} else {
			argv = []string{"node", "--experimental-strip-types", entry}
		}
	default:
		argv = []string{"node", entry}
	}
	d.logf("starting %s on port %d", strings.Join(argv, " "), d.port)
	return startProcess(argv, dir, env, d.out.w, d.out.errw)
}

// environment is the agent's environment: this process's, then the
// contract's, the runtime's envVars and the local additions.
func (d *devRunner) environment() ([]string, error) {
	env := append(os.Environ(),
		"PORT="+strconv.Itoa(d.port), "DOCKER_CONTAINER=1",
		"AWS_REGION="+d.region, "AWS_DEFAULT_REGION="+d.region,
		"PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1")
	for _, e := range d.spec.EnvVars {
		env = append(env, e.Name+"="+e.Value)
	}
	local, err := d.localEnvironment()
	if err != nil {
		return nil, err
	}
	return append(env, local...), nil
}

// localEnvironment is what a local run adds to the deployed environment,
// for the agent berth dev runs and the console's sessions alike:
// LOCAL_DEV=1 and agentcore/.env.local.
func (d *devRunner) localEnvironment() ([]string, error) {
	local, err := readEnvFile(filepath.Join(d.project.Dir, envLocalFile))
	if err != nil {
		return nil, err
	}
	return append([]string{"LOCAL_DEV=1"}, local...), nil
}

// readEnvFile reads NAME=value lines; a missing file is empty.
func readEnvFile(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var env []string
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		name, value, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || !envVarNameRE.MatchString(name) {
			return nil, fail(ExitUsage, "", "%s line %d: want NAME=value, got %q", path, i+1, line)
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		env = append(env, name+"="+value)
	}
	return env, nil
}

// pythonFor picks the interpreter: the code location's .venv, the exact
// version the runtime names, or python3. A candidate must run: version
// managers put shims on PATH for versions that are not installed.
func pythonFor(ctx context.Context, dir, runtimeVersion string) string {
	if venv := filepath.Join(dir, ".venv", "bin", "python"); fileExists(venv) {
		return venv
	}
	if v, ok := strings.CutPrefix(runtimeVersion, "PYTHON_"); ok {
		if p, err := exec.LookPath("python" + strings.ReplaceAll(v, "_", ".")); err == nil && runs(ctx, p, "-c", "") {
			return p
		}
	}
	return "python3"
}

// runs says whether argv runs and exits 0 within 5 s. A shim is a script
// with children of its own, so argv runs in its own process group, and the
// whole group is gone when runs returns, even if ctx ended it early.
func runs(ctx context.Context, argv ...string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return false
	}
	err := cmd.Wait()
	// The group outlives its leader while any member is left.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	wait, cancelWait := context.WithTimeout(context.Background(), devStopGrace)
	defer cancelWait()
	process.WaitGroupGone(wait, cmd.Process.Pid)
	return err == nil
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir()
}

func checkPortFree(port int) error {
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return fail(ExitError, "Stop what uses it (a detached agent: berth dev --stop) or choose another port with --port.",
			"port %d is in use", port)
	}
	return ln.Close()
}

// devProcess is a running agent, in a process group of its own so that
// stopping it stops everything it started.
type devProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProcess(argv []string, dir string, env []string, stdout, stderr io.Writer) (*devProcess, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, stdout, stderr
	// Its own group: the terminal's Ctrl-C reaches berth dev only, which
	// then stops the whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &devProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if p.err == nil {
			p.err = errors.New("exit status 0")
		}
		// Whatever the agent left running goes with it, and is gone
		// before anyone is told the agent stopped.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		ctx, cancel := context.WithTimeout(context.Background(), devStopGrace)
		process.WaitGroupGone(ctx, cmd.Process.Pid)
		cancel()
		close(p.done)
	}()
	return p, nil
}

// stop ends the agent's process group: SIGTERM, then SIGKILL after a grace
// period.
func (p *devProcess) stop() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(devStopGrace):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// errExited is waitPing's error when the agent exits before it answers.
var errExited = errors.New("the agent exited before answering GET /ping")

// waitPing polls url/ping until it answers 200, the agent exits or the
// timeout passes.
func waitPing(ctx context.Context, url string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/ping", nil)
		if err != nil {
			return err
		}
		req.Close = true // no idle connection left for the agent to see reset
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errExited
		case <-deadline.C:
			return fmt.Errorf("the agent did not answer GET %s/ping within %s: does it listen on $PORT?", url, timeout)
		case <-tick.C:
		}
	}
}

// watchTree watches dir and every directory under it that is not ignored.
func watchTree(w *fsnotify.Watcher, dir string, ignore gitignore.Matcher) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if path != dir {
			rel, _ := filepath.Rel(dir, path)
			if ignore.Match(strings.Split(filepath.ToSlash(rel), "/"), true) {
				return filepath.SkipDir
			}
		}
		if err := w.Add(path); err != nil {
			return fmt.Errorf("watch %s: %w", path, err)
		}
		return nil
	})
}

// debounce sends on changes a changed path of each burst of file events,
// once no event has come for devDebounce: one that still exists if there is
// one, so that an editor's temporary files are not what is reported. It
// returns when ctx is done or the watcher is closed.
func debounce(ctx context.Context, w *fsnotify.Watcher, dir string, ignore gitignore.Matcher, changes chan<- string) {
	var changed []string
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			rel, err := filepath.Rel(dir, ev.Name)
			if err != nil || ev.Op == fsnotify.Chmod {
				continue
			}
			isDir := false
			if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
				isDir = true
				if ev.Has(fsnotify.Create) {
					watchTree(w, ev.Name, ignore)
				}
			}
			if ignore.Match(strings.Split(filepath.ToSlash(rel), "/"), isDir) {
				continue
			}
			changed = append(changed, ev.Name)
			timer.Reset(devDebounce)
		case <-w.Errors:
		case <-timer.C:
			report := changed[0]
			for _, p := range changed {
				if _, err := os.Stat(p); err == nil {
					report = p
					break
				}
			}
			rel, _ := filepath.Rel(dir, report)
			select {
			case changes <- filepath.ToSlash(rel):
			case <-ctx.Done():
				return
			}
			changed = nil
		}
	}
}

// startDetached runs berth dev in the background, its output in the log
// file, and returns once the agent answers.
func startDetached(ctx context.Context, out *output, p *Project, o devOptions, s Settings) error {
	if pid, alive := detachedPID(p); alive {
		return fail(ExitError, "Stop it with:  berth dev --stop", "berth dev is already running in the background (pid %d)", pid)
	}
	if err := checkPortFree(o.port); err != nil {
		return err
	}
	consolePort := 0
	if !o.noConsole {
		var err error
		if consolePort, err = pickConsolePort(o.consolePort, o.port); err != nil {
			return err
		}
		if !loopbackPortFree(consolePort) {
			return fail(ExitError, "Choose another with --console-port, or run without the console: --no-console.",
				"console port %d is in use", consolePort)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(p.Dir, cliDir), 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(p.Dir, devLogFile)
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("create log: %w", err)
	}
	defer logf.Close()
	args := []string{"dev", "--detached-child", "--port", strconv.Itoa(o.port), "--region", s.Region.Value}
	if o.runtime != "" {
		args = append(args, "--runtime", o.runtime)
	}
	if consolePort != 0 {
		args = append(args, "--console-port", strconv.Itoa(consolePort))
	} else {
		args = append(args, "--no-console")
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = p.Dir, logf, logf
	// A session of its own: closing the terminal does not end it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start berth dev in the background: %w", err)
	}
	pidPath := filepath.Join(p.Dir, devPIDFile)
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		cmd.Process.Signal(syscall.SIGTERM)
		return fmt.Errorf("write pid file: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	url := fmt.Sprintf("http://127.0.0.1:%d", o.port)
	if err := waitPing(ctx, url, exited, devReadyTimeout+2*time.Minute); err != nil {
		if errors.Is(err, context.Canceled) {
			cmd.Process.Signal(syscall.SIGTERM)
			return err
		}
		tail, _ := os.ReadFile(logPath)
		return fail(ExitAgentFailed, "Its log ("+logPath+"):\n"+lastLines(string(tail), 20), "the agent did not start: %v", err)
	}
	consoleURL := ""
	if consolePort != 0 {
		base := fmt.Sprintf("http://127.0.0.1:%d", consolePort)
		if err := waitConsole(ctx, s, base, exited, 30*time.Second); err != nil {
			tail, _ := os.ReadFile(logPath)
			return fail(ExitError, "Its log ("+logPath+"):\n"+lastLines(string(tail), 20)+"\nStop it with:  berth dev --stop", "%v", err)
		}
		consoleURL = base + "/console/"
	}
	if out.json {
		res := map[string]any{"url": url + "/invocations", "pid": cmd.Process.Pid, "log": logPath, "pidFile": pidPath}
		if consoleURL != "" {
			res["console"] = consoleURL
		}
		return out.printJSON(res)
	}
	out.printf("Agent running in the background: %s/invocations\n", url)
	if consoleURL != "" {
		out.printf("  Console: %s\n", consoleURL)
	}
	out.printf("  log:  %s\n  pid:  %d (%s)\n  stop: berth dev --stop\n", logPath, cmd.Process.Pid, pidPath)
	return nil
}

// stopDetached stops the berth dev that --detach started.
func stopDetached(ctx context.Context, out *output, p *Project) error {
	pid, alive := detachedPID(p)
	if pid == 0 {
		return fail(ExitNotFound, "", "no berth dev is running in the background (no %s)", devPIDFile)
	}
	if !alive {
		os.Remove(filepath.Join(p.Dir, devPIDFile))
		out.printf("berth dev (pid %d) was not running; removed its pid file\n", pid)
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop berth dev (pid %d): %w", pid, err)
	}
	deadline := time.Now().Add(devStopGrace + 10*time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(-pid, syscall.SIGKILL)
			return fail(ExitError, "", "berth dev (pid %d) did not stop within %s; killed it", pid, devStopGrace+10*time.Second)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	os.Remove(filepath.Join(p.Dir, devPIDFile))
	if out.json {
		return out.printJSON(map[string]any{"pid": pid, "state": "stopped"})
	}
	out.printf("stopped berth dev (pid %d) and its agent\n", pid)
	return nil
}

// detachedPID reads the pid file and reports whether that process is a
// berth dev still running (and not another process that got the pid).
func detachedPID(p *Project) (int, bool) {
	data, err := os.ReadFile(filepath.Join(p.Dir, devPIDFile))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("--detached-child")) {
		return pid, false
	}
	return pid, processAlive(pid)
}

// processAlive reports whether pid is a live process (not a zombie).
func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	if i := bytes.LastIndexByte(data, ')'); i >= 0 && i+2 < len(data) {
		return data[i+2] != 'Z'
	}
	return true
}

// removePIDFile removes the pid file if it names pid.
func removePIDFile(p *Project, pid int) {
	path := filepath.Join(p.Dir, devPIDFile)
	if data, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(data)) == strconv.Itoa(pid) {
		os.Remove(path)
	}
}

// lastLines returns the last n lines of s, indented.
func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, "  "+sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
