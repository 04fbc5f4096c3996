package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// FuzzUnpackLayer feeds arbitrary layer tarballs to the unpacker: whatever
// they hold, nothing may be written outside the layer's directory.
func FuzzUnpackLayer(f *testing.F) {
	seed := func(entries ...*tar.Header) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			tw.WriteHeader(h)
			if h.Size > 0 {
				tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
			}
		}
		tw.Close()
		return buf.Bytes()
	}
	f.Add(seed(&tar.Header{Name: "../../escape", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644}))
	f.Add(seed(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}, &tar.Header{Name: "l/escape", Typeflag: tar.TypeReg, Size: 1}))
	f.Add(seed(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../.."}, &tar.Header{Name: "l/x/escape", Typeflag: tar.TypeDir}))
	f.Add(seed(&tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../../etc/passwd"}))
	f.Add(seed(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, &tar.Header{Name: "d/.wh..wh..opq", Typeflag: tar.TypeReg},
		&tar.Header{Name: "d/.wh.x", Typeflag: tar.TypeReg}, &tar.Header{Name: ".wh...", Typeflag: tar.TypeReg}))
	f.Add(seed(&tar.Header{Name: "s", Typeflag: tar.TypeReg, Size: 3, Mode: 0o6755}, &tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		dir, outside := filepath.Join(base, "layer"), filepath.Join(base, "outside")
		for _, d := range []string{dir, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		sum := sha256.Sum256(data)
		diffID, _ := v1.NewHash(fmt.Sprintf("sha256:%x", sum))
		err := unpack(context.Background(), dir, bytes.NewReader(data), diffID, 100000, &budget{left: 1 << 20}, 1<<20)
		_ = err // refusing is fine; escaping is not
		entries, _ := os.ReadDir(base)
		if len(entries) != 2 {
			t.Fatalf("unpacking wrote beside the layer: %v", entries)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("unpacking wrote outside the layer: %v", entries)
		}
	})
}
