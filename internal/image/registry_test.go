package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/berthrun/berth/internal/image/imagetest"
)

// otherArch is an architecture that is not this host's.
func otherArch() string {
	if goruntime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

func testImage(t *testing.T, arch, marker string) v1.Image {
	t.Helper()
	l, err := imagetest.Layer(imagetest.File{Name: "marker", Body: []byte(marker)})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagetest.Image(arch, v1.Config{Cmd: []string{"/marker"}, User: "1000"}, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestPullFromRegistry pulls from a real registry on loopback.
func TestPullFromRegistry(t *testing.T) {
	needRoot(t)
	reg := imagetest.Start(t, false)
	ctx := context.Background()

	host := testImage(t, goruntime.GOARCH, "host")
	other := testImage(t, otherArch(), "other")
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch()}}},
		mutate.IndexAddendum{Add: host, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}}},
	)
	multi := reg.PushIndex("agent/multi:1", idx)
	foreign := reg.Push("agent/foreign:1", other)
	foreignIdx := reg.PushIndex("agent/foreign-index:1", mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch()}}}))

	s := openStore(t, Options{Insecure: []string{reg.Host}})
	img, err := s.Pull(ctx, multi)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := host.Digest()
	if img.Digest != want.String() || img.Architecture != goruntime.GOARCH || img.Config.User != "1000" {
		t.Errorf("pulled %+v, want the %s image %s", img, goruntime.GOARCH, want)
	}
	dirs, err := s.LayerDirs(img)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dirs[0], "marker")); err != nil || string(data) != "host" {
		t.Errorf("marker = %q, %v; want the host image's", data, err)
	}

	tests := []struct {
		name string
		opts Options
		ref  string
		is   error
		says []string
	}{
		{"single image for another arch", Options{Insecure: []string{reg.Host}}, foreign, ErrPlatform,
			[]string{"linux/" + otherArch(), "linux/" + goruntime.GOARCH}},
		{"index without this arch", Options{Insecure: []string{reg.Host}}, foreignIdx, ErrPlatform,
			[]string{"linux/" + otherArch(), "linux/" + goruntime.GOARCH}},
		{"missing tag", Options{Insecure: []string{reg.Host}}, reg.Host + "/agent/multi:nope", ErrNotFound, []string{"no such image"}},
		{"missing repository", Options{Insecure: []string{reg.Host}}, reg.Host + "/nobody/here:1", ErrNotFound, []string{"no such image"}},
		{"plain HTTP not allowed", Options{}, multi, nil, []string{"--insecure-registry " + reg.Host}},
		{"too large", Options{Insecure: []string{reg.Host}, MaxCompressedBytes: 100}, multi, ErrTooLarge, []string{"limit of 100 B"}},
		{"bad reference", Options{}, "UPPER/case:1", ErrInvalid, []string{"UPPER/case:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, tt.opts)
			_, err := s.Pull(ctx, tt.ref)
			if err == nil {
				t.Fatal("pull succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %v", err, tt.is)
			}
			for _, w := range tt.says {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to say %q", err, w)
				}
			}
		})
	}
}

// TestPullWithBasicAuth pulls from a registry that requires a password,
// with and without credentials from a Docker config file.
func TestPullWithBasicAuth(t *testing.T) {
	needRoot(t)
	reg := imagetest.Start(t, true)
	ctx := context.Background()
	ref := reg.Push("private/agent:1", testImage(t, goruntime.GOARCH, "secret"))

	anon := openStore(t, Options{Insecure: []string{reg.Host}})
	if _, err := anon.Pull(ctx, ref); !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "no credentials") {
		t.Errorf("anonymous pull: err = %v, want ErrUnauthorized saying no credentials are configured", err)
	}
	dir := t.TempDir()
	wrong := *reg
	wrong.Password = "wrong"
	bad := openStore(t, Options{Insecure: []string{reg.Host}, AuthFile: wrong.DockerConfig(dir)})
	if _, err := bad.Pull(ctx, ref); !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("wrong password: err = %v, want ErrUnauthorized naming the config file", err)
	}
	good := openStore(t, Options{Insecure: []string{reg.Host}, AuthFile: reg.DockerConfig(dir)})
	img, err := good.Pull(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 1 {
		t.Errorf("layers = %v", img.Layers)
	}
}
