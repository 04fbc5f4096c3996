// Package e2e tests Berth end to end: the real berth binary, real sandboxes
// and real agents, driven by the official AWS SDK for Go v2.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"

	berthcli "github.com/berthrun/berth/internal/cli"
	"github.com/berthrun/berth/internal/sandbox/sandboxtest"
)

// Built once per test binary run.
var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds berth and the Go test agent.
func binaries(t *testing.T) (berth, goAgent string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "berth-e2e-bin-")
		if buildErr != nil {
			return
		}
		for _, b := range []struct{ out, pkg string }{
			{"berth", "github.com/berthrun/berth/cmd/berth"},
			{"goagent", "github.com/berthrun/berth/testdata/agents/goagent"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, b.out), b.pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "berth"), filepath.Join(buildDir, "goagent")
}

// requireSandboxes skips tests that need to create sandboxes where they
// cannot run.
func requireSandboxes(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create sandboxes (namespaces, cgroups, runc); CI runs as root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc (apt-get install runc); .ci/run installs it")
	}
}

// berth is a Berth server run by a test.
type berth struct {
	t       *testing.T
	bin     string
	dataDir string
	// cgroupParent is this server's own, so leftovers are its own too.
	cgroupParent string
	addr         string
	args         []string
	env          []string // added to the server's environment
	cmd          *exec.Cmd
	logPath      string
	exited       chan struct{}

	control *cp.Client
	data    *dp.Client
}

// startBerth runs the berth binary on a free loopback port with its data in
// dataDir ("" for a new temporary one).
func startBerth(t *testing.T, dataDir string, args ...string) *berth {
	t.Helper()
	return startBerthEnv(t, dataDir, nil, args...)
}

// startBerthEnv is startBerth with extra environment variables.
func startBerthEnv(t *testing.T, dataDir string, env []string, args ...string) *berth {
	t.Helper()
	requireSandboxes(t)
	bin, _ := binaries(t)
	if dataDir == "" {
		// Traversable by others, so sandboxes get user namespaces.
		dataDir = sandboxtest.TempDir(t)
	}
	b := &berth{t: t, bin: bin, dataDir: dataDir, logPath: filepath.Join(t.TempDir(), "berth.log"),
		cgroupParent: "/berth-e2e-" + strings.ToLower(rand.Text()[:10]), env: env}
	// Tests of authentication ask for it with "--auth" (the server's
	// default); the others run without it, their subject being elsewhere.
	auth := slices.Contains(args, "--auth")
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--auth" })
	if !auth {
		args = append([]string{"--insecure-no-auth"}, args...)
	}
	b.args = append([]string{"--cgroup-parent", b.cgroupParent}, args...)
	// Registered before start, so that a server that fails to answer in
	// time is stopped too.
	t.Cleanup(func() {
		b.stop()
		// The (by then empty) parent cgroups, one per OCI runtime below
		// the server's, are the test's own to remove.
		runtimes, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", b.cgroupParent, "*"))
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", b.cgroupParent))
		for _, d := range append(runtimes, dirs...) {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				os.Remove(d)
			}
		}
	})
	b.start()
	return b
}

func (b *berth) start() {
	t := b.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	ln.Close()
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := append([]string{"server", "--listen", b.addr, "--data-dir", b.dataDir, "--log-level", "debug",
		"--min-session-timeout", "1", "--reap-interval", "200ms"}, b.args...)
	b.cmd = exec.Command(b.bin, args...)
	b.cmd.Env = append(os.Environ(), b.env...)
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.exited = make(chan struct{})
	go func() { b.cmd.Wait(); close(b.exited) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + b.addr + "/berth/v1/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-b.exited:
			t.Fatalf("berth exited at start:\n%s", b.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("berth did not answer within 30s:\n%s", b.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDBERTHTEST", "secret", ""),
	}
	endpoint := "http://" + b.addr
	b.control = cp.NewFromConfig(cfg, func(o *cp.Options) { o.BaseEndpoint = &endpoint })
	b.data = dp.NewFromConfig(cfg, func(o *dp.Options) { o.BaseEndpoint = &endpoint })
}

// stop ends the server gracefully (SIGTERM) and waits for it.
func (b *berth) stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	select {
	case <-b.exited:
		return
	default:
	}
	b.cmd.Process.Signal(os.Interrupt)
	select {
	case <-b.exited:
	case <-time.After(30 * time.Second):
		b.cmd.Process.Kill()
		<-b.exited
		b.t.Errorf("berth did not stop within 30s of SIGINT:\n%s", b.log())
	}
	if b.t.Failed() {
		b.t.Logf("berth log:\n%s", b.log())
	}
}

// with returns b reporting to t, for use in t's own goroutine (a subtest).
func (b *berth) with(t *testing.T) *berth {
	c := *b
	c.t = t
	return &c
}

func (b *berth) restart() {
	b.stop()
	b.start()
}

func (b *berth) log() string {
	out, _ := os.ReadFile(b.logPath)
	const max = 20000
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return string(out)
}

// upload puts a code bundle into Berth's code store.
func (b *berth) upload(bucket, key string, bundle []byte) string {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+b.addr+"/berth/v1/code/"+bucket+"/"+key, bytes.NewReader(bundle))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ VersionID string }
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || json.Unmarshal(body, &out) != nil {
		b.t.Fatalf("upload: %s: %s", resp.Status, body)
	}
	return out.VersionID
}

