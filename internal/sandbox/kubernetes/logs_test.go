package kubernetes_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/kubernetes"
)

// TestLogs: another replica (a second driver of the same owner) reads the
// agent's output from the pod's log, stdout and stderr merged, each line
// after its time; Tail keeps the last lines; Follow goes on with new
// output; a sandbox of no one or of another owner has no logs.
func TestLogs(t *testing.T) {
	c := testCluster(t)
	a := c.driver(t, "logs", nil)
	b := c.driver(t, "logs", nil)
	other := c.driver(t, "logs-someone-else", nil)
	ctx := t.Context()

	// The agent prints three lines, one of them to stderr, and a fourth a
	// few seconds later, for the follow to wait for. (The runtime copies
	// stdout and stderr apart, so lines printed at once on both may swap:
	// the agent pauses between them.)
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	sb, err := a.Start(ctx, sandbox.Spec{
		ID:   "logs-1",
		Args: []string{"sh", "-c", "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; sleep 4; echo four; exec sleep 600"},
		Env:  []string{"PATH=/bin"}, WorkDir: "/work", Stdout: out, Stderr: out,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Stop(context.Background()) })

	read := func(o sandbox.LogOptions) []string {
		t.Helper()
		rc, err := b.Logs(ctx, "logs-1", o)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		data, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return texts(t, strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"))
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(read(sandbox.LogOptions{})) < 3 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if got := strings.Join(read(sandbox.LogOptions{}), ","); got != "one,two,three" && got != "one,two,three,four" {
		t.Fatalf("logs = %s, want one,two,three (stdout and stderr in order)", got)
	}
	if got := strings.Join(read(sandbox.LogOptions{Tail: 1}), ","); got != "three" && got != "four" {
		t.Errorf("tail 1 = %s, want the last line", got)
	}
	if got := read(sandbox.LogOptions{Since: time.Now().Add(time.Hour)}); len(got) != 0 {
		t.Errorf("since an hour ahead = %v, want nothing", got)
	}

	// Following, the line printed later arrives.
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rc, err := b.Logs(fctx, "logs-1", sandbox.LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	var followed []string
	for len(followed) < 4 && sc.Scan() {
		followed = append(followed, texts(t, []string{sc.Text()})...)
	}
	if strings.Join(followed, ",") != "one,two,three,four" {
		t.Errorf("followed %v (%v), want one,two,three,four", followed, sc.Err())
	}

	// A pod whose agent waits to start (as one another replica is
	// starting) has no output yet; a follow of it waits.
	pending := "logs-pending"
	if _, err := c.client.CoreV1().Pods(c.namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: kubernetes.PodName(pending),
			Labels:      map[string]string{kubernetes.LabelManagedBy: "logs"},
			Annotations: map[string]string{kubernetes.AnnotationID: pending}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			InitContainers:                []corev1.Container{{Name: "wait", Image: kubernetes.DefaultImage, Command: []string{"sleep", "600"}}},
			Containers:                    []corev1.Container{{Name: "agent", Image: kubernetes.DefaultImage, Command: []string{"sleep", "600"}}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Remove(context.Background(), pending) })
	if rc, err := b.Logs(ctx, pending, sandbox.LogOptions{}); err != nil {
		t.Errorf("logs of a pod whose agent has not started: %v, want no output", err)
	} else if data, _ := io.ReadAll(rc); len(data) != 0 {
		t.Errorf("logs of a pod whose agent has not started: %q, want none", data)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	defer wcancel()
	if _, err := b.Logs(wctx, pending, sandbox.LogOptions{Follow: true}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("following a pod whose agent has not started: err = %v, want to wait until the caller goes", err)
	}

	for _, d := range []sandbox.LogSource{b, other} {
		_, err := d.Logs(ctx, "no-such-sandbox", sandbox.LogOptions{})
		if !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("logs of a missing sandbox: err = %v, want ErrNotFound", err)
		}
	}
	if _, err := other.Logs(ctx, "logs-1", sandbox.LogOptions{}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("logs of another owner's sandbox: err = %v, want ErrNotFound", err)
	}
}

// texts checks that each line starts with an RFC 3339 time and returns
// what follows it.
func texts(t *testing.T, lines []string) []string {
	t.Helper()
	var out []string
	for _, l := range lines {
		if l == "" {
			continue
		}
		ts, text, _ := strings.Cut(l, " ")
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("line %q does not start with its time: %v", l, err)
		}
		out = append(out, text)
	}
	return out
}
