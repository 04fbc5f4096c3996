package kubernetes_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/kubernetes"
	"github.com/berthrun/berth/internal/sandbox/sandboxtest"
)

// The test cluster is the one tools/k8s/k8s-up.sh starts (.ci/run does);
// `source $K8S_DIR/env` sets these. Its pods reach this host at the node
// bridge's address, where the driver serves code bundles.
const (
	kubeconfigEnv = "BERTH_TEST_KUBECONFIG"
	hostIPEnv     = "BERTH_TEST_KUBE_HOST_IP"
)

// warnings collects the API server's warnings (Pod Security's among them).
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, msg)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.list
	w.list = nil
	return l
}

// refusals records the requests the API server answers with 403 Forbidden.
type refusals struct {
	mu   sync.Mutex
	list []string
}

func (r *refusals) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err == nil && resp.StatusCode == http.StatusForbidden {
			r.mu.Lock()
			r.list = append(r.list, req.Method+" "+req.URL.RequestURI())
			r.mu.Unlock()
		}
		return resp, err
	})
}

func (r *refusals) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.list
	r.list = nil
	return l
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// cluster is a reachable test cluster, as its admin.
type cluster struct {
	config   *rest.Config
	client   k8s.Interface
	dynamic  dynamic.Interface
	mapper   *restmapper.DeferredDiscoveryRESTMapper
	warnings *warnings
	hostIP   string
}

func testCluster(t *testing.T) *cluster {
	t.Helper()
	path := os.Getenv(kubeconfigEnv)
	if path == "" {
		t.Skipf("no Kubernetes cluster: set %s to a kubeconfig (bash tools/k8s/k8s-up.sh starts one; source $K8S_DIR/env)", kubeconfigEnv)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Skipf("no Kubernetes cluster: %s=%s: %v", kubeconfigEnv, path, err)
	}
	w := &warnings{}
	cfg.WarningHandler = w
	client, err := k8s.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Discovery().ServerVersion(); err != nil {
		t.Skipf("no Kubernetes cluster: %s=%s is unreachable: %v", kubeconfigEnv, path, err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hostIP := os.Getenv(hostIPEnv)
	if hostIP == "" {
		hostIP = "10.244.0.1"
	}
	return &cluster{
		config: cfg, client: client, dynamic: dyn, warnings: w, hostIP: hostIP,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(client.Discovery())),
	}
}

// resource returns the dynamic client of m's kind, in m's namespace if it
// is namespaced.
func (c *cluster) resource(m manifest) (dynamic.ResourceInterface, error) {
	mapping, err := c.mapper.RESTMapping(m.gvk.GroupKind(), m.gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m, err)
	}
	r := c.dynamic.Resource(mapping.Resource)
	if mapping.Scope.Name() == "namespace" {
		acc, err := metaOf(m.obj)
		if err != nil {
			return nil, err
		}
		return r.Namespace(acc.GetNamespace()), nil
	}
	return r, nil
}

