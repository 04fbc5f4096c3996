package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/server"
)

// density starts ever more concurrent idle sessions of the Go agent on a
// server of their own and, at each step, measures their start times and
// memory; then it shuts the server down, which must end them all.
func (b *bench) density(ctx context.Context) {
	steps := b.cfg.Density
	maxN := steps[len(steps)-1]
	t := b.rep.section("Density", fmt.Sprintf(
		"new sessions of the Go agent (one `{\"op\":\"echo\"}` call each, then left idle), %d starts in flight at "+
			"once, up to each step's total; a server of their own with MaxSessions %d and %d MiB of memory per "+
			"sandbox; network mode %s (BERTH_NETWORK). *start*: each session's first call until its first byte. *Berth heap+stacks*: Go's live heap "+
			"(HeapAlloc) and StackInuse after a GC, less the value before the first session, per session; *process RSS*: the same "+
			"for VmRSS (this process hosts Berth; its client keeps no connections open); *sandbox memory*: the "+
			"sum of the sandboxes' cgroup memory usage (%s), which includes page cache they touched first, per "+
			"session. Then the server shuts down and every sandbox cgroup must be gone.",
		b.cfg.DensityParallel, maxN+10, b.cfg.DensityMemory>>20, b.cfg.DensityNetwork, memoryFile(b.cg)),
		"sessions", "errors", "start p50", "start p99", "starts/s", "Berth heap+stacks / session",
		"process RSS / session", "sandbox memory / session")
	defer b.rep.done(t)
	target := "density: concurrent Go-agent sessions without errors (network " + b.cfg.DensityNetwork + ")"
	errs, live, err := b.densitySteps(ctx, t, maxN)
	if err == nil && live == 0 {
		err = errors.New("no session started")
	}
	got := fmt.Sprintf("%d live, %d errors", live, errs)
	switch {
	case err != nil:
		b.rep.fail(t, err)
		b.rep.check(target, "1,000, 0 errors", fmt.Sprintf("%s; %v", got, err), false)
	case errs > 0:
		b.rep.check(target, "1,000, 0 errors", got, false)
	case maxN < 1000:
		b.rep.skipped(target, "1,000, 0 errors", fmt.Sprintf("measured up to %d only: %s", maxN, got))
	default:
		b.rep.check(target, "1,000, 0 errors", got, live >= 1000)
	}
}

func memoryFile(cg cgroups) string {
	if cg.v2 {
		return "memory.current"
	}
	return "memory.usage_in_bytes"
}

// densitySteps runs the steps and returns the failed starts and the live
// sessions the server counted at the last step.
func (b *bench) densitySteps(ctx context.Context, t *table, maxN int) (errs, live int, err error) {
	srv, err := b.startBerth(ctx, "density", server.Config{OCIRuntime: b.cfg.Primary, MaxSessions: maxN + 10,
		SessionLimits: sandbox.Limits{MemoryBytes: b.cfg.DensityMemory, TmpBytes: 16 << 20, Pids: 128}})
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		start := time.Now()
		serr := srv.stop()
		if serr == nil {
			t.note("shutting the server down ended all %d sessions in %s; no sandbox cgroup was left", live, ms(time.Since(start)))
		}
		err = errors.Join(err, serr)
	}()
	rt, err := srv.deploy(ctx, b.goAgent, "bench_density", networkEnv(b.cfg.DensityNetwork))
	if err != nil {
		return 0, 0, err
	}
	// Without keep-alive, the client holds no connections (or their
	// buffers) in this process once a start is done.
	c := newClient(strings.TrimPrefix(srv.base, "http://"), false)
	heap0 := goMemory()
	rss0, err := residentAfterGC()
	if err != nil {
		return 0, 0, err
	}
	for _, n := range b.cfg.Density {
		start := time.Now()
		times, failed, ferr := startSessions(ctx, c, rt, n-live-errs, b.cfg.DensityParallel)
		elapsed := time.Since(start)
		errs += failed
		if ctx.Err() != nil {
			return errs, live, ctx.Err()
		}
		if failed > 0 {
			t.note("step %d: %d starts failed; the first: %v", n, failed, ferr)
		}
		if live, err = c.liveSessions(ctx); err != nil {
			return errs, live, err
		}
		heap := goMemory() - heap0
		rss, err := residentAfterGC()
		if err != nil {
			return errs, live, err
		}
		sbx, err := b.sandboxMemory(srv.parent)
		if err != nil {
			return errs, live, err
		}
		per := func(v int64) float64 { return float64(v) / float64(max(live, 1)) }
		t.add(strconv.Itoa(live), strconv.Itoa(failed), ms(pct(times, 50)), ms(pct(times, 99)),
			fmt.Sprintf("%.1f", float64(len(times))/elapsed.Seconds()), kib(per(heap)), kib(per(rss-rss0)), mib(per(sbx)))
		fmt.Fprintf(b.cfg.Out, "  density %d live (%d failed): start p50 %s p99 %s, Berth %s/session, sandbox %s/session\n",
			live, failed, ms(pct(times, 50)), ms(pct(times, 99)), kib(per(heap)), mib(per(sbx)))
	}
	return errs, live, nil
}

// sandboxMemory sums the memory usage of the sandboxes under parent.
func (b *bench) sandboxMemory(parent string) (int64, error) {
	ids, err := b.cg.sandboxes(parent)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, id := range ids {
		m, err := b.cg.memoryUsage(parent, id)
		if err != nil {
			return 0, err
		}
		sum += m
	}
	return sum, nil
}

// goMemory returns the bytes of live Go objects and goroutine stacks. It
// collects twice first, since objects that sync.Pools hold survive one
// collection.
func goMemory() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}

// residentAfterGC returns the process's resident memory once freed memory
// has been returned to the OS.
func residentAfterGC() (int64, error) {
	debug.FreeOSMemory()
	return procStatus("VmRSS")
}

// startSessions starts n sessions of rt, parallel at a time, and returns the
// successful starts' times, the number that failed and the first failure.
func startSessions(ctx context.Context, c *client, rt agentRuntime, n, parallel int) ([]time.Duration, int, error) {
	var (
		mu       sync.Mutex
		times    []time.Duration
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, parallel)
	for range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return times, failed, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			d, err := c.invoke(cctx, rt, newSessionID())
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			times = append(times, d)
		})
	}
	wg.Wait()
	return times, failed, firstErr
}
