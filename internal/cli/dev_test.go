package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadEnvFile(t *testing.T) {
	for _, c := range []struct {
		name, content string
		want          []string
		bad           bool
	}{
		{name: "comments and blanks", content: "# secrets\n\nA=1\n", want: []string{"A=1"}},
		{name: "export and quotes", content: "export B=\"two words\"\nC='x=y'\nD=\n", want: []string{"B=two words", "C=x=y", "D="}},
		{name: "spaces around", content: "  E = 5  \n", want: []string{"E=5"}},
		{name: "no equals", content: "JUSTANAME\n", bad: true},
		{name: "bad name", content: "1X=1\n", bad: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), ".env.local")
			os.WriteFile(path, []byte(c.content), 0o600)
			got, err := readEnvFile(path)
			if c.bad {
				if ExitCode(err) != ExitUsage {
					t.Fatalf("readEnvFile = %q, %v; want a usage error", got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Errorf("readEnvFile = %q, %v; want %q", got, err, c.want)
			}
		})
	}
	if got, err := readEnvFile(filepath.Join(t.TempDir(), "missing")); err != nil || got != nil {
		t.Errorf("a missing file = %q, %v; want nothing", got, err)
	}
}

func TestDevEnvironment(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{envLocalFile: "API_KEY=secret\nGREETING=local\n"})
	d := &devRunner{project: &Project{Dir: root}, spec: &RuntimeSpec{EnvVars: []EnvVar{{"GREETING", "deployed"}, {"MODE", "x"}}},
		port: 9123, region: "eu-west-1"}
	env, err := d.environment()
	if err != nil {
		t.Fatal(err)
	}
	// Later entries win, as exec.Cmd applies them.
	last := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		last[k] = v
	}
	for k, want := range map[string]string{"PORT": "9123", "DOCKER_CONTAINER": "1", "LOCAL_DEV": "1", "AWS_REGION": "eu-west-1",
		"MODE": "x", "GREETING": "local", "API_KEY": "secret"} {
		if last[k] != want {
			t.Errorf("%s = %q, want %q", k, last[k], want)
		}
	}
}

// TestPythonForShim checks the interpreter probe against a version
// manager's shim, a script with children of its own: whether the probe
// succeeds, fails or is cut short by the caller, the shim's children are
// gone when pythonFor returns.
func TestPythonForShim(t *testing.T) {
	for _, c := range []struct {
		name   string
		script string // after starting a child that records its pid
		cancel bool
		exact  bool // pythonFor picks the shim
	}{
		{name: "works", script: "exit 0", exact: true},
		{name: "not installed", script: "exit 127"},
		{name: "cut short", script: "sleep 60", cancel: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			bin := t.TempDir()
			pidFile := filepath.Join(bin, "child")
			shim := "#!/bin/sh\nsleep 60 &\necho $! >" + pidFile + ".tmp && mv " + pidFile + ".tmp " + pidFile + "\n" + c.script + "\n"
			if err := os.WriteFile(filepath.Join(bin, "python3.99"), []byte(shim), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PATH", bin+":"+os.Getenv("PATH"))

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.cancel {
				go func() {
					for !fileExists(pidFile) {
						time.Sleep(5 * time.Millisecond)
					}
					cancel()
				}()
			}
			got := pythonFor(ctx, t.TempDir(), "PYTHON_3_99")
			if want := map[bool]string{true: filepath.Join(bin, "python3.99"), false: "python3"}[c.exact]; got != want {
				t.Errorf("pythonFor = %q, want %q", got, want)
			}
			b, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatalf("the shim did not run: %v", err)
			}
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(st), ") Z ") {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Errorf("the shim's child %d outlives the probe", pid)
			}
		})
	}
}
