package sandboxtest

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
)

//go:embed testdata/agent/*.go
var agentSource embed.FS

// AgentPort is the port the test agent listens on, on every address, unless
// the driver sets PORT in its environment.
const AgentPort = 8080

// agentAddr is where the agent is dialled inside its sandbox (a driver that
// sets PORT dials that port instead).
const agentAddr = "127.0.0.1:8080"

// BuildAgent compiles the test agent, a static Go HTTP server, and returns a
// fresh directory that holds it as "agent" (and nothing else), to be used as
// a sandbox's CodeDir. It needs the go command, which `go test` puts in
// PATH.
func BuildAgent(tb testing.TB) string {
	tb.Helper()
	src := tb.TempDir()
	if err := writeAgentModule(src); err != nil {
		tb.Fatalf("build the test agent: %v", err)
	}
	// The sandbox's root may read the directory but need not own it.
	code := TempDir(tb)
	if err := os.Chmod(code, 0o755); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(code, "agent"), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build the test agent: %v\n%s", err, out)
	}
	return code
}

// writeAgentModule writes the test agent's source to dir as a module of its
// own. Its attacks use golang.org/x/sys, at the version (and checksums) of
// the module that runs the test, so that the build needs no download.
func writeAgentModule(dir string) error {
	cmd := exec.Command("go", "mod", "download", "-json", "golang.org/x/sys")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("find golang.org/x/sys: %w", err)
	}
	var sys struct{ Version, Sum, GoModSum string }
	if err := json.Unmarshal(out, &sys); err != nil {
		return fmt.Errorf("find golang.org/x/sys: %w", err)
	}
	goVersion, _, _ := strings.Cut(strings.TrimPrefix(runtime.Version(), "go"), " ")
	files := map[string]string{
		"go.mod": fmt.Sprintf("module sandboxtestagent\n\ngo %s\n\nrequire golang.org/x/sys %s\n", goVersion, sys.Version),
		"go.sum": fmt.Sprintf("golang.org/x/sys %s %s\ngolang.org/x/sys %s/go.mod %s\n", sys.Version, sys.Sum, sys.Version, sys.GoModSum),
	}
	sources, err := fs.Glob(agentSource, "testdata/agent/*.go")
	if err != nil {
		return err
	}
	for _, name := range sources {
		data, err := agentSource.ReadFile(name)
		if err != nil {
			return err
		}
		files[path.Base(name)] = string(data)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// agent is a test agent running in a sandbox.
type agent struct {
	sb     sandbox.Sandbox
	client *http.Client
	mark   string // the value of markEnv in its processes
}

// newAgent wraps sb in an HTTP client that reaches the agent through
// DialContext.
func newAgent(sb sandbox.Sandbox) *agent {
	return &agent{sb: sb, client: httpClient(sb.DialContext)}
}

// httpClient returns a client that dials with dial and keeps no idle
// connections, so no connection outlives a sandbox.
func httpClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true},
		Timeout:   20 * time.Second,
	}
}

// get requests path (with query parameters from kv pairs) and returns the
// status and body. A transport error fails the test.
func (a *agent) get(t testing.TB, path string, kv ...string) (int, string) {
	t.Helper()
	code, body, err := a.try(t, path, kv...)
	if err != nil {
		t.Fatalf("sandbox %s: GET %s: %v", a.sb.ID(), path, err)
	}
	return code, body
}

// try is get without failing the test.
func (a *agent) try(t testing.TB, path string, kv ...string) (int, string, error) {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u := "http://" + agentAddr + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	resp, err := a.client.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// ok requests path and fails the test unless the status is 200.
func (a *agent) ok(t testing.TB, path string, kv ...string) string {
	t.Helper()
	code, body := a.get(t, path, kv...)
	if code != http.StatusOK {
		t.Fatalf("sandbox %s: GET %s %v: status %d: %s", a.sb.ID(), path, kv, code, body)
	}
	return body
}

// fork asks the agent to start n processes.
func (a *agent) fork(t testing.TB, n int) (started int, errText string) {
	t.Helper()
	var res struct {
		Started int    `json:"started"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal([]byte(a.ok(t, "/fork", "n", fmt.Sprint(n))), &res); err != nil {
		t.Fatalf("sandbox %s: fork: %v", a.sb.ID(), err)
	}
	return res.Started, res.Error
}

// waitReady polls /ping until it answers 200, and fails the test if it does
// not within the timeout or the sandbox ends first.
func (a *agent) waitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := waitPing(ctx, a.client, a.sb.Done()); err != nil {
		t.Fatalf("sandbox %s: agent not ready: %v (sandbox error: %v)", a.sb.ID(), err, a.sb.Err())
	}
}

// waitPing polls the agent's /ping every millisecond until it answers 200,
// ctx ends or done is closed.
func waitPing(ctx context.Context, client *http.Client, done <-chan struct{}) error {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+agentAddr+"/ping", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-done:
			return fmt.Errorf("sandbox ended (last error: %v)", err)
		case <-time.After(time.Millisecond):
		}
	}
}

// containsFold reports whether s contains substr, ignoring case.
func containsFold(s, substr string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(substr))
}
