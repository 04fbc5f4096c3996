package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"time"

	"github.com/berthrun/berth/internal/server"
)

// cold measures new sessions' first answers per OCI runtime, agent and
// network mode: without a warm pool, with one, and the floor.
func (b *bench) cold(ctx context.Context) {
	t := b.rep.section("Cold start", fmt.Sprintf(
		"a new runtimeSessionId's first `{\"op\":\"echo\"}` call until the first byte of its answer, then "+
			"StopRuntimeSession; %d samples per row. *network*: the runtime's BERTH_NETWORK, and the floor's "+
			"sandbox network: *none* is loopback only, *outbound* adds a veth pair, an address, NAT and the "+
			"sandbox's filter, set up in namespaces Berth makes before the OCI runtime joins them. *floor*: the same agent, code, "+
			"OCI runtime and network mode started by hand "+
			"with Berth's sandbox driver alone (no server, no session manager), polling /ping every millisecond, "+
			"until its first call answers, interleaved with the Berth samples; *floor: first call to a ready sandbox* "+
			"is that first call alone, the floor of a start from a warm pool (its *vs floor* compares with it). *warm pool*: the runtime has "+
			"BERTH_WARM_POOL_SIZE=%d and each sample waits until the pool is full again (GET /berth/v1/pools, "+
			"ready == size). *warm invoke*: %d sequential calls to one live session (the first tenth dropped), "+
			"the yardstick of the warm-pool target; neither depends on the network mode (Berth reaches agents "+
			"inside their namespace), and both run in the first mode measured.", b.cfg.Cold, b.cfg.PoolSize, b.cfg.WarmSeq),
		"OCI runtime", "agent", "network", "path", "p50", "p90", "p99", "min", "vs floor", "vs warm invoke")
	defer b.rep.done(t)
	for _, ociRuntime := range b.cfg.Runtimes {
		if _, err := exec.LookPath(ociRuntime); err != nil {
			t.note("%s rows skipped: %s is not installed (apt-get install %s)", ociRuntime, ociRuntime, ociRuntime)
			continue
		}
		if err := b.coldRuntime(ctx, t, ociRuntime); err != nil {
			b.rep.fail(t, fmt.Errorf("%s: %w", ociRuntime, err))
		}
	}
}

