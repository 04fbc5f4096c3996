package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/berthrun/berth/internal/sandbox/kubernetes"
	"github.com/berthrun/berth/internal/sandbox/kubernetes/kubetest"
)

// kubeCluster is the test cluster (tools/k8s/k8s-up.sh, which .ci/run
// starts) with a namespace of the test's own.
type kubeCluster struct {
	kubeconfig, hostIP, namespace string
	client                        k8s.Interface
}

func requireKube(t *testing.T) *kubeCluster {
	t.Helper()
	kc := kubetest.New(t, "berth-e2e")
	return &kubeCluster{kubeconfig: kc.Kubeconfig, hostIP: kc.HostIP, namespace: kc.Namespace, client: kc.Client}
}

// pods returns the names of the namespace's pods that are not being
// deleted.
func (k *kubeCluster) pods(t *testing.T) []string {
	t.Helper()
	list, err := k.client.CoreV1().Pods(k.namespace).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p.Name)
		}
	}
	return out
}

// replicaArgs are the flags of one replica of a Berth on the cluster and a
// shared PostgreSQL.
func (k *kubeCluster) replicaArgs(dsn, replica string) []string {
	return []string{"--store", dsn, "--driver", "kubernetes", "--kubeconfig", k.kubeconfig, "--namespace", k.namespace,
		"--kube-owner", "e2e", "--kube-bundle-listen", net.JoinHostPort(k.hostIP, "0"), "--kube-allow-from", k.hostIP + "/32",
		"--replica", replica, "--session-lease", "3s"}
}

