package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func openStore(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func put(t *testing.T, s *Store, bucket, key string, z []byte) Object {
	t.Helper()
	obj, err := s.Put(t.Context(), bucket, key, bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// entries lists what dir holds, for asserting that nothing was left behind.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestValidateLocation(t *testing.T) {
	for _, tc := range []struct {
		bucket, key string
		field       string // "" if valid
	}{
		{"my-bucket.v2", "agents/app.zip", ""},
		{"abc", "a..b/c./.d", ""},
		{"ab", "k", "bucket"},
		{strings.Repeat("b", 64), "k", "bucket"},
		{"My-Bucket", "k", "bucket"},
		{"bucket_1", "k", "bucket"},
		{"-bucket", "k", "bucket"},
		{"bucket.", "k", "bucket"},
		{"a..b", "k", "bucket"},
		{"192.168.1.1", "k", "bucket"},
		{"bucket", "", "key"},
		{"bucket", strings.Repeat("k", 1025), "key"},
		{"bucket", "/app.zip", "key"},
		{"bucket", "a/../app.zip", "key"},
		{"bucket", "..", "key"},
		{"bucket", "a\x00b", "key"},
		{"bucket", "\xff.zip", "key"},
	} {
		err := validateLocation(tc.bucket, tc.key)
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("validateLocation(%q, %q) = %v; want nil", tc.bucket, tc.key, err)
		case tc.field != "" && (!errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), tc.field+" ")):
			t.Errorf("validateLocation(%q, %q) = %v; want ErrInvalid naming %s", tc.bucket, tc.key, err, tc.field)
		}
	}
}

// TestPutRefuses checks that Put refuses each bad bundle and leaves no trace.
func TestPutRefuses(t *testing.T) {
	s := openStore(t, t.TempDir(), testOpts)
	cases := append(refusals(t), struct {
		name string
		zip  []byte
		err  error
		msg  string
	}{"too large zipped", bytes.Repeat([]byte("x"), 64*kib+1), ErrTooLarge,
		`code bundle "app.zip" exceeds the 64 KiB limit for a zipped bundle`})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Put(t.Context(), "bucket", "app.zip", bytes.NewReader(tc.zip))
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v; want %v mentioning %q", err, tc.err, tc.msg)
			}
			if _, err := s.Stat(t.Context(), "bucket", "app.zip"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Stat after refusal: %v; want ErrNotFound", err)
			}
			if got := entries(t, s.path("blobs", "sha256")); len(got) > 0 {
				t.Errorf("blobs left: %v", got)
			}
			if got := entries(t, s.path("tmp")); len(got) > 0 {
				t.Errorf("temporary files left: %v", got)
			}
		})
	}
}