// agent is a test agent to deploy.
type agent struct {
	name       string
	bundle     []byte
	runtime    cptypes.AgentManagedRuntimeType
	entryPoint []string
}

func pythonAgent(t *testing.T) agent {
	return agent{name: "python", bundle: zipDir(t, "../../testdata/agents/python"), runtime: cptypes.AgentManagedRuntimeTypePython311, entryPoint: []string{"main.py"}}
}

// goAgent is a compiled Go agent shipped in a code bundle: its entry point
// is the executable itself.
func goAgent(t *testing.T) agent {
	_, bin := binaries(t)
	dir := t.TempDir()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agent"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	return agent{name: "go", bundle: zipDir(t, dir), runtime: cptypes.AgentManagedRuntimeTypePython311, entryPoint: []string{"agent"}}
}

// zipDir zips a directory as berth deploy does (modes kept).
func zipDir(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := berthcli.PackDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b.Zip
}

// deployOpts adjusts a runtime to create.
type deployOpts struct {
	env       map[string]string
	lifecycle *cptypes.LifecycleConfiguration
	headers   []string
}

// deploy uploads an agent and creates a runtime for it, waiting until it is
// READY. It returns the runtime's ID and ARN.
func (b *berth) deploy(name string, a agent, o deployOpts) (id, arn string) {
	b.t.Helper()
	ctx := context.Background()
	key := name + ".zip"
	b.upload("agents", key, a.bundle)
	in := &cp.CreateAgentRuntimeInput{
		AgentRuntimeName: aws.String(name),
		RoleArn:          aws.String("arn:aws:iam::123456789012:role/agent"),
		AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberCodeConfiguration{Value: cptypes.CodeConfiguration{
			Code:       &cptypes.CodeMemberS3{Value: cptypes.S3Location{Bucket: aws.String("agents"), Prefix: aws.String(key)}},
			Runtime:    a.runtime,
			EntryPoint: a.entryPoint,
		}},
		NetworkConfiguration:   &cptypes.NetworkConfiguration{NetworkMode: cptypes.NetworkModePublic},
		EnvironmentVariables:   o.env,
		LifecycleConfiguration: o.lifecycle,
	}
	if len(o.headers) > 0 {
		in.RequestHeaderConfiguration = &cptypes.RequestHeaderConfigurationMemberRequestHeaderAllowlist{Value: o.headers}
	}
	out, err := b.control.CreateAgentRuntime(ctx, in)
	if err != nil {
		b.t.Fatalf("CreateAgentRuntime %s: %v", name, err)
	}
	b.waitReady(*out.AgentRuntimeId, "")
	return *out.AgentRuntimeId, *out.AgentRuntimeArn
}

