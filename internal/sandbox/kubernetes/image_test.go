package kubernetes_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berthrun/berth/internal/image/imagetest"
	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/kubernetes"
	"github.com/berthrun/berth/internal/sandbox/sandboxtest"
)

// pushAgentImage pushes the conformance suite's test agent, as an image on
// busybox-static (imagetest.AgentImage), to a registry of the test's own on
// 127.0.0.1 that requires basic auth, and returns the registry and the
// image's reference by digest.
//
// The node's containerd pulls it over plain HTTP: containerd's CRI plugin
// treats loopback registries as plain HTTP ones unless told otherwise, and
// it runs in the host's network namespace, where the registry listens.
func pushAgentImage(t testing.TB) (*imagetest.Registry, string) {
	t.Helper()
	reg := imagetest.Start(t, true)
	code := sandboxtest.BuildAgent(t)
	img, err := imagetest.AgentImage(goruntime.GOARCH, filepath.Join(code, "agent"), v1.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg.Push("k8s/agent:1", img)
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return reg, reg.Host + "/k8s/agent@" + digest.String()
}

// pullSecret creates a kubernetes.io/dockerconfigjson Secret with reg's
// credentials in the cluster's namespace and returns its name.
func (c *cluster) pullSecret(t testing.TB, reg *imagetest.Registry) string {
	t.Helper()
	data, err := os.ReadFile(reg.DockerConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "registry"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: data}}
	if _, err := c.client.CoreV1().Secrets(c.namespace).Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return secret.Name
}

// imageAgent is a client of a test agent in a pod.
type imageAgent struct {
	t      *testing.T
	client *http.Client
}

func newImageAgent(t *testing.T, sb sandbox.Sandbox) imageAgent {
	a := imageAgent{t: t, client: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: sb.DialContext, DisableKeepAlives: true}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := a.get("/ping"); code == http.StatusOK {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent does not answer /ping")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// get calls the agent at path with query parameters kv.
func (a imageAgent) get(path string, kv ...string) (int, string) {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	resp, err := a.client.Get("http://127.0.0.1:8080" + path + "?" + q.Encode())
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// ids returns the real uid, gid and supplementary groups of the agent, from
// its /proc/self/status.
func (a imageAgent) ids() (uid, gid, groups string) {
	code, status := a.get("/read", "path", "/proc/self/status")
	if code != http.StatusOK {
		a.t.Fatalf("read /proc/self/status: %d %s", code, status)
	}
	for _, line := range strings.Split(status, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid = f[1]
		} else if len(f) > 1 && f[0] == "Gid:" {
			gid = f[1]
		} else if len(f) > 0 && f[0] == "Groups:" {
			groups = strings.Join(f[1:], " ")
		}
	}
	return uid, gid, groups
}

// TestImage runs a container image pulled by the node from a registry:
// the agent runs from the image's files as the image's user (or the
// driver's when that is root), in its working directory, with its
// environment, on a read-only root file system with a writable /tmp. The
// registry needs credentials, which the kubelet takes from the driver's
// image pull secret.
func TestImage(t *testing.T) {
	c := testCluster(t)
	reg, ref := pushAgentImage(t)
	secret := c.pullSecret(t, reg)
	const driverUID = 2000
	d := c.driver(t, "berth", func(o *kubernetes.Options) { o.UID, o.ImagePullSecrets = driverUID, []string{secret} })
	start := func(id string, user sandbox.User) (sandbox.Sandbox, imageAgent) {
		sb, err := d.Start(t.Context(), sandbox.Spec{
			ID: id, Image: ref, Args: []string{"/agent/agent"}, Env: []string{"PATH=/bin", "PORT=8080", "FROM_IMAGE=yes"},
			WorkDir: "/agent", User: user,
		})
		if err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		t.Cleanup(func() { sb.Stop(context.Background()) })
		return sb, newImageAgent(t, sb)
	}
	sb, a := start("image-user", sandbox.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1234}})

	pod, err := c.client.CoreV1().Pods(c.namespace).Get(t.Context(), sb.(*kubernetes.Sandbox).PodName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pod.Spec.ImagePullSecrets) != 1 || pod.Spec.ImagePullSecrets[0].Name != secret {
		t.Errorf("image pull secrets %v, want %s", pod.Spec.ImagePullSecrets, secret)
	}
	if n := len(pod.Spec.InitContainers); n != 0 {
		t.Errorf("the pod of an image has %d init containers, want none", n)
	}
	ctr := pod.Spec.Containers[0]
	if ctr.Image != ref || ctr.WorkingDir != "/agent" {
		t.Errorf("agent container image %q, working dir %q; want %q in /agent", ctr.Image, ctr.WorkingDir, ref)
	}
	for _, m := range ctr.VolumeMounts {
		if m.MountPath != "/tmp" {
			t.Errorf("volume %s mounted at %s over the image's files", m.Name, m.MountPath)
		}
	}
	if sc := ctr.SecurityContext; !*sc.ReadOnlyRootFilesystem || !*sc.RunAsNonRoot || sc.Capabilities.Drop[0] != "ALL" || *sc.AllowPrivilegeEscalation {
		t.Errorf("security context %+v, want the driver's hardening", sc)
	}

	if code, body := a.get("/read", "path", "hello.txt"); code != http.StatusOK || body != "from the image\n" {
		t.Errorf("read the image's file relative to its working directory: %d %q", code, body)
	}
	if code, body := a.get("/read", "path", "/etc/passwd"); code != http.StatusOK || !strings.Contains(body, "agent:x:1000") {
		t.Errorf("/etc/passwd: %d %q, want the image's", code, body)
	}
	if code, body := a.get("/env", "key", "FROM_IMAGE"); code != http.StatusOK || body != "yes" {
		t.Errorf("FROM_IMAGE: %d %q", code, body)
	}
	if uid, gid, groups := a.ids(); uid != "1000" || gid != "1000" || !slices.Contains(strings.Fields(groups), "1234") {
		t.Errorf("the agent runs as uid %s gid %s groups %s, want the image's user 1000:1000 with group 1234", uid, gid, groups)
	}
	if code, _ := a.get("/write", "path", "/agent/hello.txt", "data", "changed"); code == http.StatusOK {
		t.Error("the agent changed a file of the image: its root file system is writable")
	}
	if code, body := a.get("/write", "path", "/tmp/note", "data", "x"); code != http.StatusOK {
		t.Errorf("write /tmp: %d %s", code, body)
	}

	// An image whose user is root runs as the driver's uid.
	_, root := start("image-root", sandbox.User{})
	if uid, gid, _ := root.ids(); uid != "2000" || gid != "2000" {
		t.Errorf("an image of root runs as uid %s gid %s, want the driver's %d", uid, gid, driverUID)
	}
}

