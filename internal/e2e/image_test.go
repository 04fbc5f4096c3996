package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/berthrun/berth/internal/image/imagetest"
)

// otherArch is an architecture that is not this host's.
func otherArch() string {
	if goruntime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// agentImage builds the Go test agent into an image for arch: /agent/agent
// run as the image's user "agent" (uid 1000, owner of /data) from /agent.
func agentImage(t *testing.T, arch string) v1.Image {
	t.Helper()
	_, bin := binaries(t)
	img, err := imagetest.AgentImage(arch, bin, v1.Config{
		Entrypoint: []string{"/agent/agent"}, WorkingDir: "/agent", User: "agent",
		Env: []string{"FROM_IMAGE=yes", "OVERRIDDEN=by the image"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// createImageRuntime creates a runtime for a container image.
func (b *berth) createImageRuntime(name, uri string, env map[string]string) *cp.CreateAgentRuntimeOutput {
	b.t.Helper()
	out, err := b.control.CreateAgentRuntime(context.Background(), &cp.CreateAgentRuntimeInput{
		AgentRuntimeName: aws.String(name),
		RoleArn:          aws.String("arn:aws:iam::123456789012:role/agent"),
		AgentRuntimeArtifact: &cptypes.AgentRuntimeArtifactMemberContainerConfiguration{Value: cptypes.ContainerConfiguration{
			ContainerUri: aws.String(uri)}},
		NetworkConfiguration: &cptypes.NetworkConfiguration{NetworkMode: cptypes.NetworkModePublic},
		EnvironmentVariables: env,
	})
	if err != nil {
		b.t.Fatalf("CreateAgentRuntime %s: %v", name, err)
	}
	return out
}

// waitFailed polls until a runtime has failed and returns its reason.
func (b *berth) waitFailed(id string) string {
	b.t.Helper()
	var reason string
	waitFor(b.t, 60*time.Second, "runtime "+id+" to fail", func() bool {
		out, err := b.control.GetAgentRuntime(context.Background(), &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(id)})
		if err != nil {
			b.t.Fatal(err)
		}
		if out.Status == cptypes.AgentRuntimeStatusReady {
			b.t.Fatalf("runtime %s is READY, want it to fail", id)
		}
		reason = aws.ToString(out.FailureReason)
		return out.Status == cptypes.AgentRuntimeStatusCreateFailed
	})
	return reason
}

// dirNames lists the entries of dir.
func dirNames(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestContainerImage deploys an agent shipped as a container image, pulled
// from a real registry on loopback: it runs with the image's configuration,
// each session gets a private writable layer that goes with it, and the
// image is collected when its runtime is deleted. An image for another
// architecture is refused at deploy time.
func TestContainerImage(t *testing.T) {
	requireSandboxes(t)
	reg := imagetest.Start(t, false)
	ref := reg.Push("agents/goagent:1", agentImage(t, goruntime.GOARCH))
	foreign := reg.Push("agents/goagent:"+otherArch(), agentImage(t, otherArch()))
	b := startBerth(t, "", "--insecure-registry", reg.Host)
	ctx := context.Background()

	created := b.createImageRuntime("image_agent", ref, map[string]string{"OVERRIDDEN": "by the runtime"})
	id, arn := aws.ToString(created.AgentRuntimeId), aws.ToString(created.AgentRuntimeArn)
	b.waitReady(id, "")

	sa, sb := sessionID("image-a"), sessionID("image-b")
	call := func(sid string, body map[string]any) map[string]any {
		return b.mustInvoke(invokeInput{arn: arn, session: sid, body: body})
	}
	env := call(sa, map[string]any{"env": []string{"FROM_IMAGE", "OVERRIDDEN", "PORT", "HOME", "DOCKER_CONTAINER"}})["env"].(map[string]any)
	want := map[string]any{"FROM_IMAGE": "yes", "OVERRIDDEN": "by the runtime", "PORT": "8080", "HOME": "/data", "DOCKER_CONTAINER": "1"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("agent's %s = %v, want %v (env %v)", k, env[k], v, env)
		}
	}
	if res := call(sa, map[string]any{"op": "read", "path": "hello.txt"}); res["data"] != "from the image\n" {
		t.Errorf("the image's file, relative to its WorkingDir: %v", res)
	}
	status := call(sa, map[string]any{"op": "read", "path": "/proc/self/status"})["data"].(string)
	if !strings.Contains(status, "\nUid:\t1000\t") {
		t.Errorf("the agent does not run as the image's user agent (uid 1000): %s", status)
	}
	if res := call(sa, map[string]any{"op": "read", "path": "/usr/bin/python3"}); res["error"] == nil {
		t.Error("an image's session sees the host's /usr")
	}

	// Two sessions of one image: writes are private to each.
	if res := call(sa, map[string]any{"op": "write", "path": "/data/note", "data": "a's note"}); res["ok"] != true {
		t.Fatalf("session a cannot write /data: %v", res)
	}
	if res := call(sb, map[string]any{"op": "read", "path": "/data/note"}); res["error"] == nil {
		t.Errorf("session b read a's /data/note: %v", res)
	}
	if res := call(sa, map[string]any{"op": "write", "path": "/agent/hello.txt", "data": "x"}); res["ok"] == true {
		t.Error("the image's user changed a file of the image's root")
	}
	// The default OCI runtime's sandboxes.
	sandboxes := filepath.Join(b.dataDir, "sandboxes", "runc", "sandboxes")
	var writable string // a's writable layer
	for _, name := range dirNames(sandboxes) {
		if _, err := os.Stat(filepath.Join(sandboxes, name, "upper", "data", "note")); err == nil {
			writable = filepath.Join(sandboxes, name)
		}
	}
	if writable == "" {
		t.Fatalf("no sandbox under %s holds a's write (%v)", sandboxes, dirNames(sandboxes))
	}
	if _, err := b.data.StopRuntimeSession(ctx, &dp.StopRuntimeSessionInput{AgentRuntimeArn: aws.String(arn), RuntimeSessionId: aws.String(sa)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a's writable layer to go", func() bool {
		_, err := os.Stat(writable)
		return os.IsNotExist(err)
	})
	if res := call(sa, map[string]any{"op": "read", "path": "/data/note"}); res["error"] == nil {
		t.Errorf("a fresh session a still has the old note: %v", res)
	}

	// A killed server leaves b's sandbox with its overlay root mounted; the
	// next start removes it, and the image's runtime is served again from
	// the cache.
	b.cmd.Process.Kill()
	<-b.exited
	mounted := false
	for _, l := range b.leftovers() {
		mounted = mounted || (strings.HasPrefix(l, "mount: ") && strings.Contains(l, "overlay") && strings.Contains(l, "/rootfs"))
	}
	if !mounted {
		t.Fatalf("the killed server left no image root mounted: this part checks nothing (%v)", b.leftovers())
	}
	b.start()
	waitFor(t, 10*time.Second, "the killed server's sandboxes to be removed", func() bool { return len(b.leftovers()) == 0 })
	if res := call(sb, map[string]any{"op": "read", "path": "/agent/hello.txt"}); res["data"] != "from the image\n" {
		t.Errorf("after a restart the image's session reads %v", res)
	}

	// The cache holds each layer once.
	images := filepath.Join(b.dataDir, "images")
	layers := dirNames(filepath.Join(images, "layers"))
	if len(layers) != 2 {
		t.Errorf("layer cache %v, want the image's 2 layers", layers)
	}

	// An image for another architecture fails at deploy time, saying so.
	bad := b.createImageRuntime("foreign_agent", foreign, nil)
	reason := b.waitFailed(aws.ToString(bad.AgentRuntimeId))
	for _, w := range []string{"linux/" + otherArch(), "linux/" + goruntime.GOARCH} {
		if !strings.Contains(reason, w) {
			t.Errorf("failure reason %q does not name %s", reason, w)
		}
	}
	missing := b.createImageRuntime("missing_agent", reg.Host+"/agents/none:1", nil)
	if reason := b.waitFailed(aws.ToString(missing.AgentRuntimeId)); !strings.Contains(reason, "no such image") {
		t.Errorf("failure reason for a missing image: %q", reason)
	}

	// Deleting the runtime lets the image and its layers be collected.
	if _, err := b.control.DeleteAgentRuntime(ctx, &cp.DeleteAgentRuntimeInput{AgentRuntimeId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the image to be collected", func() bool {
		return len(dirNames(filepath.Join(images, "images"))) == 0 && len(dirNames(filepath.Join(images, "layers"))) == 0
	})
}

// TestCLIDeployImage deploys a project's runtime from an image tarball with
// berth deploy --image, as a docker-archive and then an OCI layout, and
// invokes it.
func TestCLIDeployImage(t *testing.T) {
	b := startBerth(t, "")
	c := b.cli()
	work := t.TempDir()
	c.ok(work, "create", "--name", "Boxed", "--output-dir", work)
	project := filepath.Join(work, "Boxed")
	img := agentImage(t, goruntime.GOARCH)

	archive := filepath.Join(work, "boxed.tar")
	tag, err := name.NewTag("example/boxed:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	r := c.ok(project, "deploy", "--image", archive)
	digest, _ := img.Digest()
	uri := "berth.local/boxed_boxed@" + digest.String()
	if !strings.Contains(r.stderr+r.stdout, uri) {
		t.Errorf("deploy does not say it runs %s:\n%s", uri, r)
	}
	st := readDeployedState(t, project)
	rs := st.Targets["berth"].Resources.Runtimes["Boxed"]
	got, err := b.control.GetAgentRuntime(context.Background(), &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(rs.RuntimeID)})
	if err != nil {
		t.Fatal(err)
	}
	art, ok := got.AgentRuntimeArtifact.(*cptypes.AgentRuntimeArtifactMemberContainerConfiguration)
	if !ok || aws.ToString(art.Value.ContainerUri) != uri || got.Status != cptypes.AgentRuntimeStatusReady {
		t.Fatalf("runtime %+v, want READY with containerUri %s", got, uri)
	}
	res := b.mustInvoke(invokeInput{arn: rs.RuntimeArn, session: sessionID("boxed"), body: map[string]any{"prompt": "hi", "env": []string{"FROM_IMAGE"}}})
	if res["echo"] != "hi" || res["env"].(map[string]any)["FROM_IMAGE"] != "yes" {
		t.Errorf("the image's agent answered %v", res)
	}
	// The same tarball again changes nothing.
	if r := c.ok(project, "deploy", "--image", archive); !strings.Contains(r.stderr+r.stdout, "unchanged") {
		t.Errorf("redeploying the same image:\n%s", r)
	}

	// An OCI layout of a changed image makes a new version.
	changed, err := mutate.Config(img, v1.Config{Entrypoint: []string{"/agent/agent"}, WorkingDir: "/agent", User: "agent", Env: []string{"FROM_IMAGE=oci"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, "layout")
	if _, err := layout.Write(dir, mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: changed})); err != nil {
		t.Fatal(err)
	}
	ociTar := filepath.Join(work, "boxed-oci.tar")
	if out, err := exec.Command("tar", "-C", dir, "-cf", ociTar, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	c.ok(project, "deploy", "--image", ociTar)
	res = b.mustInvoke(invokeInput{arn: rs.RuntimeArn, session: sessionID("boxed-2"), body: map[string]any{"env": []string{"FROM_IMAGE"}}})
	if res["env"].(map[string]any)["FROM_IMAGE"] != "oci" {
		t.Errorf("after deploying the OCI layout the agent answered %v", res)
	}

	// A tarball for another architecture is refused by the upload.
	foreign := filepath.Join(work, "foreign.tar")
	if err := tarball.WriteToFile(foreign, tag, agentImage(t, otherArch())); err != nil {
		t.Fatal(err)
	}
	c.fails(project, 2, []string{"linux/" + otherArch(), "linux/" + goruntime.GOARCH}, "deploy", "--image", foreign)

	// Berth's API describes uploads and refuses what is not an image.
	api := "http://" + b.addr + "/berth/v1/images/"
	for _, c := range []struct {
		method, path, body string
		code               int
		says               string
	}{
		{http.MethodGet, "boxed_boxed:latest", "", 200, `"containerUri":"berth.local/boxed_boxed:latest"`},
		{http.MethodGet, "nothing:1", "", 404, "no image was uploaded as berth.local/nothing:1"},
		{http.MethodPut, "junk:1", "not a tarball", 400, "not a tar file"},
		{http.MethodPut, "Bad:1", "", 400, "lower case"},
	} {
		req, _ := http.NewRequest(c.method, api+c.path, strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(string(body), c.says) {
			t.Errorf("%s %s: %d %s, want %d saying %q", c.method, c.path, resp.StatusCode, body, c.code, c.says)
		}
	}

	// destroy drops the upload's name, and the images go with the runtime.
	if st := readDeployedState(t, project); st.Targets["berth"].Resources.Runtimes["Boxed"].ImageName != "boxed_boxed:latest" {
		t.Errorf("deployed state does not record the image upload: %+v", st.Targets["berth"].Resources.Runtimes["Boxed"])
	}
	if r := c.ok(project, "destroy", "--yes"); !strings.Contains(r.stderr, "image boxed_boxed:latest deleted") {
		t.Errorf("destroy does not say it dropped the image:\n%s", r)
	}
	images := filepath.Join(b.dataDir, "images")
	if left := dirNames(filepath.Join(images, "images")); len(left) != 0 {
		t.Errorf("images left after destroy: %v", left)
	}
	if left := dirNames(filepath.Join(images, "layers")); len(left) != 0 {
		t.Errorf("layers left after destroy: %v", left)
	}
}

// TestContainerImagePrivateRegistry deploys a multi-platform image from a
// registry that requires a password, with the credentials of a Docker
// config file given to berth server --registry-auth: Berth picks the host's
// platform from the index.
func TestContainerImagePrivateRegistry(t *testing.T) {
	requireSandboxes(t)
	reg := imagetest.Start(t, true)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: agentImage(t, otherArch()), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch()}}},
		mutate.IndexAddendum{Add: agentImage(t, goruntime.GOARCH), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}}})
	ref := reg.PushIndex("private/goagent:1", idx)
	b := startBerth(t, "", "--insecure-registry", reg.Host, "--registry-auth", reg.DockerConfig(t.TempDir()))

	created := b.createImageRuntime("private_agent", ref, nil)
	b.waitReady(aws.ToString(created.AgentRuntimeId), "")
	res := b.mustInvoke(invokeInput{arn: aws.ToString(created.AgentRuntimeArn), session: sessionID("private"), body: map[string]any{"prompt": "hi"}})
	if res["echo"] != "hi" {
		t.Errorf("the agent answered %v", res)
	}
}
