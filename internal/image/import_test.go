package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// dockerArchive returns img as docker save writes it.
func dockerArchive(t *testing.T, img v1.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	tag, _ := name.NewTag("example/agent:1")
	if err := tarball.Write(tag, img, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ociArchive returns a tar of an OCI image layout holding idx.
func ociArchive(t *testing.T, idx v1.ImageIndex) []byte {
	t.Helper()
	dir := t.TempDir()
	if _, err := layout.Write(dir, idx); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, _ := d.Info()
		hdr, _ := tar.FileInfoHeader(fi, "")
		hdr.Name = rel
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	return buf.Bytes()
}

func TestImport(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	host := imageOf(t, goruntime.GOARCH, v1.Config{Cmd: []string{"/agent"}}, layerOf(t, file{name: "agent", body: "host", mode: 0o755}))
	foreign := imageOf(t, otherArch(), v1.Config{Cmd: []string{"/agent"}}, layerOf(t, file{name: "agent", body: "foreign", mode: 0o755}))
	multi := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: foreign}, mutate.IndexAddendum{Add: host})
	nested := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: multi})
	hostDigest, _ := host.Digest()

	tests := []struct {
		name, ref string
		tarball   []byte
		want      string // the image's tag, or an error's words
		is        error
	}{
		{"docker archive", "agent:1", dockerArchive(t, host), LocalRegistry + "/agent:1", nil},
		{"OCI layout, multi-platform", "team/agent", ociArchive(t, multi), LocalRegistry + "/team/agent:latest", nil},
		{"OCI layout, nested index", "agent:nested", ociArchive(t, nested), LocalRegistry + "/agent:nested", nil},
		{"foreign OCI layout", "agent:2", ociArchive(t, mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: foreign})), "linux/" + otherArch(), ErrPlatform},
		{"foreign docker archive", "agent:3", dockerArchive(t, foreign), "linux/" + otherArch(), ErrPlatform},
		{"not a tarball", "agent:4", []byte("hello"), "not a tar file", ErrInvalid},
		{"an empty upload", "agent:5", nil, "neither oci-layout", ErrInvalid},
		{"bad name", "Agent:1", dockerArchive(t, host), "lower case", ErrInvalid},
		{"digest name", "agent@sha256:" + strings.Repeat("0", 64), dockerArchive(t, host), "repository[:tag]", ErrInvalid},
	}
	s := openStore(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, tag, err := s.Import(ctx, tt.ref, bytes.NewReader(tt.tarball))
			if tt.is != nil {
				if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want %v saying %q", err, tt.is, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tag.String() != tt.want || img.Architecture != goruntime.GOARCH {
				t.Errorf("imported %s (%s), want %s for %s", tag, img.Architecture, tt.want, goruntime.GOARCH)
			}
			pulled, err := s.Pull(ctx, tag.String())
			if err != nil {
				t.Fatal(err)
			}
			if pulled.Digest != img.Digest {
				t.Errorf("pull %s = %s, want %s", tag, pulled.Digest, img.Digest)
			}
			if byDigest, err := s.Pull(ctx, LocalRegistry+"/x@"+img.Digest); err != nil || byDigest.Digest != img.Digest {
				t.Errorf("pull by digest: %v, %v", byDigest, err)
			}
		})
	}
	// The OCI layouts hold the very image the docker archive does.
	img, _, err := s.Lookup(ctx, "team/agent")
	if err != nil || img.Digest != hostDigest.String() {
		t.Errorf("team/agent is %v (%v), want %s", img, err, hostDigest)
	}
	if _, err := s.Pull(ctx, LocalRegistry+"/never:1"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "berth deploy --image") {
		t.Errorf("pull of a name never uploaded: %v", err)
	}

	// A named upload is kept until its last name goes.
	if err := s.Remove(ctx, hostDigest.String()); !errors.Is(err, ErrInUse) {
		t.Errorf("Remove of an uploaded image: %v, want ErrInUse", err)
	}
	for _, ref := range []string{"agent:1", "team/agent", "agent:nested"} {
		if err := s.Untag(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Untag(ctx, "agent:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Untag: %v, want ErrNotFound", err)
	}
	if err := s.Remove(ctx, hostDigest.String()); err != nil {
		t.Errorf("Remove after Untag: %v", err)
	}
}