func (b *bench) coldRuntime(ctx context.Context, t *table, ociRuntime string) (err error) {
	fmt.Fprintf(b.cfg.Out, "  cold starts with %s\n", ociRuntime)
	srv, err := b.startBerth(ctx, "cold-"+ociRuntime, server.Config{OCIRuntime: ociRuntime, MaxSessions: 10 + 2*b.cfg.PoolSize})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, srv.stop()) }()
	modes := slices.Clone(b.cfg.ColdNetworks)
	floor, floorParent, netErr, err := b.newFloor(ociRuntime, slices.ContainsFunc(modes, networked))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.checkFloor(floorParent)) }()
	if netErr != nil {
		// Berth's server gets no sandbox network either on such a host.
		modes = slices.DeleteFunc(modes, networked)
		t.note("%s rows of networked modes skipped: %v", ociRuntime, netErr)
		if len(modes) == 0 {
			return nil
		}
	}

	_, poolErr := srv.pools(ctx)
	if errors.Is(poolErr, errNoPools) {
		t.note("%s warm-pool rows skipped: %v", ociRuntime, poolErr)
	} else if poolErr != nil {
		return poolErr
	}

	for _, a := range []agentDef{b.goAgent, b.pyAgent} {
		var warm, firstT []time.Duration
		for i, mode := range modes {
			label := ociRuntime + ", " + a.name + ", " + mode
			rt, err := srv.deploy(ctx, a, "bench_"+a.name+"_"+mode, networkEnv(mode))
			if err != nil {
				return err
			}
			if i == 0 {
				if warm, err = warmSequential(ctx, srv, rt, b.cfg.WarmSeq); err != nil {
					return fmt.Errorf("warm calls to the %s agent: %w", a.name, err)
				}
			}
			var coldT, floorT, first []time.Duration
			for range b.cfg.Cold {
				d, err := srv.coldStart(ctx, rt)
				if err != nil {
					return fmt.Errorf("cold start of the %s agent (network %s): %w", a.name, mode, err)
				}
				coldT = append(coldT, d)
				f, fc, err := floorStart(ctx, floor, a, mode)
				if err != nil {
					return err
				}
				floorT, first = append(floorT, f), append(first, fc)
			}
			if i == 0 {
				firstT = first
			}
			f50, c50 := pct(floorT, 50), pct(coldT, 50)
			t.add(coldRow(ociRuntime, a.name, mode, "floor (by hand)", floorT, "", "")...)
			t.add(coldRow(ociRuntime, a.name, mode, "Berth, no pool", coldT, ratio(float64(c50), float64(f50)), "")...)
			b.rep.check("cold start without pool vs floor ("+label+")", "≤ 1.20×", ratio(float64(c50), float64(f50)),
				float64(c50) <= 1.2*float64(f50))
			fmt.Fprintf(b.cfg.Out, "  cold %s %s network %s: floor %s, Berth %s\n", ociRuntime, a.name, mode, ms(f50), ms(c50))
		}

		mode := modes[0]
		label := ociRuntime + ", " + a.name
		w50, first50 := pct(warm, 50), pct(firstT, 50)
		const poolTarget = "cold start with a warm sandbox vs warm invoke"
		if poolErr != nil {
			b.rep.skipped(poolTarget+" ("+label+")", "≤ 2×", "no warm-pool API in this Berth")
		} else {
			pooled, err := b.pooledStarts(ctx, srv, a, mode, b.cfg.Cold)
			if err != nil {
				return fmt.Errorf("warm-pool starts of the %s agent: %w", a.name, err)
			}
			p50 := pct(pooled, 50)
			t.add(coldRow(ociRuntime, a.name, mode, "floor: first call to a ready sandbox (by hand)", firstT, "", ratio(float64(first50), float64(w50)))...)
			t.add(coldRow(ociRuntime, a.name, mode, "Berth, warm pool", pooled, ratio(float64(p50), float64(first50)), ratio(float64(p50), float64(w50)))...)
			b.rep.check(poolTarget+" ("+label+")", "≤ 2×", fmt.Sprintf("%s (%s vs %s)", ratio(float64(p50), float64(w50)), ms(p50), ms(w50)),
				float64(p50) <= 2*float64(w50))
		}
		t.add(coldRow(ociRuntime, a.name, mode, "warm invoke (live session)", warm, "", "")...)
		fmt.Fprintf(b.cfg.Out, "  cold %s %s: warm %s\n", ociRuntime, a.name, ms(w50))
	}
	return nil
}

// networked reports whether network mode mode needs a sandbox network.
func networked(mode string) bool { return mode != netNone }

func coldRow(ociRuntime, agent, network, path string, d []time.Duration, vsFloor, vsWarm string) []string {
	return []string{ociRuntime, agent, network, path, ms(pct(d, 50)), ms(pct(d, 90)), ms(pct(d, 99)), ms(slices.Min(d)), vsFloor, vsWarm}
}

// warmSequential makes n calls, one at a time, to one live session and
// returns the times to first byte, less the first tenth (which warm up
// connections and caches).
func warmSequential(ctx context.Context, srv *berth, rt agentRuntime, n int) ([]time.Duration, error) {
	sid := newSessionID()
	var d []time.Duration
	for i := range n + n/10 {
		t, err := srv.invoke(ctx, rt, sid)
		if err != nil {
			return nil, err
		}
		if i >= n/10 {
			d = append(d, t)
		}
	}
	return d, srv.stopSession(ctx, rt, sid)
}

// pooledStarts deploys the agent with a warm pool, in network mode mode,
// and measures n new sessions' first answers, each once the pool is full.
func (b *bench) pooledStarts(ctx context.Context, srv *berth, a agentDef, mode string, n int) (_ []time.Duration, err error) {
	env := networkEnv(mode)
	env["BERTH_WARM_POOL_SIZE"] = strconv.Itoa(b.cfg.PoolSize)
	rt, err := srv.deploy(ctx, a, "bench_"+a.name+"_pool", env)
	if err != nil {
		return nil, err
	}
	// Deleting the runtime releases its pool.
	defer func() { err = errors.Join(err, srv.deleteRuntime(context.WithoutCancel(ctx), rt.ID)) }()
	var d []time.Duration
	for range n {
		if err := srv.waitPoolFull(ctx, rt.ID, b.cfg.PoolSize); err != nil {
			return nil, err
		}
		t, err := srv.coldStart(ctx, rt)
		if err != nil {
			return nil, err
		}
		d = append(d, t)
	}
	return d, nil
}
