package process

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/sandboxtest"
)

func config() sandboxtest.Config {
	return sandboxtest.Config{
		NewDriver: func(tb testing.TB, state string) sandbox.Driver {
			d, err := New(Options{StateDir: state})
			if err != nil {
				tb.Fatal(err)
			}
			return d
		},
		StatePaths: func(state, id string) []string {
			return []string{filepath.Join(state, id+".json")}
		},
		NoIsolation: true,
	}
}

// TestConformance runs what the sandbox conformance suite checks of a
// driver that isolates nothing.
func TestConformance(t *testing.T) {
	sandboxtest.Run(t, config())
}

func BenchmarkColdStart(b *testing.B) { sandboxtest.BenchmarkColdStart(b, config()) }

func BenchmarkDial(b *testing.B) { sandboxtest.BenchmarkDial(b, config()) }

func TestHostPath(t *testing.T) {
	for _, tt := range []struct {
		arg, workDir, codeDir, want string
	}{
		{"/app/agent", "/app", "/code", "/code/agent"},
		{"/app/sub/main.py", "/app/", "/code", "/code/sub/main.py"},
		{"/app", "/app", "/code", "/code"},
		{"/application/x", "/app", "/code", "/application/x"},
		{"main.py", "/app", "/code", "main.py"},
		{"/usr/bin/python3", "/app", "/code", "/usr/bin/python3"},
		{"/app/agent", "", "/code", "/app/agent"},
		{"/app/agent", "/app", "", "/app/agent"},
		{"/usr/bin/x", "/", "/code", "/usr/bin/x"},
	} {
		if got := hostPath(tt.arg, tt.workDir, tt.codeDir); got != tt.want {
			t.Errorf("hostPath(%q, %q, %q) = %q, want %q", tt.arg, tt.workDir, tt.codeDir, got, tt.want)
		}
	}
}

func TestCommand(t *testing.T) {
	code := t.TempDir()
	bin := t.TempDir()
	for name, mode := range map[string]os.FileMode{"agent": 0o755, "data.txt": 0o644} {
		if err := os.WriteFile(filepath.Join(code, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := "PATH=" + bin
	for _, tt := range []struct {
		name     string
		args     []string
		env      []string
		wantProg string
		wantArgs []string
		bad      string
	}{
		{name: "under WorkDir", args: []string{"/app/agent", "/app/data.txt", "x"},
			wantProg: code + "/agent", wantArgs: []string{code + "/agent", code + "/data.txt", "x"}},
		{name: "relative to CodeDir", args: []string{"./agent"}, wantProg: code + "/agent", wantArgs: []string{"./agent"}},
		{name: "on the agent's PATH", args: []string{"tool", "/app/main.py"}, env: []string{"PATH=/nowhere", path},
			wantProg: bin + "/tool", wantArgs: []string{"tool", code + "/main.py"}},
		{name: "not on the agent's PATH", args: []string{"tool"}, env: []string{"PATH=/nowhere"}, bad: "not found in PATH /nowhere"},
		{name: "missing", args: []string{"/app/missing"}, bad: "no such file"},
		{name: "not executable", args: []string{"/app/data.txt"}, bad: "not an executable file"},
		{name: "a directory", args: []string{"/app"}, bad: "not an executable file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prog, args, err := command(sandbox.Spec{Args: tt.args, Env: tt.env, CodeDir: code, WorkDir: "/app"})
			if tt.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tt.bad) {
					t.Fatalf("command = %q, %q, %v; want an error saying %q", prog, args, err, tt.bad)
				}
				return
			}
			if err != nil || prog != tt.wantProg || !slices.Equal(args, tt.wantArgs) {
				t.Errorf("command = %q, %q, %v; want %q, %q", prog, args, err, tt.wantProg, tt.wantArgs)
			}
		})
	}
}

func TestEnvironment(t *testing.T) {
	d, err := New(Options{Env: []string{"SECRET=local", "PORT=1"}})
	if err != nil {
		t.Fatal(err)
	}
	got := d.environment([]string{"PATH=/bin", "PORT=8080", "SECRET=deployed"}, 4321)
	want := []string{"PATH=/bin", "SECRET=deployed", "SECRET=local", "PORT=4321"}
	if !slices.Equal(got, want) {
		t.Errorf("environment = %q, want %q", got, want)
	}
}

// start starts a shell script as an agent and stops it when the test ends.
func start(t *testing.T, d *Driver, id, script string) sandbox.Sandbox {
	t.Helper()
	sb, err := d.Start(t.Context(), sandbox.Spec{ID: id, Args: []string{"/bin/sh", "-c", script},
		Env: []string{"PATH=/usr/bin:/bin"}, CodeDir: t.TempDir(), WorkDir: "/app"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Stop(context.Background()) })
	return sb
}

