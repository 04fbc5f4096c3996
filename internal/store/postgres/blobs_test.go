package postgres_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthrun/berth/internal/artifact"
	"github.com/berthrun/berth/internal/store/postgres"
)

var _ artifact.Shared = (*postgres.Store)(nil)

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// zipOf builds a zip archive of the files, stored uncompressed so that its
// size is about that of the files.
func zipOf(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(files[name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// replica is one Berth replica's view: its own connection pool and its own
// artifact directory, on the shared database.
type replica struct {
	dsn  string
	db   *postgres.Store
	arts *artifact.Store
	dir  string
}

func newReplica(t testing.TB, dsn string, opts artifact.Options) replica {
	t.Helper()
	db := open(t, dsn)
	t.Cleanup(func() { db.Close() })
	dir := t.TempDir()
	opts.Shared = db
	arts, err := artifact.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { arts.Close() })
	return replica{dsn: dsn, db: db, arts: arts, dir: dir}
}

// tree returns the files under dir: path, mode and content.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		entry := info.Mode().String()
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			entry += " " + sha(b)
		}
		out[rel] = entry
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSharedBackend checks the PostgreSQL Store against the contract of
// artifact.Shared.
func TestSharedBackend(t *testing.T) {
	ctx := t.Context()
	dsn := pg().Database(t)
	s := open(t, dsn)
	defer s.Close()
	blob := randomBytes(2*(1<<20)+123, 1) // three chunks, the last one short
	d := sha(blob)

	for name, err := range map[string]error{
		"OpenBlob":   func() error { _, err := s.OpenBlob(ctx, d); return err }(),
		"DeleteBlob": s.DeleteBlob(ctx, d),
		"GetRef":     func() error { _, err := s.GetRef(ctx, "b", "k"); return err }(),
		"DeleteRef":  s.DeleteRef(ctx, "b", "k"),
	} {
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s of something absent: %v; want fs.ErrNotExist", name, err)
		}
	}

	for _, tc := range []struct {
		name, digest string
		size         int64
		body         []byte
		want         string
	}{
		{"short body", d, int64(len(blob)), blob[:len(blob)-1], "has 2097274 bytes, want 2097275"},
		{"long body", d, int64(len(blob)) - 1, blob, "longer than 2097274 bytes"},
		{"wrong digest", sha([]byte("other")), int64(len(blob)), blob, "body has digest " + d},
		{"malformed digest", "md5:abc", 3, []byte("abc"), "digest must be sha256:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.PutBlob(ctx, tc.digest, tc.size, bytes.NewReader(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("PutBlob: %v; want an error saying %q", err, tc.want)
			}
			if got, err := s.BlobDigests(ctx); err != nil || len(got) != 0 {
				t.Errorf("blobs after a refused PutBlob: %v, %v; want none", got, err)
			}
		})
	}

	if err := s.PutBlob(ctx, d, int64(len(blob)), bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	// Stored already: r is not read.
	if err := s.PutBlob(ctx, d, int64(len(blob)), iotest{}); err != nil {
		t.Errorf("second PutBlob: %v", err)
	}
	empty := sha(nil)
	if err := s.PutBlob(ctx, empty, 0, bytes.NewReader(nil)); err != nil {
		t.Errorf("PutBlob of no bytes: %v", err)
	}
	for _, want := range [][]byte{blob, nil} {
		rc, err := s.OpenBlob(ctx, sha(want))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("blob of %d bytes read back as %d bytes, %v", len(want), len(got), err)
		}
	}
	wantDigests := []string{d, empty}
	slices.Sort(wantDigests)
	if got, err := s.BlobDigests(ctx); err != nil || !slices.Equal(got, wantDigests) {
		t.Errorf("BlobDigests = %v, %v; want %v", got, err, wantDigests)
	}
	if err := s.DeleteBlob(ctx, d); err != nil {
		t.Fatal(err)
	}
	var chunks int
	if err := queryRow(t, dsn, `SELECT count(*) FROM artifact_chunks`, &chunks); err != nil || chunks != 0 {
		t.Errorf("%d chunks left after DeleteBlob (%v)", chunks, err)
	}

	// Refs.
	boom := errors.New("boom")
	if err := s.UpdateRef(ctx, "b", "k", func(old []byte) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("UpdateRef with fn failing: %v; want fn's error", err)
	}
	if _, err := s.GetRef(ctx, "b", "k"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ref after an aborted first update: %v; want fs.ErrNotExist", err)
	}
	if docs, err := s.Refs(ctx); err != nil || len(docs) != 0 {
		t.Errorf("Refs after an aborted first update = %q, %v; want none", docs, err)
	}
	for i, want := range []string{"", "one"} {
		err := s.UpdateRef(ctx, "b", "k", func(old []byte) ([]byte, error) {
			if string(old) != want || (i == 0) != (old == nil) {
				t.Errorf("update %d: old = %q; want %q", i, old, want)
			}
			return []byte([]string{"one", "two"}[i]), nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpdateRef(ctx, "b", "k", func(old []byte) ([]byte, error) { return []byte("three"), boom }); !errors.Is(err, boom) {
		t.Errorf("UpdateRef with fn failing: %v; want fn's error", err)
	}
	if got, err := s.GetRef(ctx, "b", "k"); err != nil || string(got) != "two" {
		t.Errorf("ref after an aborted update = %q, %v; want \"two\"", got, err)
	}
	if err := s.UpdateRef(ctx, "b", "k", func(old []byte) ([]byte, error) { return nil, nil }); err == nil {
		t.Error("UpdateRef to an empty document: no error")
	}
	s.UpdateRef(ctx, "a", "k", func([]byte) ([]byte, error) { return []byte("first"), nil })
	if docs, err := s.Refs(ctx); err != nil || len(docs) != 2 || string(docs[0]) != "first" || string(docs[1]) != "two" {
		t.Errorf("Refs = %q, %v; want [first two]", docs, err)
	}
	if err := s.DeleteRef(ctx, "b", "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRef(ctx, "b", "k"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetRef after DeleteRef: %v; want fs.ErrNotExist", err)
	}

	// Updates from two pools at once are serialized: none is lost.
	s2 := open(t, dsn)
	defer s2.Close()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			st := []*postgres.Store{s, s2}[i%2]
			err := st.UpdateRef(ctx, "count", "k", func(old []byte) ([]byte, error) {
				var n int
				if old != nil {
					fmt.Sscan(string(old), &n)
				}
				return fmt.Append(nil, n+1), nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got, err := s.GetRef(ctx, "count", "k"); err != nil || string(got) != "20" {
		t.Errorf("counter after 20 concurrent updates = %q, %v; want 20", got, err)
	}
}

// iotest is a reader that fails the test's expectations if read.
type iotest struct{}

func (iotest) Read([]byte) (int, error) {
	return 0, errors.New("read when the blob was stored already")
}

// TestArtifactsShared runs two artifact stores, as two Berth replicas
// would, with directories of their own on one database.
func TestArtifactsShared(t *testing.T) {
	ctx := t.Context()
	dsn := pg().Database(t)
	a := newReplica(t, dsn, artifact.Options{})
	b := newReplica(t, dsn, artifact.Options{})

	z1 := zipOf(t, map[string][]byte{"main.py": []byte("print(1)\n"), "lib/util.py": []byte("X = 1\n"), "data.bin": randomBytes(3<<20, 2)})
	z2 := zipOf(t, map[string][]byte{"main.py": []byte("print(2)\n")})
	o1, err := a.arts.Put(ctx, "bucket", "agents/app.zip", bytes.NewReader(z1))
	if err != nil {
		t.Fatal(err)
	}
	o2, err := a.arts.Put(ctx, "bucket", "agents/app.zip", bytes.NewReader(z2))
	if err != nil {
		t.Fatal(err)
	}

	if st, err := b.arts.Stat(ctx, "bucket", "agents/app.zip"); err != nil || st.Digest != o2.Digest || st.Size != o2.Size || !st.Modified.Equal(o2.Modified) {
		t.Errorf("Stat through b = %+v, %v; want %+v", st, err, o2)
	}
	for _, tc := range []struct{ version, want string }{{"", o2.Digest}, {o2.Digest, o2.Digest}, {o1.Digest, o1.Digest}} {
		if got, err := b.arts.Resolve(ctx, "bucket", "agents/app.zip", tc.version); got != tc.want || err != nil {
			t.Errorf("Resolve through b of version %q = %q, %v; want %q", tc.version, got, err, tc.want)
		}
	}
	for _, o := range []artifact.Object{o1, o2} {
		da, err := a.arts.Unpack(ctx, o.Digest)
		if err != nil {
			t.Fatal(err)
		}
		db, err := b.arts.Unpack(ctx, o.Digest)
		if err != nil {
			t.Fatalf("Unpack through b: %v", err)
		}
		ta, tb := tree(t, da), tree(t, db)
		if fmt.Sprint(ta) != fmt.Sprint(tb) || len(ta) < 2 {
			t.Errorf("unpacked through a: %v\nthrough b: %v", ta, tb)
		}
	}

	// Delete through one is seen by the other.
	if _, err := b.arts.Put(ctx, "bucket", "tmp.zip", bytes.NewReader(z2)); err != nil {
		t.Fatal(err)
	}
	if err := a.arts.Delete(ctx, "bucket", "tmp.zip"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.arts.Stat(ctx, "bucket", "tmp.zip"); !errors.Is(err, artifact.ErrNotFound) {
		t.Errorf("Stat through b after Delete through a: %v; want ErrNotFound", err)
	}

	// Remove refuses a current object of either, then works for both.
	if err := b.arts.Remove(ctx, o2.Digest); !errors.Is(err, artifact.ErrInUse) {
		t.Errorf("Remove through b of a's current object: %v; want ErrInUse", err)
	}
	if err := b.arts.Remove(ctx, o1.Digest); err != nil {
		t.Fatalf("Remove through b: %v", err)
	}
	if err := a.arts.Delete(ctx, "bucket", "agents/app.zip"); err != nil {
		t.Fatal(err)
	}
	if err := a.arts.Remove(ctx, o2.Digest); err != nil {
		t.Fatalf("Remove through a after Delete: %v", err)
	}
	// Each still caches the blob the other removed; its garbage
	// collection finds it in Digests and removes it.
	for name, c := range map[string]struct {
		r      replica
		cached string
	}{"a": {a, o1.Digest}, "b": {b, o2.Digest}} {
		if got, err := c.r.arts.Digests(ctx); err != nil || !slices.Equal(got, []string{c.cached}) {
			t.Errorf("Digests through %s = %v, %v; want its cached %s", name, got, err, c.cached)
		}
		if err := c.r.arts.Remove(ctx, c.cached); err != nil {
			t.Errorf("Remove through %s of its cached blob: %v", name, err)
		}
	}
	for name, r := range map[string]replica{"a": a, "b": b} {
		if got, err := r.arts.Digests(ctx); err != nil || len(got) != 0 {
			t.Errorf("Digests through %s = %v, %v; want none", name, got, err)
		}
		if got, err := r.db.BlobDigests(ctx); err != nil || len(got) != 0 {
			t.Errorf("shared blobs = %v, %v; want none", got, err)
		}
	}
	c := newReplica(t, dsn, artifact.Options{})
	for _, d := range []string{o1.Digest, o2.Digest} {
		if _, err := c.arts.Unpack(ctx, d); !errors.Is(err, artifact.ErrNotFound) {
			t.Errorf("Unpack of a removed blob through a new replica: %v; want ErrNotFound", err)
		}
	}
}

// TestArtifactsSharedCorrupt changes a byte of a shared blob in the
// database: a replica that downloads it must refuse it.
func TestArtifactsSharedCorrupt(t *testing.T) {
	ctx := t.Context()
	dsn := pg().Database(t)
	a := newReplica(t, dsn, artifact.Options{})
	b := newReplica(t, dsn, artifact.Options{})
	z := zipOf(t, map[string][]byte{"main.py": []byte("print('intact')\n")})
	o, err := a.arts.Put(ctx, "bucket", "app.zip", bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	tag, err := exec(t, dsn, `UPDATE artifact_chunks SET data = overlay(data placing '\x42'::bytea from 40 for 1) WHERE digest = $1 AND n = 0`, o.Digest)
	if err != nil || tag != 1 {
		t.Fatalf("corrupt the chunk: %d rows, %v", tag, err)
	}
	_, err = b.arts.Unpack(ctx, o.Digest)
	if !errors.Is(err, artifact.ErrCorrupt) || !strings.Contains(err.Error(), "digest") {
		t.Errorf("Unpack of a corrupt shared blob: %v; want ErrCorrupt naming the digest", err)
	}
	if _, err := os.Stat(filepath.Join(b.dir, "blobs", "sha256", strings.TrimPrefix(o.Digest, "sha256:"))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the corrupt blob was cached: %v", err)
	}
}

// TestArtifactsSharedConcurrentPuts puts bundles under one key through two
// replicas at once: every one of them must be in the key's history, once.
func TestArtifactsSharedConcurrentPuts(t *testing.T) {
	ctx := t.Context()
	dsn := pg().Database(t)
	reps := []replica{newReplica(t, dsn, artifact.Options{}), newReplica(t, dsn, artifact.Options{})}
	const n = 16
	digests := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// The same bytes twice: both replicas upload one blob.
			z := zipOf(t, map[string][]byte{"main.py": fmt.Appendf(nil, "print(%d)\n", i/2)})
			o, err := reps[i%2].arts.Put(ctx, "bucket", "app.zip", bytes.NewReader(z))
			if err != nil {
				t.Error(err)
				return
			}
			digests[i] = o.Digest
		})
	}
	wg.Wait()
	slices.Sort(digests)
	digests = slices.Compact(digests)
	if len(digests) != n/2 {
		t.Fatalf("%d distinct digests, want %d", len(digests), n/2)
	}
	cur, err := reps[0].arts.Stat(ctx, "bucket", "app.zip")
	if err != nil {
		t.Fatal(err)
	}
	if cur2, err := reps[1].arts.Stat(ctx, "bucket", "app.zip"); err != nil || cur2 != cur {
		t.Errorf("Stat through the replicas: %+v and %+v, %v", cur, cur2, err)
	}
	for _, d := range digests {
		for _, r := range reps {
			if got, err := r.arts.Resolve(ctx, "bucket", "app.zip", d); got != d || err != nil {
				t.Errorf("Resolve of version %s = %q, %v", d, got, err)
			}
		}
	}
	var versions int
	if err := queryRow(t, dsn, `SELECT jsonb_array_length(convert_from(doc, 'UTF8')::jsonb -> 'versions') FROM artifact_refs`, &versions); err != nil || versions != n/2 {
		t.Errorf("the ref holds %d versions (%v); want %d", versions, err, n/2)
	}
	if got, err := reps[1].db.BlobDigests(ctx); err != nil || !slices.Equal(got, digests) {
		t.Errorf("shared blobs = %v, %v; want %v", got, err, digests)
	}
}

// TestArtifactsSharedLarge round-trips a 40 MiB bundle between replicas
// and measures the heap it takes: uploads and downloads stream in chunks,
// so the heap must grow by far less than the bundle.
func TestArtifactsSharedLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 40 MiB through PostgreSQL")
	}
	ctx := t.Context()
	dsn := pg().Database(t)
	a := newReplica(t, dsn, artifact.Options{})
	b := newReplica(t, dsn, artifact.Options{})
	const size = 40 << 20
	src := filepath.Join(t.TempDir(), "bundle.zip")
	{
		z := zipOf(t, map[string][]byte{"model.bin": randomBytes(size, 3), "main.py": []byte("print('big')\n")})
		if err := os.WriteFile(src, z, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	var up, down time.Duration
	var o artifact.Object
	peak := peakHeap(t, func() {
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		start := time.Now()
		if o, err = a.arts.Put(ctx, "bucket", "big.zip", f); err != nil {
			t.Fatal(err)
		}
		up = time.Since(start)
		start = time.Now()
		dir, err := b.arts.Unpack(ctx, o.Digest)
		if err != nil {
			t.Fatal(err)
		}
		down = time.Since(start)
		if fi, err := os.Stat(filepath.Join(dir, "model.bin")); err != nil || fi.Size() != size {
			t.Errorf("unpacked model.bin: %v, %v", fi, err)
		}
	})
	mb := float64(o.Size) / 1e6
	t.Logf("40 MiB bundle: Put through a %.0f MB/s, Unpack through b (download, check, unpack) %.0f MB/s; peak heap growth %.1f MiB",
		mb/up.Seconds(), mb/down.Seconds(), float64(peak)/(1<<20))
	if peak > size/2 {
		t.Errorf("heap grew by %d MiB moving a %d MiB bundle; want it streamed", peak>>20, size>>20)
	}
}

// peakHeap runs fn and returns by how much the heap in use grew at most
// while it ran, sampled every millisecond.
func peakHeap(t *testing.T, fn func()) uint64 {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > peak.Load() {
				peak.Store(ms.HeapInuse - base)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	fn()
	close(done)
	<-stopped
	return peak.Load()
}

// BenchmarkSharedBlob measures the bare transfer of a 16 MiB blob into and
// out of PostgreSQL.
func BenchmarkSharedBlob(b *testing.B) {
	ctx := b.Context()
	s := open(b, pg().Database(b))
	defer s.Close()
	blob := randomBytes(16<<20, 4)
	d := sha(blob)
	b.Run("put", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			if err := s.PutBlob(ctx, d, int64(len(blob)), bytes.NewReader(blob)); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := s.DeleteBlob(ctx, d); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	if err := s.PutBlob(ctx, d, int64(len(blob)), bytes.NewReader(blob)); err != nil {
		b.Fatal(err)
	}
	b.Run("get", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for b.Loop() {
			rc, err := s.OpenBlob(ctx, d)
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, rc); err != nil || n != int64(len(blob)) {
				b.Fatalf("read %d bytes, %v", n, err)
			}
			rc.Close()
		}
	})
}

// queryRow and exec run SQL on a connection of their own to the database
// dsn names, for what the tests check or break behind the stores' backs.
func queryRow(t testing.TB, dsn, sql string, dst any, args ...any) error {
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(t.Context(), sql, args...).Scan(dst)
}

func exec(t testing.TB, dsn, sql string, args ...any) (int64, error) {
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	tag, err := conn.Exec(t.Context(), sql, args...)
	return tag.RowsAffected(), err
}