// waitReady polls until a runtime (at version, "" for the newest) is READY.
func (b *berth) waitReady(id, version string) *cp.GetAgentRuntimeOutput {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		in := &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(id)}
		if version != "" {
			in.AgentRuntimeVersion = aws.String(version)
		}
		out, err := b.control.GetAgentRuntime(context.Background(), in)
		if err != nil {
			b.t.Fatalf("GetAgentRuntime %s: %v", id, err)
		}
		switch out.Status {
		case cptypes.AgentRuntimeStatusReady:
			return out
		case cptypes.AgentRuntimeStatusCreateFailed, cptypes.AgentRuntimeStatusUpdateFailed:
			b.t.Fatalf("runtime %s failed: %s", id, aws.ToString(out.FailureReason))
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("runtime %s not READY after 60s (status %s)", id, out.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// invokeInput is one call to an agent.
type invokeInput struct {
	arn, session, qualifier string
	body                    any
}

// invoke calls the agent with a JSON body and decodes its JSON answer.
func (b *berth) invoke(in invokeInput) (map[string]any, error) {
	b.t.Helper()
	payload, err := json.Marshal(in.body)
	if err != nil {
		b.t.Fatal(err)
	}
	req := &dp.InvokeAgentRuntimeInput{
		AgentRuntimeArn:  aws.String(in.arn),
		RuntimeSessionId: aws.String(in.session),
		Payload:          payload,
		ContentType:      aws.String("application/json"),
	}
	if in.qualifier != "" {
		req.Qualifier = aws.String(in.qualifier)
	}
	out, err := b.data.InvokeAgentRuntime(context.Background(), req)
	if err != nil {
		return nil, err
	}
	defer out.Response.Close()
	if got := aws.ToString(out.RuntimeSessionId); got != in.session {
		b.t.Errorf("response session id = %q, want %q", got, in.session)
	}
	var res map[string]any
	if err := json.NewDecoder(out.Response).Decode(&res); err != nil {
		return nil, fmt.Errorf("decode agent answer: %w", err)
	}
	return res, nil
}

// mustInvoke is invoke that fails the test on error.
func (b *berth) mustInvoke(in invokeInput) map[string]any {
	b.t.Helper()
	res, err := b.invoke(in)
	if err != nil {
		b.t.Fatalf("InvokeAgentRuntime(%v): %v", in.body, err)
	}
	return res
}

// sessionInfo is one entry of Berth's session list.
type sessionInfo struct {
	RuntimeID   string  `json:"runtimeId"`
	SessionID   string  `json:"sessionId"`
	Version     string  `json:"version"`
	State       string  `json:"state"`
	IdleSeconds float64 `json:"idleSeconds"`
	Inflight    int     `json:"inflight"`
}

func (b *berth) sessions() []sessionInfo {
	b.t.Helper()
	resp, err := http.Get("http://" + b.addr + "/berth/v1/sessions")
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Sessions []sessionInfo }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		b.t.Fatal(err)
	}
	return out.Sessions
}

func (b *berth) hasSession(id string) bool {
	for _, s := range b.sessions() {
		if s.SessionID == id {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sessionID returns a valid runtime session ID (33+ characters) for a test.
func sessionID(name string) string {
	return fmt.Sprintf("%s-%d-session-0000000000000000000000000000", name, time.Now().UnixNano())
}

// leftovers lists what a Berth's sandboxes may leave behind on the host: runc
// containers in its state dir, mounts under its data dir, cgroups under its
// cgroup parent and processes in them.
func (b *berth) leftovers() []string {
	var out []string
	// Each OCI runtime has its state below sandboxes/<runtime>.
	states, _ := filepath.Glob(filepath.Join(b.dataDir, "sandboxes", "*", "runtime", "*"))
	for _, s := range states {
		out = append(out, "runtime state: "+s)
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if strings.Contains(sc.Text(), b.dataDir) {
				out = append(out, "mount: "+sc.Text())
			}
		}
		f.Close()
	}
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range append(hierarchies, "/sys/fs/cgroup") {
		// Sandboxes' cgroups are below one parent per OCI runtime.
		subs, _ := filepath.Glob(filepath.Join(h, b.cgroupParent, "*", "*"))
		for _, s := range subs {
			if fi, err := os.Stat(s); err == nil && fi.IsDir() {
				out = append(out, "cgroup: "+s)
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cg, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cgroup"))
		if err == nil && bytes.Contains(cg, []byte(b.cgroupParent+"/")) {
			cmdline, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
			out = append(out, "process "+p.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return out
}

// apiErrorCode returns the AWS error code of err, or "".
func apiErrorCode(err error) string {
	var ae interface{ ErrorCode() string }
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// must returns v, panicking on err: for calls that cannot fail in a test.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// logLine is one line of Berth's logs API.
type logLine struct {
	Time    time.Time `json:"time"`
	Session string    `json:"sessionId"`
	Stream  string    `json:"stream"`
	Text    string    `json:"line"`
}

// logs reads session logs with the given query.
func (b *berth) logs(query string) []logLine {
	b.t.Helper()
	resp, err := http.Get("http://" + b.addr + "/berth/v1/logs?" + query)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		b.t.Fatalf("logs?%s: %s: %s", query, resp.Status, body)
	}
	var out []logLine
	dec := json.NewDecoder(resp.Body)
	for {
		var l logLine
		if err := dec.Decode(&l); err == io.EOF {
			return out
		} else if err != nil {
			b.t.Fatal(err)
		}
		out = append(out, l)
	}
}
