package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/kubernetes"
	"github.com/berthrun/berth/internal/server"
)

// kubeLimits are the limits of every pod the section starts, Berth's and
// by hand alike. With kubeRequestPercent, a pod requests 10m of CPU and
// 1 MiB of memory, so that a hundred fit a 2-core node's scheduler.
var kubeLimits = sandbox.Limits{MemoryBytes: 64 << 20, MilliCPUs: 1000, TmpBytes: 16 << 20}

const kubeRequestPercent = 1

// kubeCluster is the test cluster the section runs on, with a namespace of
// the run's own.
type kubeCluster struct {
	config    *rest.Config
	client    k8s.Interface
	namespace string
	owner     string // the driver's Options.Owner
	hostIP    string
}

// kube measures pod-backed sessions on a Kubernetes cluster: cold starts
// with and without a warm pod, warm calls to a pod against a local
// sandbox, and many sessions started at once.
func (b *bench) kube(ctx context.Context) {
	if b.cfg.Kubeconfig == "" {
		t := b.rep.section("Kubernetes", "not measured.")
		t.note("skipped: no Kubernetes cluster; set -kubeconfig or BERTH_TEST_KUBECONFIG (tools/k8s/k8s-up.sh starts one)")
		b.rep.skipped(kubeSessionsTarget(b.cfg.KubeSessions), fmt.Sprintf("%d live, 0 errors", b.cfg.KubeSessions), "no cluster")
		b.rep.done(t)
		return
	}
	if err := b.kubeRun(ctx); err != nil {
		b.rep.runError(fmt.Errorf("kubernetes: %w", err))
	}
}

func kubeSessionsTarget(n int) string {
	return fmt.Sprintf("kubernetes: %d concurrent pod-backed sessions on one node", n)
}

func (b *bench) kubeRun(ctx context.Context) (err error) {
	c, err := b.kubeConnect(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.deleteNamespace()) }()
	clusterNote, err := c.describe(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(b.cfg.Out, "  kubernetes: %s\n", clusterNote)
	// Berth's driver and the by-hand one have owners of their own: Berth
	// removes the pods of its owner that none of its sessions accounts for.
	newDriver := func(owner string) (*kubernetes.Driver, error) {
		d, err := kubernetes.New(kubernetes.Options{
			Config: c.config, Namespace: c.namespace, Owner: owner, BundleListen: net.JoinHostPort(c.hostIP, "0"),
			AllowFrom: []string{c.hostIP + "/32"}, RequestPercent: kubeRequestPercent, Defaults: kubeLimits,
			Logger: b.cfg.Log.With("driver", "kubernetes"),
		})
		if err != nil {
			return nil, fmt.Errorf("kubernetes driver: %w", err)
		}
		return d, nil
	}
	berthDriver, err := newDriver(c.owner)
	if err != nil {
		return err
	}
	defer berthDriver.Close()
	d, err := newDriver(c.owner + floorOwner)
	if err != nil {
		return err
	}
	defer d.Close()

	srv, err := b.startBerth(ctx, "kube", server.Config{Driver: berthDriver, MaxSessions: b.cfg.KubeSessions + 10 + b.cfg.PoolSize,
		SessionLimits: kubeLimits, ReadyTimeout: 3 * time.Minute})
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			err = errors.Join(err, srv.stop())
		}
	}()
	rt, err := srv.deploy(ctx, b.goAgent, "bench_kube", networkEnv(netNone))
	if err != nil {
		return fmt.Errorf("deploy the Go agent: %w", err)
	}

	if err := b.kubeCold(ctx, c, srv, d, rt, clusterNote); err != nil {
		return err
	}
	if err := b.kubeWarm(ctx, c, srv, rt); err != nil {
		return err
	}
	stopped = true
	return b.kubeMany(ctx, c, srv, d, rt)
}

// kubeConnect reaches the cluster and makes the run's namespace.
func (b *bench) kubeConnect(ctx context.Context) (*kubeCluster, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", b.cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", b.cfg.Kubeconfig, err)
	}
	client, err := k8s.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := &kubeCluster{config: cfg, client: client, namespace: "berth-bench-" + b.runID, owner: "bench-" + b.runID,
		hostIP: b.cfg.KubeHostIP}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.namespace}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", c.namespace, err)
	}
	// Pods are refused until the namespace's default ServiceAccount exists.
	for {
		_, err := client.CoreV1().ServiceAccounts(c.namespace).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return c, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, errors.Join(err, c.deleteNamespace())
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, errors.Join(err, c.deleteNamespace())
		}
	}
}