func waitDone(t *testing.T, sb sandbox.Sandbox) error {
	t.Helper()
	select {
	case <-sb.Done():
		return sb.Err()
	case <-time.After(20 * time.Second):
		t.Fatalf("sandbox %s did not end", sb.ID())
		return nil
	}
}

// alive reports whether pid runs (and is not a zombie).
func alive(pid int) bool {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	st, err := p.Stat()
	return err == nil && st.State != "Z"
}

// readPID waits for a script to write a pid to file.
func readPID(t *testing.T, file string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(file)
		if pid, err2 := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && err2 == nil {
			return pid
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no pid in %s", file)
	return 0
}

// TestChildrenEndWithAgent: what the agent started is killed when the agent
// exits on its own, and the exit status is reported.
func TestChildrenEndWithAgent(t *testing.T) {
	d, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(t.TempDir(), "child")
	sb := start(t, d, "children", "sleep 1000 & echo $! > "+pidFile+"; exit 3")
	child := readPID(t, pidFile)
	reason := waitDone(t, sb)
	if reason == nil || !strings.Contains(reason.Error(), "status 3") {
		t.Errorf("Err = %v, want exit status 3", reason)
	}
	if alive(child) {
		syscall.Kill(child, syscall.SIGKILL)
		t.Errorf("the agent's child %d outlived it", child)
	}
}

// TestPortEnv: each agent gets a port of its own in PORT, overriding the
// spec's, and DialContext reaches it whatever address is asked for.
func TestPortEnv(t *testing.T) {
	d, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3 for a listening agent")
	}
	var ports []string
	for _, id := range []string{"p1", "p2"} {
		sb, err := d.Start(t.Context(), sandbox.Spec{ID: id, Env: []string{"PATH=/usr/bin:/bin", "PORT=8080"}, CodeDir: t.TempDir(), WorkDir: "/app",
			Args: []string{"python3", "-c", `import os, socket
s = socket.socket(); s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen()
while True:
    c, _ = s.accept(); c.sendall(os.environ["PORT"].encode()); c.close()`}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sb.Stop(context.Background()) })
		var got []byte
		deadline := time.Now().Add(10 * time.Second)
		for len(got) == 0 && time.Now().Before(deadline) {
			if c, err := sb.DialContext(t.Context(), "tcp", "127.0.0.1:8080"); err == nil {
				buf := make([]byte, 16)
				n, _ := c.Read(buf)
				got = buf[:n]
				c.Close()
			} else {
				time.Sleep(10 * time.Millisecond)
			}
		}
		if p, err := strconv.Atoi(string(got)); err != nil || p == 8080 {
			t.Fatalf("agent %s answered PORT=%q, want a port the driver picked", id, got)
		}
		ports = append(ports, string(got))
	}
	if ports[0] == ports[1] {
		t.Errorf("both agents got port %s", ports[0])
	}
}

// TestCleanupSparesReusedPID: a record whose pid now names a process that
// started at another time is removed without killing that process.
func TestCleanupSparesReusedPID(t *testing.T) {
	state := t.TempDir()
	other := exec.Command("sleep", "1000")
	other.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	data, _ := json.Marshal(record{PID: other.Process.Pid, StartTime: 1})
	if err := os.WriteFile(filepath.Join(state, "old.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "torn.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !alive(other.Process.Pid) {
		t.Errorf("Cleanup killed process %d, which reused a recorded pid", other.Process.Pid)
	}
	if left, _ := os.ReadDir(state); len(left) != 0 {
		t.Errorf("records left after Cleanup: %v", left)
	}
}

// TestNoCodeDir: without a CodeDir the agent runs in a temporary directory
// of its own, removed when it ends.
func TestNoCodeDir(t *testing.T) {
	d, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "cwd")
	sb, err := d.Start(t.Context(), sandbox.Spec{ID: "nocode", Args: []string{"/bin/sh", "-c", "pwd > " + out}, WorkDir: "/app"})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, sb)
	cwd, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	dir := strings.TrimSpace(string(cwd))
	if !strings.Contains(dir, "berth-process-nocode-") {
		t.Errorf("the agent ran in %s", dir)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("its directory %s is left", dir)
	}
}

// TestRefusesImages checks that the driver, which runs agents on the host,
// refuses a container image's sandbox and says what can run it.
func TestRefusesImages(t *testing.T) {
	d, err := New(Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Start(t.Context(), sandbox.Spec{ID: "image", Args: []string{"/agent"}, WorkDir: "/", RootLayers: []string{t.TempDir()}})
	if err == nil || !strings.Contains(err.Error(), "cannot run container images") || !strings.Contains(err.Error(), "runc") {
		t.Errorf("Start of an image: %v, want a refusal naming the runc driver", err)
	}
}
