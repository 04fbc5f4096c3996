package image

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berthrun/berth/internal/image/imagetest"
)

// BenchmarkPull measures pulling a 100 MiB image (4 layers of 25 MiB of
// random, incompressible data) from a registry on loopback into the store:
// cold (nothing cached: fetch, verify and unpack every layer) and cached
// (the image is in the store: only its manifest and config are fetched).
// This is the bulk of deploy → READY for an image.
func BenchmarkPull(b *testing.B) {
	needRoot(b)
	reg := imagetest.Start(b, false)
	var layers []v1.Layer
	for i := range 4 {
		data := make([]byte, 25<<20)
		rand.Read(data)
		l, err := imagetest.Layer(imagetest.File{Name: "data/blob" + string(rune('a'+i)), Body: data})
		if err != nil {
			b.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := imagetest.Image(goruntime.GOARCH, v1.Config{Cmd: []string{"/x"}}, layers...)
	if err != nil {
		b.Fatal(err)
	}
	ref := reg.Push("bench/big:1", img)
	ctx := context.Background()
	opts := Options{Insecure: []string{reg.Host}, Logger: slog.New(slog.DiscardHandler)}

	b.Run("cold", func(b *testing.B) {
		b.SetBytes(100 << 20)
		for i := range b.N {
			b.StopTimer()
			dir := filepath.Join(b.TempDir(), "images", string(rune('a'+i%26)))
			s, err := Open(dir, opts)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, err := s.Pull(ctx, ref); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(dir)
			b.StartTimer()
		}
	})
	b.Run("cached", func(b *testing.B) {
		s, err := Open(filepath.Join(b.TempDir(), "images"), opts)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Pull(ctx, ref); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			if _, err := s.Pull(ctx, ref); err != nil {
				b.Fatal(err)
			}
		}
	})
}