func (c *kubeCluster) deleteNamespace() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.client.CoreV1().Namespaces().Delete(ctx, c.namespace, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete namespace %s: %w", c.namespace, err)
	}
	return nil
}

// describe says what the cluster is: versions, pod capacity, the pods it
// runs already.
func (c *kubeCluster) describe(ctx context.Context) (string, error) {
	nodes, err := c.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("list nodes: %w", err)
	}
	pods, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("list pods: %w", err)
	}
	var ns []string
	for _, n := range nodes.Items {
		info := n.Status.NodeInfo
		ns = append(ns, fmt.Sprintf("node %s: kubelet %s, %s, %s CPUs, %s pods at most", n.Name, info.KubeletVersion,
			info.ContainerRuntimeVersion, n.Status.Allocatable.Cpu(), n.Status.Allocatable.Pods()))
	}
	return fmt.Sprintf("%s; %d pods in the cluster before the run", strings.Join(ns, "; "), len(pods.Items)), nil
}

// floorOwner ends the owner of the by-hand driver's pods.
const floorOwner = "-floor"

// ownPods returns the pods of the run's drivers (Berth's and the by-hand
// one) that are not being deleted.
func (c *kubeCluster) ownPods(ctx context.Context, selector string) ([]corev1.Pod, error) {
	list, err := c.client.CoreV1().Pods(c.namespace).List(ctx, metav1.ListOptions{
		LabelSelector: fmt.Sprintf("%s in (%s,%s%s)%s", kubernetes.LabelManagedBy, c.owner, c.owner, floorOwner, selector)})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	return slices.DeleteFunc(list.Items, func(p corev1.Pod) bool { return p.DeletionTimestamp != nil }), nil
}

// kubeCold measures a new session's first answer on a pod without and
// with a warm pod, against the floor of a pod started by hand.
func (b *bench) kubeCold(ctx context.Context, c *kubeCluster, srv *berth, d *kubernetes.Driver, rt agentRuntime, clusterNote string) error {
	t := b.rep.section("Kubernetes: cold start of a pod-backed session", fmt.Sprintf(
		"Berth in-process with the kubernetes driver (`server.Config.Driver`, as `berth server --driver kubernetes`) on "+
			"the one-node test cluster of tools/k8s (%s). The Go agent, network mode none; pods of %d MiB and %d mCPU "+
			"(requests %d%% of that). *no pool*: a new runtimeSessionId's first `{\"op\":\"echo\"}` call until the "+
			"first byte of its answer (pod created, code bundle fetched by the init container, agent started, /ping "+
			"polled), then StopRuntimeSession, which waits until the pod is gone; %d samples. *floor (by hand)*: the "+
			"same agent and pod spec started with the kubernetes driver alone (no server, no session manager), "+
			"polling /ping every millisecond, until its first call answers, interleaved with Berth's samples; "+
			"*floor: first call to a ready pod* is that first call alone. *warm pool*: the runtime has "+
			"BERTH_WARM_POOL_SIZE=%d and each sample waits until the pool is full again. *warm invoke*: %d "+
			"sequential calls to one live session (the first tenth dropped). The Python agent is not measured: the "+
			"test cluster's base image (busybox) has no Python.",
		clusterNote, kubeLimits.MemoryBytes>>20, kubeLimits.MilliCPUs, kubeRequestPercent, b.cfg.KubeCold,
		b.cfg.PoolSize, b.cfg.WarmSeq),
		"path", "p50", "p90", "p99", "min", "max", "vs floor", "vs warm invoke")
	defer b.rep.done(t)
	row := func(path string, d []time.Duration, vsFloor, vsWarm string) {
		t.add(path, ms(pct(d, 50)), ms(pct(d, 90)), ms(pct(d, 99)), ms(slices.Min(d)), ms(slices.Max(d)), vsFloor, vsWarm)
	}
	fail := func(err error) error {
		b.rep.fail(t, err)
		return err
	}
	warm, err := warmSequential(ctx, srv, rt, b.cfg.WarmSeq)
	if err != nil {
		return fail(fmt.Errorf("warm calls to a pod: %w", err))
	}
	var coldT, floorT, firstT []time.Duration
	for i := range b.cfg.KubeCold {
		cd, err := srv.coldStart(ctx, rt)
		if err != nil {
			return fail(fmt.Errorf("cold start %d: %w", i, err))
		}
		f, fc, err := floorStart(ctx, d, b.goAgent, netNone)
		if err != nil {
			return fail(fmt.Errorf("pod started by hand: %w", err))
		}
		coldT, floorT, firstT = append(coldT, cd), append(floorT, f), append(firstT, fc)
		fmt.Fprintf(b.cfg.Out, "  kubernetes cold %d/%d: Berth %s, floor %s\n", i+1, b.cfg.KubeCold, ms(cd), ms(f))
	}
	pooled, err := b.pooledStarts(ctx, srv, b.goAgent, netNone, b.cfg.KubeCold)
	if err != nil {
		return fail(fmt.Errorf("warm-pool starts: %w", err))
	}
	w50, f50, first50 := pct(warm, 50), pct(floorT, 50), pct(firstT, 50)
	row("floor (by hand)", floorT, "", "")
	row("Berth, no pool", coldT, ratio(float64(pct(coldT, 50)), float64(f50)), "")
	row("floor: first call to a ready pod (by hand)", firstT, "", ratio(float64(first50), float64(w50)))
	row("Berth, warm pool", pooled, ratio(float64(pct(pooled, 50)), float64(first50)), ratio(float64(pct(pooled, 50)), float64(w50)))
	row("warm invoke (live session)", warm, "", "")
	t.note("a warm pod cuts a new session's first answer from %s to %s (p50), %.0f× less",
		ms(pct(coldT, 50)), ms(pct(pooled, 50)), float64(pct(coldT, 50))/float64(pct(pooled, 50)))
	fmt.Fprintf(b.cfg.Out, "  kubernetes cold: floor %s, Berth %s, warm pool %s, warm invoke %s\n",
		ms(f50), ms(pct(coldT, 50)), ms(pct(pooled, 50)), ms(w50))
	return nil
}

