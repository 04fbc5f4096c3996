package runc_test

import (
	"context"
	"crypto/rand"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

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

func (a imageAgent) get(t testing.TB, path string, kv ...string) (int, string) {
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

func (a imageAgent) waitReady(t testing.TB) {
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
		// As often as the conformance suite's, so cold starts compare.
		time.Sleep(time.Millisecond)
	}
}

// TestImageSandbox runs the test agent from a container image: the image's
// files and configuration, a private writable root per sandbox that
// vanishes with it, and no host system view.
func TestImageSandbox(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts runc.Options
	}{
		{"userns", runc.Options{}},
		{"no-userns", runc.Options{NoUserNamespace: true}},
		{"crun", runc.Options{Binary: "crun"}},
		{"runsc", runc.Options{Binary: "runsc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.Binary != "" {
				probe(t, configWith(t, tc.opts.Binary, runc.Options{}))
			}
			testImageSandbox(t, tc.opts)
		})
	}
}

// imageFixture is a driver and an image of the test agent (with extra
// layers on top) ready to run.
type imageFixture struct {
	d      sandbox.Driver
	state  string
	store  *image.Store
	img    *image.Image
	layers []string
}

func newImageFixture(tb testing.TB, opts runc.Options, extra ...v1.Layer) imageFixture {
	tb.Helper()
	binary := opts.Binary
	if binary == "" {
		binary = "runc"
	}
	cfg := configWith(tb, binary, opts)
	f := imageFixture{state: sandboxtest.TempDir(tb)}
	f.d = cfg.NewDriver(tb, f.state)
	var err error
	f.store, err = image.Open(filepath.Join(sandboxtest.TempDir(tb), "images"), image.Options{IDShift: runc.DefaultHostIDBase,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	code := sandboxtest.BuildAgent(tb)
	v1img, err := imagetest.AgentImage(goruntime.GOARCH, filepath.Join(code, "agent"), v1.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	if v1img, err = mutate.AppendLayers(v1img, extra...); err != nil {
		tb.Fatal(err)
	}
	if f.img, err = f.store.Add(context.Background(), "test/agent", v1img); err != nil {
		tb.Fatal(err)
	}
	if f.layers, err = f.store.LayerDirs(f.img); err != nil {
		tb.Fatal(err)
	}
	return f
}

// start starts the test agent of the image as user and waits until it
// answers.
func (f imageFixture) start(tb testing.TB, id string, user sandbox.User) imageAgent {
	tb.Helper()
	sb, err := f.d.Start(context.Background(), sandbox.Spec{ID: id, Args: []string{"/agent/agent"}, Env: []string{"PATH=/bin", "PORT=8080"},
		WorkDir: "/agent", RootLayers: f.layers, User: user})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sb.Stop(context.Background()) })
	a := imageAgent{sb: sb, client: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: sb.DialContext, DisableKeepAlives: true}}}
	a.waitReady(tb)
	return a
}