// TestReplicas runs two berth servers on one PostgreSQL and one cluster:
// sessions created through one are served through the other from the same
// pod; when one is killed mid-traffic, its sessions go on through the other,
// which takes over their lifecycle (StopRuntimeSession, idle timeout); and a
// replica starting removes the pods nobody accounts for.
func TestReplicas(t *testing.T) {
	kube := requireKube(t)
	dsn := pg.Database(t)
	a := startBerth(t, "", kube.replicaArgs(dsn, "a")...)
	b := startBerth(t, "", kube.replicaArgs(dsn, "b")...)

	id, arn := a.deploy("replicated", goAgent(t), deployOpts{
		lifecycle: &cptypes.LifecycleConfiguration{IdleRuntimeSessionTimeout: aws.Int32(30), MaxLifetime: aws.Int32(3600)},
	})
	b.waitReady(id, "")

	// Each session's calls alternate between the replicas; one agent
	// process (its call count) and one pod (its host name) serve them all.
	sessions := []string{sessionID("repl-1"), sessionID("repl-2"), sessionID("repl-3")}
	podOf := map[string]string{}
	for _, s := range sessions {
		for i, r := range []*berth{a, b, b, a} {
			got := r.mustInvoke(invokeInput{arn: arn, session: s, body: map[string]any{"prompt": "hi", "env": []string{"HOSTNAME"}}})
			host := got["env"].(map[string]any)["HOSTNAME"].(string)
			if got["count"] != float64(i+1) || (podOf[s] != "" && podOf[s] != host) {
				t.Fatalf("call %d of session %s: count %v in pod %s; want %d in pod %s", i+1, s, got["count"], host, i+1, podOf[s])
			}
			podOf[s] = host
		}
	}
	if pods := kube.pods(t); len(pods) != len(sessions) {
		t.Fatalf("pods %v, want one per session (%d)", pods, len(sessions))
	}
	for _, r := range []*berth{a, b} {
		if n := len(r.sessions()); n != len(sessions) {
			t.Errorf("replica lists %d sessions, want %d", n, len(sessions))
		}
	}

	// Traffic on every session through both replicas; then a dies.
	var failedB, okB, okA atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range sessions {
		for _, r := range []*berth{a, b} {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, err := r.with(t).invoke(invokeInput{arn: arn, session: s, body: map[string]any{"prompt": "x"}})
					switch {
					case r == b && err != nil:
						failedB.Add(1)
						t.Errorf("call through the live replica failed: %v", err)
					case r == b:
						okB.Add(1)
					case err == nil:
						okA.Add(1)
					}
					if r == a && err != nil {
						return // a is dead
					}
				}
			})
		}
	}
	waitFor(t, 20*time.Second, "traffic through both replicas", func() bool { return okA.Load() > 10 && okB.Load() > 10 })
	a.cmd.Process.Kill()
	<-a.exited
	before := okB.Load()
	waitFor(t, 30*time.Second, "calls through b after a died", func() bool { return okB.Load() > before+20 })
	// b takes a's sessions over once their leases (3 s) run out.
	waitFor(t, 30*time.Second, "b owning every session", func() bool {
		for _, s := range b.replicaSessions() {
			if s.Replica != "b" {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()
	if failedB.Load() > 0 {
		t.Fatalf("%d calls through the live replica failed", failedB.Load())
	}
	for _, s := range sessions {
		got := b.mustInvoke(invokeInput{arn: arn, session: s, body: map[string]any{"prompt": "hi", "env": []string{"HOSTNAME"}}})
		if host := got["env"].(map[string]any)["HOSTNAME"]; host != podOf[s] {
			t.Errorf("session %s moved from pod %s to %v", s, podOf[s], host)
		}
	}
	if pods := kube.pods(t); len(pods) != len(sessions) {
		t.Errorf("after the takeover: pods %v, want the %d sessions' own", pods, len(sessions))
	}

	// StopRuntimeSession through b deletes the pod of a session a started.
	if _, err := b.data.StopRuntimeSession(context.Background(), &dp.StopRuntimeSessionInput{
		AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(sessions[0]),
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the stopped session's pod to go", func() bool { return !slices.Contains(kube.pods(t), podOf[sessions[0]]) })

	// A session whose pod vanishes behind Berth's back ends.
	if err := kube.client.CoreV1().Pods(kube.namespace).Delete(t.Context(), podOf[sessions[1]], metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the session whose pod vanished to end", func() bool {
		return !slices.ContainsFunc(b.replicaSessions(), func(s replicaSession) bool { return s.SessionID == sessions[1] })
	})

	// A pod that no session and no live replica accounts for (as a crash
	// mid-start would leave) goes when a replica starts, once it is older
	// than a lease (3 s): a live replica's own are that young only before
	// its first heartbeat.
	orphan := "berth-orphan-000000"
	grace := int64(1)
	if _, err := kube.client.CoreV1().Pods(kube.namespace).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: kubernetes.PodName(orphan),
			Labels:      map[string]string{kubernetes.LabelManagedBy: "e2e"},
			Annotations: map[string]string{kubernetes.AnnotationID: orphan, "berth.run/replica": "gone"}},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "agent", Image: kubernetes.DefaultImage, Command: []string{"sleep", "600"}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	startBerth(t, "", kube.replicaArgs(dsn, "c")...)
	waitFor(t, 30*time.Second, "the orphan pod to go", func() bool {
		return !slices.Contains(kube.pods(t), kubernetes.PodName(orphan))
	})
	if pods := kube.pods(t); len(pods) != 1 || pods[0] != podOf[sessions[2]] {
		t.Errorf("pods %v after a replica started, want the live session's, %s", pods, podOf[sessions[2]])
	}

	// Idle (30 s), the last session ends and its pod goes, ended by its new
	// owner.
	waitFor(t, 90*time.Second, "idle sessions' pods to go", func() bool { return len(kube.pods(t)) == 0 })
	if n := len(b.replicaSessions()); n != 0 {
		t.Errorf("b lists %d sessions after they ended", n)
	}
}

// replicaSession is a session as the session list shows it, with its owner.
type replicaSession struct {
	SessionID string `json:"sessionId"`
	Replica   string `json:"replica"`
}

func (b *berth) replicaSessions() []replicaSession {
	b.t.Helper()
	resp, err := http.Get("http://" + b.addr + "/berth/v1/sessions")
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Sessions []replicaSession }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		b.t.Fatal(err)
	}
	return out.Sessions
}
