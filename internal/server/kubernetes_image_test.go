package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berthrun/berth/internal/image/imagetest"
	"github.com/berthrun/berth/internal/sandbox/kubernetes"
	"github.com/berthrun/berth/internal/sandbox/kubernetes/kubetest"
)

// TestKubernetesImage deploys a runtime of a container image
// (containerConfiguration.containerUri) on the kubernetes driver and
// invokes it: Berth inspects the image in a registry on loopback, the
// node's containerd pulls it by digest (plain HTTP: a loopback registry),
// and the agent runs as the image's user, in its working directory, with
// its environment. An image uploaded to Berth is refused with the reason.
func TestKubernetesImage(t *testing.T) {
	kc := kubetest.New(t, "berth-server-image-test")
	ns, client := kc.Namespace, kc.Client
	reg := imagetest.Start(t, false)
	bin := filepath.Join(t.TempDir(), "agent")
	build := exec.Command("go", "build", "-o", bin, "github.com/berthrun/berth/testdata/agents/goagent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	img, err := imagetest.AgentImage(goruntime.GOARCH, bin, v1.Config{
		Entrypoint: []string{"/agent/agent"}, WorkingDir: "/agent", User: "agent", Env: []string{"FROM_IMAGE=yes"},
	})
	if err != nil {
		t.Fatal(err)
	}
	uri := reg.Push("team/agent:1", img)
	digest, _ := img.Digest()

	base := kubeServer(t, kc, Config{InsecureRegistries: []string{reg.Host}})

	do := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", "kubernetes-image-session-0000000000000000000")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	create := func(name, uri string) (id, arn string) {
		code, body := do(http.MethodPut, "/runtimes/", fmt.Sprintf(`{"agentRuntimeName":%q,"roleArn":"arn:aws:iam::000000000000:role/b",
			"agentRuntimeArtifact":{"containerConfiguration":{"containerUri":%q}}}`, name, uri))
		var rt struct{ AgentRuntimeID, AgentRuntimeArn string }
		if code != http.StatusAccepted && code != http.StatusOK || json.Unmarshal([]byte(body), &rt) != nil {
			t.Fatalf("create runtime %s: %d %s", name, code, body)
		}
		return rt.AgentRuntimeID, rt.AgentRuntimeArn
	}
	status := func(id string) (string, string) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			var rt struct{ Status, FailureReason string }
			_, body := do(http.MethodGet, "/runtimes/"+id+"/", "")
			json.Unmarshal([]byte(body), &rt)
			if rt.Status != "CREATING" || time.Now().After(deadline) {
				return rt.Status, rt.FailureReason
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	id, arn := create("image_agent", uri)
	if st, reason := status(id); st != "READY" {
		t.Fatalf("runtime status %s (%s), want READY", st, reason)
	}
	invoke := func(body string) map[string]any {
		code, out := do(http.MethodPost, "/runtimes/"+url.PathEscape(arn)+"/invocations", body)
		var res map[string]any
		if code != http.StatusOK || json.Unmarshal([]byte(out), &res) != nil {
			t.Fatalf("invoke %s: %d %s", body, code, out)
		}
		return res
	}
	res := invoke(`{"op":"echo","prompt":"hi from an image","env":["FROM_IMAGE","HOME"]}`)
	if env, _ := res["env"].(map[string]any); res["echo"] != "hi from an image" || env["FROM_IMAGE"] != "yes" || env["HOME"] != "/data" {
		t.Errorf("echo = %v, want the prompt, FROM_IMAGE=yes and the image user's HOME=/data", res)
	}
	if res := invoke(`{"op":"read","path":"hello.txt"}`); res["data"] != "from the image\n" {
		t.Errorf("read hello.txt in the image's working directory = %v", res)
	}
	if res := invoke(`{"op":"read","path":"/proc/self/status"}`); !strings.Contains(fmt.Sprint(res["data"]), "Uid:\t1000\t") {
		t.Errorf("the agent does not run as the image's user agent (1000): %v", res["data"])
	}
	pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: kubernetes.LabelManagedBy + "=berth"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of the session: %v, %v", pods, err)
	}
	if want := reg.Host + "/team/agent@" + digest.String(); pods.Items[0].Spec.Containers[0].Image != want {
		t.Errorf("the pod runs %s, want %s", pods.Items[0].Spec.Containers[0].Image, want)
	}

	id, _ = create("uploaded_agent", "berth.local/agent:1")
	if st, reason := status(id); st != "CREATE_FAILED" || !strings.Contains(reason, "push the image to a registry the nodes can pull from") {
		t.Errorf("runtime of an uploaded image: %s (%s), want CREATE_FAILED saying to push it to a registry", st, reason)
	}
	if code, body := do(http.MethodPut, "/berth/v1/images/agent:1", "not a tarball"); code != http.StatusBadRequest || !strings.Contains(body, "push images to a registry") {
		t.Errorf("upload an image: %d %s, want it refused", code, body)
	}
}
