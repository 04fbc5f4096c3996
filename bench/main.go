// Command bench measures Berth on this machine and prints a table:
//
//   - cold start: a new session ID's first call until its first response
//     byte, for a Go and a Python agent, against the floor: the same agent in
//     the same OCI runtime started by hand (the sandbox driver alone), until
//     its first answer;
//   - warm invoke latency through Berth against calling the agent directly
//     in its sandbox;
//   - Berth's own memory per live session.
//
// It runs Berth in-process on loopback and needs root and runc:
//
//	sudo go run ./bench [-cold 20] [-warm 2000] [-sessions 50]
package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/runc"
	"github.com/berthrun/berth/internal/server"
)

func main() {
	cold := flag.Int("cold", 20, "cold starts per agent")
	warm := flag.Int("warm", 2000, "warm calls per path")
	sessions := flag.Int("sessions", 50, "live sessions for the memory figure")
	ociRuntime := flag.String("oci-runtime", "runc", "OCI runtime")
	flag.Parse()
	if os.Geteuid() != 0 {
		log.Fatal("bench needs root to create sandboxes")
	}
	if err := run(*cold, *warm, *sessions, *ociRuntime); err != nil {
		log.Fatal(err)
	}
}

// agentDef is an agent to measure: its code and how it starts.
type agentDef struct {
	name    string
	dir     string // code bundle contents
	runtime string
	entry   []string
	args    []string // command line inside the sandbox (for the floor)
}