// TestImageNotPulled checks that an image the node cannot pull (missing,
// or without credentials) fails Start with the kubelet's reason, and
// leaves no pod.
func TestImageNotPulled(t *testing.T) {
	c := testCluster(t)
	reg, ref := pushAgentImage(t)
	d := c.driver(t, "berth", nil)
	for _, tc := range []struct{ name, ref string }{
		{"missing", reg.Host + "/k8s/missing@sha256:" + strings.Repeat("ab", 32)},
		{"no-credentials", ref},
	} {
		_, err := d.Start(t.Context(), sandbox.Spec{ID: "image-" + tc.name, Image: tc.ref, Args: []string{"/agent/agent"}, WorkDir: "/"})
		if err == nil || !strings.Contains(err.Error(), "ErrImagePull") {
			t.Errorf("%s: Start = %v, want ErrImagePull", tc.name, err)
		}
	}
	pods, err := c.client.CoreV1().Pods(c.namespace).List(t.Context(), metav1.ListOptions{})
	if err != nil || len(pods.Items) != 0 {
		t.Errorf("pods after a failed start: %d (%v)", len(pods.Items), err)
	}
}

// BenchmarkImageColdStart measures a container image sandbox's cold start:
// from Start (pod creation) until the agent's first 200 on /ping, with the
// image already on the node after the first run (the pull policy is
// IfNotPresent and the image is named by digest). Compare BenchmarkColdStart,
// a code bundle's, which has an init container to wait for.
func BenchmarkImageColdStart(b *testing.B) {
	c := testCluster(b)
	reg, ref := pushAgentImage(b)
	secret := c.pullSecret(b, reg)
	d := c.driver(b, "berth", func(o *kubernetes.Options) { o.ImagePullSecrets = []string{secret} })
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		sb, err := d.Start(ctx, sandbox.Spec{ID: fmt.Sprintf("image-bench-%d", i), Image: ref, Args: []string{"/agent/agent"},
			Env: []string{"PATH=/bin", "PORT=8080"}, WorkDir: "/agent", User: sandbox.User{UID: 1000, GID: 1000}})
		if err != nil {
			b.Fatal(err)
		}
		client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: sb.DialContext, DisableKeepAlives: true}}
		for {
			resp, err := client.Get("http://127.0.0.1:8080/ping")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.StopTimer()
		if err := sb.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
