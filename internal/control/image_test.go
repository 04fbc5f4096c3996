package control

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/berthrun/berth/internal/image"
	"github.com/berthrun/berth/internal/image/imagetest"
	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/store/sqlite"
)

// imageService is a Service with a real image store.
func imageService(tb testing.TB, opts image.Options) (*Service, *image.Store) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("the image store unpacks layers as root (owners, whiteouts); run as root")
	}
	opts.Logger = slog.New(slog.DiscardHandler)
	images, err := image.Open(filepath.Join(tb.TempDir(), "images"), opts)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	s, err := New(context.Background(), st, &fakeArtifacts{}, Options{Images: images, Region: "eu-west-1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s, images
}

// upload imports img into the store as ref and returns its containerUri.
func upload(tb testing.TB, images *image.Store, ref string, img v1.Image) string {
	tb.Helper()
	var buf bytes.Buffer
	tag, _ := name.NewTag("example/x:1")
	if err := tarball.Write(tag, img, &buf); err != nil {
		tb.Fatal(err)
	}
	_, uri, err := images.Import(context.Background(), ref, &buf)
	if err != nil {
		tb.Fatal(err)
	}
	return uri.String()
}

func imageConfig(uri string, env map[string]string) Config {
	return Config{RoleARN: "arn:aws:iam::123456789012:role/agent", Container: &ContainerArtifact{URI: uri}, Env: env}
}

// TestImageDeployment checks what a session of an image runs: the image's
// Entrypoint and Cmd, its Env under the runtime's, its WorkingDir and User.
func TestImageDeployment(t *testing.T) {
	s, images := imageService(t, image.Options{})
	ctx := context.Background()
	etc, err := imagetest.Layer(imagetest.File{Name: "etc/", Dir: true},
		imagetest.File{Name: "etc/passwd", Body: []byte("root:x:0:0::/root:/bin/sh\napp:x:1234:99::/home/app:/bin/sh\n")})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagetest.Image(goruntime.GOARCH, v1.Config{Entrypoint: []string{"/bin/agent", "--serve"}, Cmd: []string{"--port", "8080"},
		Env: []string{"PATH=/opt/bin:/bin", "FROM_IMAGE=1", "SHARED=image"}, WorkingDir: "srv/app", User: "app"}, etc)
	if err != nil {
		t.Fatal(err)
	}
	uri := upload(t, images, "agent:1", img)
	rt, err := s.CreateRuntime(ctx, "image_agent", imageConfig(uri, map[string]string{"SHARED": "runtime", "DOCKER_CONTAINER": "0"}), "")
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, rt.ID, 1, StatusReady)
	d, err := s.Resolve(ctx, rt.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/bin/agent", "--serve", "--port", "8080"}; !slices.Equal(d.Args, want) {
		t.Errorf("args %v, want %v", d.Args, want)
	}
	for _, kv := range []string{"PATH=/opt/bin:/bin", "FROM_IMAGE=1", "SHARED=runtime", "HOME=/home/app", "PORT=8080",
		"AWS_REGION=eu-west-1", "DOCKER_CONTAINER=1"} {
		if !slices.Contains(d.Env, kv) {
			t.Errorf("env %v lacks %s", d.Env, kv)
		}
	}
	if d.WorkDir != "/srv/app" || d.User.UID != 1234 || d.User.GID != 99 || d.CodeDir != "" || len(d.RootLayers) != 1 {
		t.Errorf("deployment workdir %q user %+v code %q layers %v", d.WorkDir, d.User, d.CodeDir, d.RootLayers)
	}
	target := d.Target(sandbox.Limits{})
	if target.WorkDir != "/srv/app" || !slices.Equal(target.RootLayers, d.RootLayers) || target.User.UID != d.User.UID {
		t.Errorf("session target %+v does not carry the image", target)
	}

	// Images that cannot run fail with the reason.
	bare, _ := imagetest.Image(goruntime.GOARCH, v1.Config{}, etc)
	nobody, _ := imagetest.Image(goruntime.GOARCH, v1.Config{Cmd: []string{"/x"}, User: "ghost"}, etc)
	for _, tc := range []struct{ uri, want string }{
		{upload(t, images, "bare:1", bare), "neither Entrypoint nor Cmd"},
		{upload(t, images, "nobody:1", nobody), `no user "ghost"`},
		{image.LocalRegistry + "/never:1", "no image was uploaded"},
	} {
		rt, err := s.CreateRuntime(ctx, "bad_"+strings.Split(strings.TrimPrefix(tc.uri, image.LocalRegistry+"/"), ":")[0], imageConfig(tc.uri, nil), "")
		if err != nil {
			t.Fatal(err)
		}
		got := waitStatus(t, s, rt.ID, 1, StatusCreateFailed)
		if !strings.Contains(got.FailureReason, tc.want) {
			t.Errorf("%s: failure reason %q, want %q", tc.uri, got.FailureReason, tc.want)
		}
	}

	// The image stays while a version uses it, even without its name, and
	// goes with the runtime.
	digest, _ := img.Digest()
	if err := images.Untag(ctx, "agent:1"); err != nil {
		t.Fatal(err)
	}
	if removed, err := s.CollectArtifacts(ctx); err != nil || slices.Contains(removed, digest.String()) {
		t.Fatalf("collected %v (%v) while a version uses %s", removed, err, digest)
	}
	if err := s.DeleteRuntime(ctx, rt.ID, 0); err != nil {
		t.Fatal(err)
	}
	removed, err := s.CollectArtifacts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, digest.String()) {
		t.Errorf("collected %v, want %s among them", removed, digest)
	}
}

