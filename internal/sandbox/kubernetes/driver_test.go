package kubernetes_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/kubernetes"
	"github.com/berthrun/berth/internal/sandbox/kubernetes/kubetest"
	"github.com/berthrun/berth/internal/sandbox/sandboxtest"
)

// The test cluster is the one tools/k8s/k8s-up.sh starts (.ci/run does;
// see package kubetest). BERTH_TEST_KUBE_POD_PIDS_LIMIT is the kubelet's
// podPidsLimit; BERTH_TEST_KUBE_SECCOMP_DIR is the kubelet's seccomp
// directory, where the test installs Berth's profile.
const (
	pidsLimitEnv = "BERTH_TEST_KUBE_POD_PIDS_LIMIT"
	seccompEnv   = "BERTH_TEST_KUBE_SECCOMP_DIR"
)

// cluster is a reachable test cluster with a namespace of the test's own.
type cluster struct {
	config    *rest.Config
	client    k8s.Interface
	namespace string
	hostIP    string
	seccomp   string // Options.SeccompProfile, "" if there is no seccomp directory
}

// testCluster connects to the test cluster and makes a namespace for the
// test, deleted when it ends; it skips the test when there is no cluster.
func testCluster(t testing.TB) *cluster {
	t.Helper()
	kc := kubetest.New(t, "berth-test")
	c := &cluster{config: kc.Config, client: kc.Client, namespace: kc.Namespace, hostIP: kc.HostIP}
	if dir := os.Getenv(seccompEnv); dir != "" {
		data, err := kubernetes.SeccompProfileJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "berth"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "berth", "default.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		c.seccomp = "berth/default.json"
	}
	return c
}