func run(coldN, warmN, sessionsN int, ociRuntime string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tmp, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	goDir := filepath.Join(tmp, "goagent")
	build := exec.Command("go", "build", "-o", filepath.Join(goDir, "agent"), "github.com/berthrun/berth/testdata/agents/goagent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the Go agent: %v\n%s", err, out)
	}
	pyDir, err := filepath.Abs("testdata/agents/python")
	if err != nil {
		return err
	}
	python, err := exec.LookPath("python3")
	if err != nil || !strings.HasPrefix(python, "/usr/") {
		python = "/usr/bin/python3"
	}
	agents := []agentDef{
		{name: "go", dir: goDir, runtime: "PYTHON_3_11", entry: []string{"agent"}, args: []string{"/app/agent"}},
		{name: "python", dir: pyDir, runtime: "PYTHON_3_11", entry: []string{"main.py"}, args: []string{python, "main.py"}},
	}

	srv, err := server.New(ctx, server.Config{DataDir: filepath.Join(tmp, "data"), Addr: "127.0.0.1:0",
		OCIRuntime: ociRuntime, MaxSessions: sessionsN + 10, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	// Shutting down ends every session and removes its sandbox.
	defer func() { cancel(); <-served }()
	c := &client{base: "http://" + srv.Addr().String(), http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}

	floor, err := runc.New(runc.Options{Binary: ociRuntime, StateDir: filepath.Join(tmp, "floor"), CgroupParent: "/berth-bench-floor"})
	if err != nil {
		return err
	}

	fmt.Printf("Berth benchmark on %d CPUs, %s, OCI runtime %s\n\n", runtime.NumCPU(), runtime.Version(), ociRuntime)
	fmt.Println("| measurement | agent | p50 | p90 | p99 | min |")
	fmt.Println("|---|---|---|---|---|---|")
	arns := map[string]string{}
	for _, a := range agents {
		arn, err := c.deploy(a)
		if err != nil {
			return fmt.Errorf("deploy %s: %w", a.name, err)
		}
		arns[a.name] = arn

		var coldT, floorT []time.Duration
		for range coldN {
			d, err := c.coldStart(arn)
			if err != nil {
				return err
			}
			coldT = append(coldT, d)
			f, err := floorStart(ctx, floor, a)
			if err != nil {
				return err
			}
			floorT = append(floorT, f)
		}
		row("cold start through Berth", a.name, coldT)
		row("floor: sandbox by hand", a.name, floorT)
		fmt.Printf("| cold start / floor (p50) | %s | %.2fx | | | |\n", a.name, float64(pct(coldT, 50))/float64(pct(floorT, 50)))

		viaBerth, direct, err := warmLatency(ctx, c, floor, a, arn, warmN)
		if err != nil {
			return err
		}
		row("warm invoke through Berth", a.name, viaBerth)
		row("warm invoke direct", a.name, direct)
		fmt.Printf("| added by Berth (p50) | %s | %s | | | |\n", a.name, (pct(viaBerth, 50) - pct(direct, 50)).Round(time.Microsecond))
	}

	perSession, err := memoryPerSession(c, arns["go"], sessionsN)
	if err != nil {
		return err
	}
	fmt.Printf("\nBerth's own memory per live session (Go heap + stacks, %d sessions): %.1f KiB\n", sessionsN, perSession/1024)
	return nil
}

func row(what, agent string, d []time.Duration) {
	f := func(p float64) string { return pct(d, p).Round(10 * time.Microsecond).String() }
	fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", what, agent, f(50), f(90), f(99), slices.Min(d).Round(10*time.Microsecond))
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// client calls Berth's HTTP API.
type client struct {
	base string
	http *http.Client
}

func (c *client) do(method, path string, body io.Reader, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return c.http.Do(req)
}

func (c *client) json(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	resp, err := c.do(method, path, body, map[string]string{"Content-Type": "application/json"})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (c *client) deploy(a agentDef) (string, error) {
	bundle, err := zipDir(a.dir)
	if err != nil {
		return "", err
	}
	resp, err := c.do(http.MethodPut, "/berth/v1/code/bench/"+a.name+".zip", bytes.NewReader(bundle), nil)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	var created struct{ AgentRuntimeID, AgentRuntimeArn string }
	err = c.json(http.MethodPut, "/runtimes/", map[string]any{
		"agentRuntimeName": "bench_" + a.name, "roleArn": "arn:aws:iam::000000000000:role/bench",
		"agentRuntimeArtifact": map[string]any{"codeConfiguration": map[string]any{
			"code": map[string]any{"s3": map[string]any{"bucket": "bench", "prefix": a.name + ".zip"}}, "runtime": a.runtime, "entryPoint": a.entry}},
	}, &created)
	if err != nil {
		return "", err
	}
	for {
		var rt struct{ Status, FailureReason string }
		if err := c.json(http.MethodGet, "/runtimes/"+created.AgentRuntimeID+"/", nil, &rt); err != nil {
			return "", err
		}
		switch rt.Status {
		case "READY":
			return created.AgentRuntimeArn, nil
		case "CREATE_FAILED":
			return "", fmt.Errorf("runtime failed: %s", rt.FailureReason)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var echoBody = []byte(`{"op":"echo","prompt":"hello"}`)

// invoke calls the agent and returns the time to the first response byte.
func (c *client) invoke(arn, sid string) (time.Duration, error) {
	start := time.Now()
	resp, err := c.do(http.MethodPost, "/runtimes/"+url.PathEscape(arn)+"/invocations", bytes.NewReader(echoBody),
		map[string]string{"Content-Type": "application/json", "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": sid})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var first [1]byte
	if _, err := io.ReadFull(resp.Body, first[:]); err != nil {
		return 0, err
	}
	d := time.Since(start)
	rest, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("invoke: %s: %s%s", resp.Status, first[:], rest)
	}
	return d, nil
}

func newSessionID() string { return "bench-" + rand.Text() + rand.Text() }

func (c *client) coldStart(arn string) (time.Duration, error) {
	sid := newSessionID()
	d, err := c.invoke(arn, sid)
	if err != nil {
		return 0, err
	}
	rtID := arn[strings.LastIndex(arn, "/")+1:]
	resp, err := c.do(http.MethodDelete, "/berth/v1/sessions/"+rtID+"/"+sid, nil, nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return d, nil
}

var floorEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "PORT=8080", "DOCKER_CONTAINER=1", "PYTHONUNBUFFERED=1"}

// startByHand starts the agent in a sandbox with the driver alone and
// returns a transport to it once /ping answers.
func startByHand(ctx context.Context, d sandbox.Driver, a agentDef) (sandbox.Sandbox, *http.Transport, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, nil, err
	}
	defer devnull.Close()
	sb, err := d.Start(ctx, sandbox.Spec{ID: "floor-" + rand.Text()[:12], Args: a.args, Env: floorEnv, CodeDir: a.dir,
		WorkDir: "/app", Stdout: devnull, Stderr: devnull})
	if err != nil {
		return nil, nil, err
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return sb.DialContext(ctx, "tcp", "127.0.0.1:8080")
	}}
	for {
		req, _ := http.NewRequest(http.MethodGet, "http://agent/ping", nil)
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return sb, tr, nil
			}
		}
		select {
		case <-sb.Done():
			return nil, nil, fmt.Errorf("agent exited: %v", sb.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

func directInvoke(tr *http.Transport) (time.Duration, error) {
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPost, "http://agent/invocations", bytes.NewReader(echoBody))
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
	io.Copy(io.Discard, resp.Body)
	return d, nil
}

// floorStart measures the same agent started by hand until its first answer.
func floorStart(ctx context.Context, d sandbox.Driver, a agentDef) (time.Duration, error) {
	start := time.Now()
	sb, tr, err := startByHand(ctx, d, a)
	if err != nil {
		return 0, err
	}
	defer sb.Stop(ctx)
	defer tr.CloseIdleConnections()
	if _, err := directInvoke(tr); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func warmLatency(ctx context.Context, c *client, d sandbox.Driver, a agentDef, arn string, n int) (viaBerth, direct []time.Duration, err error) {
	sid := newSessionID()
	sb, tr, err := startByHand(ctx, d, a)
	if err != nil {
		return nil, nil, err
	}
	defer sb.Stop(ctx)
	for i := range n + n/10 {
		b, err := c.invoke(arn, sid)
		if err != nil {
			return nil, nil, err
		}
		if i >= n/10 { // the first tenth warms up connections and caches
			viaBerth = append(viaBerth, b)
		}
	}
	for i := range n + n/10 {
		d, err := directInvoke(tr)
		if err != nil {
			return nil, nil, err
		}
		if i >= n/10 {
			direct = append(direct, d)
		}
	}
	return viaBerth, direct, nil
}

func memoryPerSession(c *client, arn string, n int) (float64, error) {
	inUse := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	before := inUse()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			if _, err := c.invoke(arn, newSessionID()); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(inUse()-before) / float64(n), nil
}

func zipDir(dir string) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := zip.FileInfoHeader(info)
		if err != nil {
			return err
		}
		hdr.Name, _ = filepath.Rel(dir, path)
		hdr.Method = zip.Deflate
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
