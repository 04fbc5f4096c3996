package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berthrun/berth/internal/sandbox/kubernetes"
)

// TestKubernetesDriver runs a session of a deployed runtime as a pod of the
// test cluster (tools/k8s/k8s-up.sh; see internal/sandbox/kubernetes), and
// checks that StopRuntimeSession deletes the pod.
func TestKubernetesDriver(t *testing.T) {
	kubeconfig, hostIP := os.Getenv("BERTH_TEST_KUBECONFIG"), os.Getenv("BERTH_TEST_KUBE_HOST_IP")
	if kubeconfig == "" || hostIP == "" {
		t.Skip("no Kubernetes cluster: set BERTH_TEST_KUBECONFIG and BERTH_TEST_KUBE_HOST_IP (bash tools/k8s/k8s-up.sh; source $K8S_DIR/env)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := k8s.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Discovery().ServerVersion(); err != nil {
		t.Skipf("no Kubernetes cluster: %s is unreachable: %v", kubeconfig, err)
	}
	ns := fmt.Sprintf("berth-server-test-%d", os.Getpid())
	if _, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	for {
		if _, err := client.CoreV1().ServiceAccounts(ns).Get(t.Context(), "default", metav1.GetOptions{}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	d, err := kubernetes.New(kubernetes.Options{
		Config: cfg, Namespace: ns, BundleListen: net.JoinHostPort(hostIP, "0"), AllowFrom: []string{hostIP + "/32"},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, Config{DataDir: t.TempDir(), Addr: "127.0.0.1:0", Driver: d, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + srv.Addr().String()
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