// create creates m, for real or as a server-side dry run, with the API
// server's strict field validation.
func (c *cluster) create(ctx context.Context, m manifest, dryRun bool) error {
	r, err := c.resource(m)
	if err != nil {
		return err
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(m.obj)
	if err != nil {
		return fmt.Errorf("%s: %w", m, err)
	}
	opts := metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := r.Create(ctx, &unstructured.Unstructured{Object: u}, opts); err != nil {
		return fmt.Errorf("%s: %w", m, err)
	}
	return nil
}

// testNamespaces are the test's own names for the manifests' namespaces.
type testNamespaces struct{ berth, sandboxes string }

func newTestNamespaces() testNamespaces {
	b := make([]byte, 4)
	rand.Read(b)
	p := "deploy-test-" + hex.EncodeToString(b)
	return testNamespaces{berth: p + "-berth", sandboxes: p + "-sandboxes"}
}

// relocate moves the manifests into the test's namespaces: every place
// that names a namespace (metadata, the namespaces themselves, the Role's
// namespace grant, the RoleBinding's subject, NetworkPolicy namespace
// selectors, the Deployment's --namespace and the store URL's host).
func relocate(t testing.TB, ms []manifest, to testNamespaces) []manifest {
	t.Helper()
	rename := map[string]string{berthNamespace: to.berth, sandboxNamespace: to.sandboxes}
	mv := func(s *string) {
		if n, ok := rename[*s]; ok {
			*s = n
		}
	}
	out := make([]manifest, len(ms))
	for i, m := range ms {
		m.obj = m.obj.DeepCopyObject()
		acc, err := metaOf(m.obj)
		if err != nil {
			t.Fatal(err)
		}
		ns := acc.GetNamespace()
		mv(&ns)
		acc.SetNamespace(ns)
		switch o := m.obj.(type) {
		case *corev1.Namespace:
			mv(&o.Name)
		case *rbacv1.Role:
			for i := range o.Rules {
				for j := range o.Rules[i].ResourceNames {
					mv(&o.Rules[i].ResourceNames[j])
				}
			}
		case *rbacv1.RoleBinding:
			for i := range o.Subjects {
				mv(&o.Subjects[i].Namespace)
			}
		case *networkingv1.NetworkPolicy:
			for _, r := range o.Spec.Ingress {
				for _, p := range r.From {
					if p.NamespaceSelector != nil {
						v := p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]
						mv(&v)
						p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] = v
					}
				}
			}
		case *appsv1.Deployment:
			for i, c := range o.Spec.Template.Spec.Containers {
				for j, a := range c.Args {
					if v, ok := strings.CutPrefix(a, "--namespace="); ok {
						mv(&v)
						o.Spec.Template.Spec.Containers[i].Args[j] = "--namespace=" + v
					}
				}
			}
		case *corev1.Secret:
			if u, ok := o.StringData["url"]; ok {
				o.StringData["url"] = strings.Replace(u, "."+berthNamespace+".svc", "."+to.berth+".svc", 1)
			}
		}
		out[i] = m
	}
	return out
}

