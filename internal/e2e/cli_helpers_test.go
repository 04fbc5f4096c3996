package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cli runs the real berth binary as a client, with an environment of its
// own: no configuration file, no endpoint variables but BERTH_ENDPOINT.
type cli struct {
	t   *testing.T
	bin string
	env []string
}

// newCLI returns a client of the server at url ("" for none).
func newCLI(t *testing.T, url string) *cli {
	t.Helper()
	bin, _ := binaries(t)
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "BERTH_") || strings.HasPrefix(name, "AWS_") || name == "XDG_CONFIG_HOME" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "XDG_CONFIG_HOME="+t.TempDir(), "NO_COLOR=1")
	if url != "" {
		env = append(env, "BERTH_ENDPOINT="+url)
	}
	return &cli{t: t, bin: bin, env: env}
}

// with returns c reporting to t, for use in a subtest.
func (c *cli) with(t *testing.T) *cli {
	cp := *c
	cp.t = t
	return &cp
}

// cli returns a client of b.
func (b *berth) cli() *cli { return newCLI(b.t, "http://"+b.addr) }

// cliResult is what one run of the client printed and its exit code.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return "berth " + strings.Join(r.args, " ") + "\nexit " + strconv.Itoa(r.code) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

// run runs the client in dir with stdin empty.
func (c *cli) run(dir string, args ...string) cliResult {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Dir, cmd.Env = dir, c.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		c.t.Fatalf("berth %s did not finish within 2 minutes\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), out.String(), errb.String())
	}
	r := cliResult{args: args, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		c.t.Fatal(err)
	}
	return r
}

// ok runs the client and fails the test unless it exits 0.
func (c *cli) ok(dir string, args ...string) cliResult {
	c.t.Helper()
	r := c.run(dir, args...)
	if r.code != 0 {
		c.t.Fatalf("%s", r)
	}
	return r
}

// fails runs the client and fails the test unless it exits with code and
// says each of want on stderr.
func (c *cli) fails(dir string, code int, want []string, args ...string) cliResult {
	c.t.Helper()
	r := c.run(dir, args...)
	if r.code != code {
		c.t.Errorf("exit %d, want %d:\n%s", r.code, code, r)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			c.t.Errorf("stderr lacks %q:\n%s", w, r)
		}
	}
	return r
}

var sessionLine = regexp.MustCompile(`session: (\S+)  \(reuse with --session-id\)`)

// sessionOf returns the session id berth invoke printed.
func sessionOf(t *testing.T, r cliResult) string {
	t.Helper()
	m := sessionLine.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no session line:\n%s", r)
	}
	return m[1]
}

// deployedState reads a project's agentcore/.cli/deployed-state.json.
type deployedStateFile struct {
	Targets map[string]struct {
		Resources struct {
			Runtimes map[string]struct {
				RuntimeID      string `json:"runtimeId"`
				RuntimeArn     string `json:"runtimeArn"`
				RuntimeVersion int    `json:"runtimeVersion"`
				CodeBucket     string `json:"codeBucket"`
				CodeKey        string `json:"codeKey"`
				CodeVersionID  string `json:"codeVersionId"`
				ImageName      string `json:"imageName"`
			} `json:"runtimes"`
			RuntimeEndpoints map[string]struct {
				EndpointArn string `json:"endpointArn"`
			} `json:"runtimeEndpoints"`
		} `json:"resources"`
	} `json:"targets"`
}

func readDeployedState(t *testing.T, project string) deployedStateFile {
	t.Helper()
	var st deployedStateFile
	data, err := os.ReadFile(filepath.Join(project, "agentcore", ".cli", "deployed-state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("deployed-state.json: %v\n%s", err, data)
	}
	return st
}

// editFile replaces old with new in a file, which must hold old.
func editFile(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("%s does not hold %q", path, old)
	}
	if err := os.WriteFile(path, bytes.ReplaceAll(data, []byte(old), []byte(new)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// editJSON decodes a JSON file, lets edit change it and writes it back.
func editJSON(t *testing.T, path string, edit func(map[string]any)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	edit(v)
	data, _ = json.MarshalIndent(v, "", "  ")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
