// Package kubetest connects tests to the test cluster that
// tools/k8s/k8s-up.sh starts (and .ci/run, before the tests): its env file
// sets BERTH_TEST_KUBECONFIG, the cluster's kubeconfig, and
// BERTH_TEST_KUBE_HOST_IP, this host's address on the node bridge, which
// pods reach (the kubernetes driver serves code bundles there). Tests skip,
// saying why, when there is no cluster.
package kubetest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Variables the test cluster's env file sets.
const (
	KubeconfigEnv = "BERTH_TEST_KUBECONFIG"
	HostIPEnv     = "BERTH_TEST_KUBE_HOST_IP"
)

// Cluster is the test cluster, with a namespace of the test's own.
type Cluster struct {
	Kubeconfig string
	Config     *rest.Config
	Client     k8s.Interface
	// HostIP is this host's address that pods reach.
	HostIP string
	// Namespace is the test's own, deleted when the test ends.
	Namespace string
}

// New connects to the test cluster and makes a namespace for the test, whose
// name begins with prefix; it skips the test when there is no cluster.
func New(t testing.TB, prefix string) *Cluster {
	t.Helper()
	path := os.Getenv(KubeconfigEnv)
	if path == "" {
		t.Skipf("no Kubernetes cluster: set %s to a kubeconfig and %s (bash tools/k8s/k8s-up.sh; source $K8S_DIR/env)", KubeconfigEnv, HostIPEnv)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Skipf("no Kubernetes cluster: %s=%s: %v", KubeconfigEnv, path, err)
	}
	client, err := k8s.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Discovery().ServerVersion(); err != nil {
		t.Skipf("no Kubernetes cluster: %s=%s is unreachable: %v", KubeconfigEnv, path, err)
	}
	hostIP := os.Getenv(HostIPEnv)
	if hostIP == "" {
		hostIP = "10.244.0.1"
	}
	if ln, err := net.Listen("tcp", net.JoinHostPort(hostIP, "0")); err != nil {
		t.Skipf("the cluster's pods cannot reach this host: no address %s here (set %s): %v", hostIP, HostIPEnv, err)
	} else {
		ln.Close()
	}
	ns := prefix + "-" + strings.ToLower(rand.Text()[:8])
	if _, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete namespace %s: %v", ns, err)
		}
	})
	// Pods are refused until the namespace's default ServiceAccount exists.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := client.CoreV1().ServiceAccounts(ns).Get(t.Context(), "default", metav1.GetOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			t.Fatal(fmt.Errorf("namespace %s: default service account: %w", ns, err))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &Cluster{Kubeconfig: path, Config: cfg, Client: client, HostIP: hostIP, Namespace: ns}
}