// BenchmarkDeployImageByReference measures deploy → READY of the 100 MiB
// image of BenchmarkDeployImage for a driver whose nodes pull images
// (kubernetes): Berth fetches its manifest and config only, so cold and
// cached cost about the same.
func BenchmarkDeployImageByReference(b *testing.B) {
	reg := imagetest.Start(b, false)
	images, err := image.Open(filepath.Join(b.TempDir(), "images"), image.Options{Insecure: []string{reg.Host}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	s, err := New(context.Background(), st, &fakeArtifacts{}, Options{Images: images, ImagesByReference: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	var layers []v1.Layer
	for i := range 4 {
		data := make([]byte, 25<<20)
		rand.Read(data)
		l, err := imagetest.Layer(imagetest.File{Name: fmt.Sprintf("data/blob%d", i), Body: data})
		if err != nil {
			b.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := imagetest.Image(goruntime.GOARCH, v1.Config{Cmd: []string{"/x"}}, layers...)
	if err != nil {
		b.Fatal(err)
	}
	uri := reg.Push("bench/agent:1", img)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		rt, err := s.CreateRuntime(ctx, fmt.Sprintf("bench_%d", i), imageConfig(uri, nil), "")
		if err != nil {
			b.Fatal(err)
		}
		for {
			got, err := s.GetRuntime(ctx, rt.ID, 1)
			if err != nil {
				b.Fatal(err)
			}
			if got.Status == StatusReady {
				break
			}
			if got.Status == StatusCreateFailed {
				b.Fatal(got.FailureReason)
			}
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		if err := s.DeleteRuntime(ctx, rt.ID, 0); err != nil {
			b.Fatal(err)
		}
		if _, err := s.CollectArtifacts(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkDeployImage measures deploy → READY (CreateRuntime until the
// version is READY) for a 100 MiB image (4 layers of random data) from a
// registry on loopback: cold (the image and its layers are not on the
// host: the runtime before was deleted and collected) and cached (another
// runtime already uses the image).
func BenchmarkDeployImage(b *testing.B) {
	reg := imagetest.Start(b, false)
	s, _ := imageService(b, image.Options{Insecure: []string{reg.Host}})
	var layers []v1.Layer
	for i := range 4 {
		data := make([]byte, 25<<20)
		rand.Read(data)
		l, err := imagetest.Layer(imagetest.File{Name: fmt.Sprintf("data/blob%d", i), Body: data})
		if err != nil {
			b.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := imagetest.Image(goruntime.GOARCH, v1.Config{Cmd: []string{"/x"}}, layers...)
	if err != nil {
		b.Fatal(err)
	}
	uri := reg.Push("bench/agent:1", img)
	ctx := context.Background()
	n := 0
	deploy := func(b *testing.B) string {
		n++
		rt, err := s.CreateRuntime(ctx, fmt.Sprintf("bench_%d", n), imageConfig(uri, nil), "")
		if err != nil {
			b.Fatal(err)
		}
		for {
			got, err := s.GetRuntime(ctx, rt.ID, 1)
			if err != nil {
				b.Fatal(err)
			}
			if got.Status == StatusReady {
				return rt.ID
			}
			if got.Status == StatusCreateFailed {
				b.Fatal(got.FailureReason)
			}
			time.Sleep(time.Millisecond)
		}
	}
	b.Run("cold", func(b *testing.B) {
		for range b.N {
			id := deploy(b)
			b.StopTimer()
			if err := s.DeleteRuntime(ctx, id, 0); err != nil {
				b.Fatal(err)
			}
			if _, err := s.CollectArtifacts(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("cached", func(b *testing.B) {
		deploy(b) // keeps the image
		b.ResetTimer()
		for range b.N {
			deploy(b)
		}
	})
}

// TestImageByReference checks the deployment of an image for a driver whose
// nodes pull images (kubernetes): Berth checks the image's manifest and
// config at deploy time, unpacks nothing, and sessions run it by digest.
// It needs no root, as nothing is unpacked.
func TestImageByReference(t *testing.T) {
	reg := imagetest.Start(t, false)
	dir := filepath.Join(t.TempDir(), "images")
	images, err := image.Open(dir, image.Options{Insecure: []string{reg.Host}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := New(context.Background(), st, &fakeArtifacts{}, Options{Images: images, ImagesByReference: true, Region: "eu-west-1",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx := context.Background()

	etc, err := imagetest.Layer(imagetest.File{Name: "etc/", Dir: true},
		imagetest.File{Name: "etc/passwd", Body: []byte("root:x:0:0::/root:/bin/sh\napp:x:1234:99::/home/app:/bin/sh\n")})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagetest.Image(goruntime.GOARCH, v1.Config{Entrypoint: []string{"/bin/agent"}, Cmd: []string{"--serve"},
		Env: []string{"FROM_IMAGE=1"}, WorkingDir: "/srv", User: "app"}, etc)
	if err != nil {
		t.Fatal(err)
	}
	uri := reg.Push("team/agent:1", img)
	rt, err := s.CreateRuntime(ctx, "by_reference", imageConfig(uri, nil), "")
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, rt.ID, 1, StatusReady)
	d, err := s.Resolve(ctx, rt.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()
	if want := reg.Host + "/team/agent@" + digest.String(); d.Image != want || len(d.RootLayers) != 0 {
		t.Errorf("deployment image %q, layers %v; want %s and no layers", d.Image, d.RootLayers, want)
	}
	if !slices.Equal(d.Args, []string{"/bin/agent", "--serve"}) || d.WorkDir != "/srv" || d.User.UID != 1234 || d.User.GID != 99 ||
		!slices.Contains(d.Env, "FROM_IMAGE=1") || !slices.Contains(d.Env, "HOME=/home/app") {
		t.Errorf("deployment args %v, workdir %q, user %+v, env %v", d.Args, d.WorkDir, d.User, d.Env)
	}
	if target := d.Target(sandbox.Limits{}); target.Image != d.Image || target.User.UID != d.User.UID {
		t.Errorf("session target %+v does not carry the image", target)
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "layers")); err != nil || len(entries) != 0 {
		t.Errorf("%d layers unpacked (%v), want none", len(entries), err)
	}

	other := "arm64"
	if goruntime.GOARCH == "arm64" {
		other = "amd64"
	}
	foreign, _ := imagetest.Image(other, v1.Config{Cmd: []string{"/x"}}, etc)
	for _, tc := range []struct{ name, uri, want string }{
		{"foreign", reg.Push("team/foreign:1", foreign), "rebuild it for"},
		{"uploaded", image.LocalRegistry + "/agent:1", "push the image to a registry the nodes can pull from"},
	} {
		rt, err := s.CreateRuntime(ctx, "bad_"+tc.name, imageConfig(tc.uri, nil), "")
		if err != nil {
			t.Fatal(err)
		}
		got := waitStatus(t, s, rt.ID, 1, StatusCreateFailed)
		if !strings.Contains(got.FailureReason, tc.want) {
			t.Errorf("%s: failure reason %q, want %q", tc.uri, got.FailureReason, tc.want)
		}
	}
}
