package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// endpoint is where a load generator sends the warm call.
type endpoint struct {
	name   string            // direct, Berth, nginx
	addr   string            // host:port
	path   string            // request path
	header map[string]string // request headers
	// ns, if not nil, is the network namespace addr is in (the agent's
	// sandbox), and nsPath its path for nsenter.
	ns     *netnsDialer
	nsPath string
}

func (e endpoint) url() string { return "http://" + e.addr + e.path }

// loadResult is what one load run measured.
type loadResult struct {
	requests int // answered 2xx
	errors   int // failed or answered otherwise
	elapsed  time.Duration
	p50, p99 time.Duration
}

func (r loadResult) rps() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// loadGen sends the warm call to an endpoint over conns connections, each
// making one call at a time, for about d.
type loadGen interface {
	name() string
	// where says how the generator reaches an endpoint in a sandbox.
	where() string
	run(ctx context.Context, e endpoint, conns int, d time.Duration) (loadResult, error)
}

// wrkLoad drives wrk, which keeps the load generator out of the process
// hosting Berth (and out of its CPU profile). It runs wrk inside the
// sandbox's network namespace to reach an endpoint there.
type wrkLoad struct {
	bin string
	dir string // for the Lua scripts
}

func (w wrkLoad) name() string { return "wrk" }

func (w wrkLoad) where() string { return "wrk runs in that namespace, started with nsenter" }

// wrkScript makes every request the warm call and prints the results in
// one line wrkLoad parses.
func wrkScript(e endpoint) string {
	var b strings.Builder
	b.WriteString("wrk.method = \"POST\"\n")
	fmt.Fprintf(&b, "wrk.body = %s\n", strconv.Quote(echoBody))
	keys := make([]string, 0, len(e.header))
	for k := range e.header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "wrk.headers[%s] = %s\n", strconv.Quote(k), strconv.Quote(e.header[k]))
	}
	b.WriteString(`done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
`)
	return b.String()
}

// parseWrk reads the line wrkScript's done function prints.
func parseWrk(out string) (loadResult, error) {
	for line := range strings.Lines(out) {
		rest, ok := strings.CutPrefix(line, "BENCH ")
		if !ok {
			continue
		}
		var reqs, bad, failed int
		var durUS, p50US, p99US int64
		if _, err := fmt.Sscanf(rest, "%d %d %d %d %d %d", &reqs, &durUS, &p50US, &p99US, &bad, &failed); err != nil {
			return loadResult{}, fmt.Errorf("parse wrk's results %q: %w", strings.TrimSpace(line), err)
		}
		us := func(n int64) time.Duration { return time.Duration(n) * time.Microsecond }
		// wrk counts answers with an error status among the requests it
		// completed; failed connections, reads and writes it does not.
		return loadResult{requests: reqs - bad, errors: bad + failed, elapsed: us(durUS), p50: us(p50US), p99: us(p99US)}, nil
	}
	return loadResult{}, fmt.Errorf("wrk printed no results: %s", strings.TrimSpace(out))
}

func (w wrkLoad) run(ctx context.Context, e endpoint, conns int, d time.Duration) (loadResult, error) {
	script := filepath.Join(w.dir, "wrk-"+e.name+".lua")
	if err := os.WriteFile(script, []byte(wrkScript(e)), 0o644); err != nil {
		return loadResult{}, err
	}
	secs := max(1, int(math.Ceil(d.Seconds())))
	threads := min(conns, runtime.NumCPU())
	cmd := inNetns(ctx, e.nsPath, w.bin, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "10s", "-s", script, e.url())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return loadResult{}, fmt.Errorf("wrk against %s: %w: %s", e.name, err, strings.TrimSpace(string(out)))
	}
	return parseWrk(string(out))
}

// goLoad is a load generator in this process, for hosts without wrk. Its
// CPU use competes with Berth's inside one Go runtime, which costs the
// Berth path more than the others.
type goLoad struct{}

func (goLoad) name() string { return "Go net/http (in-process)" }

func (goLoad) where() string { return "the load generator dials into the namespace, as Berth does" }

func (goLoad) run(ctx context.Context, e endpoint, conns int, d time.Duration) (loadResult, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	if e.ns != nil {
		tr.DialContext = func(ctx context.Context, _, addr string) (net.Conn, error) { return e.ns.dial(ctx, addr) }
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	lat := make([][]time.Duration, conns)
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for i := range conns {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				err := call(ctx, tr, e)
				if ctx.Err() != nil {
					return // cut off at the deadline: neither a success nor a failure
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	all := slices.Concat(lat...)
	res := loadResult{requests: len(all), errors: int(failed.Load()), elapsed: time.Since(start),
		p50: pct(all, 50), p99: pct(all, 99)}
	if len(all) == 0 {
		if p := firstErr.Load(); p != nil {
			return res, fmt.Errorf("no call to %s succeeded: %w", e.name, *p)
		}
		return res, errors.New("no call to " + e.name + " finished in time")
	}
	return res, nil
}

// call makes the warm call once and reads the whole answer.
func call(ctx context.Context, rt http.RoundTripper, e endpoint) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url(), strings.NewReader(echoBody))
	if err != nil {
		return err
	}
	for k, v := range e.header {
		req.Header.Set(k, v)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", e.name, resp.Status)
	}
	return nil
}