// kubeWarm compares warm calls through Berth to a pod with warm calls
// through Berth to a local runc sandbox, and both with the agent called
// directly.
func (b *bench) kubeWarm(ctx context.Context, c *kubeCluster, kube *berth, rt agentRuntime) (err error) {
	t := b.rep.section("Kubernetes: warm invoke, pod vs local sandbox", fmt.Sprintf(
		"one live session of the Go agent on a pod (Berth with the kubernetes driver, above) and one in a local "+
			"%s sandbox (a second in-process Berth with the OCI driver), network mode none; %d rounds of sequential "+
			"`{\"op\":\"echo\"}` calls (the first tenth dropped), each round calling every path once in turn, "+
			"time to the first byte of the answer over a keep-alive connection. *direct*: the same agent without "+
			"Berth: the pod's IP from the host (found by the pod's label berth.run/session), and inside the local "+
			"sandbox's network namespace.", b.cfg.Primary, b.cfg.WarmSeq),
		"path", "p50", "p90", "p99", "min", "p50 added by Berth", "p99 added by Berth")
	defer b.rep.done(t)
	fail := func(err error) error {
		b.rep.fail(t, err)
		return err
	}
	local, err := b.startBerth(ctx, "kube-local", server.Config{OCIRuntime: b.cfg.Primary, MaxSessions: 10})
	if err != nil {
		return fail(err)
	}
	defer func() { err = errors.Join(err, local.stop()) }()
	localRT, err := local.deploy(ctx, b.goAgent, "bench_local", networkEnv(netNone))
	if err != nil {
		return fail(fmt.Errorf("deploy the Go agent locally: %w", err))
	}
	ls, err := newAgentSession(ctx, local, localRT)
	if err != nil {
		return fail(err)
	}
	defer ls.close()
	localDirect := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return ls.direct.dial(ctx, agentAddr)
	}}
	defer localDirect.CloseIdleConnections()

	podSID := newSessionID()
	if _, err := kube.invoke(ctx, rt, podSID); err != nil {
		return fail(fmt.Errorf("start a pod session: %w", err))
	}
	defer func() { err = errors.Join(err, kube.stopSession(context.WithoutCancel(ctx), rt, podSID)) }()
	pods, err := c.ownPods(ctx, ",berth.run/session="+podSID)
	if err != nil {
		return fail(err)
	}
	if len(pods) != 1 || pods[0].Status.PodIP == "" {
		return fail(fmt.Errorf("find the session's pod by its label: %d pods", len(pods)))
	}
	podAddr := net.JoinHostPort(pods[0].Status.PodIP, "8080")
	podDirect := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, podAddr)
	}}
	defer podDirect.CloseIdleConnections()

	paths := []struct {
		name string
		call func() (time.Duration, error)
		d    []time.Duration
	}{
		{name: "pod, direct", call: func() (time.Duration, error) { return directInvoke(ctx, podDirect) }},
		{name: "pod, through Berth", call: func() (time.Duration, error) { return kube.invoke(ctx, rt, podSID) }},
		{name: "local " + b.cfg.Primary + " sandbox, direct", call: func() (time.Duration, error) { return directInvoke(ctx, localDirect) }},
		{name: "local " + b.cfg.Primary + " sandbox, through Berth", call: func() (time.Duration, error) { return local.invoke(ctx, localRT, ls.sid) }},
	}
	n := b.cfg.WarmSeq
	for i := range n + n/10 {
		for j := range paths {
			d, err := paths[j].call()
			if err != nil {
				return fail(fmt.Errorf("%s: %w", paths[j].name, err))
			}
			if i >= n/10 {
				paths[j].d = append(paths[j].d, d)
			}
		}
	}
	for i, p := range paths {
		var add50, add99 string
		if i%2 == 1 {
			direct := paths[i-1].d
			add50, add99 = ms(pct(p.d, 50)-pct(direct, 50)), ms(pct(p.d, 99)-pct(direct, 99))
		}
		t.add(p.name, ms(pct(p.d, 50)), ms(pct(p.d, 90)), ms(pct(p.d, 99)), ms(slices.Min(p.d)), add50, add99)
		fmt.Fprintf(b.cfg.Out, "  kubernetes warm %s: p50 %s p99 %s\n", p.name, ms(pct(p.d, 50)), ms(pct(p.d, 99)))
	}
	return nil
}

