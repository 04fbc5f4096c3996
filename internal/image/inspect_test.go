package image

import (
	"context"
	"errors"
	"net/http"
	"os"
	goruntime "runtime"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/berthrun/berth/internal/image/imagetest"
)

// blobCounter counts the blobs fetched through it (configs and layers).
type blobCounter struct {
	next  http.RoundTripper
	blobs atomic.Int64
}

func (c *blobCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
		c.blobs.Add(1)
	}
	return c.next.RoundTrip(r)
}

// TestInspect checks images from a real registry without their layers: the
// platform's manifest is picked and checked, nothing is unpacked, and a
// user name is resolved from the image's files, read from the fewest
// layers.
func TestInspect(t *testing.T) {
	reg := imagetest.Start(t, false)
	ctx := context.Background()
	layer := func(files ...imagetest.File) v1.Layer {
		l, err := imagetest.Layer(files...)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	image := func(arch string, cfg v1.Config, layers ...v1.Layer) v1.Image {
		img, err := imagetest.Image(arch, cfg, layers...)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	base := layer(imagetest.File{Name: "etc/", Dir: true},
		imagetest.File{Name: "etc/passwd", Body: []byte("root:x:0:0::/root:/bin/sh\napp:x:1234:99::/home/app:/bin/sh\n")},
		imagetest.File{Name: "etc/group", Body: []byte("root:x:0:\napp:x:99:\n")})
	staff := layer(imagetest.File{Name: "etc/", Dir: true}, imagetest.File{Name: "etc/group", Body: []byte("staff:x:77:\n")})
	app := layer(imagetest.File{Name: "app/", Dir: true}, imagetest.File{Name: "app/main", Body: []byte("x")})
	noPasswd := layer(imagetest.File{Name: "etc/", Dir: true}, imagetest.File{Name: "etc/.wh.passwd"})
	opaque := layer(imagetest.File{Name: "etc/", Dir: true}, imagetest.File{Name: "etc/.wh..wh..opq"}, imagetest.File{Name: "etc/group", Body: []byte("x:x:5:\n")})

	host := image(goruntime.GOARCH, v1.Config{Cmd: []string{"/app/main"}, User: "1000"}, base, app)
	multi := reg.PushIndex("agent/multi:1", mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: image(otherArch(), v1.Config{Cmd: []string{"/x"}}, app), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch()}}},
		mutate.IndexAddendum{Add: host, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}}}))
	foreign := reg.Push("agent/foreign:1", image(otherArch(), v1.Config{Cmd: []string{"/x"}}, app))

	counter := &blobCounter{next: http.DefaultTransport}
	s := openStore(t, Options{Insecure: []string{reg.Host}, Transport: counter})
	img, err := s.Inspect(ctx, multi)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := host.Digest()
	if img.Digest != want.String() || img.Config.User != "1000" || len(img.Layers) != 2 || img.Files != nil {
		t.Errorf("inspected %+v, want the %s image %s with no files", img, goruntime.GOARCH, want)
	}
	if n := counter.blobs.Load(); n != 1 {
		t.Errorf("%d blobs fetched for a numeric user, want 1 (the config)", n)
	}
	if entries, err := os.ReadDir(s.layers); err != nil || len(entries) != 0 {
		t.Errorf("layer cache after Inspect: %d entries (%v), want none", len(entries), err)
	}
	if got, err := s.Get(ctx, img.Digest); err != nil || got.Digest != img.Digest {
		t.Errorf("Get after Inspect = %v, %v", got, err)
	}
	if u, err := s.ResolveUser(img); err != nil || u.UID != 1000 || u.GID != 1000 {
		t.Errorf("ResolveUser = %+v, %v; want 1000:1000", u, err)
	}

	for _, tc := range []struct {
		name   string
		user   string
		layers []v1.Layer
		blobs  int64 // fetched, the config included
		want   User
		err    string
	}{
		{"name", "app", []v1.Layer{base, app}, 3, User{UID: 1234, GID: 99, Home: "/home/app"}, ""},
		{"group from an upper layer", "app:staff", []v1.Layer{base, staff, app}, 4, User{UID: 1234, GID: 77, Home: "/home/app"}, ""},
		{"both files in the top layer", "app", []v1.Layer{app, base}, 2, User{UID: 1234, GID: 99, Home: "/home/app"}, ""},
		{"passwd deleted", "app", []v1.Layer{base, noPasswd}, 3, User{}, `no user "app"`},
		{"etc made opaque", "app", []v1.Layer{base, opaque}, 2, User{}, `no user "app"`},
		{"no such group", "1234:wheel", []v1.Layer{base}, 2, User{}, `no group "wheel"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := reg.Push("agent/"+strings.ReplaceAll(tc.name, " ", "-")+":1", image(goruntime.GOARCH, v1.Config{Cmd: []string{"/x"}, User: tc.user}, tc.layers...))
			before := counter.blobs.Load()
			img, err := s.Inspect(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			if n := counter.blobs.Load() - before; n != tc.blobs {
				t.Errorf("%d blobs fetched, want %d", n, tc.blobs)
			}
			u, err := s.ResolveUser(img)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("ResolveUser = %+v, %v; want an error with %q", u, err, tc.err)
				}
				return
			}
			if err != nil || u != tc.want {
				t.Errorf("ResolveUser = %+v, %v; want %+v", u, err, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name string
		opts Options
		ref  string
		is   error
		says string
	}{
		{"another platform", Options{Insecure: []string{reg.Host}}, foreign, ErrPlatform, "rebuild it for"},
		{"too large", Options{Insecure: []string{reg.Host}, MaxCompressedBytes: 10}, multi, ErrTooLarge, "--max-image-size"},
		{"missing", Options{Insecure: []string{reg.Host}}, reg.Host + "/agent/none:1", ErrNotFound, "no such image"},
		{"uploaded", Options{}, LocalRegistry + "/agent:1", ErrNotFound, "uploaded to this Berth server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := openStore(t, tc.opts).Inspect(ctx, tc.ref)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Inspect(%s) = %v, want %v saying %q", tc.ref, err, tc.is, tc.says)
			}
		})
	}
}

func TestPinned(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct{ ref, want, err string }{
		{"127.0.0.1:5000/team/agent:1", "127.0.0.1:5000/team/agent@" + d, ""},
		{"ghcr.io/team/agent", "ghcr.io/team/agent@" + d, ""},
		{"python:3.12", "docker.io/library/python@" + d, ""},
		{"docker.io/team/agent@sha256:" + strings.Repeat("f", 64), "docker.io/team/agent@" + d, ""},
		{"Bad Ref", "", "image reference"},
	} {
		got, err := Pinned(tc.ref, d)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Pinned(%q) = %q, %v; want an error about %s", tc.ref, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Pinned(%q) = %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
	if _, err := Pinned("a/b:1", "sha256:short"); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("Pinned with a bad digest = %v, want an error about the digest", err)
	}
}