func TestPutValidates(t *testing.T) {
	s := openStore(t, t.TempDir(), testOpts)
	z := makeZip(t, file("main.py", "x"))
	if _, err := s.Put(t.Context(), "B", "app.zip", bytes.NewReader(z)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `bucket "B"`) {
		t.Errorf("got %v; want ErrInvalid naming the bucket", err)
	}
	if _, err := s.Put(t.Context(), "bucket", "../app.zip", bytes.NewReader(z)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `key "../app.zip"`) {
		t.Errorf("got %v; want ErrInvalid naming the key", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Put(ctx, "bucket", "app.zip", bytes.NewReader(z)); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: %v; want context.Canceled", err)
	}
}

func TestPutStatResolve(t *testing.T) {
	s := openStore(t, t.TempDir(), testOpts)
	ctx := t.Context()
	z1 := makeZip(t, file("main.py", "print(1)"))
	z2 := makeZip(t, file("main.py", "print(2)"))

	o1 := put(t, s, "bucket", "agents/app.zip", z1)
	if o1.Digest != digestOf(z1) || o1.Size != int64(len(z1)) || o1.Bucket != "bucket" || o1.Key != "agents/app.zip" || o1.Modified.IsZero() {
		t.Errorf("Put returned %+v", o1)
	}
	o2 := put(t, s, "bucket", "agents/app.zip", z2)
	if st, err := s.Stat(ctx, "bucket", "agents/app.zip"); err != nil || st.Digest != o2.Digest || st.Size != o2.Size {
		t.Errorf("Stat = %+v, %v; want %+v", st, err, o2)
	}
	// The same bytes elsewhere share the blob.
	o3 := put(t, s, "other", "copy.zip", z1)
	if o3.Digest != o1.Digest {
		t.Errorf("same bytes got digests %s and %s", o1.Digest, o3.Digest)
	}
	if got := entries(t, s.path("blobs", "sha256")); len(got) != 2 {
		t.Errorf("blobs = %v; want 2", got)
	}

	for _, tc := range []struct {
		name, bucket, key, version string
		want                       string
		err                        error
	}{
		{"current", "bucket", "agents/app.zip", "", o2.Digest, nil},
		{"current version", "bucket", "agents/app.zip", o2.Digest, o2.Digest, nil},
		{"earlier version", "bucket", "agents/app.zip", o1.Digest, o1.Digest, nil},
		{"version of another key", "other", "copy.zip", o2.Digest, "", ErrNotFound},
		{"version never put", "bucket", "agents/app.zip", digestOf([]byte("x")), "", ErrNotFound},
		{"malformed version", "bucket", "agents/app.zip", "v1", "", ErrInvalid},
		{"upper-case version", "bucket", "agents/app.zip", strings.ToUpper(o1.Digest), "", ErrInvalid},
		{"unknown key", "bucket", "nope.zip", "", "", ErrNotFound},
		{"unknown bucket", "nope", "agents/app.zip", "", "", ErrNotFound},
		{"bad bucket", "NOPE", "agents/app.zip", "", "", ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Resolve(ctx, tc.bucket, tc.key, tc.version)
			if got != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("Resolve = %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
	if _, err := s.Resolve(ctx, "bucket", "agents/app.zip", "v1"); !strings.Contains(err.Error(), "versionId") {
		t.Errorf("error %q does not name versionId", err)
	}

	// Putting an earlier version again makes it current.
	put(t, s, "bucket", "agents/app.zip", z1)
	if got, err := s.Resolve(ctx, "bucket", "agents/app.zip", ""); got != o1.Digest || err != nil {
		t.Errorf("Resolve after re-put = %q, %v; want %q", got, err, o1.Digest)
	}
}

func TestResolveHistoryIsBounded(t *testing.T) {
	s := openStore(t, t.TempDir(), testOpts)
	var digests []string
	for i := range maxHistory + 1 {
		digests = append(digests, put(t, s, "bucket", "app.zip", makeZip(t, file("v", fmt.Sprint(i)))).Digest)
	}
	if _, err := s.Resolve(t.Context(), "bucket", "app.zip", digests[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("oldest version: %v; want ErrNotFound", err)
	}
	if got, err := s.Resolve(t.Context(), "bucket", "app.zip", digests[1]); got != digests[1] || err != nil {
		t.Errorf("second oldest version: %q, %v", got, err)
	}
}

func TestUnpack(t *testing.T) {
	s := openStore(t, t.TempDir(), testOpts)
	z := makeZip(t,
		file("main.py", "print('hi')\n"),
		exe("bin/agent", "#!/bin/sh\necho hi\n"),
		file("pkg/sub/deep/mod.py", "x = 1\n"),
		dir("empty/"),
		dir("pkg/"), // after an entry beneath it
		symlink("link.py", "main.py"),
		symlink("lib/current", "../pkg/sub"),
		symlink("pkg/sub/self", "."),
		symlink("dangling", "missing"),
	)
	obj := put(t, s, "bucket", "app.zip", z)
	dst, err := s.Unpack(t.Context(), obj.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if dst != s.unpackedPath(obj.Digest) {
		t.Errorf("Unpack = %s; want %s", dst, s.unpackedPath(obj.Digest))
	}

	want := map[string]struct {
		mode    fs.FileMode
		content string // file contents or link target
	}{
		".":                   {fs.ModeDir | 0o755, ""},
		"main.py":             {0o644, "print('hi')\n"},
		"bin":                 {fs.ModeDir | 0o755, ""},
		"bin/agent":           {0o755, "#!/bin/sh\necho hi\n"},
		"pkg":                 {fs.ModeDir | 0o755, ""},
		"pkg/sub":             {fs.ModeDir | 0o755, ""},
		"pkg/sub/deep":        {fs.ModeDir | 0o755, ""},
		"pkg/sub/deep/mod.py": {0o644, "x = 1\n"},
		"empty":               {fs.ModeDir | 0o755, ""},
		"lib":                 {fs.ModeDir | 0o755, ""},
		"link.py":             {fs.ModeSymlink, "main.py"},
		"lib/current":         {fs.ModeSymlink, "../pkg/sub"},
		"pkg/sub/self":        {fs.ModeSymlink, "."},
		"dangling":            {fs.ModeSymlink, "missing"},
	}
	got := map[string]bool{}
	err = filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		got[rel] = true
		w, ok := want[rel]
		if !ok {
			t.Errorf("unexpected %s", rel)
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		mode := fi.Mode()
		if mode.Type() == fs.ModeSymlink {
			mode = fs.ModeSymlink // link permissions mean nothing on Linux
		}
		if mode != w.mode {
			t.Errorf("%s has mode %v; want %v", rel, mode, w.mode)
		}
		var content string
		switch {
		case mode.IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			content = string(b)
		case mode == fs.ModeSymlink:
			if content, err = os.Readlink(p); err != nil {
				return err
			}
		}
		if content != w.content {
			t.Errorf("%s holds %q; want %q", rel, content, w.content)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for rel := range want {
		if !got[rel] {
			t.Errorf("%s is missing", rel)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dst, "lib/current/deep/mod.py")); err != nil || string(b) != "x = 1\n" {
		t.Errorf("reading through the in-bundle symlink: %q, %v", b, err)
	}

	// A second call returns the same directory without unpacking again.
	before, _ := os.Stat(filepath.Join(dst, "main.py"))
	again, err := s.Unpack(t.Context(), obj.Digest)
	after, _ := os.Stat(filepath.Join(dst, "main.py"))
	if again != dst || err != nil || !os.SameFile(before, after) {
		t.Errorf("second Unpack = %s, %v; want the same directory untouched", again, err)
	}
	if got := entries(t, s.path("tmp")); len(got) > 0 {
		t.Errorf("temporary files left: %v", got)
	}
}

func TestUnpackErrors(t *testing.T) {
	s := openStore(t, t.TempDir(), testOpts)
	if _, err := s.Unpack(t.Context(), "sha256:abc"); !errors.Is(err, ErrInvalid) {
		t.Errorf("malformed digest: %v; want ErrInvalid", err)
	}
	if _, err := s.Unpack(t.Context(), digestOf([]byte("x"))); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown digest: %v; want ErrNotFound", err)
	}

	// A blob that Put never checked (planted, or stored under looser limits)
	// is still refused, and leaves nothing behind.
	z := makeZip(t, file("ok.py", "x"), file("../../escaped", "x"))
	d := digestOf(z)
	if err := os.WriteFile(s.blobPath(d), z, 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unpack(t.Context(), d); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "escapes the bundle") {
		t.Errorf("unsafe blob: %v; want ErrUnsafe", err)
	}
	if _, err := os.Lstat(s.unpackedPath(d)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unpacked directory of a refused bundle: %v", err)
	}
	if got := entries(t, s.path("tmp")); len(got) > 0 {
		t.Errorf("temporary files left: %v", got)
	}
	if _, err := os.Lstat(filepath.Join(s.dir, "..", "escaped")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file escaped the store: %v", err)
	}

	// A waiter gives up when its context ends.
	z = makeZip(t, file("main.py", "x"))
	obj := put(t, s, "bucket", "app.zip", z)
	unlock, err := s.digests.lock(t.Context(), obj.Digest)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Unpack(ctx, obj.Digest); !errors.Is(err, context.Canceled) {
		t.Errorf("Unpack while locked with a cancelled context: %v; want context.Canceled", err)
	}
	unlock()
	if _, err := s.Unpack(t.Context(), obj.Digest); err != nil {
		t.Errorf("Unpack after unlock: %v", err)
	}
}

func TestUnpackConcurrent(t *testing.T) {
	s := openStore(t, t.TempDir(), testOpts)
	var ents []zent
	for i := range 15 {
		ents = append(ents, file(fmt.Sprintf("d%d/f%d.py", i%3, i), strings.Repeat("x", i*100)))
	}
	obj := put(t, s, "bucket", "app.zip", makeZip(t, ents...))

	const n = 8
	dirs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { dirs[i], errs[i] = s.Unpack(t.Context(), obj.Digest) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || dirs[i] != s.unpackedPath(obj.Digest) {
			t.Errorf("caller %d: %s, %v", i, dirs[i], errs[i])
		}
	}
	if got := treeSize(t, dirs[0]); got != 100*(14*15/2) {
		t.Errorf("unpacked %d bytes; want %d", got, 100*(14*15/2))
	}
	if got := entries(t, s.path("tmp")); len(got) > 0 {
		t.Errorf("temporary files left: %v", got)
	}
	if got := entries(t, s.path("unpacked", "sha256")); len(got) != 1 {
		t.Errorf("unpacked directories: %v; want 1", got)
	}
	if len(s.digests.m) != 0 {
		t.Errorf("digest locks leaked: %v", s.digests.m)
	}
}

// TestReopen checks that a store survives a restart and that Open clears
// what a crash left in tmp/.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, testOpts); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open of a directory in use: %v; want an error", err)
	}
	z1 := makeZip(t, exe("run", "#!/bin/sh\n"))
	z2 := makeZip(t, file("main.py", "print(2)"))
	o1 := put(t, s, "bucket", "app.zip", z1)
	o2 := put(t, s, "bucket", "app.zip", z2)
	dst, err := s.Unpack(t.Context(), o2.Digest)
	if err != nil {
		t.Fatal(err)
	}
	// What a crash mid-Put and mid-Unpack would leave.
	os.WriteFile(filepath.Join(dir, "tmp", "put-123"), []byte("torn"), 0o644)
	os.MkdirAll(filepath.Join(dir, "tmp", "unpack-456", "half"), 0o755)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, testOpts)
	if got := entries(t, s.path("tmp")); len(got) > 0 {
		t.Errorf("Open left %v in tmp", got)
	}
	if st, err := s.Stat(t.Context(), "bucket", "app.zip"); err != nil || st.Digest != o2.Digest || !st.Modified.Equal(o2.Modified) {
		t.Errorf("Stat after reopen = %+v, %v; want %+v", st, err, o2)
	}
	if got, err := s.Resolve(t.Context(), "bucket", "app.zip", o1.Digest); got != o1.Digest || err != nil {
		t.Errorf("Resolve earlier version after reopen = %q, %v", got, err)
	}
	if again, err := s.Unpack(t.Context(), o2.Digest); again != dst || err != nil {
		t.Errorf("Unpack after reopen = %s, %v; want %s", again, err, dst)
	}
	if b, err := os.ReadFile(s.blobPath(o1.Digest)); err != nil || !bytes.Equal(b, z1) {
		t.Errorf("blob after reopen differs (%v)", err)
	}
}

func TestRemove(t *testing.T) {
	s := openStore(t, t.TempDir(), testOpts)
	ctx := t.Context()
	o1 := put(t, s, "bucket", "app.zip", makeZip(t, file("main.py", "1")))
	o2 := put(t, s, "bucket", "app.zip", makeZip(t, file("main.py", "2")))
	if _, err := s.Unpack(ctx, o1.Digest); err != nil {
		t.Fatal(err)
	}

	if err := s.Remove(ctx, o2.Digest); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "bucket/app.zip") {
		t.Errorf("Remove of a current object: %v; want ErrInUse naming it", err)
	}
	if err := s.Remove(ctx, o1.Digest); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Lstat(s.unpackedPath(o1.Digest)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unpacked directory survived Remove: %v", err)
	}
	if got, err := s.Digests(ctx); err != nil || !slices.Equal(got, []string{o2.Digest}) {
		t.Errorf("Digests = %v, %v; want [%s]", got, err, o2.Digest)
	}
	if _, err := s.Resolve(ctx, "bucket", "app.zip", o1.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve of a removed version: %v; want ErrNotFound", err)
	}
	if _, err := s.Unpack(ctx, o1.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("Unpack of a removed digest: %v; want ErrNotFound", err)
	}
	if err := s.Remove(ctx, o1.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v; want ErrNotFound", err)
	}
	if err := s.Remove(ctx, "nope"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Remove of a malformed digest: %v; want ErrInvalid", err)
	}
	if got := entries(t, s.path("tmp")); len(got) > 0 {
		t.Errorf("temporary files left: %v", got)
	}

	// Once the key is deleted its object can go.
	if err := s.Delete(ctx, "bucket", "app.zip"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "bucket", "app.zip"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: %v; want ErrNotFound", err)
	}
	if err := s.Remove(ctx, o2.Digest); err != nil {
		t.Errorf("Remove after Delete: %v", err)
	}
	if got, err := s.Digests(ctx); err != nil || len(got) != 0 {
		t.Errorf("Digests = %v, %v; want none", got, err)
	}
}
