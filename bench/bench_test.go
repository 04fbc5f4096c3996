package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, c config)
	}{
		{name: "defaults", check: func(t *testing.T, c config) {
			if !slices.Equal(c.Concurrency, []int{1, 8, 32, 128}) || !slices.Equal(c.Density, []int{100, 500, 1000}) ||
				c.PayloadBytes != 100_000_000 || c.Cold != 20 || !slices.Equal(c.Sections, allSections) ||
				!slices.Equal(c.ColdNetworks, []string{"none", "outbound"}) || c.DensityNetwork != "none" {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{name: "quick", args: []string{"-quick"}, check: func(t *testing.T, c config) {
			if !slices.Equal(c.Concurrency, []int{1, 32}) || c.Cold != 3 || c.PayloadBytes != 10_000_000 ||
				!slices.Equal(c.Density, []int{20}) || c.Duration != time.Second {
				t.Errorf("quick: %+v", c)
			}
		}},
		{name: "explicit flags win over quick", args: []string{"-cold", "7", "-quick", "-density", "5,10"}, check: func(t *testing.T, c config) {
			if c.Cold != 7 || !slices.Equal(c.Density, []int{5, 10}) || c.StreamFrames != 20 {
				t.Errorf("quick with overrides: %+v", c)
			}
		}},
		{name: "sections", args: []string{"-sections", "warm, density"}, check: func(t *testing.T, c config) {
			if !c.runs(secWarm) || !c.runs(secDensity) || c.runs(secCold) {
				t.Errorf("sections: %v", c.Sections)
			}
		}},
		{name: "network modes", args: []string{"-cold-networks", "outbound", "-density-network", "outbound"}, check: func(t *testing.T, c config) {
			if !slices.Equal(c.ColdNetworks, []string{"outbound"}) || c.DensityNetwork != "outbound" {
				t.Errorf("network modes: %v, %q", c.ColdNetworks, c.DensityNetwork)
			}
		}},
		{name: "unknown cold network", args: []string{"-cold-networks", "none,bridge"}, wantErr: `-cold-networks: unknown network mode "bridge"`},
		{name: "unknown density network", args: []string{"-density-network", "allowlist"}, wantErr: `-density-network "allowlist"`},
		{name: "kubernetes", args: []string{"-quick", "-kubeconfig", "/k/config", "-kube-host-ip", "10.1.0.1"}, check: func(t *testing.T, c config) {
			if !c.runs(secKube) || c.Kubeconfig != "/k/config" || c.KubeHostIP != "10.1.0.1" || c.KubeCold != 3 || c.KubeSessions != 10 {
				t.Errorf("kubernetes: %+v", c)
			}
		}},
		{name: "kubernetes sessions", args: []string{"-kube-sessions", "0"}, wantErr: "-kube-sessions 0"},
		{name: "kubernetes cold samples", args: []string{"-kube-cold", "0"}, wantErr: "-kube-cold 0"},
		{name: "kubernetes host address", args: []string{"-kubeconfig", "/k/config", "-kube-host-ip", "pods.local"}, wantErr: `-kube-host-ip "pods.local"`},
		{name: "unknown section", args: []string{"-sections", "warm,latency"}, wantErr: `unknown section "latency"`},
		{name: "bad concurrency", args: []string{"-concurrency", "1,x"}, wantErr: "not a list of integers"},
		{name: "zero concurrency", args: []string{"-concurrency", "0"}, wantErr: "-concurrency 0"},
		{name: "density not increasing", args: []string{"-density", "500,100"}, wantErr: "increasing"},
		{name: "payload over Berth's limit", args: []string{"-payload-mb", "105"}, wantErr: "limit"},
		{name: "load generator", args: []string{"-load", "ab"}, wantErr: `-load "ab"`},
		{name: "log level", args: []string{"-log-level", "loud"}, wantErr: "-log-level"},
		{name: "stray argument", args: []string{"warm"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, io.Discard, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestPct(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		d := make([]time.Duration, len(ns))
		for i, n := range ns {
			d[i] = time.Duration(n) * time.Millisecond
		}
		return d
	}
	tests := []struct {
		d    []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{ms(4, 1, 3, 2), 99, 4 * time.Millisecond},
		{ms(4, 1, 3, 2), 0, time.Millisecond},
		{ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 90, 9 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := pct(tt.d, tt.p); got != tt.want {
			t.Errorf("pct(%v, %v) = %v, want %v", tt.d, tt.p, got, tt.want)
		}
	}
}

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name, out string
		want      loadResult
		wantErr   bool
	}{
		{name: "clean", out: "Running 1s test @ http://x\nBENCH 1000 1000000 80 900 0 0\n",
			want: loadResult{requests: 1000, elapsed: time.Second, p50: 80 * time.Microsecond, p99: 900 * time.Microsecond}},
		{name: "error statuses are not successes", out: "BENCH 100 2000000 50 70 10 3\n",
			want: loadResult{requests: 90, errors: 13, elapsed: 2 * time.Second, p50: 50 * time.Microsecond, p99: 70 * time.Microsecond}},
		{name: "no results", out: "unable to connect to 127.0.0.1:1 Connection refused\n", wantErr: true},
		{name: "garbled", out: "BENCH lots\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrk(tt.out)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseWrk = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestWrkScript(t *testing.T) {
	s := wrkScript(endpoint{header: map[string]string{"B": `quote"d`, "A": "1"}})
	for _, want := range []string{`wrk.method = "POST"`, `wrk.headers["A"] = "1"`, `wrk.headers["B"] = "quote\"d"`, "done = function"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if strings.Index(s, `["A"]`) > strings.Index(s, `["B"]`) {
		t.Error("headers are not in a stable order")
	}
}

func TestReadFrames(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []float64 // send times
		wantErr bool
	}{
		{name: "frames", in: "data: {\"i\": 0, \"t\": 1700000000.250000}\n\ndata: {\"i\": 1, \"t\": 1700000000.5}\n\n",
			want: []float64{1700000000.25, 1700000000.5}},
		{name: "other lines are ignored", in: "event: x\n: comment\ndata: {\"t\": 2.5}\n\n", want: []float64{2.5}},
		{name: "empty", in: ""},
		{name: "no send time", in: "data: {\"i\": 0}\n\n", wantErr: true},
		{name: "not JSON", in: "data: hello\n\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []float64
			err := readFrames(strings.NewReader(tt.in), func(_, sent time.Time) {
				got = append(got, float64(sent.UnixNano())/1e9)
			})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if d := got[i] - tt.want[i]; d > 1e-6 || d < -1e-6 {
					t.Errorf("frame %d sent at %f, want %f", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestPattern(t *testing.T) {
	a, b := newPattern(), newPattern()
	x, y := make([]byte, 100_000), make([]byte, 100_000)
	if _, err := io.ReadFull(a, x); err != nil {
		t.Fatal(err)
	}
	// Read b in odd-sized pieces: the stream must not depend on them.
	for off := 0; off < len(y); {
		n, _ := b.Read(y[off:min(len(y), off+7777)])
		off += n
	}
	if string(x) != string(y) {
		t.Error("two patterns differ")
	}
	if strings.Count(string(x[:1<<16]), "\x00") > 1<<10 {
		t.Error("the pattern is mostly zeros")
	}
}

// TestNginxConfig checks the generated configuration with nginx itself.
func TestNginxConfig(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("nginx is not installed (apt-get install nginx-light)")
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConfig(dir, "127.0.0.1:18080", "127.0.0.1:8080")), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("nginx -t with `user root` needs root")
	}
	out, err := exec.Command(bin, "-t", "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log")).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

// TestQuickRun runs the whole harness in quick mode and checks that it
// measured every section.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("a quick run takes half a minute")
	}
	if os.Geteuid() != 0 {
		t.Skip("the harness needs root to start sandboxes")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("the harness needs runc (apt-get install runc)")
	}
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("the harness needs /usr/bin/python3 for the Python agent")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the harness needs the go command in PATH to build the Go agent")
	}
	dir := t.TempDir()
	results := filepath.Join(dir, "RESULTS.md")
	profile := filepath.Join(dir, "cpu.pprof")
	var out strings.Builder
	// The kubernetes section has a test of its own (TestKubeRun); here it
	// must skip and say why.
	cfg, err := parseConfig([]string{"-quick", "-install=false", "-results", results, "-cpuprofile", profile, "-kubeconfig="}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	data, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	for _, want := range []string{
		"## Machine", "| CPU |", "| runc |", "## Targets",
		"### Warm invoke", "| 1 | direct |", "| 32 | Berth |",
		"### Cold start", "| runc | go | none | floor (by hand) |", "| runc | python | none | Berth, no pool |",
		"| runc | go | outbound | floor (by hand) |", "| runc | go | outbound | Berth, no pool |",
		"cold start without pool vs floor (runc, go, outbound)", "network mode none (BERTH_NETWORK)",
		"### Streaming", "| added by Berth |",
		"### Payload", "| Berth | 10 MB |",
		"### Density", "| 20 | 0 |", "no sandbox cgroup was left",
		"warm: p50 added over direct", "stream: delay added per frame", "cold start without pool vs floor",
		"payload: RSS growth", "density: concurrent Go-agent sessions",
		"### Kubernetes", "skipped: no Kubernetes cluster", "| kubernetes: 10 concurrent pod-backed sessions on one node | 10 live, 0 errors | no cluster | SKIP |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
	if strings.Contains(md, "**error**") {
		t.Errorf("a section failed:\n%s", md)
	}
	if st, err := os.Stat(profile); err != nil || st.Size() == 0 {
		t.Errorf("no CPU profile written: %v", err)
	}
	if t.Failed() {
		t.Logf("RESULTS.md:\n%s", md)
	}
}

// TestKubeRun runs the kubernetes section with small counts on the test
// cluster (tools/k8s/k8s-up.sh) and checks that it measured every part and
// left no pod behind.
func TestKubeRun(t *testing.T) {
	kubeconfig := os.Getenv("BERTH_TEST_KUBECONFIG")
	switch {
	case testing.Short():
		t.Skip("a kubernetes run takes half a minute")
	case kubeconfig == "" || os.Getenv("BERTH_TEST_KUBE_HOST_IP") == "":
		t.Skip("no Kubernetes cluster: set BERTH_TEST_KUBECONFIG and BERTH_TEST_KUBE_HOST_IP (bash tools/k8s/k8s-up.sh; source $K8S_DIR/env)")
	case os.Geteuid() != 0:
		t.Skip("the harness needs root (its local sandbox runs in runc)")
	}
	for _, cmd := range []string{"runc", "go"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Skipf("the harness needs %s in PATH", cmd)
		}
	}
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("the harness needs /usr/bin/python3 for the Python agent")
	}
	results := filepath.Join(t.TempDir(), "RESULTS.md")
	var out strings.Builder
	cfg, err := parseConfig([]string{"-sections", "kubernetes", "-results", results, "-kube-cold", "1", "-kube-sessions", "5",
		"-warm-seq", "10", "-pool-size", "1"}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	data, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	for _, want := range []string{
		"### Kubernetes: cold start of a pod-backed session", "| floor (by hand) |", "| Berth, no pool |", "| Berth, warm pool |",
		"### Kubernetes: warm invoke, pod vs local sandbox", "| pod, direct |", "| pod, through Berth |", "| local runc sandbox, through Berth |",
		"### Kubernetes: 5 concurrent sessions", "| floor (by hand) | 5 | 0 |", "| Berth | 5 | 0 |",
		"| kubernetes: 5 concurrent pod-backed sessions on one node | 5 live, 0 errors | 5 live, 0 errors, 0 pods left after the runtime's deletion | PASS |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
	if strings.Contains(md, "**error**") {
		t.Errorf("a section failed")
	}
	if t.Failed() {
		t.Logf("RESULTS.md:\n%s", md)
	}
}
