package kubernetes_test

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/kubernetes"
)

// TestSetLabels relabels a running sandbox's pod, as a claimed warm pod
// is, and checks that its NetworkPolicy still selects it.
func TestSetLabels(t *testing.T) {
	c := testCluster(t)
	d := c.driver(t, "label-test", nil)
	sb, err := d.Start(t.Context(), sandbox.Spec{
		ID: "label-test", Args: []string{"sleep", "600"}, Env: []string{"PATH=/bin"}, WorkDir: "/work",
		Labels: map[string]string{"runtime": "rt-1", "version": "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Stop(context.Background()) })
	l, ok := sb.(sandbox.Labeler)
	if !ok {
		t.Fatal("the kubernetes sandbox is not a sandbox.Labeler")
	}
	name := sb.(*kubernetes.Sandbox).PodName()
	if err := l.SetLabels(t.Context(), map[string]string{"session": "sess-1"}); err != nil {
		t.Fatal(err)
	}
	pod, err := c.client.CoreV1().Pods(c.namespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Labels["berth.run/session"] != "sess-1" || pod.Annotations["berth.run/session"] != "sess-1" || pod.Labels["berth.run/runtime"] != "rt-1" {
		t.Errorf("after SetLabels: labels %v, annotations %v", pod.Labels, pod.Annotations)
	}
	np, err := c.client.NetworkingV1().NetworkPolicies(c.namespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("the network policy's selector %s no longer selects the relabelled pod (labels %v)", sel, pod.Labels)
	}

	// A value too long for a label replaces the label by the annotation.
	long := strings.Repeat("s", 70)
	if err := l.SetLabels(t.Context(), map[string]string{"session": long}); err != nil {
		t.Fatal(err)
	}
	pod, err = c.client.CoreV1().Pods(c.namespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pod.Labels["berth.run/session"]; ok || pod.Annotations["berth.run/session"] != long {
		t.Errorf("after SetLabels with a long value: labels %v, annotations %v", pod.Labels, pod.Annotations)
	}
	if err := l.SetLabels(t.Context(), map[string]string{"Bad Key": "x"}); err == nil || !strings.Contains(err.Error(), "Bad Key") {
		t.Errorf("SetLabels with a bad key = %v, want an error naming it", err)
	}

	// Once the pod is gone, SetLabels fails.
	if err := sb.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := l.SetLabels(t.Context(), map[string]string{"session": "x"}); err == nil {
		t.Error("SetLabels of a stopped sandbox succeeded")
	}
}
