package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"

	"github.com/berthrun/berth/internal/server"
)

// bench is one run of the harness.
type bench struct {
	cfg     config
	tmp     string // everything the run writes, removed at the end
	runID   string // tells this run's cgroups from any other's
	cg      cgroups
	tools   tools
	goAgent agentDef
	pyAgent agentDef
	rep     *report
}

// run measures every section cfg asks for, prints the tables and writes the
// results file. A section that fails is reported and the run goes on; run
// returns every failure.
func run(ctx context.Context, cfg config) (err error) {
	b := &bench{cfg: cfg, runID: strings.ToLower(rand.Text()[:8]),
		rep: &report{out: cfg.Out, command: commandLine()}}
	if b.cg, err = findCgroups(); err != nil {
		return err
	}
	if b.tmp, err = os.MkdirTemp("", "berth-bench-"); err != nil {
		return err
	}
	// Sandboxes' roots (unprivileged host users in their user namespaces)
	// must be able to search their way to their state, as under
	// /var/lib/berth; without it the driver runs them without a user
	// namespace, which is not what a server does.
	if err = os.Chmod(b.tmp, 0o711); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, removeTemp(b.tmp)) }()
	if b.goAgent, b.pyAgent, err = agents(ctx, b.tmp); err != nil {
		return err
	}
	// Only the warm section needs nginx and wrk.
	var notes []string
	b.tools, notes = findTools(ctx, cfg.Install && cfg.runs(secWarm))
	if cfg.runs(secWarm) {
		b.rep.notes = append(b.rep.notes, notes...)
	}
	if cfg.runs(secCold) {
		b.rep.notes = append(b.rep.notes, prepareCrun(cfg.Runtimes)...)
	}
	runtimes := []string{cfg.Primary}
	for _, r := range cfg.Runtimes {
		if r != cfg.Primary {
			runtimes = append(runtimes, r)
		}
	}
	b.rep.machine = describeMachine(ctx, b.cg, runtimes, b.tools)
	m := b.rep.machine
	fmt.Fprintf(cfg.Out, "Berth benchmark, %s\n%s, %d cores, %s; %s; %s; cgroup %s; load %s\n",
		m.Date.Format("2006-01-02 15:04 MST"), m.CPU, m.Cores, m.Memory, m.Kernel, m.Go, m.Cgroups, m.Load)
	for _, n := range b.rep.notes {
		fmt.Fprintln(cfg.Out, "note:", n)
	}

	// The warm, stream and payload sections share a server and one
	// session of the Go agent.
	if cfg.runs(secWarm) || cfg.runs(secStream) || cfg.runs(secPayload) {
		if err := b.withMainSession(ctx); err != nil {
			b.rep.runError(err)
		}
	}
	if cfg.runs(secCold) {
		b.cold(ctx)
	}
	if cfg.runs(secDensity) {
		b.density(ctx)
	}
	if cfg.runs(secKube) {
		b.kube(ctx)
	}

	b.rep.machine.LoadEnd = loadAverage()
	b.rep.printSummary()
	if cfg.Results != "" {
		if err := b.rep.writeFile(cfg.Results); err != nil {
			b.rep.runError(err)
		} else {
			fmt.Fprintf(cfg.Out, "\nwrote %s\n", cfg.Results)
		}
	}
	return errors.Join(b.rep.errs...)
}

// withMainSession runs the warm, stream and payload sections against one
// session of the Go agent on a server with default limits.
func (b *bench) withMainSession(ctx context.Context) (err error) {
	srv, err := b.startBerth(ctx, "main", server.Config{OCIRuntime: b.cfg.Primary, MaxSessions: 10})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, srv.stop()) }()
	// Berth and the direct path reach the agent inside its namespace
	// whatever its network mode: none, so that no sandbox network is made.
	rt, err := srv.deploy(ctx, b.goAgent, "bench_go", networkEnv(netNone))
	if err != nil {
		return fmt.Errorf("deploy the Go agent: %w", err)
	}
	s, err := newAgentSession(ctx, srv, rt)
	if err != nil {
		return err
	}
	defer s.close()
	if b.cfg.runs(secWarm) {
		b.warm(ctx, s)
	}
	if b.cfg.runs(secStream) {
		b.stream(ctx, s)
	}
	if b.cfg.runs(secPayload) {
		b.payload(ctx, s)
	}
	return nil
}

// prepareCrun mounts the hugetlb cgroup hierarchy that crun wants on a
// cgroup v1 host that lacks it (as .ci/run does), if crun is to be measured.
func prepareCrun(runtimes []string) []string {
	const hugetlb = "/sys/fs/cgroup/hugetlb"
	if !slices.Contains(runtimes, "crun") {
		return nil
	}
	if _, err := exec.LookPath("crun"); err != nil {
		return nil
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return nil // cgroup v2
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		return nil
	}
	if mounted, err := mountinfo.Mounted(hugetlb); err == nil && mounted {
		return nil
	}
	if err := os.MkdirAll(hugetlb, 0o755); err != nil {
		return []string{fmt.Sprintf("crun may fail: could not create %s: %v", hugetlb, err)}
	}
	if err := mountCgroup(hugetlb, "hugetlb"); err != nil {
		return []string{fmt.Sprintf("crun may fail: could not mount the hugetlb cgroup at %s: %v", hugetlb, err)}
	}
	return []string{"mounted the hugetlb cgroup hierarchy at " + hugetlb + ", which crun needs on cgroup v1"}
}

// removeTemp removes the run's directory, unless something is still mounted
// under it (a sandbox left running): removing through its mounts could reach
// what they show.
func removeTemp(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("check mounts under %s: %w", dir, err)
	}
	if len(mounts) > 0 {
		return fmt.Errorf("%s still has %d mounts (e.g. %s); left in place", dir, len(mounts), mounts[0].Mountpoint)
	}
	return os.RemoveAll(dir)
}

// commandLine is how the harness was run, for the results file.
func commandLine() string {
	args := append([]string{"go run ./bench"}, os.Args[1:]...)
	if strings.HasSuffix(os.Args[0], ".test") {
		args = []string{"go test ./bench"}
	}
	return strings.Join(args, " ")
}
