package server

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startServer runs a server in-process for benchmarks, or skips.
func startServer(tb testing.TB) (*Server, string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to create sandboxes")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		tb.Skip("needs runc (apt-get install runc)")
	}
	parent := "/berth-bench-" + fmt.Sprint(os.Getpid())
	tb.Cleanup(func() { // after the server has stopped
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", parent))
		for _, d := range dirs {
			os.Remove(d) // empty once every sandbox is gone
		}
	})
	return serve(tb, Config{CgroupParent: parent})
}

// serve runs a server with cfg, on a loopback port and with its data in a
// temporary directory, until the test ends.
func serve(tb testing.TB, cfg Config) (*Server, string) {
	tb.Helper()
	cfg.DataDir, cfg.Addr, cfg.Logger = tb.TempDir(), "127.0.0.1:0", slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	return srv, "http://" + srv.Addr().String()
}

// deployGoAgent builds the test Go agent and deploys it; it returns the
// runtime ARN once READY.
func deployGoAgent(tb testing.TB, base string) string {
	tb.Helper()
	dir := tb.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "agent"), "github.com/berthrun/berth/testdata/agents/goagent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build agent: %v\n%s", err, out)
	}
	bin, _ := os.ReadFile(filepath.Join(dir, "agent"))
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	hdr := &zip.FileHeader{Name: "agent", Method: zip.Deflate}
	hdr.SetMode(0o755)
	w, _ := zw.CreateHeader(hdr)
	w.Write(bin)
	zw.Close()
	do := func(method, path string, body io.Reader, out any) {
		req, _ := http.NewRequest(method, base+path, body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			tb.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			tb.Fatalf("%s %s: %s %s", method, path, resp.Status, data)
		}
		if out != nil {
			json.Unmarshal(data, out)
		}
	}
	do(http.MethodPut, "/berth/v1/code/bench/agent.zip", &zbuf, nil)
	var rt struct{ AgentRuntimeID, AgentRuntimeArn, Status string }
	do(http.MethodPut, "/runtimes/", strings.NewReader(`{"agentRuntimeName":"bench","roleArn":"arn:aws:iam::000000000000:role/b",
		"agentRuntimeArtifact":{"codeConfiguration":{"code":{"s3":{"bucket":"bench","prefix":"agent.zip"}},"runtime":"PYTHON_3_11","entryPoint":["agent"]}}}`), &rt)
	for rt.Status != "READY" {
		time.Sleep(10 * time.Millisecond)
		do(http.MethodGet, "/runtimes/"+rt.AgentRuntimeID+"/", nil, &rt)
	}
	return rt.AgentRuntimeArn
}

// BenchmarkWarmInvoke measures a warm InvokeAgentRuntime through Berth, one
// call at a time, on a loopback connection kept alive.
func BenchmarkWarmInvoke(b *testing.B) {
	_, base := startServer(b)
	arn := deployGoAgent(b, base)
	url := base + "/runtimes/" + url.PathEscape(arn) + "/invocations"
	client := &http.Client{}
	call := func() {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"op":"echo","prompt":"hi"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", "benchmark-session-00000000000000000000000")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("invoke: %s", resp.Status)
		}
	}
	call() // the cold start
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		call()
	}
}
