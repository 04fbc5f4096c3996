package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// file is one entry of a test layer.
type file struct {
	name, body, link string
	typ              byte
	mode             int64
	uid              int
}

// layerOf builds a gzip-compressed layer holding files.
func layerOf(t testing.TB, files ...file) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Typeflag: f.typ, Mode: f.mode, Uid: f.uid, Gid: f.uid, Linkname: f.link, Size: int64(len(f.body))}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
			if hdr.Typeflag == tar.TypeDir {
				hdr.Mode = 0o755
			}
		}
		if hdr.Typeflag != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			if _, err := io.WriteString(tw, f.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// imageOf builds an image for arch from layers, with a run configuration.
func imageOf(t testing.TB, arch string, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", arch, cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking layers needs root (chown, whiteout device nodes); run as root")
	}
}

func openStore(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "images"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAddUnpacksLayersForOverlay(t *testing.T) {
	needRoot(t)
	const shift = 100000
	s := openStore(t, Options{IDShift: shift})
	bottom := layerOf(t,
		file{name: "etc/", typ: tar.TypeDir},
		file{name: "etc/gone", body: "old"},
		file{name: "var/cache/", typ: tar.TypeDir},
		file{name: "var/cache/a", body: "a"},
		file{name: "bin/su", body: "setuid", mode: 0o4755},
		file{name: "home/agent/", typ: tar.TypeDir, uid: 1000},
		file{name: "dev/sda", typ: tar.TypeBlock},
	)
	top := layerOf(t,
		file{name: "etc/.wh.gone", body: ""},
		file{name: "var/cache/.wh..wh..opq"},
		file{name: "var/cache/b", body: "b"},
		file{name: "app/agent", body: "#!", mode: 0o755},
		file{name: "app/link", typ: tar.TypeSymlink, link: "/etc/passwd"},
		file{name: "app/hard", typ: tar.TypeLink, link: "app/agent"},
		file{name: "big-owner", body: "x", uid: 70000},
	)
	cfg := v1.Config{Entrypoint: []string{"/app/agent"}, Cmd: []string{"--serve"}, Env: []string{"A=1"}, WorkingDir: "/app", User: "1000:1000"}
	img, err := s.Add(context.Background(), "test/overlay:1", imageOf(t, goruntime.GOARCH, cfg, bottom, top))
	if err != nil {
		t.Fatal(err)
	}
	if img.Config.User != "1000:1000" || img.Config.WorkingDir != "/app" || img.Config.Entrypoint[0] != "/app/agent" ||
		img.Config.Cmd[0] != "--serve" || img.Config.Env[0] != "A=1" {
		t.Errorf("config = %+v, want the image's", img.Config)
	}
	dirs, err := s.LayerDirs(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 2 {
		t.Fatalf("got %d layer dirs, want 2", len(dirs))
	}
	lower, upper := dirs[0], dirs[1]

	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(upper, "etc/gone"), &st); err != nil {
		t.Fatalf("whiteout: %v", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout etc/gone: mode %o rdev %d, want a character device 0/0", st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	n, err := unix.Getxattr(filepath.Join(upper, "var/cache"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque dir var/cache: xattr %q, %v; want y", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(upper, "var/cache/.wh..wh..opq")); err == nil {
		t.Error("the opaque marker was written as a file")
	}
	fi, err := os.Stat(filepath.Join(lower, "bin/su"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/su mode %v, want 0755 without setuid", fi.Mode())
	}
	if _, err := os.Lstat(filepath.Join(lower, "dev/sda")); err == nil {
		t.Error("a block device was created")
	}
	owners := map[string]uint32{"bin/su": shift, "home/agent": shift + 1000, "var": shift}
	for p, want := range owners {
		fi, err := os.Lstat(filepath.Join(lower, p))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Sys().(*syscall.Stat_t).Uid; got != want {
			t.Errorf("%s owner %d, want %d", p, got, want)
		}
	}
	fi, _ = os.Lstat(filepath.Join(upper, "big-owner"))
	if got := fi.Sys().(*syscall.Stat_t).Uid; got != shift+nobody {
		t.Errorf("owner of a file with uid 70000: %d, want %d (nobody)", got, shift+nobody)
	}
	if target, err := os.Readlink(filepath.Join(upper, "app/link")); err != nil || target != "/etc/passwd" {
		t.Errorf("symlink app/link -> %q, %v", target, err)
	}
	a, _ := os.Stat(filepath.Join(upper, "app/agent"))
	b, _ := os.Stat(filepath.Join(upper, "app/hard"))
	if !os.SameFile(a, b) {
		t.Error("app/hard is not a hard link of app/agent")
	}
}

func TestUnpackRefusesEscapes(t *testing.T) {
	needRoot(t)
	outside := t.TempDir()
	tests := []struct {
		name  string
		files []file
		want  string
	}{
		{"write through a symlink", []file{
			{name: "evil", typ: tar.TypeSymlink, link: outside},
			{name: "evil/pwned", body: "x"},
		}, "symlink"},
		{"hard link outside", []file{
			{name: "h", typ: tar.TypeLink, link: "../../../../etc/passwd"},
		}, "not in this layer"},
		{"hard link through a symlink", []file{
			{name: "s", typ: tar.TypeSymlink, link: "/etc/passwd"},
			{name: "h", typ: tar.TypeLink, link: "s"},
		}, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, Options{})
			_, err := s.Add(context.Background(), "test/evil", imageOf(t, goruntime.GOARCH, v1.Config{}, layerOf(t, tt.files...)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one saying %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("wrote outside the layer: %v", entries)
			}
		})
	}
	// ".." in names is cleaned into the layer.
	s := openStore(t, Options{})
	img, err := s.Add(context.Background(), "test/dotdot", imageOf(t, goruntime.GOARCH, v1.Config{},
		layerOf(t, file{name: "../../../../escaped", body: "x"})))
	if err != nil {
		t.Fatal(err)
	}
	dirs, _ := s.LayerDirs(img)
	if _, err := os.Stat(filepath.Join(dirs[0], "escaped")); err != nil {
		t.Errorf("../../escaped did not land at the layer's root: %v", err)
	}
}

func TestAddRefusesWrongPlatformAndTooLarge(t *testing.T) {
	needRoot(t)
	other := "arm64"
	if goruntime.GOARCH == "arm64" {
		other = "amd64"
	}
	s := openStore(t, Options{MaxCompressedBytes: 4096})
	_, err := s.Add(context.Background(), "test/foreign", imageOf(t, other, v1.Config{}, layerOf(t, file{name: "a", body: "a"})))
	if !errors.Is(err, ErrPlatform) || !strings.Contains(err.Error(), "linux/"+other) || !strings.Contains(err.Error(), "linux/"+goruntime.GOARCH) {
		t.Errorf("foreign image: err = %v, want ErrPlatform naming linux/%s and linux/%s", err, other, goruntime.GOARCH)
	}
	big, err := random.Image(64<<10, 1) // random bytes do not compress
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Add(context.Background(), "test/big", big)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "4.0 KiB") {
		t.Errorf("large image: err = %v, want ErrTooLarge naming the 4.0 KiB limit", err)
	}
	if entries, _ := os.ReadDir(s.layers); len(entries) != 0 {
		t.Errorf("refused images left layers: %v", entries)
	}
}

func TestLayersSharedAndCollected(t *testing.T) {
	needRoot(t)
	s := openStore(t, Options{})
	ctx := context.Background()
	base := &countingLayer{Layer: layerOf(t, file{name: "base", body: "shared"})}
	a := imageOf(t, goruntime.GOARCH, v1.Config{Cmd: []string{"a"}}, base, layerOf(t, file{name: "a", body: "a"}))
	b := imageOf(t, goruntime.GOARCH, v1.Config{Cmd: []string{"b"}}, base, layerOf(t, file{name: "b", body: "b"}))

	// Many concurrent pulls of images sharing a layer unpack it once: each
	// layer is read once, its directory exists once and every image sees
	// it.
	var wg sync.WaitGroup
	imgs := make([]*Image, 8)
	errs := make([]error, 8)
	for i := range imgs {
		wg.Go(func() {
			img := a
			if i%2 == 1 {
				img = b
			}
			imgs[i], errs[i] = s.Add(ctx, "test/shared", img)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(s.layers)
	if len(entries) != 3 {
		t.Fatalf("cache holds %d layers, want 3 (base, a, b)", len(entries))
	}
	if n := base.reads.Load(); n != 1 {
		t.Errorf("the shared layer was read %d times, want once", n)
	}
	if imgs[0].Layers[0] != imgs[1].Layers[0] {
		t.Fatal("the images do not share their base layer")
	}

	if err := s.Remove(ctx, imgs[0].Digest); err != nil {
		t.Fatal(err)
	}
	removed, err := s.CollectLayers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != imgs[0].Layers[1] {
		t.Errorf("collected %v, want only image a's own layer %s", removed, imgs[0].Layers[1])
	}
	if _, err := s.LayerDirs(imgs[1]); err != nil {
		t.Errorf("image b lost a layer: %v", err)
	}
	if err := s.Remove(ctx, imgs[1].Digest); err != nil {
		t.Fatal(err)
	}
	if removed, _ = s.CollectLayers(ctx); len(removed) != 2 {
		t.Errorf("collected %v, want the 2 layers left", removed)
	}
	if ds, _ := s.Digests(ctx); len(ds) != 0 {
		t.Errorf("images left: %v", ds)
	}
}

func TestKeychain(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{"auths":{
		"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
		"127.0.0.1:5000":{"username":"u","password":"p"},
		"bad.example":{"auth":"!!"}}}`), 0o600)
	if _, err := loadKeychain(cfg); err == nil || !strings.Contains(err.Error(), `auths["bad.example"]`) {
		t.Errorf("bad auth: err = %v, want one naming the entry", err)
	}
	os.WriteFile(cfg, []byte(`{"auths":{
		"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
		"127.0.0.1:5000":{"username":"u","password":"p"}}}`), 0o600)
	k, err := loadKeychain(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ registry, user string }{
		{"index.docker.io", "user"},
		{"127.0.0.1:5000", "u"},
		{"127.0.0.1:5001", ""},
	}
	for _, tt := range tests {
		a, err := k.Resolve(registry(tt.registry))
		if err != nil {
			t.Fatal(err)
		}
		ac, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if ac.Username != tt.user {
			t.Errorf("%s: user %q, want %q", tt.registry, ac.Username, tt.user)
		}
	}
	if k, err := loadKeychain(filepath.Join(dir, "missing.json")); err != nil || len(k.auths) != 0 {
		t.Errorf("missing file: %v, %v; want an empty keychain", k, err)
	}
}

// registry is an authn.Resource for a registry name.
type registry string

func (r registry) String() string      { return string(r) }
func (r registry) RegistryStr() string { return string(r) }

func TestResolveUser(t *testing.T) {
	needRoot(t)
	s := openStore(t, Options{})
	etc := layerOf(t,
		file{name: "etc/passwd", body: "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1001:agent:/home/agent:/bin/sh\nhuge:x:70000:70000::/:/bin/sh\n"},
		file{name: "etc/group", body: "root:x:0:\nstaff:x:50:\n"})
	tests := []struct {
		user string
		want User
		err  string
	}{
		{"", User{0, 0, "/root"}, ""},
		{"root", User{0, 0, "/root"}, ""},
		{"agent", User{1000, 1001, "/home/agent"}, ""},
		{"1000", User{1000, 1001, "/home/agent"}, ""},
		{"1234", User{1234, 1234, "/"}, ""},
		{"1234:50", User{1234, 50, "/"}, ""},
		{"agent:staff", User{1000, 50, "/home/agent"}, ""},
		{"nobody", User{}, `no user "nobody"`},
		{"agent:wheel", User{}, `no group "wheel"`},
		{"huge", User{}, "0 to 65535"},
	}
	for _, tt := range tests {
		img, err := s.Add(context.Background(), "test/user", imageOf(t, goruntime.GOARCH, v1.Config{User: tt.user}, etc))
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.ResolveUser(img)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("user %q: err = %v, want %q", tt.user, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("user %q: %+v, %v; want %+v", tt.user, got, err, tt.want)
		}
	}
}

// countingLayer counts how often a layer's content is read.
type countingLayer struct {
	v1.Layer
	reads atomic.Int32
}

func (l *countingLayer) Uncompressed() (io.ReadCloser, error) {
	l.reads.Add(1)
	return l.Layer.Uncompressed()
}

func TestUnpackLimit(t *testing.T) {
	needRoot(t)
	// Zeros compress to almost nothing: a small image that unpacks big.
	zeros := strings.Repeat("\x00", 1<<20)
	bomb := imageOf(t, goruntime.GOARCH, v1.Config{},
		layerOf(t, file{name: "a", body: zeros}), layerOf(t, file{name: "b", body: zeros}))
	s := openStore(t, Options{MaxUnpackedBytes: 1536 << 10})
	if _, err := s.Add(context.Background(), "test/bomb", bomb); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "1.5 MiB") {
		t.Errorf("err = %v, want ErrTooLarge naming the 1.5 MiB limit", err)
	}
	if entries, _ := os.ReadDir(s.layers); len(entries) > 1 {
		t.Errorf("the refused image left %d layers", len(entries))
	}
	// Within the limit it unpacks.
	s = openStore(t, Options{MaxUnpackedBytes: 3 << 20})
	if _, err := s.Add(context.Background(), "test/bomb", bomb); err != nil {
		t.Error(err)
	}
}

// TestUnpackPathShape checks that a layer cannot make one header create
// thousands of nested directories: paths have a depth and length limit, and
// the directories a path implies count against the unpacked size.
func TestUnpackPathShape(t *testing.T) {
	needRoot(t)
	deep := func(n int) string { return strings.Repeat("d/", n) + "f" }
	tests := []struct {
		name    string
		files   []file
		limit   int64
		wantErr error
	}{
		{"deep but allowed", []file{{name: deep(maxDepth - 1), body: "x"}}, 0, nil},
		{"too deep", []file{{name: deep(maxDepth), body: "x"}}, 0, ErrInvalid},
		{"too long", []file{{name: strings.Repeat("n", maxPathLen+1), body: "x"}}, 0, ErrInvalid},
		// 200 implied directories at 512 bytes each exceed 64 KiB; the
		// entries themselves would not.
		{"implied directories count", []file{{name: deep(200), body: "x"}}, 64 << 10, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, Options{MaxUnpackedBytes: tt.limit})
			_, err := s.Add(context.Background(), "test/shape", imageOf(t, goruntime.GOARCH, v1.Config{}, layerOf(t, tt.files...)))
			if tt.wantErr == nil && err != nil {
				t.Fatalf("err = %v, want none", err)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestOpenRemovesLeftovers checks that Open removes what a crash left half
// done, and nothing else.
func TestOpenRemovesLeftovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "images")
	if _, err := Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	leftovers := []string{"layers/.tmp-1234", ".upload-99", "images/" + strings.Repeat("a", 64) + ".json.tmp-77", "tags.json.tmp-5"}
	kept := []string{"layers/" + strings.Repeat("b", 64), "images/" + strings.Repeat("c", 64) + ".json", "tags.json"}
	for _, p := range append(slices.Clone(leftovers), kept...) {
		if err := os.WriteFile(filepath.Join(dir, p), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range leftovers {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("%s left", p)
		}
	}
	for _, p := range kept {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}
