package artifact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// memShared is a Shared in memory, for the edge cases of the Store's use of
// it. The PostgreSQL tests run the real thing.
type memShared struct {
	mu    sync.Mutex
	blobs map[string][]byte
	refs  map[string][]byte // by bucket + "\x00" + key
	// beforeUpdateRef and beforeDeleteBlob, if set, run first in
	// UpdateRef and DeleteBlob, for tests of races.
	beforeUpdateRef, beforeDeleteBlob func()
}

func newMemShared() *memShared {
	return &memShared{blobs: map[string][]byte{}, refs: map[string][]byte{}}
}

func (m *memShared) PutBlob(ctx context.Context, digest string, size int64, r io.Reader) error {
	m.mu.Lock()
	_, ok := m.blobs[digest]
	m.mu.Unlock()
	if ok {
		return nil
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(b)) != size {
		return fmt.Errorf("read %d bytes, want %d", len(b), size)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blobs[digest] = b
	return nil
}

func (m *memShared) OpenBlob(ctx context.Context, digest string) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[digest]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", digest, fs.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *memShared) DeleteBlob(ctx context.Context, digest string) error {
	if m.beforeDeleteBlob != nil {
		m.beforeDeleteBlob()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blobs[digest]; !ok {
		return fmt.Errorf("blob %s: %w", digest, fs.ErrNotExist)
	}
	delete(m.blobs, digest)
	return nil
}

func (m *memShared) BlobDigests(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for d := range m.blobs {
		out = append(out, d)
	}
	slices.Sort(out)
	return out, nil
}

func (m *memShared) GetRef(ctx context.Context, bucket, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.refs[bucket+"\x00"+key]
	if !ok {
		return nil, fmt.Errorf("ref %s/%s: %w", bucket, key, fs.ErrNotExist)
	}
	return b, nil
}

func (m *memShared) UpdateRef(ctx context.Context, bucket, key string, fn func(old []byte) ([]byte, error)) error {
	if m.beforeUpdateRef != nil {
		m.beforeUpdateRef()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := fn(m.refs[bucket+"\x00"+key])
	if err != nil {
		return err
	}
	m.refs[bucket+"\x00"+key] = b
	return nil
}

func (m *memShared) DeleteRef(ctx context.Context, bucket, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.refs[bucket+"\x00"+key]; !ok {
		return fmt.Errorf("ref %s/%s: %w", bucket, key, fs.ErrNotExist)
	}
	delete(m.refs, bucket+"\x00"+key)
	return nil
}

func (m *memShared) Refs(ctx context.Context) ([][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out [][]byte
	for _, b := range m.refs {
		out = append(out, b)
	}
	return out, nil
}

func sharedOpts(sh Shared) Options {
	o := testOpts
	o.Shared = sh
	return o
}

// TestShared checks what two Stores sharing a backend see of each other's
// work, and the edge cases where the backend lacks or garbles something.
func TestShared(t *testing.T) {
	ctx := t.Context()
	sh := newMemShared()
	a := openStore(t, t.TempDir(), sharedOpts(sh))
	b := openStore(t, t.TempDir(), sharedOpts(sh))
	z1 := makeZip(t, file("main.py", "print(1)"))
	z2 := makeZip(t, exe("run", "#!/bin/sh\n"))

	o1 := put(t, a, "bucket", "app.zip", z1)
	if got := entries(t, a.path("refs")); len(got) > 0 {
		t.Errorf("refs/ holds %v with a shared backend", got)
	}
	if st, err := b.Stat(ctx, "bucket", "app.zip"); err != nil || st.Digest != o1.Digest || !st.Modified.Equal(o1.Modified) {
		t.Errorf("Stat through the other store = %+v, %v; want %+v", st, err, o1)
	}
	dir, err := b.Unpack(ctx, o1.Digest)
	if err != nil {
		t.Fatalf("Unpack through the other store: %v", err)
	}
	if got, err := os.ReadFile(dir + "/main.py"); err != nil || string(got) != "print(1)" {
		t.Errorf("unpacked main.py = %q, %v", got, err)
	}
	if got, err := os.ReadFile(b.blobPath(o1.Digest)); err != nil || !bytes.Equal(got, z1) {
		t.Errorf("downloaded blob differs (%v)", err)
	}

	t.Run("absent", func(t *testing.T) {
		missing := digestOf([]byte("never put"))
		if _, err := b.Unpack(ctx, missing); !errors.Is(err, ErrNotFound) {
			t.Errorf("Unpack of a digest nobody has: %v; want ErrNotFound", err)
		}
		if err := b.Remove(ctx, missing); !errors.Is(err, ErrNotFound) {
			t.Errorf("Remove of a digest nobody has: %v; want ErrNotFound", err)
		}
		if err := b.Delete(ctx, "bucket", "nope.zip"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Delete of an absent key: %v; want ErrNotFound", err)
		}
		if _, err := b.Stat(ctx, "bucket", "nope.zip"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat of an absent key: %v; want ErrNotFound", err)
		}
		if got := entries(t, b.path("tmp")); len(got) > 0 {
			t.Errorf("temporary files left: %v", got)
		}
	})

	t.Run("blob gone from the backend", func(t *testing.T) {
		o2 := put(t, a, "bucket", "two.zip", z2)
		sh.mu.Lock()
		delete(sh.blobs, o2.Digest)
		sh.mu.Unlock()
		if _, err := a.Resolve(ctx, "bucket", "two.zip", ""); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "removed") {
			t.Errorf("Resolve of a key whose shared blob is gone: %v; want ErrNotFound saying it was removed", err)
		}
		if _, err := b.Unpack(ctx, o2.Digest); !errors.Is(err, ErrNotFound) {
			t.Errorf("Unpack of a shared blob that is gone: %v; want ErrNotFound", err)
		}
		// The store that put it has it still, and unpacks it.
		if _, err := a.Unpack(ctx, o2.Digest); err != nil {
			t.Errorf("Unpack from the local blob: %v", err)
		}
	})

	t.Run("corrupt blob", func(t *testing.T) {
		z := makeZip(t, file("x", "corrupt me"))
		o := put(t, a, "bucket", "corrupt.zip", z)
		sh.mu.Lock()
		bad := bytes.Clone(sh.blobs[o.Digest])
		bad[len(bad)/2] ^= 1
		sh.blobs[o.Digest] = bad
		sh.mu.Unlock()
		_, err := b.Unpack(ctx, o.Digest)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "digest") {
			t.Errorf("Unpack of a corrupt shared blob: %v; want ErrCorrupt naming the digest", err)
		}
		if _, err := os.Stat(b.blobPath(o.Digest)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("corrupt blob kept in the cache: %v", err)
		}
		if got := entries(t, b.path("tmp")); len(got) > 0 {
			t.Errorf("temporary files left: %v", got)
		}
	})

	t.Run("garbled ref aborts the update", func(t *testing.T) {
		sh.mu.Lock()
		sh.refs["bucket\x00garbled.zip"] = []byte("{not json")
		sh.mu.Unlock()
		if _, err := a.Put(ctx, "bucket", "garbled.zip", bytes.NewReader(z1)); err == nil || !strings.Contains(err.Error(), "shared ref") {
			t.Errorf("Put over a garbled ref: %v; want an error about the shared ref", err)
		}
		if got, _ := sh.GetRef(ctx, "bucket", "garbled.zip"); string(got) != "{not json" {
			t.Errorf("ref after the failed update = %q; want it unchanged", got)
		}
		// Whether a digest is in use cannot be told past a garbled ref.
		if err := b.Remove(ctx, digestOf([]byte("current nowhere"))); err == nil || !strings.Contains(err.Error(), "shared ref") {
			t.Errorf("Remove with a garbled ref about: %v; want an error about the shared ref", err)
		}
		sh.DeleteRef(ctx, "bucket", "garbled.zip")
	})

	t.Run("remove", func(t *testing.T) {
		if err := b.Remove(ctx, o1.Digest); !errors.Is(err, ErrInUse) {
			t.Errorf("Remove of another store's current object: %v; want ErrInUse", err)
		}
		if err := b.Delete(ctx, "bucket", "app.zip"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Stat(ctx, "bucket", "app.zip"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat after the other store's Delete: %v; want ErrNotFound", err)
		}
		if err := b.Remove(ctx, o1.Digest); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		// a keeps its cached blob until its own collection finds it.
		got, err := a.Digests(ctx)
		if err != nil || !slices.Contains(got, o1.Digest) {
			t.Errorf("Digests = %v, %v; want the blob a still caches", got, err)
		}
		if err := a.Remove(ctx, o1.Digest); err != nil {
			t.Errorf("Remove of a blob only cached: %v", err)
		}
		for _, s := range []*Store{a, b} {
			if got, err := s.Digests(ctx); err != nil || slices.Contains(got, o1.Digest) {
				t.Errorf("Digests = %v, %v; want no %s", got, err, o1.Digest)
			}
		}
	})
}

// TestSharedRemoveRace checks that a blob that garbage collection through
// one store removes while a Put through another makes it current again is
// in the backend when both are done, whichever of them sees the other.
func TestSharedRemoveRace(t *testing.T) {
	ctx := t.Context()
	z := makeZip(t, file("main.py", "race"))
	d := digestOf(z)
	setup := func(t *testing.T) (sh *memShared, a, b *Store) {
		sh = newMemShared()
		a = openStore(t, t.TempDir(), sharedOpts(sh))
		b = openStore(t, t.TempDir(), sharedOpts(sh))
		// b holds the blob, current nowhere: garbage.
		put(t, b, "bucket", "old.zip", z)
		put(t, b, "bucket", "old.zip", makeZip(t, file("main.py", "newer")))
		return sh, a, b
	}
	check := func(t *testing.T, sh *memShared, a *Store) {
		t.Helper()
		if _, err := a.Resolve(ctx, "bucket", "app.zip", ""); err != nil {
			t.Errorf("Resolve after the race: %v", err)
		}
		rc, err := sh.OpenBlob(ctx, d)
		if err != nil {
			t.Fatalf("shared blob after the race: %v", err)
		}
		if got, _ := io.ReadAll(rc); !bytes.Equal(got, z) {
			t.Errorf("shared blob after the race differs")
		}
	}

	t.Run("put sees the removal", func(t *testing.T) {
		sh, a, b := setup(t)
		// a's upload is a no-op, the blob being there; b removes it
		// before a's ref names it.
		sh.beforeUpdateRef = func() {
			sh.beforeUpdateRef = nil
			if err := b.Remove(ctx, d); err != nil {
				t.Errorf("Remove of garbage: %v", err)
			}
		}
		put(t, a, "bucket", "app.zip", z)
		check(t, sh, a)
	})
	t.Run("remove sees the put", func(t *testing.T) {
		sh, a, b := setup(t)
		// a's Put runs whole between b's check and b's deletion, so it
		// finds the blob there; b must find a's ref after deleting it.
		sh.beforeDeleteBlob = func() {
			sh.beforeDeleteBlob = nil
			put(t, a, "bucket", "app.zip", z)
		}
		if err := b.Remove(ctx, d); !errors.Is(err, ErrInUse) {
			t.Errorf("Remove racing a Put: %v; want ErrInUse", err)
		}
		check(t, sh, a)
	})
}
