package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// Where the agent and nginx listen inside the sandbox's network namespace.
const (
	agentAddr = "127.0.0.1:8080"
	nginxAddr = "127.0.0.1:18080"
)

// profiledConcurrency is the Berth run that -cpuprofile covers.
const profiledConcurrency = 32

// loadGen picks the load generator.
func (b *bench) loadGen() loadGen {
	useWrk := b.tools.wrk != "" && b.tools.nsenter != ""
	if b.cfg.Load == "go" || b.cfg.Load == "auto" && !useWrk {
		return goLoad{}
	}
	return wrkLoad{bin: b.tools.wrk, dir: b.tmp}
}

// warm measures the warm call at each concurrency: directly in the sandbox,
// through Berth and through nginx, all to the very same agent process.
func (b *bench) warm(ctx context.Context, s *agentSession) {
	gen := b.loadGen()
	if b.cfg.Load == "wrk" && gen.name() != "wrk" {
		b.rep.notes = append(b.rep.notes, "-load wrk: wrk or nsenter is missing; used the Go load generator")
	}
	t := b.rep.section("Warm invoke", fmt.Sprintf(
		"the Go agent's `{\"op\":\"echo\"}` call (a ~200-byte JSON answer) to one live session's agent, by %s over "+
			"keep-alive connections, each making one call at a time, %s measured after %s of warm-up per row. "+
			"*direct* calls the agent on 127.0.0.1:8080 inside its sandbox's network namespace (%s); *Berth* calls Berth's InvokeAgentRuntime on the host's loopback, and Berth "+
			"dials into the namespace; *nginx* runs in the sandbox's namespace (started with nsenter, its own "+
			"config: master process, workers auto, access log off, keep-alive upstream) and proxies to the "+
			"same agent. All three paths reach the same agent process, so only the hop differs. On 2 cores the "+
			"load generator, the proxy and the agent share the CPUs; at high concurrency a slower path queues "+
			"fewer calls in the agent, so its *p99 added* can be negative.",
		gen.name(), b.cfg.Duration, b.cfg.Warmup, gen.where()),
		"concurrency", "path", "req/s", "p50", "p99", "errors", "req/s vs direct", "p50 added", "p99 added")
	defer b.rep.done(t)

	hdr := map[string]string{"Content-Type": "application/json", hdrSessionID: s.sid}
	eps := []endpoint{
		{name: "direct", addr: agentAddr, path: "/invocations", header: hdr, ns: s.direct, nsPath: s.netns},
		{name: "Berth", addr: strings.TrimPrefix(s.srv.base, "http://"), path: s.rt.invocations(), header: hdr},
	}
	switch ngx, err := b.startNginx(ctx, s); {
	case err != nil:
		t.note("nginx rows skipped: %v", err)
	case ngx == nil:
		t.note("nginx rows skipped: nginx is not installed (apt-get install nginx-light)")
	default:
		defer ngx.stop()
		eps = append(eps, endpoint{name: "nginx", addr: nginxAddr, path: "/invocations", header: hdr, ns: s.direct, nsPath: s.netns})
	}

	results := map[int]map[string]loadResult{}
	for _, c := range b.cfg.Concurrency {
		results[c] = map[string]loadResult{}
		for _, e := range eps {
			res, err := b.measureLoad(ctx, gen, e, c)
			if err != nil {
				b.rep.fail(t, fmt.Errorf("%s at concurrency %d: %w", e.name, c, err))
				continue
			}
			results[c][e.name] = res
			dir, ok := results[c]["direct"]
			vs, add50, add99 := "", "", ""
			if ok && e.name != "direct" {
				vs = fmt.Sprintf("%.0f%%", 100*res.rps()/dir.rps())
				add50, add99 = ms(res.p50-dir.p50), ms(res.p99-dir.p99)
			}
			t.add(strconv.Itoa(c), e.name, fmt.Sprintf("%.0f", res.rps()), ms(res.p50), ms(res.p99), strconv.Itoa(res.errors), vs, add50, add99)
			fmt.Fprintf(b.cfg.Out, "  warm c=%d %-6s %8.0f req/s  p50 %s  p99 %s\n", c, e.name, res.rps(), ms(res.p50), ms(res.p99))
		}
	}
	b.warmVerdicts(results, len(eps) == 3)
}

