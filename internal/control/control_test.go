package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/store/sqlite"
)

func validConfig() Config {
	return Config{
		RoleARN: "arn:aws:iam::123456789012:role/agent",
		Code:    &CodeArtifact{Bucket: "b", Key: "agent.zip", Runtime: "PYTHON_3_11", EntryPoint: []string{"main.py"}},
	}
}

func TestNormalize(t *testing.T) {
	cases := []struct {
		name   string
		edit   func(*Config)
		fields []string // fields named in the error; nil means valid
	}{
		{"valid", func(*Config) {}, nil},
		{"no role", func(c *Config) { c.RoleARN = "" }, []string{"roleArn"}},
		{"bad role", func(c *Config) { c.RoleARN = "role" }, []string{"roleArn"}},
		{"no artifact", func(c *Config) { c.Code = nil }, []string{"agentRuntimeArtifact"}},
		{"two artifacts", func(c *Config) { c.Container = &ContainerArtifact{URI: "x"} }, []string{"agentRuntimeArtifact"}},
		{"bad runtime", func(c *Config) { c.Code.Runtime = "RUBY" }, []string{"agentRuntimeArtifact.codeConfiguration.runtime"}},
		{"no entry point", func(c *Config) { c.Code.EntryPoint = nil }, []string{"agentRuntimeArtifact.codeConfiguration.entryPoint"}},
		{"no bucket", func(c *Config) { c.Code.Bucket = "" }, []string{"agentRuntimeArtifact.codeConfiguration.code.s3.bucket"}},
		{"bad port", func(c *Config) { c.Protocol.Port = 8443 }, []string{"protocolConfiguration.port"}},
		{"bad path", func(c *Config) { c.Protocol.Path = "x" }, []string{"protocolConfiguration.path"}},
		{"bad protocol", func(c *Config) { c.Protocol.Server = "GRPC" }, []string{"protocolConfiguration.serverProtocol"}},
		{"idle over max", func(c *Config) { c.Lifecycle = Lifecycle{IdleTimeout: 600, MaxLifetime: 300} },
			[]string{"lifecycleConfiguration.idleRuntimeSessionTimeout"}},
		{"lifetime too long", func(c *Config) { c.Lifecycle.MaxLifetime = 28801 }, []string{"lifecycleConfiguration.maxLifetime"}},
		{"idle too short", func(c *Config) { c.Lifecycle.IdleTimeout = 59 }, []string{"lifecycleConfiguration.idleRuntimeSessionTimeout"}},
		{"bad env name", func(c *Config) { c.Env = map[string]string{"1X": "y"} }, []string{"environmentVariables"}},
		{"reserved header", func(c *Config) { c.HeaderAllowlist = []string{"X-Amz-Date"} }, []string{"requestHeaderConfiguration.requestHeaderAllowlist"}},
		{"custom header", func(c *Config) { c.HeaderAllowlist = []string{"X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant"} }, nil},
		{"authorization without JWT", func(c *Config) { c.HeaderAllowlist = []string{"Authorization"} }, []string{"requestHeaderConfiguration.requestHeaderAllowlist"}},
		{"bad warm pool size", func(c *Config) { c.Env = map[string]string{EnvWarmPoolSize: "many"} }, []string{"environmentVariables." + EnvWarmPoolSize}},
		{"warm pool size", func(c *Config) { c.Env = map[string]string{EnvWarmPoolSize: "3"} }, nil},
		{"unknown OCI runtime", func(c *Config) { c.Env = map[string]string{EnvOCIRuntime: "kata"} }, []string{"environmentVariables." + EnvOCIRuntime}},
		{"OCI runtime runsc", func(c *Config) { c.Env = map[string]string{EnvOCIRuntime: "runsc"} }, nil},
		{"vpc without subnets", func(c *Config) { c.Network.Mode = "VPC" }, []string{"networkConfiguration.networkModeConfig"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := validConfig()
			c.edit(&cfg)
			err := cfg.normalize(60)
			if c.fields == nil {
				if err != nil {
					t.Fatalf("normalize: %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("normalize = %v, want a ValidationError", err)
			}
			got := map[string]bool{}
			for _, f := range ve.Fields {
				got[f.Field] = true
			}
			for _, f := range c.fields {
				if !got[f] {
					t.Errorf("error %v does not name %s", err, f)
				}
			}
		})
	}
}

func TestNormalizeDefaults(t *testing.T) {
	cfg := validConfig()
	cfg.Lifecycle.MaxLifetime = 300
	if err := cfg.normalize(60); err != nil {
		t.Fatal(err)
	}
	if cfg.Lifecycle.IdleTimeout != 300 || cfg.Protocol != (Protocol{Server: "HTTP", Port: 8080, Path: "/invocations"}) || cfg.Network.Mode != "PUBLIC" {
		t.Errorf("defaults = %+v %+v %+v", cfg.Lifecycle, cfg.Protocol, cfg.Network)
	}
	mcp := validConfig()
	mcp.Protocol.Server = "MCP"
	if err := mcp.normalize(60); err != nil || mcp.Protocol.Port != 8000 || mcp.Protocol.Path != "/mcp" {
		t.Errorf("MCP defaults = %+v, %v", mcp.Protocol, err)
	}
}

// fakeArtifacts serves bundles from directories; a missing key fails.
type fakeArtifacts struct {
	mu      sync.Mutex
	dirs    map[string]string // key -> dir
	release chan struct{}     // if set, Unpack waits for it
}

func (f *fakeArtifacts) Resolve(_ context.Context, bucket, key, _ string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.dirs[key]; !ok {
		return "", fmt.Errorf("no object %s/%s", bucket, key)
	}
	return "digest-" + key, nil
}

func (f *fakeArtifacts) Unpack(ctx context.Context, digest string) (string, error) {
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dirs[strings.TrimPrefix(digest, "digest-")], nil
}

func (f *fakeArtifacts) Digests(context.Context) ([]string, error) { return nil, nil }
func (f *fakeArtifacts) Remove(context.Context, string) error      { return nil }

func newService(t *testing.T, dbPath string, arts Artifacts) *Service {
	t.Helper()
	st, err := sqlite.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	interp := t.TempDir()
	os.WriteFile(filepath.Join(interp, "python3"), []byte("#!/bin/sh\n"), 0o755)
	s, err := New(context.Background(), st, arts, Options{SystemDirs: []string{interp}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); st.Close() })
	return s
}

func bundleDir(t *testing.T) string {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.py"), []byte("print('hi')\n"), 0o644)
	return dir
}

func waitStatus(t *testing.T, s *Service, id string, version int, want string) Runtime {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rt, err := s.GetRuntime(context.Background(), id, version)
		if err != nil {
			t.Fatal(err)
		}
		if rt.Status == want {
			return rt
		}
		if time.Now().After(deadline) {
			t.Fatalf("runtime %s v%d status %s (%s), want %s", id, version, rt.Status, rt.FailureReason, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLifecycleOfVersions(t *testing.T) {
	ctx := context.Background()
	arts := &fakeArtifacts{dirs: map[string]string{"agent.zip": bundleDir(t)}}
	s := newService(t, filepath.Join(t.TempDir(), "db"), arts)

	rt, err := s.CreateRuntime(ctx, "agent", validConfig(), "")
	if err != nil {
		t.Fatal(err)
	}
	if rt.Status != StatusCreating || rt.Version != 1 || !strings.HasPrefix(rt.ID, "agent-") || len(rt.ID) != len("agent-")+10 {
		t.Fatalf("created %+v", rt)
	}
	waitStatus(t, s, rt.ID, 1, StatusReady)
	d, err := s.Resolve(ctx, rt.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != 1 || len(d.Args) != 2 || !strings.HasSuffix(d.Args[0], "python3") || d.Args[1] != "main.py" {
		t.Errorf("deployment = %+v", d)
	}

	// Pin an endpoint, update, and check who serves what.
	if _, err := s.CreateEndpoint(ctx, rt.ID, "prod", 1, "", ""); err != nil {
		t.Fatal(err)
	}
	cfg := validConfig()
	cfg.Env = map[string]string{"V": "2"}
	v2, err := s.UpdateRuntime(ctx, rt.ID, cfg, "")
	if err != nil || v2.Version != 2 || v2.Status != StatusUpdating {
		t.Fatalf("update = %+v, %v", v2, err)
	}
	waitStatus(t, s, rt.ID, 2, StatusReady)
	for q, want := range map[string]int{"": 2, "DEFAULT": 2, "prod": 1} {
		d, err := s.Resolve(ctx, rt.ID, q)
		if err != nil || d.Version != want {
			t.Errorf("Resolve(%q) = %v, %v; want version %d", q, d, err, want)
		}
	}
	if _, err := s.Resolve(ctx, rt.ID, "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown qualifier: %v", err)
	}
	if err := s.DeleteRuntime(ctx, rt.ID, 1); !errors.Is(err, ErrConflict) {
		t.Errorf("deleting version 1 used by prod: %v, want conflict", err)
	}
	if err := s.DeleteEndpoint(ctx, rt.ID, DefaultEndpoint); !errors.Is(err, ErrConflict) {
		t.Errorf("deleting DEFAULT: %v, want conflict", err)
	}

	// A version whose code is missing fails with a reason naming it, and
	// DEFAULT keeps serving the last good version.
	bad := validConfig()
	bad.Code.Key = "missing.zip"
	v3, err := s.UpdateRuntime(ctx, rt.ID, bad, "")
	if err != nil {
		t.Fatal(err)
	}
	failed := waitStatus(t, s, rt.ID, v3.Version, StatusUpdateFailed)
	if !strings.Contains(failed.FailureReason, "s3://b/missing.zip") {
		t.Errorf("failure reason %q does not name the missing bundle", failed.FailureReason)
	}
	if d, err := s.Resolve(ctx, rt.ID, ""); err != nil || d.Version != 2 {
		t.Errorf("after a failed update DEFAULT serves %v, %v; want version 2", d, err)
	}
}

func TestEntryPointNotInBundle(t *testing.T) {
	arts := &fakeArtifacts{dirs: map[string]string{"agent.zip": bundleDir(t)}}
	s := newService(t, filepath.Join(t.TempDir(), "db"), arts)
	cfg := validConfig()
	cfg.Code.EntryPoint = []string{"app.py"}
	rt, err := s.CreateRuntime(context.Background(), "agent", cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	failed := waitStatus(t, s, rt.ID, 1, StatusCreateFailed)
	if !strings.Contains(failed.FailureReason, `"app.py" is not in the code bundle`) {
		t.Errorf("failure reason = %q", failed.FailureReason)
	}
}

// TestOCIRuntimeNotInstalled checks that creating or updating a runtime
// whose BERTH_OCI_RUNTIME the server cannot run fails on that field, with
// the server's reason, and that the deployment carries the choice.
func TestOCIRuntimeNotInstalled(t *testing.T) {
	ctx := context.Background()
	arts := &fakeArtifacts{dirs: map[string]string{"agent.zip": bundleDir(t)}}
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	interp := t.TempDir()
	os.WriteFile(filepath.Join(interp, "python3"), []byte("#!/bin/sh\n"), 0o755)
	s, err := New(ctx, st, arts, Options{SystemDirs: []string{interp}, CheckOCIRuntime: func(name string) error {
		if name == "runsc" {
			return errors.New("OCI runtime runsc not found in PATH: install it with apt-get install runsc")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); st.Close() })

	missing := validConfig()
	missing.Env = map[string]string{EnvOCIRuntime: "runsc"}
	wantRefused := func(op string, err error) {
		t.Helper()
		var ve *ValidationError
		if !errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Field != "environmentVariables."+EnvOCIRuntime ||
			!strings.Contains(ve.Fields[0].Message, "apt-get install runsc") {
			t.Fatalf("%s with an OCI runtime that is not installed = %v, want a validation error of environmentVariables.%s saying what to install",
				op, err, EnvOCIRuntime)
		}
	}
	_, err = s.CreateRuntime(ctx, "gvisor_agent", missing, "")
	wantRefused("CreateRuntime", err)

	installed := validConfig()
	installed.Env = map[string]string{EnvOCIRuntime: "crun"}
	rt, err := s.CreateRuntime(ctx, "crun_agent", installed, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.UpdateRuntime(ctx, rt.ID, missing, "")
	wantRefused("UpdateRuntime", err)

	waitStatus(t, s, rt.ID, 1, StatusReady)
	dep, err := s.Resolve(ctx, rt.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if dep.OCIRuntime != "crun" {
		t.Errorf("deployment's OCI runtime = %q, want crun", dep.OCIRuntime)
	}
}

func TestIdempotentCreate(t *testing.T) {
	ctx := context.Background()
	arts := &fakeArtifacts{dirs: map[string]string{"agent.zip": bundleDir(t)}}
	s := newService(t, filepath.Join(t.TempDir(), "db"), arts)
	a, err := s.CreateRuntime(ctx, "agent", validConfig(), "tok")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateRuntime(ctx, "agent", validConfig(), "tok")
	if err != nil || b.ID != a.ID {
		t.Errorf("retry = %v, %v; want %s", b.ID, err, a.ID)
	}
	other := validConfig()
	other.Description = "different"
	if _, err := s.CreateRuntime(ctx, "agent", other, "tok"); !errors.Is(err, ErrConflict) {
		t.Errorf("token reused with other parameters: %v", err)
	}
}

// TestResumePreparation: a version left CREATING by a stopped server is
// prepared when the next one starts.
func TestResumePreparation(t *testing.T) {
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "db")
	arts := &fakeArtifacts{dirs: map[string]string{"agent.zip": bundleDir(t)}, release: make(chan struct{})}
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, st, arts, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := s.CreateRuntime(ctx, "agent", validConfig(), "")
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // preparation is blocked in Unpack and abandons
	st.Close()

	close(arts.release)
	s2 := newService(t, db, arts)
	waitStatus(t, s2, rt.ID, 1, StatusReady)
}