// kubeMany starts many sessions at once, one pod each, waits until all
// answer, then shuts the server down, which must delete every pod. The
// floor does the same with the driver alone, first.
func (b *bench) kubeMany(ctx context.Context, c *kubeCluster, srv *berth, d *kubernetes.Driver, rt agentRuntime) (err error) {
	n := b.cfg.KubeSessions
	t := b.rep.section(fmt.Sprintf("Kubernetes: %d concurrent sessions", n), fmt.Sprintf(
		"*Berth*: %d new sessions of the Go agent started at once (each its first `{\"op\":\"echo\"}` call, all in "+
			"flight together, no keep-alive), one pod each, on the one node; then the runtime is deleted, which must "+
			"delete every pod (a server that shuts down hands its sessions over to its successor instead). *floor (by hand)*: before it, %d pods of the same agent and spec started at once with "+
			"the kubernetes driver alone, each polled on /ping every millisecond until its first call answers, then "+
			"all stopped at once. *all answering*: from the start until the last first answer arrived; *first answer*: "+
			"per session, from its start until the first byte of its first answer; *pods running*: the run's pods the "+
			"API server lists as Running once all have answered; *all pods gone*: from the runtime's deletion (Berth) or the "+
			"stops (floor) until every pod is deleted.", n, n),
		"path", "sessions", "errors", "all answering", "first answer min", "p50", "p90", "p99", "sessions/s", "pods running", "all pods gone after")
	defer b.rep.done(t)
	target := kubeSessionsTarget(n)
	goal := fmt.Sprintf("%d live, 0 errors", n)
	stopped := false
	defer func() {
		if !stopped {
			err = errors.Join(err, srv.stop())
		}
	}()
	row := func(path string, times []time.Duration, failed int, all time.Duration, running int, gone string) {
		if len(times) == 0 {
			times = []time.Duration{0}
		}
		t.add(path, strconv.Itoa(n), strconv.Itoa(failed), ms(all), ms(slices.Min(times)), ms(pct(times, 50)), ms(pct(times, 90)),
			ms(pct(times, 99)), fmt.Sprintf("%.1f", float64(n-failed)/all.Seconds()), strconv.Itoa(running), gone)
		fmt.Fprintf(b.cfg.Out, "  kubernetes %d at once, %s: %d failed, all answering after %s, p50 %s p99 %s, %d pods running; all gone after %s\n",
			n, path, failed, ms(all), ms(pct(times, 50)), ms(pct(times, 99)), running, gone)
	}
	// running counts the run's running pods, and notes where their start
	// time went.
	running := func(path string) (int, error) {
		pods, err := c.ownPods(ctx, "")
		if err != nil {
			return 0, err
		}
		r := 0
		for _, p := range pods {
			if p.Status.Phase == corev1.PodRunning {
				r++
			}
		}
		t.note("%s: %s", path, podPhases(pods))
		return r, nil
	}
	// gone describes how long it took until no pod of the run was left.
	gone := func(took time.Duration, stopErr error) (string, error) {
		left, err := c.ownPods(context.WithoutCancel(ctx), "")
		switch {
		case errors.Join(stopErr, err) != nil:
			return "error", errors.Join(stopErr, err)
		case len(left) > 0:
			return fmt.Sprintf("%d pods left", len(left)), fmt.Errorf("%d pods left, e.g. %s", len(left), left[0].Name)
		}
		return ms(took), nil
	}

	// The floor: pods by hand.
	begin := time.Now()
	times, sbs, failed, firstErr := startManyByHand(ctx, d, b.goAgent, n)
	all := time.Since(begin)
	if failed > 0 {
		t.note("floor: %d of %d pods failed to answer; the first: %v", failed, n, firstErr)
	}
	floorRunning, err := running("floor (by hand)")
	if err != nil {
		return err
	}
	begin = time.Now()
	stopErr := stopAll(context.WithoutCancel(ctx), sbs)
	floorGone, err := gone(time.Since(begin), stopErr)
	row("floor (by hand)", times, failed, all, floorRunning, floorGone)
	if err != nil {
		b.rep.fail(t, fmt.Errorf("floor: %w", err))
		return err
	}

	// Berth.
	cl := newClient(strings.TrimPrefix(srv.base, "http://"), false)
	begin = time.Now()
	times, failed, firstErr = startSessions(ctx, cl, rt, n, n)
	all = time.Since(begin)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if failed > 0 {
		t.note("Berth: %d of %d sessions failed to start; the first: %v", failed, n, firstErr)
	}
	live, err := cl.liveSessions(ctx)
	if err != nil {
		return err
	}
	berthRunning, err := running("Berth")
	if err != nil {
		return err
	}
	begin = time.Now()
	stopErr = cl.deleteRuntime(ctx, rt.ID)
	berthGone, goneErr := gone(time.Since(begin), stopErr)
	stopped = true
	if err := srv.stop(); err != nil && goneErr == nil {
		goneErr = err
	}
	row("Berth", times, failed, all, berthRunning, berthGone)
	t.note("Berth counted %d live sessions once all had answered", live)
	ok := failed == 0 && live == n && berthRunning == n && goneErr == nil
	left := 0
	if goneErr != nil {
		left = -1
		if l, err := c.ownPods(context.WithoutCancel(ctx), ""); err == nil {
			left = len(l)
		}
	}
	b.rep.check(target, goal, fmt.Sprintf("%d live, %d errors, %d pods left after the runtime's deletion", live, failed, left), ok)
	if goneErr != nil {
		b.rep.fail(t, goneErr)
	}
	return goneErr
}

