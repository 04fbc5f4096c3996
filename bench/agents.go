package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
)

// agentDef is an agent to measure: its code and how it starts.
type agentDef struct {
	name    string
	dir     string   // code bundle contents
	runtime string   // AgentCore runtime
	entry   []string // AgentCore entry point
	args    []string // command line inside a sandbox started by hand
}

// agents builds the Go example agent into dir and returns it and the Python
// example agent.
func agents(ctx context.Context, dir string) (goAgent, pyAgent agentDef, err error) {
	mod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return agentDef{}, agentDef{}, fmt.Errorf("find the module: go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(mod)))
	if root == "." || root == "/dev" { // outside any module: GOMOD is "" or /dev/null
		return agentDef{}, agentDef{}, errors.New("run bench inside the berth module (e.g. go run ./bench from the repository)")
	}
	goDir := filepath.Join(dir, "goagent")
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(goDir, "agent"), "./testdata/agents/goagent")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return agentDef{}, agentDef{}, fmt.Errorf("build the Go agent: %w\n%s", err, out)
	}
	// Sandboxes see the host's /usr only, so the floor needs a python3
	// there (a pyenv shim in PATH would not do).
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		return agentDef{}, agentDef{}, fmt.Errorf("the Python agent needs %s: apt-get install python3", python)
	}
	goAgent = agentDef{name: "go", dir: goDir, runtime: "PYTHON_3_11", entry: []string{"agent"}, args: []string{"/app/agent"}}
	pyAgent = agentDef{name: "python", dir: filepath.Join(root, "testdata", "agents", "python"), runtime: "PYTHON_3_11",
		entry: []string{"main.py"}, args: []string{python, "main.py"}}
	return goAgent, pyAgent, nil
}

// floorEnv is the environment of an agent started by hand: what Berth gives
// its agents, less the runtime's own variables.
var floorEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "PORT=8080", "DOCKER_CONTAINER=1",
	"AWS_REGION=us-east-1", "PYTHONUNBUFFERED=1"}

// startByHand starts the agent in a sandbox with the driver alone, in
// network mode mode, and returns a transport to it once its /ping answers
// 200.
func startByHand(ctx context.Context, d sandbox.Driver, a agentDef, mode string) (sandbox.Sandbox, *http.Transport, error) {
	// The agent's output is kept only to say why it failed.
	out, err := os.CreateTemp("", "berth-bench-agent-*.log")
	if err != nil {
		return nil, nil, err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	sb, err := d.Start(ctx, sandbox.Spec{ID: "floor-" + rand.Text()[:12], Args: a.args, Env: floorEnv, CodeDir: a.dir,
		WorkDir: "/app", Stdout: out, Stderr: out, Network: sandbox.Network{Mode: sandbox.NetworkMode(mode)}})
	if err != nil {
		return nil, nil, fmt.Errorf("start %s agent by hand: %w", a.name, err)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return sb.DialContext(ctx, "tcp", "127.0.0.1:8080")
	}}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/ping", nil)
		if err != nil {
			return nil, nil, err
		}
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return sb, tr, nil
			}
		}
		// Poll every millisecond: the floor is the best a caller could do.
		select {
		case <-sb.Done():
			sb.Stop(context.WithoutCancel(ctx)) // also ends copying its output
			tail, _ := os.ReadFile(out.Name())
			return nil, nil, fmt.Errorf("%s agent started by hand exited: %w; its output ends: %q", a.name, sb.Err(), tail[max(len(tail)-1000, 0):])
		case <-ctx.Done():
			sb.Stop(context.WithoutCancel(ctx))
			return nil, nil, fmt.Errorf("%s agent started by hand did not answer /ping: %w", a.name, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// directInvoke makes the warm call through tr and returns the time to the
// first byte of the answer.
func directInvoke(ctx context.Context, tr http.RoundTripper) (time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/invocations", strings.NewReader(echoBody))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var first [1]byte
	if _, err := io.ReadFull(resp.Body, first[:]); err != nil {
		return 0, err
	}
	d := time.Since(start)
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("direct invoke: %s", resp.Status)
	}
	return d, nil
}

// floorStart measures the agent started by hand in a sandbox of d: from the
// start until the first byte of its first answer (total), and that first
// call alone, made once /ping has answered (first).
func floorStart(ctx context.Context, d sandbox.Driver, a agentDef, mode string) (total, first time.Duration, err error) {
	start := time.Now()
	sb, tr, err := startByHand(ctx, d, a, mode)
	if err != nil {
		return 0, 0, err
	}
	defer sb.Stop(context.WithoutCancel(ctx))
	defer tr.CloseIdleConnections()
	// The call reuses the connection /ping answered on, as Berth may.
	first, err = directInvoke(ctx, tr)
	if err != nil {
		return 0, 0, fmt.Errorf("first call to the %s agent started by hand: %w", a.name, err)
	}
	return time.Since(start), first, nil
}
