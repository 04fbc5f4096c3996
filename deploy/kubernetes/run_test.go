package kubernetes_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/berthrun/berth/internal/store/postgres/pgtest"
)

var pg *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, &pg))
}

// forward relays connections from ln to target until ln is closed and
// every relayed connection has ended.
func forward(t *testing.T, ln net.Listener, target string) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			wg.Go(func() { io.Copy(out, in); out.Close() })
			wg.Go(func() { io.Copy(in, out); in.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// berthImage builds the berth binary statically, puts it with busybox into
// a one-layer image and loads that into the test node's containerd as
// localhost/berth:local, the image the Deployment names.
func berthImage(t *testing.T, k8sDir string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	berth := filepath.Join(root, "bin", "berth")
	build := exec.Command("go", "build", "-o", berth, "github.com/berthrun/berth/cmd/berth")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build berth: %v\n%s", err, out)
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("no busybox to build Berth's image with (apt-get install busybox-static): %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "cp", "mkdir", "chmod"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	load := exec.Command("bash", "../../tools/k8s/k8s-image.sh", "localhost/berth:local", root, "Entrypoint", `["/bin/berth"]`)
	load.Env = append(os.Environ(), "K8S_DIR="+k8sDir)
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("load the image: %v\n%s", err, out)
	}
	return berth
}

// signer signs Berth API calls with one access key.
type signer struct {
	creds aws.Credentials
	v4    *v4.Signer
}

func (s signer) do(t *testing.T, method, u string, body []byte, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	sum := sha256.Sum256(body)
	if err := s.v4.SignHTTP(t.Context(), s.creds, req, hex.EncodeToString(sum[:]), "bedrock-agentcore", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 3 * time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// TestDeploymentRuns runs the manifests' Deployment for real on the test
// cluster: Berth's image built here, PostgreSQL from pgtest (reached by the
// pods through a relay on the node bridge: the example StatefulSet needs
// the postgres image, which this offline cluster cannot pull), and the
// manifests' ServiceAccount, Role, Secrets, Service and NetworkPolicies.
// Both replicas must become ready, accept the keys of the berth-keys
// Secret, and one of them must run a session of a code bundle as a pod,
// from inside the cluster.
func TestDeploymentRuns(t *testing.T) {
	c := testCluster(t)
	if os.Geteuid() != 0 {
		t.Skip("loading an image into the node's containerd needs root")
	}
	k8sDir := filepath.Dir(os.Getenv(kubeconfigEnv))
	if _, err := os.Stat(filepath.Join(k8sDir, "containerd", "containerd.sock")); err != nil {
		t.Skipf("no containerd socket of the test cluster to load Berth's image into: %v", err)
	}
	if _, err := exec.LookPath("ctr"); err != nil {
		t.Skipf("no ctr to load Berth's image with: %v", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(c.hostIP, "0"))
	if err != nil {
		t.Skipf("the cluster's pods cannot reach this host: no address %s here (set %s): %v", c.hostIP, hostIPEnv, err)
	}
	dsn, err := url.Parse(pg.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	forward(t, ln, dsn.Host)
	password, _ := dsn.User.Password()
	storeURL := fmt.Sprintf("postgres://%s@%s%s?sslmode=disable", dsn.User.Username(), ln.Addr(), dsn.Path)

	bin := berthImage(t, k8sDir)
	keysDir := t.TempDir()
	// berth keys create adds to an existing key file, as README says.
	if err := os.WriteFile(filepath.Join(keysDir, "keys.json"), []byte("[]"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "keys", "create", "--data-dir", keysDir).Output()
	if err != nil {
		t.Fatalf("berth keys create: %v", err)
	}
	var key aws.Credentials
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "AWS_ACCESS_KEY_ID="); ok {
			key.AccessKeyID = v
		}
		if v, ok := strings.CutPrefix(l, "AWS_SECRET_ACCESS_KEY="); ok {
			key.SecretAccessKey = v
		}
	}
	keysJSON, err := os.ReadFile(filepath.Join(keysDir, "keys.json"))
	if err != nil || key.SecretAccessKey == "" {
		t.Fatalf("berth keys create printed %q; keys.json: %v", out, err)
	}

	names := newTestNamespaces()
	ms := relocate(t, loadManifests(t), names)
	c.createNamespaces(t, ms)
	keys := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "berth-keys", Namespace: names.berth},
		Data:       map[string][]byte{"keys.json": keysJSON},
	}
	ms = append(ms, manifest{file: "test", gvk: schema.GroupVersionKind{Version: "v1", Kind: "Secret"}, obj: keys})
	var deployment *appsv1.Deployment
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *corev1.Namespace, *appsv1.StatefulSet:
			continue
		case *corev1.Secret:
			switch o.Name {
			case "berth-postgres":
				o.StringData["POSTGRES_USER"], o.StringData["POSTGRES_PASSWORD"] = dsn.User.Username(), password
			case "berth-store":
				o.StringData["url"] = storeURL
			}
		case *appsv1.Deployment:
			deployment = o
		}
		if err := c.create(t.Context(), m, false); err != nil {
			t.Fatal(err)
		}
	}

	// Both replicas ready: the probes on /berth/v1/health answer, so each
	// has opened the store and the driver (in-cluster, as the
	// ServiceAccount) and cleaned up its owner's pods.
	applied := time.Now()
	pods := c.client.CoreV1().Pods(names.berth)
	selector := metav1.FormatLabelSelector(deployment.Spec.Selector)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		d, err := c.client.AppsV1().Deployments(names.berth).Get(t.Context(), deployment.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.ReadyReplicas == 2 {
			t.Logf("2 replicas ready %v after the Deployment was created", time.Since(applied).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			c.dumpPods(t, names.berth, selector)
			t.Fatalf("%d of 2 replicas ready after 3 minutes", d.Status.ReadyReplicas)
		}
		time.Sleep(time.Second)
	}
	list, err := pods.List(t.Context(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var bases []string
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			bases = append(bases, "http://"+net.JoinHostPort(p.Status.PodIP, "4780"))
		}
	}
	if len(bases) != 2 {
		t.Fatalf("replicas at %v, want 2", bases)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpPods(t, names.berth, selector)
		}
	})

	s := signer{creds: key, v4: v4.NewSigner()}
	for _, base := range bases {
		resp, err := http.Get(base + "/berth/v1/sessions")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("unsigned GET %s/berth/v1/sessions = %d, want refused", base, resp.StatusCode)
		}
		if code, body := s.do(t, http.MethodGet, base+"/berth/v1/sessions", nil, nil); code != http.StatusOK {
			t.Errorf("signed GET %s/berth/v1/sessions = %d %s, want 200: the replicas must share the berth-keys Secret's keys", base, code, body)
		}
	}

	// A session through one replica: its pod is started in the sandbox
	// namespace with the Role's rights, fetches its code from the
	// replica's pod IP and answers through it.
	base := bases[0]
	agent := filepath.Join(t.TempDir(), "agent")
	build := exec.Command("go", "build", "-o", agent, "github.com/berthrun/berth/testdata/agents/goagent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}
	if code, body := s.do(t, http.MethodPut, base+"/berth/v1/code/deploy-test/agent.zip", zipOf(t, agent), nil); code != http.StatusOK {
		t.Fatalf("upload the agent: %d %s", code, body)
	}
	json1 := map[string]string{"Content-Type": "application/json"}
	code, body := s.do(t, http.MethodPut, base+"/runtimes/", []byte(`{"agentRuntimeName":"deploytest","roleArn":"arn:aws:iam::000000000000:role/b",
		"agentRuntimeArtifact":{"codeConfiguration":{"code":{"s3":{"bucket":"deploy-test","prefix":"agent.zip"}},"runtime":"PYTHON_3_11","entryPoint":["agent"]}}}`), json1)
	var rt struct{ AgentRuntimeID, AgentRuntimeArn, Status string }
	if err := json.Unmarshal([]byte(body), &rt); code/100 != 2 || err != nil {
		t.Fatalf("create the runtime: %d %s", code, body)
	}
	for rt.Status != "READY" {
		if rt.Status != "CREATING" && rt.Status != "" {
			t.Fatalf("runtime %s", rt.Status)
		}
		time.Sleep(100 * time.Millisecond)
		_, body := s.do(t, http.MethodGet, base+"/runtimes/"+rt.AgentRuntimeID+"/", nil, nil)
		json.Unmarshal([]byte(body), &rt)
	}
	session := map[string]string{"Content-Type": "application/json", "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": "deploy-test-session-0000000000000000000"}
	invoke := base + "/runtimes/" + url.PathEscape(rt.AgentRuntimeArn)
	invoked := time.Now()
	if code, body := s.do(t, http.MethodPost, invoke+"/invocations", []byte(`{"op":"echo","prompt":"hi from the Deployment"}`), session); code != http.StatusOK || !strings.Contains(body, "hi from the Deployment") {
		t.Fatalf("invoke: %d %s", code, body)
	}
	t.Logf("first call of a session (a new sandbox pod) through the in-cluster Berth: %v", time.Since(invoked).Round(time.Millisecond))
	sandboxes, err := c.client.CoreV1().Pods(names.sandboxes).List(t.Context(), metav1.ListOptions{})
	if err != nil || len(sandboxes.Items) != 1 {
		t.Fatalf("sandbox pods: %v, %v; want the session's one", sandboxes, err)
	}
	if code, body := s.do(t, http.MethodPost, invoke+"/stopruntimesession", []byte(`{}`), session); code != http.StatusOK {
		t.Fatalf("stop the session: %d %s", code, body)
	}
	if left, err := c.client.CoreV1().Pods(names.sandboxes).List(t.Context(), metav1.ListOptions{}); err != nil || len(left.Items) != 0 {
		t.Errorf("sandbox pods after StopRuntimeSession: %v, %v; want none", left, err)
	}
}

// zipOf zips one executable file as "agent".
func zipOf(t *testing.T, path string) []byte {
	t.Helper()
	bin, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	hdr := &zip.FileHeader{Name: "agent", Method: zip.Deflate}
	hdr.SetMode(0o755)
	w, err := zw.CreateHeader(hdr)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bin)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// dumpPods logs the state and logs of the pods selected, to say why a
// rollout failed.
func (c *cluster) dumpPods(t *testing.T, ns, selector string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	list, err := c.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Logf("list pods: %v", err)
		return
	}
	for _, p := range list.Items {
		st, _ := json.Marshal(p.Status.ContainerStatuses)
		ist, _ := json.Marshal(p.Status.InitContainerStatuses)
		t.Logf("pod %s: phase %s; init %s; containers %s", p.Name, p.Status.Phase, ist, st)
		for _, ctr := range []string{"keys", "berth"} {
			data, err := c.client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: ctr, TailLines: ptr(int64(30))}).DoRaw(ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Logf("pod %s container %s log: %v", p.Name, ctr, err)
				continue
			}
			t.Logf("pod %s container %s log:\n%s", p.Name, ctr, data)
		}
	}
}

func ptr[T any](v T) *T { return &v }