// podPhases says where pods' start went: for each step, the time from a
// pod's creation until the condition that marks it (to the second, as the
// API server keeps it), p50 and max over the pods.
func podPhases(pods []corev1.Pod) string {
	steps := []struct {
		name string
		cond corev1.PodConditionType
	}{
		{"scheduled", corev1.PodScheduled},
		{"pod sandbox and network ready", corev1.PodReadyToStartContainers},
		{"code bundle fetched (init container done)", corev1.PodInitialized},
		{"agent running", corev1.ContainersReady},
	}
	var parts []string
	for _, st := range steps {
		var d []time.Duration
		for _, p := range pods {
			for _, c := range p.Status.Conditions {
				if c.Type == st.cond && c.Status == corev1.ConditionTrue {
					d = append(d, c.LastTransitionTime.Sub(p.CreationTimestamp.Time))
				}
			}
		}
		if len(d) == 0 {
			parts = append(parts, st.name+" not reported")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s after %s (p50), %s (max)", st.name,
			pct(d, 50).Round(time.Second), slices.Max(d).Round(time.Second)))
	}
	return fmt.Sprintf("from their creation, %d pods were %s", len(pods), strings.Join(parts, "; "))
}

// startManyByHand starts n sandboxes of agent a at once with the driver
// alone and returns, for those that answered, the time from the start
// until the first byte of their first call, and the sandboxes (to stop).
func startManyByHand(ctx context.Context, d sandbox.Driver, a agentDef, n int) ([]time.Duration, []sandbox.Sandbox, int, error) {
	var (
		mu       sync.Mutex
		times    []time.Duration
		sbs      []sandbox.Sandbox
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			start := time.Now()
			sb, tr, err := startByHand(ctx, d, a, netNone)
			var took time.Duration
			if err == nil {
				_, err = directInvoke(ctx, tr)
				took = time.Since(start)
				tr.CloseIdleConnections()
			}
			mu.Lock()
			defer mu.Unlock()
			if sb != nil {
				sbs = append(sbs, sb)
			}
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			times = append(times, took)
		})
	}
	wg.Wait()
	return times, sbs, failed, firstErr
}

// stopAll stops sandboxes at once and waits until all are gone.
func stopAll(ctx context.Context, sbs []sandbox.Sandbox) error {
	errs := make([]error, len(sbs))
	var wg sync.WaitGroup
	for i, sb := range sbs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			errs[i] = sb.Stop(ctx)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