// measureLoad warms the path up, then measures it, under the CPU profiler
// if this is the profiled run.
func (b *bench) measureLoad(ctx context.Context, gen loadGen, e endpoint, c int) (loadResult, error) {
	if b.cfg.Warmup > 0 {
		if _, err := gen.run(ctx, e, c, b.cfg.Warmup); err != nil {
			return loadResult{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	if b.cfg.CPUProfile == "" || e.name != "Berth" || c != profiledConcurrency {
		return gen.run(ctx, e, c, b.cfg.Duration)
	}
	f, err := os.Create(b.cfg.CPUProfile)
	if err != nil {
		return loadResult{}, fmt.Errorf("CPU profile: %w", err)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return loadResult{}, fmt.Errorf("CPU profile: %w", err)
	}
	res, err := gen.run(ctx, e, c, b.cfg.Duration)
	pprof.StopCPUProfile()
	if top, perr := pprofTop(ctx, b.cfg.CPUProfile); perr == nil {
		b.rep.profile = top
	} else {
		b.rep.notes = append(b.rep.notes, "could not summarise the CPU profile: "+perr.Error())
	}
	b.rep.notes = append(b.rep.notes, fmt.Sprintf("CPU profile of the process hosting Berth during the Berth run at concurrency %d: %s",
		profiledConcurrency, b.cfg.CPUProfile))
	return res, err
}

// pprofTop returns the top of a CPU profile as go tool pprof prints it.
func pprofTop(ctx context.Context, file string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=30", file).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// startNginx starts nginx in the session's sandbox namespace, or returns nil
// if it is not installed.
func (b *bench) startNginx(ctx context.Context, s *agentSession) (*nginxProxy, error) {
	if b.tools.nginx == "" {
		return nil, nil
	}
	if b.tools.nsenter == "" {
		return nil, fmt.Errorf("nsenter (util-linux) is needed to run nginx in the sandbox's network namespace")
	}
	return startNginx(ctx, b.tools.nginx, filepath.Join(b.tmp, "nginx"), s.direct, s.netns, nginxAddr, agentAddr)
}

// warmVerdicts judges the warm results against the targets: latency added
// at the lowest concurrency (at higher ones latency is mostly queueing for
// the 2 CPUs), throughput at the concurrency where Berth does worst.
func (b *bench) warmVerdicts(results map[int]map[string]loadResult, haveNginx bool) {
	const (
		t50, t99, tDirect, tNginx = "warm: p50 added over direct", "warm: p99 added over direct",
			"warm: throughput vs direct (worst concurrency)", "warm: throughput vs nginx (worst concurrency)"
	)
	low := b.cfg.Concurrency[0]
	for _, c := range b.cfg.Concurrency {
		low = min(low, c)
	}
	r := results[low]
	dir, okD := r["direct"]
	via, okB := r["Berth"]
	if okD && okB {
		b.rep.check(fmt.Sprintf("%s (c=%d)", t50, low), "≤ 100 µs", ms(via.p50-dir.p50), via.p50-dir.p50 <= 100*time.Microsecond)
		b.rep.check(fmt.Sprintf("%s (c=%d)", t99, low), "≤ 1 ms", ms(via.p99-dir.p99), via.p99-dir.p99 <= time.Millisecond)
	} else {
		b.rep.skipped(t50, "≤ 100 µs", "not measured")
		b.rep.skipped(t99, "≤ 1 ms", "not measured")
	}
	worst := func(other string) (float64, int, bool) {
		w, wc, ok := 0.0, 0, false
		for _, c := range b.cfg.Concurrency {
			o, okO := results[c][other]
			v, okV := results[c]["Berth"]
			if !okO || !okV {
				return 0, 0, false
			}
			if q := v.rps() / o.rps(); !ok || q < w {
				w, wc, ok = q, c, true
			}
		}
		return w, wc, ok
	}
	if q, c, ok := worst("direct"); ok {
		b.rep.check(tDirect, "≥ 70%", fmt.Sprintf("%.0f%% (c=%d)", 100*q, c), q >= 0.7)
	} else {
		b.rep.skipped(tDirect, "≥ 70%", "not measured")
	}
	if q, c, ok := worst("nginx"); ok && haveNginx {
		b.rep.check(tNginx, "≥ 100%", fmt.Sprintf("%.0f%% (c=%d)", 100*q, c), q >= 1)
	} else {
		b.rep.skipped(tNginx, "≥ 100%", "nginx not measured")
	}
}
