package artifact

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// zent is one entry of a zip built by makeZip.
type zent struct {
	name string
	body string
	mode fs.FileMode // 0 means a regular file with mode 0644
}

func file(name, body string) zent { return zent{name: name, body: body} }
func exe(name, body string) zent  { return zent{name: name, body: body, mode: 0o755} }
func dir(name string) zent        { return zent{name: name, mode: fs.ModeDir | 0o755} }
func symlink(name, target string) zent {
	return zent{name: name, body: target, mode: fs.ModeSymlink | 0o777}
}
func special(name string, m fs.FileMode) zent { return zent{name: name, mode: m | 0o644} }

// makeZip builds a zip in memory, with Unix modes as Info-ZIP writes them.
func makeZip(tb testing.TB, ents ...zent) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range ents {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := w.Write([]byte(e.body)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// rawZip builds a zip of one entry whose header says what h says, whatever
// data holds; it is how liars and unsupported methods are made.
func rawZip(tb testing.TB, h *zip.FileHeader, data []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(h)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func deflate(tb testing.TB, data []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestCompression)
	fw.Write(data)
	if err := fw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// overlapZip builds a zip whose central directory lists n entries that all
// point at the same stored data: the shape of an overlapping zip bomb.
func overlapZip(n int) []byte {
	data := []byte("all of these entries share these bytes")
	crc := crc32.ChecksumIEEE(data)
	var b bytes.Buffer
	put := func(vs ...any) {
		for _, v := range vs {
			binary.Write(&b, binary.LittleEndian, v)
		}
	}
	size := uint32(len(data))
	put(uint32(0x04034b50), uint16(20), uint16(0), uint16(zip.Store), uint32(0), crc, size, size, uint16(1), uint16(0))
	b.WriteString("a")
	b.Write(data)
	cdStart := b.Len()
	for i := range n {
		put(uint32(0x02014b50), uint16(20), uint16(20), uint16(0), uint16(zip.Store), uint32(0), crc, size, size,
			uint16(1), uint16(0), uint16(0), uint16(0), uint16(0), uint32(0), uint32(0))
		b.WriteByte(byte('a' + i))
	}
	cdSize := b.Len() - cdStart
	put(uint32(0x06054b50), uint16(0), uint16(0), uint16(n), uint16(n), uint32(cdSize), uint32(cdStart), uint16(0))
	return b.Bytes()
}

// testOpts are small limits, so tests can cross them cheaply.
var testOpts = Options{MaxZipped: 64 * kib, MaxUnpacked: 4 * mib, MaxFiles: 20}

// refusals are bundles that Put and Unpack must refuse: the error must match
// err and mention msg.
func refusals(tb testing.TB) []struct {
	name string
	zip  []byte
	err  error
	msg  string
} {
	zeros := make([]byte, 2*mib)
	return []struct {
		name string
		zip  []byte
		err  error
		msg  string
	}{
		{"not a zip", []byte("hello, world"), ErrInvalid, "is not a valid zip archive"},
		{"empty body", nil, ErrInvalid, "is not a valid zip archive"},
		{"zip slip", makeZip(tb, file("../../etc/passwd", "x")), ErrUnsafe, `entry "../../etc/passwd" escapes the bundle`},
		{"zip slip after descending", makeZip(tb, file("a/../../x", "x")), ErrUnsafe, "escapes the bundle"},
		{"dot dot inside", makeZip(tb, file("a/../b", "x")), ErrUnsafe, `".." path segment`},
		{"absolute path", makeZip(tb, file("/etc/passwd", "x")), ErrUnsafe, "absolute path"},
		{"backslash slip", makeZip(tb, file(`..\..\windows\win.ini`, "x")), ErrUnsafe, "backslash"},
		{"empty segment", makeZip(tb, file("a//b", "x")), ErrInvalid, "not a clean relative path"},
		{"dot segment", makeZip(tb, file("./a", "x")), ErrInvalid, "not a clean relative path"},
		{"NUL in name", makeZip(tb, file("a\x00b", "x")), ErrInvalid, "NUL"},
		{"long segment", makeZip(tb, file(strings.Repeat("n", 256), "x")), ErrInvalid, "longer than 255 bytes"},
		{"symlink absolute", makeZip(tb, symlink("l", "/etc/passwd")), ErrUnsafe, "an absolute path outside the bundle"},
		{"symlink up from root", makeZip(tb, symlink("l", "../x")), ErrUnsafe, `to "../x", which escapes the bundle`},
		{"symlink up too far", makeZip(tb, symlink("a/b/l", "../../../x")), ErrUnsafe, "escapes the bundle"},
		{"symlink to parent of root", makeZip(tb, symlink("a/l", "../..")), ErrUnsafe, "escapes the bundle"},
		{"symlink not clean", makeZip(tb, symlink("a/b/p", "../../q/..")), ErrUnsafe, "clean relative paths"},
		{"symlink backslash", makeZip(tb, symlink("l", `..\x`)), ErrUnsafe, "backslash"},
		{"symlink empty", makeZip(tb, symlink("l", "")), ErrInvalid, "empty target"},
		{"write through symlink", makeZip(tb, symlink("s", "d"), file("s/x", "x")), ErrUnsafe, `inside "s", which is not a directory`},
		{"symlink over directory", makeZip(tb, file("s/x", "x"), symlink("s", "d")), ErrUnsafe, "collides with a directory"},
		{"duplicate file", makeZip(tb, file("a", "1"), file("a", "2")), ErrUnsafe, "appears more than once"},
		{"duplicate directory", makeZip(tb, dir("d/"), dir("d/")), ErrUnsafe, "appears more than once"},
		{"file then dir", makeZip(tb, file("a", "1"), file("a/b", "2")), ErrUnsafe, "not a directory"},
		{"dir then file", makeZip(tb, file("a/b", "2"), file("a", "1")), ErrUnsafe, "collides with a directory"},
		{"device", makeZip(tb, special("dev/sda", fs.ModeDevice)), ErrUnsafe, "device, FIFO or socket"},
		{"char device", makeZip(tb, special("null", fs.ModeDevice|fs.ModeCharDevice)), ErrUnsafe, "device, FIFO or socket"},
		{"fifo", makeZip(tb, special("pipe", fs.ModeNamedPipe)), ErrUnsafe, "device, FIFO or socket"},
		{"socket", makeZip(tb, special("sock", fs.ModeSocket)), ErrUnsafe, "device, FIFO or socket"},
		{"too many entries", makeZip(tb, manyFiles(21)...), ErrTooLarge, "has 21 entries; the limit is 20"},
		{"too many directories", makeZip(tb, file(strings.Repeat("d/", 20)+"f", "x")), ErrTooLarge, "more than 20 files and directories"},
		{"too large unpacked", makeZip(tb, megabytes(5)...),
			ErrTooLarge, "is 5 MiB unpacked; the limit is 4 MiB"},
		{"compression ratio", makeZip(tb, file("zeros", string(zeros))), ErrUnsafe, "would expand"},
		{"overlapping entries", overlapZip(3), ErrUnsafe, "shares compressed data"},
		{"lying size", rawZip(tb, &zip.FileHeader{Name: "x", Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(zeros),
			CompressedSize64: uint64(len(deflate(tb, zeros))), UncompressedSize64: 10}, deflate(tb, zeros)),
			ErrInvalid, `entry "x" is corrupt`},
		{"bad checksum", rawZip(tb, &zip.FileHeader{Name: "x", Method: zip.Store, CRC32: 1,
			CompressedSize64: 5, UncompressedSize64: 5}, []byte("hello")), ErrInvalid, "checksum"},
		{"unsupported method", rawZip(tb, &zip.FileHeader{Name: "x", Method: 12, CompressedSize64: 5, UncompressedSize64: 5},
			[]byte("hello")), ErrInvalid, "compression method 12"},
		{"encrypted", rawZip(tb, &zip.FileHeader{Name: "x", Method: zip.Store, Flags: 0x1, CompressedSize64: 5, UncompressedSize64: 5},
			[]byte("hello")), ErrInvalid, "encrypted"},
	}
}

// megabytes returns n entries of 1 MiB each: big, but not big enough for
// the ratio check.
func megabytes(n int) []zent {
	var ents []zent
	for i := range n {
		ents = append(ents, file(strings.Repeat("m", i+1), strings.Repeat("m", mib)))
	}
	return ents
}

func manyFiles(n int) []zent {
	var ents []zent
	for i := range n {
		ents = append(ents, file(strings.Repeat("f", i+1), "x"))
	}
	return ents
}

// TestInspectRefuses checks each refusal through the extractor alone, with
// nothing on disk.
func TestInspectRefuses(t *testing.T) {
	opts := testOpts.withDefaults()
	for _, tc := range refusals(t) {
		t.Run(tc.name, func(t *testing.T) {
			err := checkBundle(t.Context(), bytes.NewReader(tc.zip), int64(len(tc.zip)), "app.zip", opts)
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v; want %v mentioning %q", err, tc.err, tc.msg)
			}
			var be *BundleError
			if !errors.As(err, &be) || be.Bundle != "app.zip" {
				t.Fatalf("got %#v; want a *BundleError for app.zip", err)
			}
		})
	}
}

func TestBundleErrorMessage(t *testing.T) {
	z := makeZip(t, file("../../etc/passwd", "x"))
	err := checkBundle(t.Context(), bytes.NewReader(z), int64(len(z)), "app.zip", testOpts.withDefaults())
	if want := `code bundle "app.zip": entry "../../etc/passwd" escapes the bundle`; err == nil || err.Error() != want {
		t.Errorf("got %v; want %s", err, want)
	}
}

// unpackTo inspects and extracts z into a fresh directory and returns it.
func unpackTo(t *testing.T, z []byte, inspectOpts, extractOpts Options) (string, error) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := inspect(zr, "test", inspectOpts.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	root, err := os.OpenRoot(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	return dst, extract(t.Context(), m, root, extractOpts.withDefaults())
}

// TestExtractCountsBytes gives the extractor a tighter limit than the one
// the headers were checked against: it must stop on the bytes it writes.
func TestExtractCountsBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	noise := func() string {
		b := make([]byte, 1000)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return string(b)
	}
	z := makeZip(t, file("a", noise()), file("b", noise()), file("c", noise()))
	dst, err := unpackTo(t, z, Options{}, Options{MaxUnpacked: 2500})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "exceeds the 2.5 KiB limit for an unpacked bundle") {
		t.Fatalf("got %v; want ErrTooLarge", err)
	}
	if n := treeSize(t, dst); n > 2500 {
		t.Errorf("wrote %d bytes; the limit is 2500", n)
	}
}

// TestExtractCountsRatio does the same for the compression ratio.
func TestExtractCountsRatio(t *testing.T) {
	z := makeZip(t, file("zeros", string(make([]byte, 2*mib))))
	dst, err := unpackTo(t, z, Options{MaxRatio: 1 << 20}, Options{MaxRatio: 2})
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "expands more than 2-fold") {
		t.Fatalf("got %v; want ErrUnsafe", err)
	}
	if n := treeSize(t, dst); n > ratioFloor {
		t.Errorf("wrote %d bytes; want at most %d", n, ratioFloor)
	}
}

func treeSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFormatSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 bytes"},
		{1023, "1023 bytes"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{1025, "1.1 KiB"}, // rounded up: over a limit never prints as the limit
		{750 * mib, "750 MiB"},
		{750*mib + 1, "750.1 MiB"},
		{812 * mib, "812 MiB"},
	} {
		if got := formatSize(tc.n); got != tc.want {
			t.Errorf("formatSize(%d) = %q; want %q", tc.n, got, tc.want)
		}
	}
}

// FuzzUnpack feeds arbitrary bytes to the extractor. Whatever it is given,
// it must not panic, must not write outside its directory, must not exceed
// its limits, and must leave only files, directories and symlinks that
// resolve inside the directory.
func FuzzUnpack(f *testing.F) {
	f.Add(makeZip(f, file("main.py", "print(1)"), exe("bin/run", "#!/bin/sh"), symlink("lib/l", "../main.py")))
	opts := Options{MaxZipped: 1 * mib, MaxUnpacked: 1 * mib, MaxFiles: 64}.withDefaults()
	f.Fuzz(func(t *testing.T, data []byte) {
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		m, err := inspect(zr, "fuzz", opts)
		if err != nil {
			return
		}
		parent := t.TempDir()
		dst := filepath.Join(parent, "bundle")
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		root, err := os.OpenRoot(dst)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		_ = extract(t.Context(), m, root, opts) // refusing is fine; what it left is checked below

		if ents, err := os.ReadDir(parent); err != nil || len(ents) != 1 {
			t.Fatalf("parent holds %v (%v); want only the bundle", ents, err)
		}
		var size int64
		var count int
		err = filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == dst {
				return err
			}
			count++
			rel, _ := filepath.Rel(dst, p)
			switch typ := d.Type(); {
			case typ.IsRegular():
				fi, err := d.Info()
				if err != nil {
					return err
				}
				size += fi.Size()
			case typ.IsDir():
			case typ&fs.ModeSymlink != 0:
				if _, err := root.Stat(rel); err != nil && !errors.Is(err, fs.ErrNotExist) && !isLoop(err) {
					return err // os.Root refuses links that leave it
				}
				if real, err := filepath.EvalSymlinks(p); err == nil && !within(dst, real) {
					return errors.New(rel + " resolves to " + real)
				}
			default:
				return errors.New(rel + " is " + typ.String())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if size > opts.MaxUnpacked || count > opts.MaxFiles {
			t.Fatalf("unpacked %d bytes in %d entries; limits are %d and %d", size, count, opts.MaxUnpacked, opts.MaxFiles)
		}
	})
}

func isLoop(err error) bool {
	return strings.Contains(err.Error(), "too many levels of symbolic links")
}

func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// BenchmarkUnpack unpacks a bundle of about 20 MiB in 400 files of text-like
// data, durably, as Store.Unpack does for each new digest.
func BenchmarkUnpack(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	words := []string{"agent", "runtime", "session", "import", "return", "def", "self", "value", "\n", "    "}
	var ents []zent
	var total int64
	for i := range 400 {
		var sb strings.Builder
		for sb.Len() < 50*kib {
			sb.WriteString(words[rng.IntN(len(words))])
			sb.WriteByte(' ')
		}
		ents = append(ents, file("pkg/"+string(rune('a'+i%26))+"/mod"+strings.Repeat("x", i/26)+".py", sb.String()))
		total += int64(sb.Len())
	}
	z := makeZip(b, ents...)
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	obj, err := s.Put(b.Context(), "bench", "bundle.zip", bytes.NewReader(z))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := os.RemoveAll(s.unpackedPath(obj.Digest)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := s.Unpack(b.Context(), obj.Digest); err != nil {
			b.Fatal(err)
		}
	}
}
