package server

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berthrun/berth/internal/sandbox/kubernetes"
	"github.com/berthrun/berth/internal/sandbox/kubernetes/kubetest"
)

// TestKubernetesDriver runs a session of a deployed runtime as a pod of the
// test cluster (tools/k8s/k8s-up.sh; see internal/sandbox/kubernetes), and
// checks that StopRuntimeSession deletes the pod.
func TestKubernetesDriver(t *testing.T) {
	kc := kubetest.New(t, "berth-server-test")
	ns, client := kc.Namespace, kc.Client
	base := kubeServer(t, kc, Config{})
	arn := deployGoAgent(t, base)

	const session = "kubernetes-session-000000000000000000000000"
	call := func(path, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, base+"/runtimes/"+url.PathEscape(arn)+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", session)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	if code, body := call("/invocations", `{"op":"echo","prompt":"hi from a pod"}`); code != http.StatusOK || !strings.Contains(body, "hi from a pod") {
		t.Fatalf("invoke: %d %s", code, body)
	}
	pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: kubernetes.LabelManagedBy + "=berth"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.Phase != corev1.PodRunning {
		t.Fatalf("pods of the session: %v, %v", pods, err)
	}
	if l := pods.Items[0].Labels; l["berth.run/runtime"] == "" || l["berth.run/version"] != "1" || pods.Items[0].Annotations["berth.run/session"] != session {
		t.Errorf("the pod's labels %v and annotations %v do not name its runtime, version and session", l, pods.Items[0].Annotations)
	}
	if code, body := call("/stopruntimesession", `{}`); code != http.StatusOK {
		t.Fatalf("stop the session: %d %s", code, body)
	}
	if _, err := client.CoreV1().Pods(ns).Get(t.Context(), pods.Items[0].Name, metav1.GetOptions{}); err == nil {
		t.Errorf("pod %s is still there after StopRuntimeSession", pods.Items[0].Name)
	}
}

// kubeServer runs a server with cfg whose sandboxes are pods of the test
// cluster's namespace, and returns its base URL.
func kubeServer(t *testing.T, kc *kubetest.Cluster, cfg Config) string {
	t.Helper()
	d, err := kubernetes.New(kubernetes.Options{
		Config: kc.Config, Namespace: kc.Namespace, BundleListen: net.JoinHostPort(kc.HostIP, "0"),
		AllowFrom: []string{kc.HostIP + "/32"}, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() }) // after the server has stopped
	cfg.Driver = d
	_, base := serve(t, cfg)
	return base
}