func testImageSandbox(t *testing.T, opts runc.Options) {
	f := newImageFixture(t, opts)
	state, store, img, layers := f.state, f.store, f.img, f.layers
	start := func(id string, user sandbox.User) imageAgent { return f.start(t, id, user) }
	a := start("img-a", sandbox.User{UID: 1000, GID: 1000})
	b := start("img-b", sandbox.User{UID: 1000, GID: 1000})
	root := start("img-root", sandbox.User{})

	if code, body := a.get(t, "/read", "path", "/agent/hello.txt"); code != 200 || body != "from the image\n" {
		t.Errorf("read the image's file: %d %q", code, body)
	}
	if code, body := a.get(t, "/read", "path", "hello.txt"); code != 200 || body != "from the image\n" {
		t.Errorf("read relative to the working directory: %d %q", code, body)
	}
	if code, body := a.get(t, "/read", "path", "/etc/hosts"); code != 200 || !strings.Contains(body, "localhost") {
		t.Errorf("/etc/hosts in an image sandbox: %d %q, want the host's, with localhost", code, body)
	}
	if code, body := a.get(t, "/read", "path", "/etc/passwd"); code != 200 || !strings.Contains(body, "agent:x:1000") {
		t.Errorf("/etc/passwd in an image sandbox: %d %q, want the image's", code, body)
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

	// The image's root holds no privilege: every kernel attack the
	// conformance suite tries is refused to it, and it sees nothing of the
	// host (the state directory, the image store).
	mknod := "mknod"
	if opts.Binary == "runsc" {
		// gVisor lets the node be made in its own file system; it must
		// not reach the host's memory.
		mknod = "mknod-read"
	}
	for _, attack := range []string{"mount-tmpfs", "mount-bind", "mount-proc", "unshare", "clone-namespaces", "setns",
		"init-module", "finit-module", "settimeofday", "clock-settime", "packet-socket", "raw-socket", "chroot", "pivot-root",
		mknod, "keyctl", "add-key", "bpf", "perf-event-open", "open-by-handle"} {
		code, body := root.get(t, "/attack", "name", attack)
		if code != 200 || !strings.Contains(body, `"error":"`) || strings.Contains(body, `"error":""`) {
			t.Errorf("attack %s by the image's root: %d %s, want it refused", attack, code, body)
		}
	}
	for _, p := range []string{state, filepath.Dir(layers[0]), "/etc/shadow"} {
		if code, body := root.get(t, "/stat", "path", p); code != 404 {
			t.Errorf("the image's root sees %s: %d %s", p, code, body)
		}
	}
	if code, body := a.get(t, "/attack", "name", "setuid"); code != 200 || strings.Contains(body, `"error":""`) {
		t.Errorf("uid 1000 became root: %s", body)
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

// BenchmarkColdStartImage is BenchmarkColdStart for a sandbox of a container
// image (the test agent on busybox): from Start until the agent's first
// HTTP 200, which includes mounting the sandbox's overlay root.
// It runs once per OCI runtime.
func BenchmarkColdStartImage(b *testing.B) {
	for _, binary := range []string{"runc", "crun", "runsc"} {
		b.Run(binary, func(b *testing.B) {
			probe(b, configWith(b, binary, runc.Options{}))
			f := newImageFixture(b, runc.Options{Binary: binary})
			b.ResetTimer()
			for i := range b.N {
				a := f.start(b, "cold-img-"+strconv.Itoa(i), sandbox.User{UID: 1000, GID: 1000})
				b.StopTimer()
				if err := a.sb.Stop(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkImageSessionDisk reports the disk that N sessions of one image
// use: the image's layers once, and each session's own writable layer (the
// agent writes 4 KiB in each). It measures space, not time.
func BenchmarkImageSessionDisk(b *testing.B) {
	data := make([]byte, 64<<20)
	rand.Read(data)
	big, err := imagetest.Layer(imagetest.File{Name: "model/", Dir: true}, imagetest.File{Name: "model/weights.bin", Body: data})
	if err != nil {
		b.Fatal(err)
	}
	f := newImageFixture(b, runc.Options{}, big)
	const n = 10
	for range b.N {
		var agents []imageAgent
		for i := range n {
			a := f.start(b, "disk-"+strconv.Itoa(i), sandbox.User{UID: 1000, GID: 1000})
			if code, body := a.get(b, "/write", "path", "/data/note", "data", strings.Repeat("x", 4096)); code != 200 {
				b.Fatalf("write: %d %s", code, body)
			}
			agents = append(agents, a)
		}
		var layers int64
		for _, l := range f.layers {
			layers += diskUsage(l)
		}
		sessions := diskUsage(filepath.Join(f.state, "sandboxes"))
		b.ReportMetric(float64(layers)/(1<<20), "image-MiB")
		b.ReportMetric(float64(sessions)/n/(1<<10), "KiB/session")
		b.ReportMetric(float64(layers+sessions)/float64(layers), "total/image")
		for _, a := range agents {
			a.sb.Stop(context.Background())
		}
	}
}

// diskUsage is the space the files under dir take on disk (not following
// mounts into the sandboxes' merged roots).
func diskUsage(dir string) int64 {
	var total int64
	var dev uint64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			return nil
		}
		if p == dir {
			dev = st.Dev
		} else if st.Dev != dev {
			return filepath.SkipDir
		}
		total += st.Blocks * 512
		return nil
	})
	return total
}

// TestImageManyLayers runs an image of more layers than mount(2) takes in
// one page of options, with a file deleted (whited out) by a later layer and
// a directory made opaque.
func TestImageManyLayers(t *testing.T) {
	var extra []v1.Layer
	add := func(files ...imagetest.File) {
		l, err := imagetest.Layer(files...)
		if err != nil {
			t.Fatal(err)
		}
		extra = append(extra, l)
	}
	add(imagetest.File{Name: "stack/", Dir: true}, imagetest.File{Name: "stack/bottom", Body: []byte("bottom")},
		imagetest.File{Name: "stack/gone", Body: []byte("x")}, imagetest.File{Name: "opaque/", Dir: true},
		imagetest.File{Name: "opaque/hidden", Body: []byte("x")})
	for i := range 58 {
		add(imagetest.File{Name: "stack/", Dir: true}, imagetest.File{Name: "stack/n" + strconv.Itoa(i), Body: []byte("x")})
	}
	add(imagetest.File{Name: "stack/", Dir: true}, imagetest.File{Name: "stack/.wh.gone"}, imagetest.File{Name: "stack/top", Body: []byte("top")},
		imagetest.File{Name: "opaque/", Dir: true}, imagetest.File{Name: "opaque/.wh..wh..opq"}, imagetest.File{Name: "opaque/new", Body: []byte("new")})
	f := newImageFixture(t, runc.Options{}, extra...)
	// More than a page of lowerdir option: the new mount API's path.
	if n := len(strings.Join(f.layers, ":")); n <= 4096 {
		t.Fatalf("the layers' paths take %d bytes, want more than a page", n)
	}
	a := f.start(t, "many-layers", sandbox.User{UID: 1000, GID: 1000})
	for path, want := range map[string]string{"/stack/bottom": "bottom", "/stack/top": "top", "/stack/n30": "x", "/opaque/new": "new"} {
		if code, body := a.get(t, "/read", "path", path); code != 200 || body != want {
			t.Errorf("%s: %d %q, want %q", path, code, body, want)
		}
	}
	for _, path := range []string{"/stack/gone", "/stack/.wh.gone", "/opaque/hidden", "/opaque/.wh..wh..opq"} {
		if code, body := a.get(t, "/stat", "path", path); code != 404 {
			t.Errorf("%s: %d %s, want it deleted by a later layer", path, code, body)
		}
	}
}
