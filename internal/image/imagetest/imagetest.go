// Package imagetest runs a real OCI registry (Debian's docker-registry, the
// CNCF distribution registry) on loopback for tests, and builds test images
// offline.
package imagetest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry program Debian's docker-registry package installs.
const Binary = "docker-registry"

// Registry is a registry run by a test.
type Registry struct {
	// Host is its host:port on 127.0.0.1.
	Host string
	// User and Password are its only account when it requires basic auth.
	User, Password string
	t              testing.TB
}

// Start starts a registry on a free loopback port, requiring basic auth
// (user "berth", a generated password) if auth is set, and stops it when the
// test ends. It skips the test when the registry binary is not installed.
func Start(t testing.TB, auth bool) *Registry {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		t.Skipf("needs the OCI registry %s (apt-get install docker-registry); .ci/run installs it", Binary)
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := ln.Addr().String()
	ln.Close()
	r := &Registry{Host: host, t: t}
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "data"), host)
	if auth {
		r.User, r.Password = "berth", fmt.Sprintf("pw-%d", time.Now().UnixNano())
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(r.User+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: berth-test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("registry exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry did not answer on %s: %v\n%s", host, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// DockerConfig writes a Docker config file with the registry's credentials
// into dir and returns its path.
func (r *Registry) DockerConfig(dir string) string {
	r.t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(r.User + ":" + r.Password))
	p := filepath.Join(dir, "config.json")
	if err := os.WriteFile(p, fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, r.Host, auth), 0o600); err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *Registry) options(ctx context.Context) []remote.Option {
	opts := []remote.Option{remote.WithContext(ctx)}
	if r.User != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.User, Password: r.Password}))
	}
	return opts
}

// Push pushes img as repo:tag and returns its full reference.
func (r *Registry) Push(repoTag string, img v1.Image) string {
	r.t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.Write(ref, img, r.options(context.Background())...); err != nil {
		r.t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

// PushIndex pushes idx as repo:tag and returns its full reference.
func (r *Registry) PushIndex(repoTag string, idx v1.ImageIndex) string {
	r.t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, r.options(context.Background())...); err != nil {
		r.t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

// File is one entry of a layer built by Layer.
type File struct {
	Name string
	Body []byte
	Mode int64 // 0644 when zero
	Dir  bool
	Link string // a symlink to Link
	UID  int    // owner (uid and gid)
}

// Layer builds a gzip-compressed layer holding files.
func Layer(files ...File) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.Name, Mode: f.Mode, Typeflag: tar.TypeReg, Size: int64(len(f.Body)), ModTime: time.Unix(0, 0), Uid: f.UID, Gid: f.UID}
		switch {
		case f.Dir:
			hdr.Typeflag, hdr.Size = tar.TypeDir, 0
			if hdr.Mode == 0 {
				hdr.Mode = 0o755
			}
		case f.Link != "":
			hdr.Typeflag, hdr.Size, hdr.Linkname = tar.TypeSymlink, 0, f.Link
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

// Image builds a linux image for arch from layers with the run
// configuration cfg.
func Image(arch string, cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", arch, cfg
	return mutate.ConfigFile(img, cf)
}

// AgentImage builds an image for arch whose agent is the static binary at
// agentBin, at /agent/agent beside /agent/hello.txt, with a directory /data
// that uid 1000 owns, on top of busybox
// (static, with /etc/passwd naming root and agent, uid 1000) when
// /bin/busybox exists.
func AgentImage(arch, agentBin string, cfg v1.Config) (v1.Image, error) {
	bin, err := os.ReadFile(agentBin)
	if err != nil {
		return nil, err
	}
	var layers []v1.Layer
	if bb, err := os.ReadFile("/bin/busybox"); err == nil {
		base, err := Layer(File{Name: "bin/", Dir: true}, File{Name: "bin/busybox", Body: bb, Mode: 0o755},
			File{Name: "bin/sh", Link: "busybox"}, File{Name: "etc/", Dir: true},
			File{Name: "etc/passwd", Body: []byte("root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/data:/bin/sh\n")},
			File{Name: "etc/group", Body: []byte("root:x:0:\nagent:x:1000:\n")})
		if err != nil {
			return nil, err
		}
		layers = append(layers, base)
	}
	app, err := Layer(File{Name: "agent/", Dir: true}, File{Name: "agent/agent", Body: bin, Mode: 0o755},
		File{Name: "agent/hello.txt", Body: []byte("from the image\n")}, File{Name: "data/", Dir: true, UID: 1000})
	if err != nil {
		return nil, err
	}
	layers = append(layers, app)
	return Image(arch, cfg, layers...)
}
