package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox/process"
	"github.com/berthrun/berth/internal/server"
)

// The Berth that berth dev runs in-process for the console.
const (
	// devBerthDir holds its data, relative to the project root.
	devBerthDir = "agentcore/.cli/dev-berth"
	// devTarget is the deployed-state target its runtimes are recorded
	// under, apart from the real servers' ones.
	devTarget = "berth-dev"
)

// devConsole is a Berth server run inside berth dev: the console and the
// whole API on a loopback port, with the runtime deployed to it (again on
// every change) and its sessions run as plain processes by the process
// sandbox driver. It is what `berth server` is, minus the isolation.
type devConsole struct {
	d      *devRunner
	url    string
	client *remote // of the in-process server, to deploy with
	lock   *os.File

	cancel   context.CancelFunc
	served   chan struct{} // closed when Serve and the deploy loop have returned
	redeploy chan struct{} // asks for a deploy; holds at most one request
}

// startConsole starts the in-process Berth on 127.0.0.1:port and deploys
// the runtime to it in the background. env is added to every session's
// environment. close stops it all.
func (d *devRunner) startConsole(ctx context.Context, port int, env []string) (_ *devConsole, err error) {
	dataDir := filepath.Join(d.project.Dir, devBerthDir)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dataDir, err)
	}
	// The process driver's Cleanup kills every agent its state directory
	// records: another berth dev of this project must not be using it.
	lock, err := os.OpenFile(filepath.Join(dataDir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dataDir, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fail(ExitError, "Stop it (a detached one: berth dev --stop), or run this one with --no-console.",
			"another berth dev of this project serves the console (%s is locked)", dataDir)
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()

	// Server logs are for problems only: sessions' output is in the
	// console and berth logs, and the agent's own output is shown above.
	logger := slog.New(slog.NewTextHandler(d.out.errw, &slog.HandlerOptions{Level: slog.LevelWarn}))
	driver, err := process.New(process.Options{StateDir: filepath.Join(dataDir, "sandboxes"), Env: env, Logger: logger})
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	srv, err := server.New(ctx, server.Config{DataDir: dataDir, Addr: addr, Region: d.settings.Region.Value,
		Driver: driver, MinLifecycle: 60, Logger: logger})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fail(ExitError, "Choose another with --console-port, or run without the console: --no-console.",
			"console port %d is in use", port)
	}
	if err != nil {
		return nil, fmt.Errorf("start the console's Berth: %w", err)
	}

	url := "http://" + addr
	s := d.settings
	s.Server = Setting{Value: url, Source: "berth dev"}
	s.DataServer = s.Server
	c := &devConsole{d: d, url: url, lock: lock,
		// Deploying prints only what berth dev says about it.
		client:   &remote{Settings: s, clients: newClients(s), out: &output{w: io.Discard, errw: io.Discard}},
		served:   make(chan struct{}),
		redeploy: make(chan struct{}, 1),
	}
	ctx, c.cancel = context.WithCancel(ctx)
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		if err := srv.Serve(ctx); err != nil {
			d.logf("the console's Berth stopped: %v", err)
		}
	}()
	go func() {
		defer close(c.served)
		c.deployLoop(ctx)
		<-serveDone
	}()
	return c, nil
}

// consoleURL is where the console is.
func (c *devConsole) consoleURL() string { return c.url + "/console/" }

// changed asks for the runtime to be deployed again.
func (c *devConsole) changed() {
	select {
	case c.redeploy <- struct{}{}:
	default: // one is pending already
	}
}

// close stops the server, which ends its sessions, and waits for it.
func (c *devConsole) close() {
	c.cancel()
	<-c.served
	c.lock.Close()
}

// deployLoop deploys the runtime now and on every request, until ctx ends.
func (c *devConsole) deployLoop(ctx context.Context) {
	for first := true; ; first = false {
		c.deploy(ctx, first)
		select {
		case <-ctx.Done():
			return
		case <-c.redeploy:
		}
	}
}

// deploy deploys the runtime the way berth deploy does and, if that made a
// new version, ends the sessions of older ones so that the next call runs
// the new code. first says whether it is berth dev's first deploy.
func (c *devConsole) deploy(ctx context.Context, first bool) {
	d := c.d
	results, err := c.client.deployProject(ctx, d.project, deployOptions{
		runtimeFlags: runtimeFlags{name: d.spec.Name, target: devTarget}, wait: true, timeout: devReadyTimeout})
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		d.logf("console: deploying %s failed: %v", d.spec.Name, err)
		return
	}
	r := results[0]
	if first || r.Action != "unchanged" {
		d.logf("console: %s version %s deployed", r.AgentRuntimeName, r.Version)
	}
	if r.Action == "unchanged" {
		return
	}
	sessions, err := c.client.berth.Sessions(ctx, r.RuntimeID)
	if err != nil {
		d.logf("console: list sessions: %v", err)
		return
	}
	ended := 0
	for _, s := range sessions {
		if s.Version == r.Version {
			continue
		}
		if err := c.client.berth.StopSession(ctx, r.RuntimeID, s.SessionID); err != nil && !isNotFound(err) {
			d.logf("console: end session %s of version %s: %v", s.SessionID, s.Version, err)
			continue
		}
		ended++
	}
	if ended > 0 {
		d.logf("console: ended %d session(s) of older versions; the next call starts version %s", ended, r.Version)
	}
}

// pickConsolePort returns the console's port: the one asked for, else the
// agent's port + 1 if it is free, else any free one.
func pickConsolePort(asked, agentPort int) (int, error) {
	switch {
	case asked < 0 || asked > 65535:
		return 0, usageError("--console-port %d is not a TCP port", asked)
	case asked == agentPort:
		return 0, usageError("--console-port %d is the agent's port too", asked)
	case asked != 0:
		return asked, nil
	}
	if agentPort < 65535 && loopbackPortFree(agentPort+1) {
		return agentPort + 1, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a console port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// loopbackPortFree reports whether port can be listened on at 127.0.0.1.
func loopbackPortFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// waitConsole waits until the console's Berth at url answers, the process
// serving it exits or timeout passes. s gives the credentials to call it
// with.
func waitConsole(ctx context.Context, s Settings, url string, exited <-chan struct{}, timeout time.Duration) error {
	s.Server = Setting{Value: url}
	api := newClients(s).berth
	deadline := time.After(timeout)
	for {
		tryCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := api.Health(tryCtx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("berth dev exited before the console answered")
		case <-deadline:
			return fmt.Errorf("the console did not answer at %s within %s", url, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