// driver returns a driver of the test's namespace whose pods carry owner.
func (c *cluster) driver(tb testing.TB, owner string, edit func(*kubernetes.Options)) *kubernetes.Driver {
	tb.Helper()
	opts := kubernetes.Options{
		Config:         c.config,
		Namespace:      c.namespace,
		Owner:          owner,
		BundleListen:   net.JoinHostPort(c.hostIP, "0"),
		SeccompProfile: c.seccomp,
		AllowFrom:      []string{c.hostIP + "/32"},
	}
	if edit != nil {
		edit(&opts)
	}
	d, err := kubernetes.New(opts)
	if err != nil {
		tb.Fatalf("kubernetes.New: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// nodePidsLimit is the kubelet's podPidsLimit, which the test setup says
// in BERTH_TEST_KUBE_POD_PIDS_LIMIT (the API server refuses to proxy to a
// kubelet on loopback, so its configz cannot be read through it), or -1.
func nodePidsLimit(t testing.TB) int64 {
	v := os.Getenv(pidsLimitEnv)
	if v == "" {
		return -1
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", pidsLimitEnv, v)
	}
	return n
}

// config is the conformance suite's configuration on the test cluster.
// Drivers made with the same state directory share an owner label, as
// replicas of one Berth would, so Cleanup of a new one removes the
// sandboxes of a dropped one.
func config(t testing.TB) sandboxtest.Config {
	c := testCluster(t)
	if c.seccomp == "" {
		t.Skipf("set %s to the kubelet's seccomp directory: the suite needs Berth's seccomp profile on the node (the runtime's default lets io_uring through)", seccompEnv)
	}
	return sandboxtest.Config{
		NewDriver: func(tb testing.TB, stateDir string) sandbox.Driver {
			sum := sha256.Sum256([]byte(stateDir))
			return c.driver(tb, "test-"+hex.EncodeToString(sum[:8]), nil)
		},
		PodNetwork:  true,
		SandboxAddr: func(sb sandbox.Sandbox) string { return sb.(*kubernetes.Sandbox).PodIP() },
		// The test cluster's bridge plugin does not enforce the
		// NetworkPolicy the driver creates.
		PeersReachable: true,
		MergedOutput:   true,
		NodePidsLimit:  nodePidsLimit(t),
	}
}

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, config(t))
}

// TestPod checks the pod a sandbox runs in: its labels, hardening,
// resources and network policy.
func TestPod(t *testing.T) {
	c := testCluster(t)
	d := c.driver(t, "berth", func(o *kubernetes.Options) { o.RuntimeClassName = "" })
	sb, err := d.Start(t.Context(), sandbox.Spec{
		ID:      "Pod_Test.1",
		Args:    []string{"sleep", "600"},
		Env:     []string{"PATH=/bin"},
		WorkDir: "/work",
		Limits:  sandbox.Limits{MemoryBytes: 96 << 20, MilliCPUs: 250, TmpBytes: 8 << 20},
		Labels:  map[string]string{"runtime": "rt-1", "version": "3", "session": strings.Repeat("s", 70)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Stop(context.Background()) })
	name := sb.(*kubernetes.Sandbox).PodName()
	if name != kubernetes.PodName("Pod_Test.1") || !strings.HasPrefix(name, "berth-pod-test-1-") {
		t.Errorf("pod name %q", name)
	}
	pod, err := c.client.CoreV1().Pods(c.namespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Labels[kubernetes.LabelManagedBy] != "berth" || pod.Labels[kubernetes.LabelSandbox] == "" || pod.Annotations[kubernetes.AnnotationID] != "Pod_Test.1" {
		t.Errorf("labels %v, annotations %v", pod.Labels, pod.Annotations)
	}
	if pod.Labels["berth.run/runtime"] != "rt-1" || pod.Labels["berth.run/version"] != "3" {
		t.Errorf("labels %v, want the spec's runtime and version", pod.Labels)
	}
	if _, ok := pod.Labels["berth.run/session"]; ok || pod.Annotations["berth.run/session"] != strings.Repeat("s", 70) {
		t.Errorf("a session id too long for a label: labels %v, annotations %v", pod.Labels, pod.Annotations)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken || pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks {
		t.Errorf("the pod gets a service account token or service links")
	}
	ctr := pod.Spec.Containers[0]
	sc := ctr.SecurityContext
	if sc == nil || !*sc.RunAsNonRoot || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || (c.seccomp == "" && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) || (c.seccomp != "" && *sc.SeccompProfile.LocalhostProfile != c.seccomp) {
		t.Errorf("security context %+v", sc)
	}
	if got := ctr.Resources.Limits.Memory().Value(); got != 96<<20 {
		t.Errorf("memory limit %d", got)
	}
	if got := ctr.Resources.Limits.Cpu().MilliValue(); got != 250 {
		t.Errorf("cpu limit %dm", got)
	}
	np, err := c.client.NetworkingV1().NetworkPolicies(c.namespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("network policy: %v", err)
	}
	if from := np.Spec.Ingress[0].From; len(from) != 1 || from[0].IPBlock.CIDR != c.hostIP+"/32" {
		t.Errorf("network policy admits %+v", from)
	}
	if err := sb.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.CoreV1().Pods(c.namespace).Get(t.Context(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the pod is still there after Stop: %v", err)
	}
}

// TestRootLayersRefused checks that a container image spec gets a clear
// error.
func TestRootLayersRefused(t *testing.T) {
	c := testCluster(t)
	d := c.driver(t, "berth", nil)
	_, err := d.Start(t.Context(), sandbox.Spec{ID: "img", Args: []string{"/x"}, WorkDir: "/", RootLayers: []string{"/nonexistent"}})
	if err == nil || !strings.Contains(err.Error(), "root layers") {
		t.Errorf("Start = %v, want an error naming root layers", err)
	}
}

func TestNewUnavailable(t *testing.T) {
	_, err := kubernetes.New(kubernetes.Options{
		Config:    &rest.Config{Host: "https://127.0.0.1:1", Timeout: time.Second},
		Namespace: "default",
	})
	if !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("New against a closed port = %v, want sandbox.ErrUnavailable", err)
	}
}

func TestNewBadOptions(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	for _, tt := range []struct {
		name string
		opts kubernetes.Options
		want string
	}{
		{"no namespace", kubernetes.Options{Config: cfg}, "no namespace"},
		{"bad owner", kubernetes.Options{Config: cfg, Namespace: "x", Owner: "a b"}, "owner"},
		{"bad allow-from", kubernetes.Options{Config: cfg, Namespace: "x", AllowFrom: []string{"10.0.0.1"}}, "allow-from"},
		{"negative uid", kubernetes.Options{Config: cfg, Namespace: "x", UID: -1}, "uid"},
		{"bad pull policy", kubernetes.Options{Config: cfg, Namespace: "x", PullPolicy: "Sometimes"}, "pull policy"},
		{"bad image pull secret", kubernetes.Options{Config: cfg, Namespace: "x", ImagePullSecrets: []string{"Registry_Creds"}}, "image pull secret"},
		{"request percent above 100", kubernetes.Options{Config: cfg, Namespace: "x", RequestPercent: 101}, "request percent"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := kubernetes.New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

// BenchmarkColdStart measures a pod-backed sandbox's cold start: from
// Start (pod creation) until the agent's first 200 on /ping.
func BenchmarkColdStart(b *testing.B) {
	sandboxtest.BenchmarkColdStart(b, config(b))
}

// BenchmarkDial measures dialling a running agent on its pod IP.
func BenchmarkDial(b *testing.B) {
	sandboxtest.BenchmarkDial(b, config(b))
}