// createNamespaces creates the manifests' (relocated) namespaces for real,
// deleted when the test ends, and waits for their default ServiceAccounts.
func (c *cluster) createNamespaces(t *testing.T, ms []manifest) {
	t.Helper()
	for _, m := range ms {
		ns, ok := m.obj.(*corev1.Namespace)
		if !ok {
			continue
		}
		if err := c.create(t.Context(), m, false); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil {
				t.Errorf("delete namespace %s: %v", ns.Name, err)
			}
		})
		for {
			_, err := c.client.CoreV1().ServiceAccounts(ns.Name).Get(t.Context(), "default", metav1.GetOptions{})
			if err == nil {
				break
			}
			if !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestServerDryRun has the API server check every object of the manifests
// (schema, strict fields, admission, Pod Security's restricted standard
// for the pod templates) without keeping any: the namespaces by a dry run
// first, then, created for real and empty, everything else in them.
func TestServerDryRun(t *testing.T) {
	c := testCluster(t)
	ms := relocate(t, loadManifests(t), newTestNamespaces())
	for _, m := range ms {
		if _, ok := m.obj.(*corev1.Namespace); ok {
			if err := c.create(t.Context(), m, true); err != nil {
				t.Errorf("dry run: %v", err)
			}
		}
	}
	c.createNamespaces(t, ms)
	c.warnings.take()
	for _, m := range ms {
		if _, ok := m.obj.(*corev1.Namespace); ok {
			continue
		}
		if err := c.create(t.Context(), m, true); err != nil {
			t.Errorf("dry run: %v", err)
		}
		for _, w := range c.warnings.take() {
			t.Errorf("dry run: %s: the API server warns: %s", m, w)
		}
	}
	// A dry run keeps nothing.
	for _, m := range ms {
		if d, ok := m.obj.(*appsv1.Deployment); ok {
			if _, err := c.client.AppsV1().Deployments(d.Namespace).Get(t.Context(), d.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("deployment %s/%s after a dry run: %v, want not found", d.Namespace, d.Name, err)
			}
		}
	}
}

// TestRBAC creates the manifests' ServiceAccount, Role and RoleBinding for
// real and acts as that ServiceAccount (impersonated by the admin): the
// kubernetes driver runs a sandbox end to end with its rights (start with a
// code bundle, NetworkPolicy, log, dial, stop, cleanup), in a namespace
// that enforces the restricted Pod Security standard; and what Berth does
// not need is forbidden to it.
func TestRBAC(t *testing.T) {
	c := testCluster(t)
	if ln, err := net.Listen("tcp", net.JoinHostPort(c.hostIP, "0")); err != nil {
		t.Skipf("the cluster's pods cannot reach this host: no address %s here (set %s): %v", c.hostIP, hostIPEnv, err)
	} else {
		ln.Close()
	}
	names := newTestNamespaces()
	ms := relocate(t, loadManifests(t), names)
	c.createNamespaces(t, ms)
	var account string
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *corev1.ServiceAccount:
			account = fmt.Sprintf("system:serviceaccount:%s:%s", o.Namespace, o.Name)
		case *rbacv1.Role, *rbacv1.RoleBinding:
		default:
			continue
		}
		if err := c.create(t.Context(), m, false); err != nil {
			t.Fatal(err)
		}
	}
	if account != "system:serviceaccount:"+names.berth+":berth" {
		t.Fatalf("service account %q, want berth in Berth's namespace", account)
	}
	as := rest.CopyConfig(c.config)
	as.Impersonate = rest.ImpersonationConfig{UserName: account}
	as.WarningHandler = rest.NoWarnings{}
	client, err := k8s.NewForConfig(as)
	if err != nil {
		t.Fatal(err)
	}

	// The RBAC authorizer learns of a new binding through a watch: wait
	// until the account may do what the driver does first.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := client.CoreV1().Namespaces().Get(t.Context(), names.sandboxes, metav1.GetOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("get the sandbox namespace as %s: %v", account, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Run("sufficient", func(t *testing.T) {
		// Some refusals do not fail the driver (an informer whose watch
		// is refused falls back to listing again and again), so every
		// answer it gets is checked too.
		refused := &refusals{}
		driverConfig := rest.CopyConfig(as)
		driverConfig.WrapTransport = refused.wrap
		t.Cleanup(func() {
			for _, r := range refused.take() {
				t.Errorf("the API server refused the driver, acting as %s: %s", account, r)
			}
		})
		d, err := kubernetes.New(kubernetes.Options{
			Config:       driverConfig,
			Namespace:    names.sandboxes,
			Owner:        "deploy-test",
			BundleListen: net.JoinHostPort(c.hostIP, "0"),
			AllowFrom:    []string{c.hostIP + "/32"},
			Logger:       slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatalf("kubernetes.New as %s: %v", account, err)
		}
		t.Cleanup(func() { d.Close() })
		if err := d.Cleanup(t.Context()); err != nil {
			t.Fatal(err)
		}
		code := sandboxtest.BuildAgent(t)
		out, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		sb, err := d.Start(t.Context(), sandbox.Spec{
			ID:      "rbac-test",
			Args:    []string{"/workspace/agent"},
			Env:     []string{"PATH=/bin", "AGENT_NAME=rbac"},
			CodeDir: code,
			WorkDir: "/workspace",
			Stdout:  out,
		})
		if err != nil {
			t.Fatalf("start a sandbox as %s: %v", account, err)
		}
		t.Cleanup(func() { sb.Stop(context.Background()) })
		pod := sb.(*kubernetes.Sandbox).PodName()
		if _, err := c.client.NetworkingV1().NetworkPolicies(names.sandboxes).Get(t.Context(), pod, metav1.GetOptions{}); err != nil {
			t.Errorf("the sandbox's network policy: %v", err)
		}

		httpc := &http.Client{Transport: &http.Transport{DialContext: sb.DialContext}, Timeout: 10 * time.Second}
		resp, err := httpc.Get("http://agent:8080/ping")
		if err != nil {
			t.Fatalf("GET /ping: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "pong" {
			t.Errorf("GET /ping = %d %q, want 200 pong", resp.StatusCode, body)
		}

		// The agent's output comes through pods/log.
		for wait := time.Now().Add(15 * time.Second); ; {
			data, _ := os.ReadFile(out.Name())
			if strings.Contains(string(data), "agent rbac: hello on stdout") {
				break
			}
			if time.Now().After(wait) {
				t.Errorf("the agent's output never arrived; got %q", data)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}

		// Bounded: the driver waits for the pod to go by getting it, and
		// would wait for ever if it could not.
		stopCtx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if err := sb.Stop(stopCtx); err != nil {
			t.Fatalf("stop the sandbox as %s: %v", account, err)
		}
		if _, err := c.client.CoreV1().Pods(names.sandboxes).Get(t.Context(), pod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("pod %s after Stop: %v, want not found", pod, err)
		}
		if _, err := c.client.NetworkingV1().NetworkPolicies(names.sandboxes).Get(t.Context(), pod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("network policy %s after Stop: %v, want not found", pod, err)
		}
		if err := d.Cleanup(t.Context()); err != nil {
			t.Errorf("cleanup as %s: %v", account, err)
		}
	})

	t.Run("limited", func(t *testing.T) {
		ctx := t.Context()
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "intruder"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: kubernetes.DefaultImage}}},
		}
		forbidden := []struct {
			what string
			do   func() error
		}{
			{"list the sandbox namespace's secrets", func() error {
				_, err := client.CoreV1().Secrets(names.sandboxes).List(ctx, metav1.ListOptions{})
				return err
			}},
			{"get a secret of Berth's namespace", func() error {
				_, err := client.CoreV1().Secrets(names.berth).Get(ctx, "berth-postgres", metav1.GetOptions{})
				return err
			}},
			{"create a pod in Berth's namespace", func() error {
				_, err := client.CoreV1().Pods(names.berth).Create(ctx, pod, metav1.CreateOptions{})
				return err
			}},
			{"create a pod in the default namespace", func() error {
				_, err := client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
				return err
			}},
			{"list nodes", func() error {
				_, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
				return err
			}},
			{"list namespaces", func() error {
				_, err := client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
				return err
			}},
			{"get Berth's namespace", func() error {
				_, err := client.CoreV1().Namespaces().Get(ctx, names.berth, metav1.GetOptions{})
				return err
			}},
			{"update a sandbox pod", func() error {
				_, err := client.CoreV1().Pods(names.sandboxes).Update(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: names.sandboxes}}, metav1.UpdateOptions{})
				return err
			}},
			{"exec into a sandbox pod", func() error {
				return client.CoreV1().RESTClient().Post().Namespace(names.sandboxes).Resource("pods").Name("x").SubResource("exec").Do(ctx).Error()
			}},
			{"list network policies", func() error {
				_, err := client.NetworkingV1().NetworkPolicies(names.sandboxes).List(ctx, metav1.ListOptions{})
				return err
			}},
			{"create a lease", func() error {
				_, err := client.CoordinationV1().Leases(names.sandboxes).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
				return err
			}},
			{"create a role", func() error {
				_, err := client.RbacV1().Roles(names.sandboxes).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
				return err
			}},
			{"create a service", func() error {
				_, err := client.CoreV1().Services(names.sandboxes).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
				return err
			}},
		}
		for _, f := range forbidden {
			if err := f.do(); !apierrors.IsForbidden(err) {
				t.Errorf("%s as %s: %v, want Forbidden", f.what, account, err)
			}
		}
	})
}
