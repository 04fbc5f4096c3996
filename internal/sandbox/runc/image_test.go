package runc_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	goruntime "runtime"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/sys/mountinfo"

	"github.com/berthrun/berth/internal/image"
	"github.com/berthrun/berth/internal/image/imagetest"
	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/runc"
	"github.com/berthrun/berth/internal/sandbox/sandboxtest"
)

// imageAgent talks to the test agent in an image sandbox.
type imageAgent struct {
	sb     sandbox.Sandbox
	client *http.Client
}

func (a imageAgent) get(t *testing.T, path string, kv ...string) (int, string) {
	t.Helper()
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	resp, err := a.client.Get("http://127.0.0.1:8080" + path + "?" + q.Encode())
	if err != nil {
		t.Fatalf("%s: GET %s: %v", a.sb.ID(), path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (a imageAgent) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := a.client.Get("http://127.0.0.1:8080/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-a.sb.Done():
			t.Fatalf("%s exited: %v", a.sb.ID(), a.sb.Err())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered: %v", a.sb.ID(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestImageSandbox runs the test agent from a container image: the image's
// files and configuration, a private writable root per sandbox that
// vanishes with it, and no host system view.
func TestImageSandbox(t *testing.T) {
	for _, noUserns := range []bool{false, true} {
		name := "userns"
		if noUserns {
			name = "no-userns"
		}
		t.Run(name, func(t *testing.T) { testImageSandbox(t, noUserns) })
	}
}

func testImageSandbox(t *testing.T, noUserns bool) {
	cfg := configWith(t, "runc", runc.Options{NoUserNamespace: noUserns})
	state := sandboxtest.TempDir(t)
	d := cfg.NewDriver(t, state)
	store, err := image.Open(filepath.Join(sandboxtest.TempDir(t), "images"), image.Options{IDShift: runc.DefaultHostIDBase})
	if err != nil {
		t.Fatal(err)
	}
	code := sandboxtest.BuildAgent(t)
	v1img, err := imagetest.AgentImage(goruntime.GOARCH, filepath.Join(code, "agent"), v1.Config{})
	if err != nil {
		t.Fatal(err)
	}
	img, err := store.Add(t.Context(), "test/agent", v1img)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := store.LayerDirs(img)
	if err != nil {
		t.Fatal(err)
	}
	start := func(id string, user sandbox.User) imageAgent {
		sb, err := d.Start(t.Context(), sandbox.Spec{ID: id, Args: []string{"/agent/agent"}, Env: []string{"PATH=/bin", "PORT=8080"},
			WorkDir: "/agent", RootLayers: layers, User: user, Stdout: os.Stderr, Stderr: os.Stderr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sb.Stop(context.WithoutCancel(t.Context())) })
		a := imageAgent{sb: sb, client: &http.Client{Timeout: 10 * time.Second,
			Transport: &http.Transport{DialContext: sb.DialContext, DisableKeepAlives: true}}}
		a.waitReady(t)
		return a
	}
	a := start("img-a", sandbox.User{UID: 1000, GID: 1000})
	b := start("img-b", sandbox.User{UID: 1000, GID: 1000})
	root := start("img-root", sandbox.User{})

	if code, body := a.get(t, "/read", "path", "/agent/hello.txt"); code != 200 || body != "from the image\n" {
		t.Errorf("read the image's file: %d %q", code, body)
	}
	if code, body := a.get(t, "/read", "path", "hello.txt"); code != 200 || body != "from the image\n" {
		t.Errorf("read relative to the working directory: %d %q", code, body)
	}
	if _, err := os.Stat("/usr/bin"); err == nil {
		if code, _ := a.get(t, "/stat", "path", "/usr/bin"); code == 200 {
			t.Error("the host's /usr is visible in an image sandbox")
		}
	}
	// Writes are private to each sandbox.
	if code, body := a.get(t, "/write", "path", "/data/note", "data", "from a"); code != 200 {
		t.Fatalf("uid 1000 cannot write its /data: %d %s", code, body)
	}
	if code, _ := b.get(t, "/stat", "path", "/data/note"); code == 200 {
		t.Error("sandbox b sees a's write")
	}
	if code, _ := a.get(t, "/write", "path", "/agent/hello.txt", "data", "changed"); code == 200 {
		t.Error("uid 1000 could change a file of the image's root")
	}
	if code, body := root.get(t, "/write", "path", "/agent/hello.txt", "data", "changed by root"); code != 200 {
		t.Errorf("the image's root cannot change its own file: %d %s", code, body)
	}
	if code, body := b.get(t, "/read", "path", "/agent/hello.txt"); body != "from the image\n" {
		t.Errorf("b reads %d %q after root's sandbox changed its copy", code, body)
	}
	if data, _ := os.ReadFile(filepath.Join(layers[len(layers)-1], "agent/hello.txt")); string(data) != "from the image\n" {
		t.Errorf("the shared layer changed: %q", data)
	}

	// Stop removes the sandbox's writable layer and its mount.
	dir := filepath.Join(state, "sandboxes", "img-a")
	if err := a.sb.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("sandbox directory %s after Stop: %v", dir, err)
	}
	mounted, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil || len(mounted) != 0 {
		t.Errorf("mounts under %s after Stop: %v %v", dir, mounted, err)
	}
	if _, err := store.LayerDirs(img); err != nil {
		t.Errorf("the image's layers after Stop: %v", err)
	}
}
